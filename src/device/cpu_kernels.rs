//! The Tiny CNN's feature extractor as one fused operation on the CPU backend (burn-flex),
//! wired into burn through its backend extension API, with its own backward pass.
//!
//! Why: on 2 cores, burn-flex spends most of a Tiny CNN step in conv and max-pool kernels
//! built for many channels (README: "Where the CPU time went, and what fixed it"). The Tiny
//! CNN has 1, 8 and 16 channels, so here each image is computed in one pass, channels-last,
//! with the channel loop innermost and of fixed length so that it becomes SIMD lanes:
//!
//! ```text
//! images (N,1,H,W) -> conv1 3x3 pad 1 -> ReLU -> max-pool 2x2 -> conv2 3x3 pad 1 -> ReLU
//!                  -> global average pool -> features (N,16)
//! ```
//!
//! The backward pass returns the gradients of both convolutions' weights and biases (and of
//! the images, when they are tracked) from the activations kept by the forward pass.
//!
//! The arithmetic is the layer-by-layer arithmetic up to float summation order
//! (tests/cpu_kernels.rs compares the two). It is deterministic: images are independent, and the gradient
//! sums are added in a fixed order of fixed-size chunks whatever the thread count. Vector
//! width changes only which instructions run, never the order of additions (no FMA), so the
//! AVX-512, AVX2 and portable variants give the same bits.
//!
//! `--no-cpu-kernels` (or `TRAINER_CPU_KERNELS=off`) turns it off; the layer path stays the
//! reference.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, backend_extension};
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use rayon::prelude::*;

/// conv1's output channels.
pub const C1: usize = 8;
/// conv2's output channels: the length of a feature vector.
pub const C2: usize = 16;
/// Images per chunk of the backward pass; gradient sums are added chunk by chunk in order.
const CHUNK: usize = 8;

/// The extension: the fused operation.
#[backend_extension(Flex, Autodiff)]
pub trait CpuKernels: Backend {
    /// Images (N, 1, H, W) to Tiny CNN features (N, 16), from conv1's weight (8, 1, 3, 3)
    /// and bias (8) and conv2's weight (16, 8, 3, 3) and bias (16).
    fn tiny_cnn_features(
        images: FloatTensor<Self>,
        conv1_weight: FloatTensor<Self>,
        conv1_bias: FloatTensor<Self>,
        conv2_weight: FloatTensor<Self>,
        conv2_bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
}

/// Whether tensors on `device` go through the fused operation: a burn-flex device (with or
/// without autodiff), with the kernels not turned off.
pub fn available(device: &Device) -> bool {
    enabled()
        && matches!(
            device.clone().inner().as_dispatch(),
            burn::backend::DispatchDevice::Flex(_)
        )
}

/// Whether the kernels are turned on: `TRAINER_CPU_KERNELS=off` turns them off for the
/// process, [`set_enabled`] at run time.
pub fn enabled() -> bool {
    static FROM_ENV: OnceLock<bool> = OnceLock::new();
    let from_env =
        *FROM_ENV.get_or_init(|| std::env::var("TRAINER_CPU_KERNELS").as_deref() != Ok("off"));
    from_env && !TURNED_OFF.load(Ordering::Relaxed)
}

/// Turns the kernels on or off (`--no-cpu-kernels`; `cargo bench` measures both).
pub fn set_enabled(on: bool) {
    TURNED_OFF.store(!on, Ordering::Relaxed);
}

static TURNED_OFF: AtomicBool = AtomicBool::new(false);

/// Which vector instructions the kernels use on this machine, for run_info and the README.
pub fn instruction_set() -> &'static str {
    InstructionSet::detect().name()
}

/// The instruction sets this CPU can run the kernels with, widest first.
pub fn supported_instruction_sets() -> Vec<&'static str> {
    InstructionSet::ALL
        .into_iter()
        .filter(|set| set.supported())
        .map(InstructionSet::name)
        .collect()
}

