//! The CNN family's feature extractor as one fused operation on the CPU backend (burn-flex),
//! for any channel count and any widths of the family, with its own backward pass:
//!
//! ```text
//! images (N,C,H,W) -> [conv 3x3 pad 1 -> ReLU] (-> max-pool 2x2 -> [conv -> ReLU])...
//!                  -> global average pool -> features (N, last width)
//!                  or flattened map       -> features (N, last width x H' x W')
//! ```
//!
//! The flattened map is in burn's (and PyTorch's) order, channel-major: the head's layers
//! take it as they take the layers' `flatten(1, 3)`.
//!
//! Why: burn-flex's conv and pool kernels are built for many channels; these models have few.
//! Each image is computed in one pass, channels-last, with output channels in blocks of
//! [`LANES`] that become SIMD lanes and a run of output pixels of a row in register
//! accumulators. The parameters come in as one flat tensor (each block's weight in burn's
//! (out, in, 3, 3) order, then its bias), so the operation has two inputs whatever the depth,
//! and burn's autodiff splits the flat gradient back onto the layers' parameters.
//!
//! The arithmetic is the layers' up to float summation order (tests/cpu_kernels.rs compares
//! them on several shapes). It is deterministic: images are independent, gradient sums are
//! added in a fixed order of fixed-size chunks whatever the thread count, and each value is
//! accumulated in the same order by every instruction set (no FMA), so the AVX-512, AVX2 and
//! portable variants give the same bits (a test forces each).

use std::sync::Arc;

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

use super::cpu_kernels::InstructionSet;
use super::cpu_winograd as winograd;

mod norm;
pub use norm::{
    BatchStats, EvalNorm, NormParams, NormedFeatures, cnn_features_folded, cnn_features_normed,
};

/// Channel strides are whole multiples of this, so that both lane widths divide them.
pub const LANES: usize = 16;
/// Slack after a bordered buffer, in pixels, for the kernels' fixed-size reads.
const TILE: usize = 8;
/// (tap, input) pairs of a weight gradient computed together.
const K_BLOCK: usize = 6;
/// Images per chunk of the backward pass; gradient sums are added chunk by chunk in order.
const CHUNK: usize = 8;
/// The most blocks (the model family's).
const MAX_BLOCKS: usize = 4;

/// The extension: the fused operation.
#[backend_extension(Flex, Autodiff)]
pub trait CnnKernels: Backend {
    /// Images (N, C, H, W) to features (N, F), from the blocks' flat parameters; `shape` is
    /// [blocks, width 1, width 2, width 3, width 4, map] with `map` a [`FeatureMap`] as u32.
    fn cnn_features(
        images: FloatTensor<Self>,
        params: FloatTensor<Self>,
        shape: [u32; 6],
    ) -> FloatTensor<Self>;
}

/// What the operation makes of the last block's map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureMap {
    /// Its global average: one feature per channel.
    GlobalAverage = 0,
    /// The whole map, flattened channel-major: width x H x W features.
    Flatten = 1,
}

/// Whether the fused operation takes a CNN on `channels` channels with these `widths`: any
/// of the family (1 to 4 blocks of 1 to 128 channels).
pub fn supports(channels: usize, widths: &[usize]) -> Result<(), String> {
    if (1..=MAX_BLOCKS).contains(&widths.len()) && channels >= 1 && widths.iter().all(|w| *w >= 1) {
        Ok(())
    } else {
        Err(format!(
            "the fused CPU operation takes 1 to {MAX_BLOCKS} blocks, not {}",
            widths.len()
        ))
    }
}

/// The features of `images` through the blocks `convs` (3x3, padding 1, stride 1, biased),
/// by the fused operation; `None` when a convolution is not of that kind (the caller then
/// uses the layers).
pub fn cnn_features(images: Tensor<4>, convs: &[&Conv2d], map: FeatureMap) -> Option<Tensor<2>> {
    let (params, shape) = conv_params(images.dims()[1], convs, map)?;
    Some(Tensor::from_dispatch(Dispatch::cnn_features(
        images.into_dispatch(),
        params.into_dispatch(),
        shape,
    )))
}

/// The operation's flat parameters and shape for the blocks `convs` on `channels` input
/// channels, or `None` when a convolution is not of the operation's kind.
fn conv_params(
    channels: usize,
    convs: &[&Conv2d],
    map: FeatureMap,
) -> Option<(Tensor<1>, [u32; 6])> {
    if convs.is_empty() || convs.len() > MAX_BLOCKS {
        return None;
    }
    let mut parts = Vec::new();
    let mut shape = [convs.len() as u32, 0, 0, 0, 0, map as u32];
    let mut inputs = channels;
    for (i, conv) in convs.iter().enumerate() {
        let bias = conv.bias.as_ref()?;
        let [out, inp, kh, kw] = conv.weight.dims();
        if inp != inputs
            || [kh, kw] != [3, 3]
            || conv.stride != [1, 1]
            || conv.dilation != [1, 1]
            || conv.groups != 1
        {
            return None;
        }
        parts.push(conv.weight.val().flatten(0, 3));
        parts.push(bias.val());
        shape[i + 1] = out as u32;
        inputs = out;
    }
    Some((Tensor::cat(parts, 0), shape))
}

impl CnnKernels for Flex {
    fn cnn_features(images: FlexTensor, params: FlexTensor, shape: [u32; 6]) -> FlexTensor {
        let plan = Plan::of(&images, shape);
        let weights = Weights::new(&plan, &host(params));
        let (features, _) = forward(&plan, &host(images), &weights, false);
        flex(features, [plan.n, plan.features()])
    }
}

impl<C: CheckpointStrategy> CnnKernels for Autodiff<Flex, C> {
    fn cnn_features(
        images: FloatTensor<Self>,
        params: FloatTensor<Self>,
        shape: [u32; 6],
    ) -> FloatTensor<Self> {
        let (images, images_node) = images.into_parts();
        let (params, params_node) = params.into_parts();
        let plan = Plan::of(&images, shape);
        let weights = Weights::new(&plan, &host(params));
        let images = host(images);
        match FeaturesBackward
            .prepare::<C>([images_node, params_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (features, kept) = forward(&plan, &images, &weights, true);
                let out = flex(features, [plan.n, plan.features()]);
                prep.finish(
                    Kept(Arc::new(KeptInner {
                        plan,
                        weights,
                        samples: kept,
                    })),
                    out,
                )
            }
            OpsKind::UnTracked(prep) => {
                let (features, _) = forward(&plan, &images, &weights, false);
                prep.finish(flex(features, [plan.n, plan.features()]))
            }
        }
    }
}