/// Forces the kernels onto one instruction set (`avx512`, `avx2` or `portable`), or back to
/// the widest this CPU has (`None`): the tests check that every variant gives the same bits.
/// Also read once from `TRAINER_CPU_ISA`. A set this CPU lacks is refused.
pub fn force_instruction_set(name: Option<&str>) -> Result<(), String> {
    let code = match name {
        None => 0,
        Some(name) => {
            let set = InstructionSet::ALL
                .into_iter()
                .find(|s| s.name() == name)
                .ok_or_else(|| {
                    format!("unknown instruction set '{name}' (avx512, avx2, portable)")
                })?;
            if !set.supported() {
                return Err(format!("this CPU cannot run the kernels with {name}"));
            }
            set as u8 + 1
        }
    };
    FORCED.store(code, Ordering::Relaxed);
    Ok(())
}

/// 0: the widest supported; otherwise an [`InstructionSet`] as `set as u8 + 1`.
static FORCED: AtomicU8 = AtomicU8::new(0);

/// The vector instructions the kernels are compiled for.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum InstructionSet {
    Avx512 = 0,
    Avx2 = 1,
    Portable = 2,
}

impl InstructionSet {
    const ALL: [InstructionSet; 3] = [
        InstructionSet::Avx512,
        InstructionSet::Avx2,
        InstructionSet::Portable,
    ];

    fn name(self) -> &'static str {
        match self {
            InstructionSet::Avx512 => "avx512",
            InstructionSet::Avx2 => "avx2",
            InstructionSet::Portable => "portable",
        }
    }

    /// Whether this CPU has the instructions.
    fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                InstructionSet::Avx512 => std::is_x86_feature_detected!("avx512f"),
                InstructionSet::Avx2 => std::is_x86_feature_detected!("avx2"),
                InstructionSet::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == InstructionSet::Portable
        }
    }

    /// The forced set (see [`force_instruction_set`]), else the widest this CPU has.
    fn detect() -> InstructionSet {
        static FROM_ENV: OnceLock<()> = OnceLock::new();
        FROM_ENV.get_or_init(|| {
            if let Ok(name) = std::env::var("TRAINER_CPU_ISA") {
                // An unusable value keeps the widest set; the tests set it only to real ones.
                let _ = force_instruction_set(Some(&name));
            }
        });
        match FORCED.load(Ordering::Relaxed) {
            0 => InstructionSet::ALL
                .into_iter()
                .find(|s| s.supported())
                .unwrap_or(InstructionSet::Portable),
            code => InstructionSet::ALL[(code - 1) as usize],
        }
    }
}

/// The Tiny CNN's features through the fused operation; `None` when the convolutions do not
/// have the Tiny CNN's shapes (the caller then uses the layers).
pub fn tiny_cnn_features(images: Tensor<4>, conv1: &Conv2d, conv2: &Conv2d) -> Option<Tensor<2>> {
    let (Some(b1), Some(b2)) = (&conv1.bias, &conv2.bias) else {
        return None;
    };
    let [_, channels, _, _] = images.dims();
    if channels != 1
        || conv1.weight.dims() != [C1, 1, 3, 3]
        || conv2.weight.dims() != [C2, C1, 3, 3]
        || conv1.stride != [1, 1]
        || conv2.stride != [1, 1]
        || conv1.dilation != [1, 1]
        || conv2.dilation != [1, 1]
        || conv1.groups != 1
        || conv2.groups != 1
    {
        return None;
    }
    let features = Dispatch::tiny_cnn_features(
        images.into_dispatch(),
        conv1.weight.val().into_dispatch(),
        b1.val().into_dispatch(),
        conv2.weight.val().into_dispatch(),
        b2.val().into_dispatch(),
    );
    Some(Tensor::from_dispatch(features))
}

impl CpuKernels for Flex {
    fn tiny_cnn_features(
        images: FlexTensor,
        conv1_weight: FlexTensor,
        conv1_bias: FlexTensor,
        conv2_weight: FlexTensor,
        conv2_bias: FlexTensor,
    ) -> FlexTensor {
        let (dims, images, weights) =
            inputs(images, conv1_weight, conv1_bias, conv2_weight, conv2_bias);
        let (features, _) = forward(&dims, &images, &weights, false);
        flex(features, [dims.n, C2])
    }
}

impl<C: CheckpointStrategy> CpuKernels for Autodiff<Flex, C> {
    fn tiny_cnn_features(
        images: FloatTensor<Self>,
        conv1_weight: FloatTensor<Self>,
        conv1_bias: FloatTensor<Self>,
        conv2_weight: FloatTensor<Self>,
        conv2_bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (images, images_node) = images.into_parts();
        let (w1, w1_node) = conv1_weight.into_parts();
        let (b1, b1_node) = conv1_bias.into_parts();
        let (w2, w2_node) = conv2_weight.into_parts();
        let (b2, b2_node) = conv2_bias.into_parts();
        let (dims, images, weights) = inputs(images, w1, b1, w2, b2);

        let nodes = [images_node, w1_node, b1_node, w2_node, b2_node];
        match FeaturesBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (features, kept) = forward(&dims, &images, &weights, true);
                let state = Kept(Arc::new(KeptInner {
                    dims,
                    weights,
                    samples: kept,
                }));
                prep.finish(state, flex(features, [dims.n, C2]))
            }
            OpsKind::UnTracked(prep) => {
                let (features, _) = forward(&dims, &images, &weights, false);
                prep.finish(flex(features, [dims.n, C2]))
            }
        }
    }
}

/// The backward step of [`CpuKernels::tiny_cnn_features`].
#[derive(Debug)]
struct FeaturesBackward;

/// What the forward pass keeps for the backward pass.
#[derive(Clone)]
struct Kept(Arc<KeptInner>);

struct KeptInner {
    dims: Dims,
    weights: Weights,
    samples: Vec<SampleActivations>,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kept({:?})", self.0.dims)
    }
}

impl Backward<Flex, 5> for FeaturesBackward {
    type State = Kept;

    fn backward(self, ops: Ops<Kept, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [images_node, w1_node, b1_node, w2_node, b2_node] = ops.parents;
        let grad = host(grads.consume::<Flex>(&ops.node));
        let kept = &ops.state.0;
        let want_images = images_node.is_some();
        let g = backward(kept, &grad, want_images);
        let d = &kept.dims;
        let outputs = [
            (images_node, g.images, vec![d.n, 1, d.h, d.w]),
            (w1_node, g.w1, vec![C1, 1, 3, 3]),
            (b1_node, g.b1, vec![C1]),
            (w2_node, g.w2, vec![C2, C1, 3, 3]),
            (b2_node, g.b2, vec![C2]),
        ];
        for (node, values, shape) in outputs {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, flex(values, shape));
            }
        }
    }
}

/// The operation's inputs on the host: sizes, image values and rearranged weights.
fn inputs(
    images: FlexTensor,
    w1: FlexTensor,
    b1: FlexTensor,
    w2: FlexTensor,
    b2: FlexTensor,
) -> (Dims, Vec<f32>, Weights) {
    let weights = Weights::new(&host(w1), &host(b1), &host(w2), &host(b2));
    (Dims::of(&images), host(images), weights)
}

/// A flex tensor's values, contiguous, as f32.
fn host(tensor: FlexTensor) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("a float tensor converts to f32")
}

fn flex(values: Vec<f32>, shape: impl Into<Vec<usize>>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}

/// Batch and image sizes: images H x W, pooled PH x PW (floor, like max-pool 2x2).
#[derive(Clone, Copy, Debug)]
struct Dims {
    n: usize,
    h: usize,
    w: usize,
    ph: usize,
    pw: usize,
}