/// The backward step of [`CnnKernels::cnn_features`].
#[derive(Debug)]
struct FeaturesBackward;

/// What the forward pass keeps for the backward pass.
#[derive(Clone)]
struct Kept(Arc<KeptInner>);

struct KeptInner {
    plan: Plan,
    weights: Weights,
    samples: Vec<Vec<BlockActs>>,
}

/// A step's kept activations go back here when its backward pass is done, for the next
/// step's forward pass to reuse (fresh ones cost page faults and zeroing: 8% of a step at
/// 28x28). A reused set's borders and slack are still zero: the kernels write only the
/// insides, and write all of them.
static RECYCLED: std::sync::Mutex<Recycled> = std::sync::Mutex::new(Recycled {
    shape: Vec::new(),
    sets: Vec::new(),
});

/// Sets of activations, and the shape of the plan they were made for (each block's
/// resolution, strides and widths: a set is reused only for exactly that shape).
struct Recycled {
    shape: Vec<[usize; 6]>,
    sets: Vec<Vec<BlockActs>>,
}

fn shape_key(plan: &Plan) -> Vec<[usize; 6]> {
    plan.blocks
        .iter()
        .map(|b| {
            [
                b.h,
                b.w,
                b.in_stride,
                b.out_stride,
                b.outputs,
                b.pool as usize,
            ]
        })
        .collect()
}

impl Drop for KeptInner {
    fn drop(&mut self) {
        if let Ok(mut pool) = RECYCLED.lock() {
            // One step's worth is kept.
            pool.shape = shape_key(&self.plan);
            pool.sets.clear();
            pool.sets.append(&mut self.samples);
        }
    }
}

/// A set of activations for `plan`: a recycled one of its shape, else a fresh one.
fn kept_acts(plan: &Plan) -> Vec<BlockActs> {
    let recycled = RECYCLED
        .lock()
        .ok()
        .and_then(|mut pool| match pool.shape == shape_key(plan) {
            true => pool.sets.pop(),
            false => None,
        });
    recycled.unwrap_or_else(|| block_acts(plan))
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kept({:?})", self.0.plan)
    }
}

impl Backward<Flex, 2> for FeaturesBackward {
    type State = Kept;

    fn backward(self, ops: Ops<Kept, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [images_node, params_node] = ops.parents;
        let grad = host(grads.consume::<Flex>(&ops.node));
        let kept = &ops.state.0;
        let (images, params) = backward(kept, &grad, images_node.is_some());
        let p = &kept.plan;
        if let Some(node) = images_node {
            grads.register::<Flex>(node.id, flex(images, [p.n, p.channels, p.h, p.w]));
        }
        if let Some(node) = params_node {
            let len = params.len();
            grads.register::<Flex>(node.id, flex(params, [len]));
        }
    }
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

/// A channel stride for `n` channels: 8 for up to 8 (the narrow lane width), else whole
/// multiples of [`LANES`], so that every lane width used on it divides it.
fn padded(n: usize) -> usize {
    if n <= 8 { 8 } else { n.div_ceil(LANES) * LANES }
}

/// One block's sizes. Buffers are channels-last with a stride of whole lane blocks; the
/// first block's input keeps the image's channel count (its values are read one at a time).
#[derive(Clone, Copy, Debug)]
struct Block {
    inputs: usize,
    in_stride: usize,
    /// The stride of the input's gradient (whole lane blocks, as it is written by lanes).
    grad_in_stride: usize,
    outputs: usize,
    out_stride: usize,
    /// The block's resolution (its input and its conv output).
    h: usize,
    w: usize,
    /// Whether a 2x2 max-pool follows (every block but the last).
    pool: bool,
}

impl Block {
    /// The zero-bordered input: (H+2) x (W+2) x in_stride, plus a tile's slack for the
    /// kernels' fixed-size reads past a row's end.
    fn input_len(&self) -> usize {
        (self.h + 2) * (self.w + 2) * self.in_stride + TILE * self.in_stride + LANES
    }
    /// The conv output after the ReLU: H x W x out_stride.
    fn output_len(&self) -> usize {
        self.h * self.w * self.out_stride
    }
    /// The zero-bordered output gradient: (H+2) x (W+2) x out_stride, plus slack.
    fn grad_len(&self) -> usize {
        (self.h + 2) * (self.w + 2) * self.out_stride + TILE * self.out_stride + LANES
    }
}

/// The whole operation's sizes.
#[derive(Clone, Debug)]
struct Plan {
    n: usize,
    channels: usize,
    h: usize,
    w: usize,
    blocks: Vec<Block>,
    /// The last block's map flattened (else averaged).
    flatten: bool,
}

impl Plan {
    fn of(images: &FlexTensor, shape: [u32; 6]) -> Plan {
        let dims = burn::backend::TensorMetadata::shape(images);
        let (n, channels, h, w) = (dims[0], dims[1], dims[2], dims[3]);
        let count = shape[0] as usize;
        let mut blocks = Vec::with_capacity(count);
        let (mut inputs, mut bh, mut bw) = (channels, h, w);
        for (b, &width) in shape[1..=count].iter().enumerate() {
            let outputs = width as usize;
            blocks.push(Block {
                inputs,
                in_stride: if b == 0 { inputs } else { padded(inputs) },
                grad_in_stride: padded(inputs),
                outputs,
                out_stride: padded(outputs),
                h: bh,
                w: bw,
                pool: b + 1 < count,
            });
            inputs = outputs;
            bh /= 2;
            bw /= 2;
        }
        Plan {
            n,
            channels,
            h,
            w,
            blocks,
            flatten: shape[5] == FeatureMap::Flatten as u32,
        }
    }