impl Dims {
    fn of(images: &FlexTensor) -> Dims {
        let shape = burn::backend::TensorMetadata::shape(images);
        let (n, h, w) = (shape[0], shape[2], shape[3]);
        Dims {
            n,
            h,
            w,
            ph: h / 2,
            pw: w / 2,
        }
    }
    /// Padded image, one channel.
    fn image_padded(&self) -> usize {
        (self.h + 2) * (self.w + 2)
    }
    /// Padded pooled map, C1 channels.
    fn pooled_padded(&self) -> usize {
        (self.ph + 2) * (self.pw + 2) * C1
    }
}

/// Both convolutions' parameters, rearranged tap-major and channels-last:
/// `w[tap][in][out]`, tap = ky * 3 + kx; the `_flipped` forms are the transposed, flipped
/// kernels that carry gradients back to a convolution's input.
#[derive(Clone)]
struct Weights {
    w1: [[[f32; C1]; 1]; 9],
    b1: [f32; C1],
    w2: [[[f32; C2]; C1]; 9],
    b2: [f32; C2],
    w1_flipped: [[[f32; 1]; C1]; 9],
    w2_flipped: [[[f32; C1]; C2]; 9],
}

impl Weights {
    /// From burn's layouts: weight (out, in, 3, 3), bias (out).
    fn new(w1: &[f32], b1: &[f32], w2: &[f32], b2: &[f32]) -> Weights {
        let mut weights = Weights {
            w1: [[[0.0; C1]; 1]; 9],
            b1: [0.0; C1],
            w2: [[[0.0; C2]; C1]; 9],
            b2: [0.0; C2],
            w1_flipped: [[[0.0; 1]; C1]; 9],
            w2_flipped: [[[0.0; C1]; C2]; 9],
        };
        for tap in 0..9 {
            for o in 0..C1 {
                weights.w1[tap][0][o] = w1[o * 9 + tap];
                weights.w1_flipped[8 - tap][o][0] = w1[o * 9 + tap];
            }
            for o in 0..C2 {
                for i in 0..C1 {
                    weights.w2[tap][i][o] = w2[(o * C1 + i) * 9 + tap];
                    weights.w2_flipped[8 - tap][o][i] = w2[(o * C1 + i) * 9 + tap];
                }
            }
        }
        weights.b1.copy_from_slice(&b1[..C1]);
        weights.b2.copy_from_slice(&b2[..C2]);
        weights
    }
}

/// One image's activations, kept for the backward pass.
struct SampleActivations {
    /// The image, zero-padded: (H+2) x (W+2).
    image: Vec<f32>,
    /// ReLU + max-pool output, zero-padded, channels-last: (PH+2) x (PW+2) x C1.
    pooled: Vec<f32>,
    /// Which of the 2x2 window won each pooled value (0..4, row-major), or `NONE` where the
    /// pooled value is 0 after the ReLU (no gradient flows).
    winner: Vec<u8>,
    /// conv2 + ReLU output, channels-last: PH x PW x C2.
    conv2: Vec<f32>,
}

const NONE: u8 = u8::MAX;

impl SampleActivations {
    fn new(d: &Dims) -> SampleActivations {
        SampleActivations {
            image: vec![0.0; d.image_padded()],
            pooled: vec![0.0; d.pooled_padded()],
            winner: vec![NONE; d.ph * d.pw * C1],
            conv2: vec![0.0; d.ph * d.pw * C2],
        }
    }
}

/// Features (N x C2) and, when `keep`, each image's activations (otherwise each worker
/// reuses one set: the padding stays zero and the rest is overwritten per image).
fn forward(
    dims: &Dims,
    images: &[f32],
    weights: &Weights,
    keep: bool,
) -> (Vec<f32>, Vec<SampleActivations>) {
    let image_len = dims.h * dims.w;
    let per_image: Vec<([f32; C2], Option<SampleActivations>)> = images
        .par_chunks(image_len)
        .map_init(
            || (vec![0.0f32; image_len * C1], SampleActivations::new(dims)),
            |(conv1, reused), image| {
                if keep {
                    let mut acts = SampleActivations::new(dims);
                    let features = simd::forward_image(dims, image, weights, conv1, &mut acts);
                    (features, Some(acts))
                } else {
                    (
                        simd::forward_image(dims, image, weights, conv1, reused),
                        None,
                    )
                }
            },
        )
        .collect();
    let mut features = Vec::with_capacity(dims.n * C2);
    let mut kept = Vec::with_capacity(if keep { dims.n } else { 0 });
    for (f, acts) in per_image {
        features.extend_from_slice(&f);
        kept.extend(acts);
    }
    (features, kept)
}