    /// Length of a feature vector: the last block's width, times its pixels when flattened.
    fn features(&self) -> usize {
        self.blocks.last().map_or(0, |b| match self.flatten {
            true => b.outputs * b.h * b.w,
            false => b.outputs,
        })
    }
}

/// One block's parameters, tap-major and channels-last: `wt[tap][in][out]` (tap = ky * 3 +
/// kx), and the transposed, flipped kernel `flipped[tap][out][in]` that carries gradients back
/// to the block's input. Padding lanes are zero.
#[derive(Clone)]
struct BlockWeights {
    wt: Vec<f32>,
    bias: Vec<f32>,
    flipped: Vec<f32>,
    zero_bias: Vec<f32>,
    /// `wt` and `flipped` transformed for Winograd's convolution ([`super::cpu_winograd`]),
    /// or empty where the direct convolution runs.
    wino: Vec<f32>,
    wino_flipped: Vec<f32>,
}

#[derive(Clone)]
struct Weights(Vec<BlockWeights>);

impl Weights {
    /// From the flat parameters: each block's weight (out, in, 3, 3), then its bias (out).
    fn new(plan: &Plan, params: &[f32]) -> Weights {
        let mut at = 0;
        let mut blocks = Vec::with_capacity(plan.blocks.len());
        for b in &plan.blocks {
            let (i_n, o_n) = (b.inputs, b.outputs);
            let weight = &params[at..at + o_n * i_n * 9];
            at += o_n * i_n * 9;
            let mut w = BlockWeights {
                wt: vec![0.0; 9 * i_n * b.out_stride],
                bias: vec![0.0; b.out_stride],
                flipped: vec![0.0; 9 * o_n * b.grad_in_stride],
                zero_bias: vec![0.0; b.grad_in_stride],
                wino: Vec::new(),
                wino_flipped: Vec::new(),
            };
            for o in 0..o_n {
                for i in 0..i_n {
                    for tap in 0..9 {
                        let v = weight[(o * i_n + i) * 9 + tap];
                        w.wt[(tap * i_n + i) * b.out_stride + o] = v;
                        w.flipped[((8 - tap) * o_n + o) * b.grad_in_stride + i] = v;
                    }
                }
            }
            w.bias[..o_n].copy_from_slice(&params[at..at + o_n]);
            at += o_n;
            if winograd::applies(b.h, b.w, i_n, b.in_stride, o_n) {
                w.wino = winograd::transform_weights(&w.wt, i_n, b.out_stride);
            }
            if winograd::applies(b.h, b.w, o_n, b.out_stride, i_n) {
                w.wino_flipped = winograd::transform_weights(&w.flipped, o_n, b.grad_in_stride);
            }
            blocks.push(w);
        }
        Weights(blocks)
    }
}

/// One block's activations of one image, kept for the backward pass.
#[derive(Clone)]
struct BlockActs {
    /// The block's input, zero-bordered (the image for the first block, the pooled map for
    /// the others).
    input: Vec<f32>,
    /// The conv output after the ReLU.
    output: Vec<f32>,
    /// For each pooled value (when a pool follows): which of the 2x2 window won (0..4,
    /// row-major), or `NONE` when it is 0 after the ReLU (no gradient flows).
    winner: Vec<u8>,
}

const NONE: u8 = u8::MAX;

fn block_acts(plan: &Plan) -> Vec<BlockActs> {
    plan.blocks
        .iter()
        .map(|b| BlockActs {
            input: vec![0.0; b.input_len()],
            output: vec![0.0; b.output_len()],
            winner: if b.pool {
                vec![NONE; (b.h / 2) * (b.w / 2) * b.outputs]
            } else {
                Vec::new()
            },
        })
        .collect()
}

/// Features (N x last width) and, when `keep`, each image's activations (otherwise each
/// worker reuses one set: the borders stay zero and the rest is overwritten per image).
fn forward(
    plan: &Plan,
    images: &[f32],
    weights: &Weights,
    keep: bool,
) -> (Vec<f32>, Vec<Vec<BlockActs>>) {
    let image_len = plan.channels * plan.h * plan.w;
    let per_image: Vec<(Vec<f32>, Option<Vec<BlockActs>>)> = images
        .par_chunks(image_len.max(1))
        .map_init(
            // A set to reuse only when nothing is kept.
            || if keep { Vec::new() } else { block_acts(plan) },
            |reused, image| {
                if keep {
                    let mut acts = kept_acts(plan);
                    let features = simd::forward_image(plan, image, weights, &mut acts);
                    (features, Some(acts))
                } else {
                    (simd::forward_image(plan, image, weights, reused), None)
                }
            },
        )
        .collect();
    let mut features = Vec::with_capacity(plan.n * plan.features());
    let mut kept = Vec::with_capacity(if keep { plan.n } else { 0 });
    for (f, acts) in per_image {
        features.extend_from_slice(&f);
        kept.extend(acts);
    }
    (features, kept)
}

/// Sums of every block's weight and bias gradients over some images, tap-major like
/// [`BlockWeights::wt`].
#[derive(Clone)]
struct GradSums(Vec<(Vec<f32>, Vec<f32>)>);

impl GradSums {
    fn zero(plan: &Plan) -> GradSums {
        GradSums(
            plan.blocks
                .iter()
                .map(|b| {
                    (
                        vec![0.0; 9 * b.inputs * b.out_stride],
                        vec![0.0; b.out_stride],
                    )
                })
                .collect(),
        )
    }

    fn add(&mut self, other: &GradSums) {
        for ((w, b), (ow, ob)) in self.0.iter_mut().zip(&other.0) {
            w.iter_mut().zip(ow).for_each(|(a, v)| *a += v);
            b.iter_mut().zip(ob).for_each(|(a, v)| *a += v);
        }
    }
}

/// Scratch buffers of one image's backward pass, reused across a chunk.
struct BackwardScratch {
    /// Each block's output gradient, zero-bordered.
    d_output: Vec<Vec<f32>>,
    /// A block's input gradient: H x W x in_stride.
    d_input: Vec<Vec<f32>>,
    /// Pixels with a non-zero output gradient.
    pixels: Vec<(u32, u32)>,
}

impl BackwardScratch {
    fn new(plan: &Plan) -> BackwardScratch {
        BackwardScratch {
            d_output: plan
                .blocks
                .iter()
                .map(|b| vec![0.0; b.grad_len()])
                .collect(),
            d_input: plan
                .blocks
                .iter()
                .map(|b| vec![0.0; b.h * b.w * b.grad_in_stride + LANES])
                .collect(),
            pixels: Vec::with_capacity(plan.h * plan.w),
        }
    }
}

/// The backward pass: `grad` is d(loss)/d(features), N x last width. Returns the images'
/// gradient (when asked) and the flat parameters' gradient, in the inputs' layouts.
fn backward(kept: &KeptInner, grad: &[f32], want_images: bool) -> (Vec<f32>, Vec<f32>) {
    let plan = &kept.plan;
    let features = plan.features();
    let image_len = plan.channels * plan.h * plan.w;
    let per_chunk: Vec<(GradSums, Vec<f32>)> = kept
        .samples
        .par_chunks(CHUNK)
        .zip(grad.par_chunks(CHUNK * features))
        // One scratch a worker (every image overwrites what it reads); sums per chunk, so
        // the chunks' order, not the workers', fixes the result.
        .map_init(
            || BackwardScratch::new(plan),
            |scratch, (samples, grad)| {
                let mut sums = GradSums::zero(plan);
                let mut images = vec![
                    0.0f32;
                    if want_images {
                        samples.len() * image_len
                    } else {
                        0
                    }
                ];
                for (i, acts) in samples.iter().enumerate() {
                    let g = &grad[i * features..(i + 1) * features];
                    let image_grad =
                        want_images.then(|| &mut images[i * image_len..(i + 1) * image_len]);
                    simd::backward_image(
                        plan,
                        acts,
                        g,
                        &kept.weights,
                        scratch,
                        &mut sums,
                        image_grad,
                    );
                }
                (sums, images)
            },
        )
        .collect();
    let mut total = GradSums::zero(plan);
    let mut images = Vec::with_capacity(if want_images { plan.n * image_len } else { 0 });
    for (sums, chunk_images) in &per_chunk {
        total.add(sums);
        images.extend_from_slice(chunk_images);
    }
    (images, flat_param_grads(plan, &total))
}

/// Gradient sums back in the flat parameters' layout: each block's weight (out, in, 3, 3),
/// then its bias.
fn flat_param_grads(plan: &Plan, total: &GradSums) -> Vec<f32> {
    let mut params = Vec::new();
    for (b, (w, bias)) in plan.blocks.iter().zip(&total.0) {
        for o in 0..b.outputs {
            for i in 0..b.inputs {
                for tap in 0..9 {
                    params.push(w[(tap * b.inputs + i) * b.out_stride + o]);
                }
            }
        }
        params.extend_from_slice(&bias[..b.outputs]);
    }
    params
}

/// The per-image kernels, compiled once per vector instruction set and picked at run time.
mod simd {
    // InstructionSet is named by the AVX-512/AVX2 variants only (x86_64).
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
    use super::{
        BackwardScratch, Block, BlockActs, GradSums, InstructionSet, K_BLOCK, NONE, Plan, Weights,
        winograd,
    };
    use winograd::by_run;

    /// Defines `pub(super) fn $name` that runs `$body` compiled for AVX-512, for AVX2 or for
    /// neither, whichever the CPU has (or the tests force). The bodies are
    /// `#[inline(always)]`, so each variant is a full copy of the kernel for its set.
    /// Lanes of an accumulator: a 512-bit register's 16 floats with AVX-512, 8 otherwise.
    /// The width changes which outputs are computed together, never the order in which one
    /// output's terms are added.
    pub(super) const WIDE: usize = 16;
    pub(super) const NARROW: usize = 8;

    macro_rules! per_instruction_set {
        ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $body:ident) => {
            $(#[$doc])*
            pub(super) fn $name($($arg: $ty),*) $(-> $ret)? {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f,avx2")]
                    unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                        $body::<WIDE>($($arg),*)
                    }
                    #[target_feature(enable = "avx2")]
                    unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                        $body::<NARROW>($($arg),*)
                    }
                    match InstructionSet::detect() {
                        // SAFETY: the CPU has AVX-512F.
                        InstructionSet::Avx512 => return unsafe { avx512($($arg),*) },
                        // SAFETY: the CPU has AVX2.
                        InstructionSet::Avx2 => return unsafe { avx2($($arg),*) },
                        InstructionSet::Portable => {}
                    }
                }
                $body::<NARROW>($($arg),*)
            }
        };
    }
    pub(super) use per_instruction_set;

    /// `f::<NARROW>(args)` for a layer of `channels` at most [`NARROW`] (wider lanes would
    /// half idle), else `f::<L>(args)`: one place that picks a layer's lane count.
    macro_rules! by_lanes {
        ($channels:expr, $f:ident::<$l:ident>($($arg:expr),* $(,)?)) => {
            if $channels <= NARROW {
                $f::<NARROW>($($arg),*)
            } else {
                $f::<$l>($($arg),*)
            }
        };
    }
    pub(super) use by_lanes;

    per_instruction_set! {
        /// One image forward; returns its features.
        fn forward_image(
            plan: &Plan,
            image: &[f32],
            w: &Weights,
            acts: &mut [BlockActs]
        ) -> Vec<f32> = forward_body
    }

    per_instruction_set! {
        /// One image backward: adds its weight gradients to `sums` and, when asked, writes
        /// the gradient of its pixels (channel-major, as the image).
        fn backward_image(
            plan: &Plan,
            acts: &[BlockActs],
            grad: &[f32],
            w: &Weights,
            scratch: &mut BackwardScratch,
            sums: &mut GradSums,
            image_grad: Option<&mut [f32]>
        ) = backward_body
    }

    #[inline(always)]
    fn forward_body<const L: usize>(
        plan: &Plan,
        image: &[f32],
        w: &Weights,
        acts: &mut [BlockActs],
    ) -> Vec<f32> {
        load_image(plan, image, &mut acts[0].input);
        for (b, block) in plan.blocks.iter().enumerate() {
            let (this, rest) = acts.split_at_mut(b + 1);
            let act = &mut this[b];
            block_conv::<L>(block, &w.0[b], act);
            for v in act.output.iter_mut() {
                *v = v.max(0.0);
            }
            if block.pool {
                let next = rest_stride(plan, b);
                by_lanes!(
                    block.outputs,
                    pool::<L>(
                        block,
                        &act.output,
                        &mut act.winner,
                        &mut rest[0].input,
                        next
                    )
                );
            }
        }
        let last = plan.blocks.last().expect("one block at least");
        let output = &acts[plan.blocks.len() - 1].output;
        if plan.flatten {
            // Channel-major, as burn's flatten of (C, H, W).
            let pixels = last.h * last.w;
            let mut features = vec![0.0f32; last.outputs * pixels];
            for (p, pixel) in output.chunks_exact(last.out_stride).enumerate() {
                for (c, v) in pixel[..last.outputs].iter().enumerate() {
                    features[c * pixels + p] = *v;
                }
            }
            return features;
        }
        // Global average pool of the last block.
        let mut sum = vec![0.0f32; last.outputs];
        for pixel in output.chunks_exact(last.out_stride) {
            for (s, v) in sum.iter_mut().zip(pixel) {
                *s += v;
            }
        }
        let count = (last.h * last.w) as f32;
        sum.iter().map(|s| s / count).collect()
    }

    /// A block's convolution of one image: its input into its `output` (before the ReLU).
    #[inline(always)]
    pub(super) fn block_conv<const L: usize>(
        block: &Block,
        w: &super::BlockWeights,
        act: &mut BlockActs,
    ) {
        by_lanes!(
            block.outputs,
            convolve::<L>(
                &act.input,
                block.in_stride,
                block.inputs,
                block,
                [&w.wt, &w.wino],
                &w.bias,
                block.out_stride,
                &mut act.output,
            )
        );
    }

    /// The image, channel-major, into the first block's bordered channels-last `input`.
    #[inline(always)]
    pub(super) fn load_image(plan: &Plan, image: &[f32], input: &mut [f32]) {
        let stride = plan.blocks[0].in_stride;
        let plane = plan.h * plan.w;
        for c in 0..plan.channels {
            for y in 0..plan.h {
                for x in 0..plan.w {
                    input[((y + 1) * (plan.w + 2) + x + 1) * stride + c] =
                        image[c * plane + y * plan.w + x];
                }
            }
        }
    }

    /// The next block's input stride after block `b`.
    fn rest_stride(plan: &Plan, b: usize) -> usize {
        plan.blocks[b + 1].in_stride
    }

    /// 2x2 max-pool (floor) of `output` into the next block's bordered input: the first
    /// maximum of each window wins, as burn's.
    #[inline(always)]
    pub(super) fn pool<const L: usize>(
        block: &Block,
        output: &[f32],
        winner: &mut [u8],
        next: &mut [f32],
        next_stride: usize,
    ) {
        let (ph, pw) = (block.h / 2, block.w / 2);
        for y in 0..ph {
            for x in 0..pw {
                let at =
                    |dy: usize, dx: usize| ((2 * y + dy) * block.w + 2 * x + dx) * block.out_stride;
                let corners = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)];
                let to = ((y + 1) * (pw + 2) + x + 1) * next_stride;
                // A lane block of channels at a time (padding lanes are 0 and stay so).
                for cb in (0..block.outputs).step_by(L) {
                    let mut best = lanes::<L>(&output[corners[0] + cb..]);
                    let mut won = [0u8; L];
                    for (k, &p) in corners.iter().enumerate().skip(1) {
                        let v = lanes::<L>(&output[p + cb..]);
                        for l in 0..L {
                            let better = v[l] > best[l];
                            best[l] = if better { v[l] } else { best[l] };
                            won[l] = if better { k as u8 } else { won[l] };
                        }
                    }
                    let n = L.min(block.outputs - cb);
                    next[to + cb..to + cb + L].copy_from_slice(&best);
                    let at = (y * pw + x) * block.outputs + cb;
                    for l in 0..n {
                        winner[at + l] = if best[l] > 0.0 { won[l] } else { NONE };
                    }
                }
            }
        }
    }

    #[inline(always)]
    fn backward_body<const L: usize>(
        plan: &Plan,
        acts: &[BlockActs],
        grad: &[f32],
        w: &Weights,
        s: &mut BackwardScratch,
        sums: &mut GradSums,
        image_grad: Option<&mut [f32]>,
    ) {
        let blocks = plan.blocks.len();
        // Through the average pool (or the flatten) and the last block's ReLU.
        features_grad(
            &plan.blocks[blocks - 1],
            plan.flatten,
            &acts[blocks - 1].output,
            grad,
            &mut s.d_output[blocks - 1],
        );
        let mut image_grad = image_grad;
        for b in (0..blocks).rev() {
            let block = &plan.blocks[b];
            // The block's weights and bias, over the pixels with a gradient.
            nonzero_pixels(&s.d_output[b], block, &mut s.pixels);
            let (dw, db) = &mut sums.0[b];
            let (input, d) = (&acts[b].input, &s.d_output[b]);
            by_lanes!(
                block.outputs,
                weight_grad::<L>(input, d, block, &w.0[b], &s.pixels, [dw, db])
            );
            if b == 0 && image_grad.is_none() {
                break;
            }
            input_grad::<L>(block, &s.d_output[b], &w.0[b], &mut s.d_input[b]);
            if b == 0 {
                if let Some(image) = image_grad.take() {
                    image_grad_of(plan, &s.d_input[0], image);
                }
                break;
            }
            // Through the previous block's max-pool (to the winners) and ReLU (winners are
            // positive).
            let (before, _) = s.d_output.split_at_mut(b);
            unpool(
                &plan.blocks[b - 1],
                block,
                &acts[b - 1].winner,
                &s.d_input[b],
                &mut before[b - 1],
            );
        }
    }

    /// A block's input gradient (`d_input`, H x W x grad_in_stride): the transposed, flipped
    /// convolution of its bordered output gradient `d_output`.
    #[inline(always)]
    pub(super) fn input_grad<const L: usize>(
        block: &Block,
        d_output: &[f32],
        w: &super::BlockWeights,
        d_input: &mut [f32],
    ) {
        let flipped = Block {
            inputs: block.outputs,
            in_stride: block.out_stride,
            outputs: block.inputs,
            out_stride: block.grad_in_stride,
            ..*block
        };
        by_lanes!(
            block.inputs,
            convolve::<L>(
                d_output,
                block.out_stride,
                block.outputs,
                &flipped,
                [&w.flipped, &w.wino_flipped],
                &w.zero_bias,
                block.grad_in_stride,
                d_input,
            )
        );
    }

    /// The image's gradient (channel-major) from the first block's input gradient.
    pub(super) fn image_grad_of(plan: &Plan, d_input: &[f32], image: &mut [f32]) {
        let stride = plan.blocks[0].grad_in_stride;
        let plane = plan.h * plan.w;
        for c in 0..plan.channels {
            for p in 0..plane {
                image[c * plane + p] = d_input[p * stride + c];
            }
        }
    }

    /// The gradient of the last block's ReLU output from the features' (`grad`), through the
    /// global average pool or the flatten, into the bordered `d`: a run of [`PIXEL_RUN`]
    /// pixels at a time, so that the channel-major gradient is read a row at a time (read
    /// value by value across channels, it missed the first-level cache). Every inside value
    /// is written, padding lanes included; the border stays zero.
    #[inline(always)]
    fn features_grad(last: &Block, flatten: bool, output: &[f32], grad: &[f32], d: &mut [f32]) {
        let (pixels, s) = (last.h * last.w, last.out_stride);
        let count = pixels as f32;
        let to = |p: usize| ((p / last.w + 1) * (last.w + 2) + p % last.w + 1) * s;
        for p0 in (0..pixels).step_by(PIXEL_RUN) {
            let run = PIXEL_RUN.min(pixels - p0);
            let at: [usize; PIXEL_RUN] = std::array::from_fn(|j| to(p0 + j.min(run - 1)));
            for c in 0..last.outputs {
                for j in 0..run {
                    d[at[j] + c] = match flatten {
                        true => grad[c * pixels + p0 + j],
                        false => grad[c] / count,
                    };
                }
            }
            // Through the ReLU (padding lanes of the output are 0, so they get 0).
            for p in p0..p0 + run {
                let (d, out) = (&mut d[to(p)..to(p) + s], &output[p * s..(p + 1) * s]);
                for (d, out) in d.iter_mut().zip(out) {
                    *d = if *out > 0.0 { *d } else { 0.0 };
                }
            }
        }
    }

    /// Pixels [`features_grad`] moves at a time.
    const PIXEL_RUN: usize = 16;

    /// Routes the gradient of `block`'s input (the pooled map, `d_input`) to the winners of
    /// the previous block's max-pool, into that block's bordered output gradient `d_prev`:
    /// every lane of a window's four pixels is written (the winner's gradient or 0, without
    /// a branch per value); the inside is cleared first only where the pool leaves a row
    /// or column out (odd sides). The border stays zero.
    #[inline(always)]
    pub(super) fn unpool(
        prev: &Block,
        block: &Block,
        winner: &[u8],
        d_input: &[f32],
        d_prev: &mut [f32],
    ) {
        if prev.h % 2 == 1 || prev.w % 2 == 1 {
            d_prev.fill(0.0);
        }
        let (ph, pw, s, n) = (prev.h / 2, prev.w / 2, prev.out_stride, prev.outputs);
        for y in 0..ph {
            for x in 0..pw {
                let won = &winner[(y * pw + x) * n..][..n];
                let from = &d_input[(y * pw + x) * block.grad_in_stride..][..n];
                for k in 0..4u8 {
                    let (dy, dx) = ((k >> 1) as usize, (k & 1) as usize);
                    let p = (2 * y + dy + 1) * (prev.w + 2) + 2 * x + dx + 1;
                    let to = &mut d_prev[p * s..(p + 1) * s];
                    for ((to, won), from) in to.iter_mut().zip(won).zip(from) {
                        *to = if *won == k { *from } else { 0.0 };
                    }
                    to[n..].fill(0.0);
                }
            }
        }
    }

    /// The pixels of a bordered gradient whose lane blocks are not all zero.
    #[inline(always)]
    pub(super) fn nonzero_pixels(d: &[f32], block: &Block, pixels: &mut Vec<(u32, u32)>) {
        pixels.clear();
        for y in 0..block.h {
            for x in 0..block.w {
                let at = ((y + 1) * (block.w + 2) + x + 1) * block.out_stride;
                // Any value but +0 and -0, without a branch per value.
                let bits = d[at..at + block.out_stride]
                    .iter()
                    .fold(0u32, |a, v| a | (v.to_bits() & 0x7fff_ffff));
                if bits != 0 {
                    pixels.push((y as u32, x as u32));
                }
            }
        }
    }

    /// `dw[tap][i][o] += sum over pixels of input[p + tap][i] * d[p][o]` and `db[o] += sum
    /// d[p][o]`: by Winograd's transforms where `w` has them ([`winograd::weight_grad`]),
    /// else directly ([`direct_weight_grad`]).
    #[inline(always)]
    pub(super) fn weight_grad<const L: usize>(
        input: &[f32],
        d: &[f32],
        block: &Block,
        w: &super::BlockWeights,
        pixels: &[(u32, u32)],
        [dw, db]: [&mut [f32]; 2],
    ) {
        bias_grad::<L>(d, block, pixels, db);
        if w.wino.is_empty() {
            direct_weight_grad::<L>(input, d, block, pixels, dw);
        } else {
            let geo = winograd::Conv {
                h: block.h,
                w: block.w,
                inputs: block.inputs,
                in_stride: block.in_stride,
                out_stride: block.out_stride,
            };
            winograd::weight_grad::<L>(input, d, &geo, dw);
        }
    }

    /// `db[o] += sum d[p][o]` over the pixels, in order.
    #[inline(always)]
    fn bias_grad<const L: usize>(d: &[f32], block: &Block, pixels: &[(u32, u32)], db: &mut [f32]) {
        let row_d = (block.w + 2) * block.out_stride;
        for ob in (0..block.out_stride).step_by(L) {
            let mut bias = [0.0f32; L];
            for &(y, x) in pixels {
                let g = lanes::<L>(
                    &d[(y as usize + 1) * row_d + (x as usize + 1) * block.out_stride + ob..],
                );
                for l in 0..L {
                    bias[l] += g[l];
                }
            }
            for l in 0..L {
                db[ob + l] += bias[l];
            }
        }
    }

    /// The weights' part of [`weight_grad`], pixels in order: a matrix product (pairs x
    /// pixels by pixels x outputs) whose tiles of [`K_BLOCK`] (tap, input) pairs by up to
    /// [`wide_blocks`] lane blocks of outputs stay in registers while the pixels stream past.
    #[inline(always)]
    fn direct_weight_grad<const L: usize>(
        input: &[f32],
        d: &[f32],
        block: &Block,
        pixels: &[(u32, u32)],
        dw: &mut [f32],
    ) {
        let row_in = (block.w + 2) * block.in_stride;
        let row_d = (block.w + 2) * block.out_stride;
        // Where pair k = tap * inputs + i reads, relative to the pixel's window corner (the
        // pairs past the last read the last one's place; their sums are dropped).
        let pairs = 9 * block.inputs;
        let offset: Vec<usize> = (0..pairs.next_multiple_of(K_BLOCK))
            .map(|k| {
                let (tap, i) = (
                    (k.min(pairs - 1) / block.inputs),
                    k.min(pairs - 1) % block.inputs,
                );
                (tap / 3) * row_in + (tap % 3) * block.in_stride + i
            })
            .collect();
        let Some(&(ly, lx)) = pixels.last() else {
            return;
        };
        // Every read below is inside these bounds (pixels are in order), checked once here.
        let last_in =
            ly as usize * row_in + lx as usize * block.in_stride + offset[offset.len() - 1];
        let last_d = (ly as usize + 1) * row_d + (lx as usize + 2) * block.out_stride;
        assert!(last_in < input.len() && last_d <= d.len() && pairs * block.out_stride <= dw.len());
        let geo = PairGeometry {
            row_in,
            row_d,
            in_stride: block.in_stride,
            out_stride: block.out_stride,
            pairs,
        };
        let mut ob = 0;
        while ob < block.out_stride {
            let left = (block.out_stride - ob) / L;
            if left >= wide_blocks::<L>() && wide_blocks::<L>() == 4 {
                pair_tiles::<L, 4>(input, d, &geo, pixels, &offset, ob, dw);
                ob += 4 * L;
            } else if left >= 2 {
                pair_tiles::<L, 2>(input, d, &geo, pixels, &offset, ob, dw);
                ob += 2 * L;
            } else {
                pair_tiles::<L, 1>(input, d, &geo, pixels, &offset, ob, dw);
                ob += L;
            }
        }
    }

    /// Lane blocks of outputs a weight-gradient tile holds: with [`K_BLOCK`] pairs, 24 of
    /// AVX-512's 32 registers hold sums, 12 of AVX2's 16.
    const fn wide_blocks<const L: usize>() -> usize {
        if L == WIDE { 4 } else { 2 }
    }

    /// The sizes [`pair_tiles`] shares.
    struct PairGeometry {
        row_in: usize,
        row_d: usize,
        in_stride: usize,
        out_stride: usize,
        pairs: usize,
    }

    /// The weight gradients of every pair for `G` lane blocks of outputs from `ob`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn pair_tiles<const L: usize, const G: usize>(
        input: &[f32],
        d: &[f32],
        geo: &PairGeometry,
        pixels: &[(u32, u32)],
        offset: &[usize],
        ob: usize,
        dw: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if L == WIDE {
            // SAFETY: WIDE lanes run only in the AVX-512 variant (`per_instruction_set!`);
            // reads are within the bounds the caller checked, writes within `dw` (checked).
            unsafe { x86::pair_tiles512::<G>(input, d, geo, pixels, offset, ob, dw) };
            return;
        }
        for kb in (0..geo.pairs).step_by(K_BLOCK) {
            let offsets: [usize; K_BLOCK] = std::array::from_fn(|k| offset[kb + k]);
            let mut acc = [[[0.0f32; L]; G]; K_BLOCK];
            for &(y, x) in pixels {
                let (y, x) = (y as usize, x as usize);
                let at = (y + 1) * geo.row_d + (x + 1) * geo.out_stride + ob;
                let mut g = [[0.0f32; L]; G];
                for (j, g) in g.iter_mut().enumerate() {
                    // SAFETY: within last_d, checked by the caller.
                    *g = unsafe { lanes_at::<L>(d, at + j * L) };
                }
                let corner = y * geo.row_in + x * geo.in_stride;
                for k in 0..K_BLOCK {
                    // SAFETY: within last_in, checked by the caller.
                    let v = unsafe { *input.get_unchecked(corner + offsets[k]) };
                    for (acc, g) in acc[k].iter_mut().zip(&g) {
                        for l in 0..L {
                            acc[l] += v * g[l];
                        }
                    }
                }
            }
            for k in 0..K_BLOCK.min(geo.pairs - kb) {
                for (j, acc) in acc[k].iter().enumerate() {
                    let to = &mut dw[(kb + k) * geo.out_stride + ob + j * L..][..L];
                    for l in 0..L {
                        to[l] += acc[l];
                    }
                }
            }
        }
    }

    /// A lane block of values.
    #[inline(always)]
    fn lanes<const L: usize>(values: &[f32]) -> [f32; L] {
        let mut out = [0.0; L];
        out.copy_from_slice(&values[..L]);
        out
    }

    /// [`conv3x3`], or Winograd's convolution where `kernels[1]` (the transformed kernels of
    /// `kernels[0]`) is not empty.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn convolve<const L: usize>(
        input: &[f32],
        in_stride: usize,
        inputs: usize,
        block: &Block,
        kernels: [&[f32]; 2],
        bias: &[f32],
        out_stride: usize,
        out: &mut [f32],
    ) {
        if kernels[1].is_empty() {
            let wt = kernels[0];
            conv3x3::<L>(input, in_stride, inputs, block, wt, bias, out_stride, out);
        } else {
            let geo = winograd::Conv {
                h: block.h,
                w: block.w,
                inputs,
                in_stride,
                out_stride,
            };
            winograd::conv::<L>(input, &geo, kernels[1], bias, out);
        }
    }

    /// A 3x3 convolution, stride 1, over a bordered channels-last input:
    /// `out[y][x][o] = bias[o] + sum over taps and i of input[y+ky][x+kx][i] * wt[tap][i][o]`
    /// for the block's H x W, each value summed in that order. A run of up to
    /// [`run_max`] output pixels of a row and up to two lane blocks of outputs stay in
    /// registers while the taps and inputs stream past: each weight vector read serves the
    /// whole run, each input value read serves both lane blocks.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn conv3x3<const L: usize>(
        input: &[f32],
        in_stride: usize,
        inputs: usize,
        block: &Block,
        wt: &[f32],
        bias: &[f32],
        out_stride: usize,
        out: &mut [f32],
    ) {
        let geometry = Geometry {
            in_stride,
            inputs,
            row: (block.w + 2) * in_stride,
            w: block.w,
            out_stride,
        };
        // The row in runs as even as possible of at most run_max pixels.
        let runs = block.w.div_ceil(run_max::<L>());
        for y in 0..block.h {
            let mut x = 0;
            for r in 0..runs {
                let t = (block.w - x) / (runs - r);
                let mut ob = 0;
                while ob < out_stride {
                    if out_stride - ob >= 2 * L {
                        by_run!(t, tile::<L, 2>(input, &geometry, y, x, ob, wt, bias, out));
                        ob += 2 * L;
                    } else {
                        by_run!(t, tile::<L, 1>(input, &geometry, y, x, ob, wt, bias, out));
                        ob += L;
                    }
                }
                x += t;
            }
        }
    }

    /// The most output pixels a run of [`conv3x3`] keeps in registers with `L` lanes: with
    /// two lane blocks, 28 of AVX-512's 32 registers hold sums; 12 of AVX2's 16.
    const fn run_max<const L: usize>() -> usize {
        if L == WIDE { 14 } else { 6 }
    }

    /// The sizes a convolution's tiles share.
    struct Geometry {
        in_stride: usize,
        inputs: usize,
        /// Values in a bordered input row.
        row: usize,
        /// Output pixels in a row.
        w: usize,
        out_stride: usize,
    }

    /// `T` output pixels from (y, x) and `G` lane blocks of outputs from `ob`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn tile<const L: usize, const G: usize, const T: usize>(
        input: &[f32],
        geo: &Geometry,
        y: usize,
        x: usize,
        ob: usize,
        wt: &[f32],
        bias: &[f32],
        out: &mut [f32],
    ) {
        let (in_stride, inputs, out_stride) = (geo.in_stride, geo.inputs, geo.out_stride);
        let mut acc = [[[0.0f32; L]; G]; T];
        for acc in acc.iter_mut() {
            for (g, acc) in acc.iter_mut().enumerate() {
                *acc = lanes::<L>(&bias[ob + g * L..]);
            }
        }
        // Every read below is inside these bounds, checked once here.
        let last_in = (y + 2) * geo.row + (x + 2 + T - 1) * in_stride + inputs;
        let last_w = (8 * inputs + inputs - 1) * out_stride + ob + G * L;
        assert!(inputs > 0 && last_in <= input.len() && last_w <= wt.len());
        let last_out = (y * geo.w + x + T - 1) * out_stride + ob + G * L;
        assert!(last_out <= out.len() && ob + G * L <= bias.len());
        #[cfg(target_arch = "x86_64")]
        if L == WIDE {
            // SAFETY: WIDE lanes run only in the AVX-512 variant (`per_instruction_set!`);
            // every access is within the bounds checked above.
            unsafe { x86::tile512::<G, T>(input, geo, y, x, ob, wt, bias, out) };
            return;
        }
        for ky in 0..3 {
            for kx in 0..3 {
                let base = (y + ky) * geo.row + (x + kx) * in_stride;
                let tap = (ky * 3 + kx) * inputs * out_stride + ob;
                for i in 0..inputs {
                    let mut wv = [[0.0f32; L]; G];
                    for (g, wv) in wv.iter_mut().enumerate() {
                        // SAFETY: within last_w, checked above.
                        *wv = unsafe { lanes_at::<L>(wt, tap + i * out_stride + g * L) };
                    }
                    for (t, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: within last_in, checked above.
                        let v = unsafe { *input.get_unchecked(base + t * in_stride + i) };
                        for (acc, wv) in acc.iter_mut().zip(&wv) {
                            for l in 0..L {
                                acc[l] += v * wv[l];
                            }
                        }
                    }
                }
            }
        }
        for (t, acc) in acc.iter().enumerate() {
            let at = (y * geo.w + x + t) * out_stride + ob;
            for (g, acc) in acc.iter().enumerate() {
                out[at + g * L..][..L].copy_from_slice(acc);
            }
        }
    }

    /// A lane block of values from `at`, unchecked.
    ///
    /// # Safety
    /// `at + L` is at most `values.len()`.
    #[inline(always)]
    unsafe fn lanes_at<const L: usize>(values: &[f32], at: usize) -> [f32; L] {
        debug_assert!(at + L <= values.len());
        // SAFETY: the caller's bound; [f32; L] has f32's alignment.
        unsafe { std::ptr::read_unaligned(values.as_ptr().add(at) as *const [f32; L]) }
    }

    /// The AVX-512 tiles, written with intrinsics: left to itself, the compiler vectorizes
    /// some of the generic tiles across pixels (gathers) instead of lanes. The same
    /// arithmetic as the generic tiles: a product rounded, then added (no FMA), in the same
    /// order, so every instruction set gives the same bits.
    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use std::arch::x86_64::*;

        use super::{Geometry, K_BLOCK, PairGeometry};

        /// [`super::tile`] with 16 lanes.
        ///
        /// # Safety
        /// The CPU has AVX-512F; the reads and writes of [`super::tile`] are in bounds.
        #[target_feature(enable = "avx512f")]
        #[inline]
        #[allow(clippy::too_many_arguments)]
        pub(super) unsafe fn tile512<const G: usize, const T: usize>(
            input: &[f32],
            geo: &Geometry,
            y: usize,
            x: usize,
            ob: usize,
            wt: &[f32],
            bias: &[f32],
            out: &mut [f32],
        ) {
            let (in_stride, inputs, out_stride) = (geo.in_stride, geo.inputs, geo.out_stride);
            let (ip, wp) = (input.as_ptr(), wt.as_ptr());
            // SAFETY (every pointer below): within the caller's bounds.
            unsafe {
                let mut acc = [[_mm512_setzero_ps(); G]; T];
                for acc in acc.iter_mut() {
                    for (g, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm512_loadu_ps(bias.as_ptr().add(ob + g * 16));
                    }
                }
                for ky in 0..3 {
                    for kx in 0..3 {
                        let base = (y + ky) * geo.row + (x + kx) * in_stride;
                        let tap = (ky * 3 + kx) * inputs * out_stride + ob;
                        for i in 0..inputs {
                            let mut wv = [_mm512_setzero_ps(); G];
                            for (g, wv) in wv.iter_mut().enumerate() {
                                *wv = _mm512_loadu_ps(wp.add(tap + i * out_stride + g * 16));
                            }
                            for (t, acc) in acc.iter_mut().enumerate() {
                                let v = _mm512_set1_ps(*ip.add(base + t * in_stride + i));
                                for (acc, wv) in acc.iter_mut().zip(&wv) {
                                    *acc = _mm512_add_ps(*acc, _mm512_mul_ps(v, *wv));
                                }
                            }
                        }
                    }
                }
                for (t, acc) in acc.iter().enumerate() {
                    let at = (y * geo.w + x + t) * out_stride + ob;
                    for (g, acc) in acc.iter().enumerate() {
                        _mm512_storeu_ps(out.as_mut_ptr().add(at + g * 16), *acc);
                    }
                }
            }
        }

        /// [`super::pair_tiles`] with 16 lanes.
        ///
        /// # Safety
        /// The CPU has AVX-512F; the reads of [`super::pair_tiles`] are in bounds.
        #[target_feature(enable = "avx512f")]
        #[inline]
        pub(super) unsafe fn pair_tiles512<const G: usize>(
            input: &[f32],
            d: &[f32],
            geo: &PairGeometry,
            pixels: &[(u32, u32)],
            offset: &[usize],
            ob: usize,
            dw: &mut [f32],
        ) {
            let (ip, dp) = (input.as_ptr(), d.as_ptr());
            for kb in (0..geo.pairs).step_by(K_BLOCK) {
                let offsets: [usize; K_BLOCK] = std::array::from_fn(|k| offset[kb + k]);
                let mut acc = [[_mm512_setzero_ps(); G]; K_BLOCK];
                // SAFETY (every pointer below): within the caller's bounds.
                unsafe {
                    for &(y, x) in pixels {
                        let (y, x) = (y as usize, x as usize);
                        let at = (y + 1) * geo.row_d + (x + 1) * geo.out_stride + ob;
                        let mut g = [_mm512_setzero_ps(); G];
                        for (j, g) in g.iter_mut().enumerate() {
                            *g = _mm512_loadu_ps(dp.add(at + j * 16));
                        }
                        let corner = y * geo.row_in + x * geo.in_stride;
                        for k in 0..K_BLOCK {
                            let v = _mm512_set1_ps(*ip.add(corner + offsets[k]));
                            for (acc, g) in acc[k].iter_mut().zip(&g) {
                                *acc = _mm512_add_ps(*acc, _mm512_mul_ps(v, *g));
                            }
                        }
                    }
                }
                for k in 0..K_BLOCK.min(geo.pairs - kb) {
                    for (j, acc) in acc[k].iter().enumerate() {
                        let to = &mut dw[(kb + k) * geo.out_stride + ob + j * 16..][..16];
                        // SAFETY: `to` holds 16 values.
                        unsafe {
                            let sum = _mm512_add_ps(_mm512_loadu_ps(to.as_ptr()), *acc);
                            _mm512_storeu_ps(to.as_mut_ptr(), sum);
                        }
                    }
                }
            }
        }
    }
}