/// Gradients of the fused operation's inputs, in burn's layouts.
struct Grads {
    images: Vec<f32>,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

/// Sums of weight and bias gradients over some images, tap-major like [`Weights`].
#[derive(Clone)]
struct GradSums {
    w1: [[[f32; C1]; 1]; 9],
    b1: [f32; C1],
    w2: [[[f32; C2]; C1]; 9],
    b2: [f32; C2],
}

impl GradSums {
    fn zero() -> GradSums {
        GradSums {
            w1: [[[0.0; C1]; 1]; 9],
            b1: [0.0; C1],
            w2: [[[0.0; C2]; C1]; 9],
            b2: [0.0; C2],
        }
    }

    fn add(&mut self, other: &GradSums) {
        for tap in 0..9 {
            for o in 0..C1 {
                self.w1[tap][0][o] += other.w1[tap][0][o];
            }
            for i in 0..C1 {
                for o in 0..C2 {
                    self.w2[tap][i][o] += other.w2[tap][i][o];
                }
            }
        }
        for o in 0..C1 {
            self.b1[o] += other.b1[o];
        }
        for o in 0..C2 {
            self.b2[o] += other.b2[o];
        }
    }
}

/// The backward pass: `grad` is d(loss)/d(features), N x C2.
fn backward(kept: &KeptInner, grad: &[f32], want_images: bool) -> Grads {
    let dims = &kept.dims;
    let image_len = dims.h * dims.w;
    let per_chunk: Vec<(GradSums, Vec<f32>)> = kept
        .samples
        .par_chunks(CHUNK)
        .zip(grad.par_chunks(CHUNK * C2))
        .map(|(samples, grad)| {
            let mut sums = GradSums::zero();
            let mut scratch = simd::BackwardScratch::new(dims);
            let mut images = vec![
                0.0f32;
                if want_images {
                    samples.len() * image_len
                } else {
                    0
                }
            ];
            for (i, acts) in samples.iter().enumerate() {
                let mut g = [0.0f32; C2];
                g.copy_from_slice(&grad[i * C2..(i + 1) * C2]);
                let image_grad =
                    want_images.then(|| &mut images[i * image_len..(i + 1) * image_len]);
                simd::backward_image(
                    dims,
                    acts,
                    &g,
                    &kept.weights,
                    &mut scratch,
                    &mut sums,
                    image_grad,
                );
            }
            (sums, images)
        })
        .collect();

    let mut total = GradSums::zero();
    let mut images = Vec::with_capacity(if want_images { dims.n * image_len } else { 0 });
    for (sums, chunk_images) in &per_chunk {
        total.add(sums);
        images.extend_from_slice(chunk_images);
    }
    // Back to burn's layouts: weight (out, in, 3, 3).
    let mut w1 = vec![0.0f32; C1 * 9];
    let mut w2 = vec![0.0f32; C2 * C1 * 9];
    for tap in 0..9 {
        for o in 0..C1 {
            w1[o * 9 + tap] = total.w1[tap][0][o];
        }
        for o in 0..C2 {
            for i in 0..C1 {
                w2[(o * C1 + i) * 9 + tap] = total.w2[tap][i][o];
            }
        }
    }
    Grads {
        images,
        w1,
        b1: total.b1.to_vec(),
        w2,
        b2: total.b2.to_vec(),
    }
}

/// The per-image kernels, compiled once per vector instruction set and picked at run time.
mod simd {
    use super::{C1, C2, Dims, GradSums, InstructionSet, NONE, SampleActivations, Weights};

    /// Scratch buffers of one image's backward pass, reused across a chunk.
    pub(super) struct BackwardScratch {
        /// d(loss)/d(conv2 output), zero-padded: (PH+2) x (PW+2) x C2.
        d_conv2: Vec<f32>,
        /// d(loss)/d(pooled): PH x PW x C1.
        d_pooled: Vec<f32>,
        /// d(loss)/d(conv1 output), zero-padded: (H+2) x (W+2) x C1.
        d_conv1: Vec<f32>,
        /// Pixels with a non-zero gradient.
        pixels: Vec<(u32, u32)>,
    }

    impl BackwardScratch {
        pub(super) fn new(d: &Dims) -> BackwardScratch {
            BackwardScratch {
                d_conv2: vec![0.0; (d.ph + 2) * (d.pw + 2) * C2],
                d_pooled: vec![0.0; d.ph * d.pw * C1],
                d_conv1: vec![0.0; (d.h + 2) * (d.w + 2) * C1],
                pixels: Vec::with_capacity(d.h * d.w),
            }
        }
    }

    /// Defines `pub(super) fn $name` that runs `$body` compiled for AVX-512, for AVX2 or for
    /// neither, whichever this CPU has. The bodies are `#[inline(always)]`, so each variant
    /// is a full copy of the kernel for its instruction set.
    macro_rules! per_instruction_set {
        ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $body:ident) => {
            $(#[$doc])*
            pub(super) fn $name($($arg: $ty),*) $(-> $ret)? {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f,avx2")]
                    unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                        $body($($arg),*)
                    }
                    #[target_feature(enable = "avx2")]
                    unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                        $body($($arg),*)
                    }
                    match InstructionSet::detect() {
                        // SAFETY: the CPU has AVX-512F.
                        InstructionSet::Avx512 => return unsafe { avx512($($arg),*) },
                        // SAFETY: the CPU has AVX2.
                        InstructionSet::Avx2 => return unsafe { avx2($($arg),*) },
                        InstructionSet::Portable => {}
                    }
                }
                $body($($arg),*)
            }
        };
    }

    per_instruction_set! {
        /// One image forward; returns its features.
        fn forward_image(
            d: &Dims,
            image: &[f32],
            w: &Weights,
            conv1: &mut [f32],
            acts: &mut SampleActivations
        ) -> [f32; C2] = forward_body
    }

    per_instruction_set! {
        /// One image backward: adds its weight gradients to `sums` and, when asked, writes
        /// the gradient of its pixels.
        fn backward_image(
            d: &Dims,
            acts: &SampleActivations,
            grad: &[f32; C2],
            w: &Weights,
            scratch: &mut BackwardScratch,
            sums: &mut GradSums,
            image_grad: Option<&mut [f32]>
        ) = backward_body
    }

    #[inline(always)]
    fn forward_body(
        d: &Dims,
        image: &[f32],
        w: &Weights,
        conv1: &mut [f32],
        acts: &mut SampleActivations,
    ) -> [f32; C2] {
        // Pad the image.
        let row = d.w + 2;
        for y in 0..d.h {
            acts.image[(y + 1) * row + 1..(y + 1) * row + 1 + d.w]
                .copy_from_slice(&image[y * d.w..(y + 1) * d.w]);
        }
        // conv1 (before its ReLU).
        conv3x3::<1, C1, 8>(&acts.image, d.h, d.w, &w.w1, &w.b1, conv1);
        // ReLU + max-pool 2x2: the max of the window, then the ReLU; remember the winner.
        let prow = d.pw + 2;
        for y in 0..d.ph {
            for x in 0..d.pw {
                let at = |dy: usize, dx: usize| (2 * y + dy) * d.w + 2 * x + dx;
                let corners = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)];
                let mut best = [f32::NEG_INFINITY; C1];
                let mut winner = [0u8; C1];
                for (k, &p) in corners.iter().enumerate() {
                    let v = &conv1[p * C1..(p + 1) * C1];
                    for c in 0..C1 {
                        if v[c] > best[c] {
                            best[c] = v[c];
                            winner[c] = k as u8;
                        }
                    }
                }
                let out = ((y + 1) * prow + x + 1) * C1;
                for c in 0..C1 {
                    let positive = best[c] > 0.0;
                    acts.pooled[out + c] = if positive { best[c] } else { 0.0 };
                    acts.winner[(y * d.pw + x) * C1 + c] = if positive { winner[c] } else { NONE };
                }
            }
        }
        // conv2 + ReLU + global average pool.
        conv3x3::<C1, C2, 4>(&acts.pooled, d.ph, d.pw, &w.w2, &w.b2, &mut acts.conv2);
        let mut sum = [0.0f32; C2];
        for pixel in acts.conv2.chunks_exact_mut(C2) {
            for c in 0..C2 {
                pixel[c] = pixel[c].max(0.0);
                sum[c] += pixel[c];
            }
        }
        let count = (d.ph * d.pw) as f32;
        sum.map(|s| s / count)
    }

    #[inline(always)]
    fn backward_body(
        d: &Dims,
        acts: &SampleActivations,
        grad: &[f32; C2],
        w: &Weights,
        s: &mut BackwardScratch,
        sums: &mut GradSums,
        image_grad: Option<&mut [f32]>,
    ) {
        // Through the average pool and conv2's ReLU.
        let count = (d.ph * d.pw) as f32;
        let g = grad.map(|v| v / count);
        let prow = d.pw + 2;
        for y in 0..d.ph {
            for x in 0..d.pw {
                let out = &acts.conv2[(y * d.pw + x) * C2..][..C2];
                let dst = &mut s.d_conv2[((y + 1) * prow + x + 1) * C2..][..C2];
                for c in 0..C2 {
                    dst[c] = if out[c] > 0.0 { g[c] } else { 0.0 };
                }
            }
        }
        // conv2's weights and bias, then its input.
        nonzero_pixels::<C2>(&s.d_conv2, d.ph, d.pw, &mut s.pixels);
        weight_grad::<C1, C2, 4>(
            &acts.pooled,
            &s.d_conv2,
            d.pw,
            &s.pixels,
            &mut sums.w2,
            &mut sums.b2,
        );
        conv3x3::<C2, C1, 8>(
            &s.d_conv2,
            d.ph,
            d.pw,
            &w.w2_flipped,
            &[0.0; C1],
            &mut s.d_pooled,
        );
        // Through the max-pool (to the winners) and conv1's ReLU (winners are positive).
        s.d_conv1.fill(0.0);
        let row = d.w + 2;
        for y in 0..d.ph {
            for x in 0..d.pw {
                let at = (y * d.pw + x) * C1;
                for c in 0..C1 {
                    let k = acts.winner[at + c];
                    if k != NONE {
                        let (dy, dx) = ((k >> 1) as usize, (k & 1) as usize);
                        let p = (2 * y + dy + 1) * row + 2 * x + dx + 1;
                        s.d_conv1[p * C1 + c] = s.d_pooled[at + c];
                    }
                }
            }
        }
        // conv1's weights and bias, and the image when asked.
        nonzero_pixels::<C1>(&s.d_conv1, d.h, d.w, &mut s.pixels);
        weight_grad::<1, C1, 1>(
            &acts.image,
            &s.d_conv1,
            d.w,
            &s.pixels,
            &mut sums.w1,
            &mut sums.b1,
        );
        if let Some(image_grad) = image_grad {
            conv3x3::<C1, 1, 8>(&s.d_conv1, d.h, d.w, &w.w1_flipped, &[0.0], image_grad);
        }
    }

    /// A 3x3 convolution, stride 1, over a zero-padded channels-last input:
    /// `out[y][x][o] = bias[o] + sum over taps and i of input[y+ky][x+kx][i] * w[tap][i][o]`
    /// for an H x W output. T output pixels of a row are computed together, so that T * O
    /// accumulators stay in registers.
    #[inline(always)]
    fn conv3x3<const I: usize, const O: usize, const T: usize>(
        input: &[f32],
        h: usize,
        w: usize,
        weights: &[[[f32; O]; I]; 9],
        bias: &[f32; O],
        out: &mut [f32],
    ) {
        let row = (w + 2) * I;
        for y in 0..h {
            let mut x = 0;
            while x + T <= w {
                conv_pixels::<I, O, T>(input, row, y, x, w, weights, bias, out);
                x += T;
            }
            while x < w {
                conv_pixels::<I, O, 1>(input, row, y, x, w, weights, bias, out);
                x += 1;
            }
        }
    }

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn conv_pixels<const I: usize, const O: usize, const T: usize>(
        input: &[f32],
        row: usize,
        y: usize,
        x: usize,
        w: usize,
        weights: &[[[f32; O]; I]; 9],
        bias: &[f32; O],
        out: &mut [f32],
    ) {
        let mut acc = [*bias; T];
        for ky in 0..3 {
            let strip = &input[(y + ky) * row + x * I..][..(T + 2) * I];
            for kx in 0..3 {
                let tap = &weights[ky * 3 + kx];
                for (t, acc) in acc.iter_mut().enumerate() {
                    let pixel = &strip[(t + kx) * I..][..I];
                    for i in 0..I {
                        let v = pixel[i];
                        for o in 0..O {
                            acc[o] += v * tap[i][o];
                        }
                    }
                }
            }
        }
        for (t, acc) in acc.iter().enumerate() {
            out[(y * w + x + t) * O..][..O].copy_from_slice(acc);
        }
    }

    /// Adds `sum over y, x of input[y+ky][x+kx][i] * d_out[y+1][x+1][o]` to `w[tap][i][o]`
    /// and `sum of d_out` to `b`; both inputs zero-padded channels-last, the output H x W.
    /// `pixels` lists the output pixels whose gradient is not all zero. Per tap, IT input
    /// channels at a time are summed in local accumulators (IT * O of them, in registers).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn weight_grad<const I: usize, const O: usize, const IT: usize>(
        input: &[f32],
        d_out: &[f32],
        w: usize,
        pixels: &[(u32, u32)],
        sums: &mut [[[f32; O]; I]; 9],
        bias: &mut [f32; O],
    ) {
        let row = w + 2;
        let mut b = [0.0f32; O];
        for &(y, x) in pixels {
            let (y, x) = (y as usize, x as usize);
            let g = &d_out[((y + 1) * row + x + 1) * O..][..O];
            for o in 0..O {
                b[o] += g[o];
            }
        }
        for o in 0..O {
            bias[o] += b[o];
        }
        for ky in 0..3 {
            for kx in 0..3 {
                let mut i0 = 0;
                while i0 < I {
                    let mut acc = [[0.0f32; O]; IT];
                    for &(y, x) in pixels {
                        let (y, x) = (y as usize, x as usize);
                        let g = &d_out[((y + 1) * row + x + 1) * O..][..O];
                        let pixel = &input[((y + ky) * row + x + kx) * I + i0..][..IT];
                        for (i, acc) in acc.iter_mut().enumerate() {
                            let v = pixel[i];
                            for o in 0..O {
                                acc[o] += v * g[o];
                            }
                        }
                    }
                    let tap = &mut sums[ky * 3 + kx];
                    for (i, acc) in acc.iter().enumerate() {
                        for o in 0..O {
                            tap[i0 + i][o] += acc[o];
                        }
                    }
                    i0 += IT;
                }
            }
        }
    }

    /// The output pixels of an H x W map (zero-padded, O channels) whose values are not all zero.
    #[inline(always)]
    fn nonzero_pixels<const O: usize>(d: &[f32], h: usize, w: usize, out: &mut Vec<(u32, u32)>) {
        out.clear();
        let row = w + 2;
        for y in 0..h {
            for x in 0..w {
                let g = &d[((y + 1) * row + x + 1) * O..][..O];
                if g.iter().any(|&v| v != 0.0) {
                    out.push((y as u32, x as u32));
                }
            }
        }
    }
}
