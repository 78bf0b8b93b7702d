//! Both models' training step on wgpu in two kernel launches, through burn's backend
//! extension API:
//!
//! - `shaders/cnn_sample.wgsl` (the CNN family: any channel count, any widths of 1 to 4
//!   blocks) or `shaders/baseline_sample.wgsl`: a workgroup per sample (up to 512, each then
//!   taking every 512th sample) runs the forward pass, the cross-entropy and the backward
//!   pass, and sums its samples' gradients of every parameter;
//! - `shaders/train_update.wgsl`: one workgroup sums those rows, takes the global norm, clips
//!   and applies Adam to all parameters at once.
//!
//! With `--batch-norm` a training step's sample kernel is one workgroup over the whole batch
//! (the batch's statistics are needed between its phases; [`whole_batch`]); the norms'
//! parameters and running statistics are in the flat state, which the update kernel trains,
//! freezes (conv biases before a norm) or copies (running statistics) range by range.
//!
//! The model and Adam's moments live in one flat state tensor
//! `[parameters | first moments | second moments | diverged flag]` (the parameters in the
//! layout of the model layer's `flat.rs`); each step returns the next state and four numbers
//! (mean loss, correct count, gradient norm, flag) that stay on the device until the epoch
//! is read. The same sample kernels give evaluation's logits and per-sample losses (modes 0
//! and 1), so a wgpu run launches no operation that cubecl autotunes.
//!
//! Where every value of a launch sits (each block's sizes, its scratch buffers, its
//! parameters) is computed here once ([`Layout`]) and handed to the shader in its uniform.
//!
//! The layer path stays the reference: tests/gpu_kernels.rs compares logits, every gradient
//! and a whole step with it on several shapes. `--no-gpu-kernels` turns these kernels off.

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::cubecl::CubeCount;
use burn::cubecl::server::{Handle, KernelArguments};
use burn::prelude::*;
use burn::tensor::{DType, Shape};

mod laps;

pub use laps::{SOFTWARE_LOOP_BUDGET, SOFTWARE_LOOP_CAP};

use super::gpu_head::{self, HeadLayout, KernelHead};
use super::gpu_kernels::{WORKGROUP, kernel, kernel_sized, uniform};
use crate::model::norm::{BATCH_NORM_EPSILON, BATCH_NORM_MOMENTUM};
use crate::recipe::Optimizer;

/// The most classes the kernels handle (their workgroup arrays); more take the layer path.
pub const MAX_CLASSES: usize = 256;
/// The widest CNN block the kernel takes (its workgroup arrays of features).
pub const MAX_WIDTH: usize = 128;
/// The most CNN blocks (the uniform's array of blocks).
pub const MAX_BLOCKS: usize = 4;
/// Invocations per sample.
const SAMPLE_WORKGROUP: u32 = 64;
/// The fewest subgroup lanes the CNN family's kernel works with: its lanes 0 .. 7 each load
/// one channel's shared operand and broadcast it (shaders/cnn_sample.wgsl, "Lanes").
const SUBGROUP_LANES: u32 = 8;
/// Most workgroups of a sample kernel: each takes every G-th sample and keeps one row of
/// gradients and one sample's scratch, so the update kernel sums at most this many rows and
/// memory stops growing with the batch past it. 512 fills a large GPU several times over.
const MAX_SLOTS: usize = 512;
/// Most workgroups a dispatch may have along one dimension.
const MAX_GROUPS: usize = 65_535;

/// How many numbers [`Model::arch`] gives: kind, blocks, four widths, then the head (flatten,
/// hidden units, dropout's f32 bits), then batch norm (0 or 1).
pub const ARCH: usize = 10;

/// The extension: the models' kernels. `arch` is a [`Model`] as numbers (see
/// [`Model::arch`]).
#[backend_extension(Cube, Fusion)]
pub trait TrainKernels: Backend {
    /// Logits (N, classes) of images (N, C, H, W) under the flat parameters `params` (the
    /// state's first P values are enough).
    #[fusion(meta = |images: &TensorSpec, _params: &TensorSpec, classes: &u32, _arch: &[u32; ARCH]|
        TensorSpec::new(Shape::new([images.shape[0], *classes as usize]), images.dtype))]
    fn model_logits(
        images: FloatTensor<Self>,
        params: FloatTensor<Self>,
        classes: u32,
        arch: [u32; ARCH],
    ) -> FloatTensor<Self>;

    /// (logits (N, classes), per-sample [loss, correct] (N, 2)) of images and labels.
    #[fusion(meta = |images: &TensorSpec, _labels: &TensorSpec, _params: &TensorSpec, classes: &u32, _arch: &[u32; ARCH]| (
        TensorSpec::new(Shape::new([images.shape[0], *classes as usize]), images.dtype),
        TensorSpec::new(Shape::new([images.shape[0], 2]), images.dtype),
    ))]
    fn model_eval(
        images: FloatTensor<Self>,
        labels: IntTensor<Self>,
        params: FloatTensor<Self>,
        classes: u32,
        arch: [u32; ARCH],
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// One training step on images (N, C, H, W) and labels (N): (next state, stats (4)).
    /// `hyper` holds lr, Adam's two bias corrections and the norms (see the update shader),
    /// passed in a small storage buffer; `keys` are the keys of the head's two dropout masks
    /// ([`super::gpu_head`]); with `gradients_only`, the next state's first P values are the
    /// summed gradients instead.
    #[fusion(meta = |_images: &TensorSpec, _labels: &TensorSpec, state: &TensorSpec, _hyper: &[f32; HYPER], _classes: &u32, _arch: &[u32; ARCH], _keys: &[u32; 2], _gradients_only: &bool| (
        state.clone(),
        TensorSpec::new(Shape::new([4]), state.dtype),
    ))]
    fn model_step(
        images: FloatTensor<Self>,
        labels: IntTensor<Self>,
        state: FloatTensor<Self>,
        hyper: [f32; HYPER],
        classes: u32,
        arch: [u32; ARCH],
        keys: [u32; 2],
        gradients_only: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// Whether the kernels take `model` with `classes` classes on `channels` x `size` x `size`
/// images, or why not: at most [`MAX_CLASSES`] classes, CNN blocks at most [`MAX_WIDTH`]
/// wide, subgroups of at least [`SUBGROUP_LANES`] lanes for the CNN family's kernel, and one
/// sample's scratch within the adapter's largest binding.
pub fn supports(model: Model, channels: usize, size: usize, classes: usize) -> Result<(), String> {
    if !(1..=MAX_CLASSES).contains(&classes) {
        return Err(format!(
            "the wgpu kernels take at most {MAX_CLASSES} classes, this data has {classes}"
        ));
    }
    if let Model::Cnn(widths, _) = model
        && widths.get().iter().any(|w| *w > MAX_WIDTH)
    {
        return Err(format!(
            "the wgpu CNN kernel takes blocks at most {MAX_WIDTH} wide"
        ));
    }
    if matches!(model, Model::Cnn(..)) && !is_tiny(model, channels) {
        match super::wgpu_subgroup_lanes() {
            Some(lanes) if lanes >= SUBGROUP_LANES => {}
            Some(lanes) => {
                return Err(format!(
                    "the wgpu CNN kernel needs subgroups of at least {SUBGROUP_LANES} lanes, this adapter's have {lanes}"
                ));
            }
            None => {
                return Err(
                    "the wgpu CNN kernel needs subgroup operations, which this adapter does not offer"
                        .to_string(),
                );
            }
        }
    }
    let layout = Layout::of(model, channels, size, size, classes);
    let one = (layout
        .scratch
        .max(layout.head.gradient_values(1, layout.row(), 1))
        * 4) as u64;
    match super::wgpu_binding_limit() {
        Some(limit) if one > limit => Err(format!(
            "one sample's scratch ({one} bytes) is more than the adapter binds ({limit} bytes)"
        )),
        _ => Ok(()),
    }
}

/// The largest launch the kernels run for a model: its batch, and whether it trains (a
/// step) or only evaluates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    pub batch: usize,
    pub training: bool,
}

impl Workload {
    fn mode(&self) -> u32 {
        if self.training { 2 } else { 1 }
    }
}

/// The loop laps of the busiest invocation of the CNN family's kernels for `workload` on
/// `channels` x `size` x `size` images: the sample kernel's (`shaders/cnn_sample.wgsl`) and,
/// for a training step, the update kernel's (`shaders/train_update.wgsl`), whichever is more.
/// `None` for the baseline's and the Tiny CNN's own kernels, which it does not count.
pub fn sample_laps(
    model: Model,
    channels: usize,
    size: usize,
    classes: usize,
    workload: Workload,
) -> Option<u64> {
    if !matches!(model, Model::Cnn(..)) || is_tiny(model, channels) {
        return None;
    }
    let (batch, mode) = (workload.batch, workload.mode());
    let launch = laps::Launch {
        batch,
        slots: slots(model, batch, mode),
        mode,
        classes,
        whole_batch: whole_batch(model, mode),
    };
    let layout = Layout::of(model, channels, size, size, classes);
    let sample = laps::sample_kernel(&layout, &launch);
    // A step's update kernel: one workgroup over every parameter and the sample kernel's
    // rows (a wide head's millions of weights pass the cap there first).
    let update = match workload.training {
        true => laps::update_kernel(&layout, launch.slots, batch, WORKGROUP),
        false => 0,
    };
    Some(sample.max(update))
}

/// Why a launch cannot run on a software adapter (llvmpipe, [`SOFTWARE_LOOP_CAP`]) when its
/// kernel would loop `laps` times in one invocation; `None` within [`SOFTWARE_LOOP_BUDGET`].
/// A batch-norm training step is held to the lower [`WHOLE_BATCH_BUDGET`] first
/// ([`past_whole_batch_budget`]), so it never reaches this one.
pub fn past_software_loop_cap(laps: u64, workload: Workload) -> Option<String> {
    (laps > SOFTWARE_LOOP_BUDGET).then(|| {
        format!(
            "{} at batch {} would loop about {laps} times in one invocation of its WGSL kernel, near or past the {SOFTWARE_LOOP_CAP} this software adapter (llvmpipe) allows",
            if workload.training { "a training step" } else { "an evaluation" },
            workload.batch,
        )
    })
}

/// The most loop laps a batch-norm training step may take in its one workgroup on any
/// adapter ([`whole_batch`]). That workgroup runs the whole batch on one compute unit, in
/// sequence, where burn's layers spread it over the device: at the README's network and
/// batch 128 (about 3.7 million laps, 16 million multiply-adds a sample) it would take
/// 0.5-2 s a step at the 1-4 GMAC/s a workgroup the H100 gave the Tiny CNN
/// (docs/measurements/h100; an estimate, not measured with batch norm: no GPU was lent
/// since), slower than our CPU path. Within this budget (small widths
/// and batches, where a step is launch-bound) the kernel's 2 launches win. Below
/// llvmpipe's [`SOFTWARE_LOOP_BUDGET`], so a batch-norm step chooses alike on every adapter.
pub const WHOLE_BATCH_BUDGET: u64 = SOFTWARE_LOOP_CAP * 4 / 5;

/// Why a batch-norm training step of `model` takes burn's layers on every adapter: its one
/// workgroup would loop `laps` times, past [`WHOLE_BATCH_BUDGET`]; `None` otherwise.
pub fn past_whole_batch_budget(model: Model, laps: u64, workload: Workload) -> Option<String> {
    (whole_batch(model, workload.mode()) && laps > WHOLE_BATCH_BUDGET).then(|| {
        format!(
            "a batch-norm training step at batch {} would run about {laps} loop laps in sequence in the one workgroup its kernel gives the whole batch (at most {WHOLE_BATCH_BUDGET})",
            workload.batch
        )
    })
}

/// What the kernels hold for a model (the memory policy's footprint of them): the flat
/// parameters, a workgroup slot's gradient row (the parameters but the head's dense block)
/// and scratch, the most slots, and the values a training step keeps per sample for the
/// head's dense gradient (0 for the workshop's head).
#[derive(Clone, Copy, Debug)]
pub struct KernelFootprint {
    pub params: usize,
    pub row: usize,
    pub scratch_per_slot: usize,
    pub slot_cap: usize,
    pub head_per_sample: usize,
}

/// The kernels' footprint for `model` on `channels` x `h` x `w` images with `classes`.
pub fn footprint(
    model: Model,
    channels: usize,
    (h, w): (usize, usize),
    classes: usize,
) -> KernelFootprint {
    let layout = Layout::of(model, channels, h, w, classes);
    KernelFootprint {
        params: layout.params,
        row: layout.row(),
        scratch_per_slot: layout.scratch,
        // A batch-norm step keeps every sample's scratch ([`whole_batch`]); counting a row
        // per sample too overstates it by one row a sample, on the safe side.
        slot_cap: match whole_batch(model, 2) {
            true => usize::MAX,
            false => MAX_SLOTS,
        },
        head_per_sample: layout.head.per_sample(),
    }
}

/// Why the kernels refuse a launch, before anything is launched.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// A buffer passes the adapter's binding limit or the kernels' 32-bit indices: a smaller
    /// batch fits (the message reads as an allocation failure, so the memory policy halves).
    TooLarge(String),
    /// The shape is outside what the kernels do at any batch size (the caller should have
    /// chosen the layers; see [`available`]).
    Unsupported(String),
}

/// Checks a launch for `n` images of `h` x `w` against the kernels' limits on the host: at
/// most [`MAX_CLASSES`] classes (their workgroup arrays), at most [`MAX_SLOTS`] workgroups,
/// every buffer indexable with the shaders' `u32` indices, and the largest storage binding
/// of the adapter (the scratch and the gradient rows are one buffer each). cubecl compiles
/// WGSL without bounds checks, so what is not checked here would be undefined behaviour.
pub fn check_fits(
    model: Model,
    n: usize,
    (channels, h, w): (usize, usize, usize),
    classes: usize,
    training: bool,
) -> Result<(), Refusal> {
    if !(1..=MAX_CLASSES).contains(&classes) {
        return Err(Refusal::Unsupported(format!(
            "the wgpu kernels take 1 to {MAX_CLASSES} classes, not {classes}"
        )));
    }
    let layout = Layout::of(model, channels, h, w, classes);
    let mode = if training { 2 } else { 1 };
    let slots = slots(model, n, mode);
    let scratch = scratched(model, n, mode) * layout.scratch;
    let grads = if training {
        layout.head.gradient_values(slots, layout.row(), n)
    } else {
        0
    };
    let elements = [
        n * channels * h * w,
        n * classes,
        2 * n,
        scratch,
        grads,
        3 * layout.params + 1,
    ];
    let most = elements.into_iter().max().unwrap_or(0) as u64;
    if most > u32::MAX as u64 {
        return Err(Refusal::TooLarge(format!(
            "can't allocate buffer of {most} values: the kernels index at most 2^32 (a smaller batch fits)"
        )));
    }
    let largest = scratch.max(grads) as u64 * 4;
    match super::wgpu_binding_limit() {
        Some(limit) if largest > limit => Err(Refusal::TooLarge(format!(
            "can't allocate buffer of size: {largest} (the adapter binds at most {limit} bytes)"
        ))),
        _ => Ok(()),
    }
}

/// Which model's sample kernel: the device layer's own name for the models, so that it does
/// not depend on the model layer above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// `shaders/baseline_sample.wgsl`: Flatten + Linear.
    Baseline,
    /// `shaders/cnn_sample.wgsl`: the CNN family, with these widths and head.
    Cnn(Widths, KernelHead),
}

/// A CNN's blocks: their widths, one per block (1 to [`MAX_BLOCKS`]), and whether a batch
/// norm follows each convolution (`--batch-norm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Widths {
    blocks: u32,
    values: [u32; MAX_BLOCKS],
    batch_norm: bool,
}

impl Widths {
    /// The widths; more than [`MAX_BLOCKS`] are cut (the model family has at most that many).
    pub fn new(widths: &[usize]) -> Widths {
        let mut values = [0u32; MAX_BLOCKS];
        for (v, w) in values.iter_mut().zip(widths) {
            *v = *w as u32;
        }
        Widths {
            blocks: widths.len().min(MAX_BLOCKS) as u32,
            values,
            batch_norm: false,
        }
    }

    /// These blocks with a batch norm after each convolution, or without.
    pub fn with_batch_norm(self, batch_norm: bool) -> Widths {
        Widths { batch_norm, ..self }
    }

    /// Whether a batch norm follows each convolution.
    pub fn batch_norm(&self) -> bool {
        self.batch_norm
    }

    /// One width per block.
    pub fn get(&self) -> Vec<usize> {
        self.values[..self.blocks as usize]
            .iter()
            .map(|w| *w as usize)
            .collect()
    }
}

impl Model {
    /// The numbers the extension's operations carry: [kind, blocks, widths...].
    fn arch(self) -> [u32; ARCH] {
        match self {
            Model::Baseline => [0; ARCH],
            Model::Cnn(w, head) => {
                let [flatten, hidden, dropout] = head.arch();
                [
                    1,
                    w.blocks,
                    w.values[0],
                    w.values[1],
                    w.values[2],
                    w.values[3],
                    flatten,
                    hidden,
                    dropout,
                    w.batch_norm as u32,
                ]
            }
        }
    }

    fn from_arch(arch: [u32; ARCH]) -> Model {
        match arch[0] {
            0 => Model::Baseline,
            _ => Model::Cnn(
                Widths {
                    blocks: arch[1],
                    values: [arch[2], arch[3], arch[4], arch[5]],
                    batch_norm: arch[9] != 0,
                },
                KernelHead::from_arch([arch[6], arch[7], arch[8]]),
            ),
        }
    }
}

/// One CNN block's sizes and where its values sit: scratch offsets relative to a slot's
/// start, parameter offsets in the flat parameters. `shaders/sample_common.wgsl`'s
/// `BlockDims`, field for field. With a batch norm (`norm` 1), its parameters start at
/// `gamma` (weight, bias, running mean, running variance: `outputs` values each; batches
/// tracked: one) and each sample's normalized pre-activation sits at `xhat` in the scratch.
#[derive(Clone, Copy, Debug, Default)]
struct BlockLayout {
    inputs: usize,
    outputs: usize,
    h: usize,
    w: usize,
    input: usize,
    output: usize,
    winner: usize,
    dout: usize,
    din: usize,
    weight: usize,
    bias: usize,
    pool: usize,
    norm: usize,
    gamma: usize,
    xhat: usize,
}

impl BlockLayout {
    /// Where its batch norm's running statistics (mean, variance, batches tracked) start in
    /// the parameters, and how many values they are.
    fn running(&self) -> (usize, usize) {
        (self.gamma + 2 * self.outputs, 2 * self.outputs + 1)
    }
}

/// Where every value of a launch sits: the blocks, the classifier's parameters (the plain
/// head's), any other head's layout, the scratch of one slot and the number of parameters P.
#[derive(Clone, Debug)]
struct Layout {
    blocks: Vec<BlockLayout>,
    classifier: usize,
    head: HeadLayout,
    params: usize,
    scratch: usize,
}

impl Layout {
    /// The layout of `model` on `channels` x `h` x `w` images with `classes` classes. The
    /// baseline has no scratch; its parameters are the linear layer over every value.
    fn of(model: Model, channels: usize, h: usize, w: usize, classes: usize) -> Layout {
        let Model::Cnn(widths, head) = model else {
            return Layout {
                blocks: Vec::new(),
                classifier: 0,
                head: HeadLayout::default(),
                params: (channels * h * w + 1) * classes,
                scratch: 0,
            };
        };
        let batch_norm = widths.batch_norm;
        let widths = widths.get();
        let (mut scratch, mut param) = (0, 0);
        let take = |n: usize, at: &mut usize| {
            let start = *at;
            *at += n;
            start
        };
        let (mut inputs, mut bh, mut bw) = (channels, h, w);
        let mut blocks = Vec::new();
        for (b, &outputs) in widths.iter().enumerate() {
            let pool = b + 1 < widths.len();
            let bordered = (bh + 2) * (bw + 2);
            let normed = |n: usize| if batch_norm { n } else { 0 };
            blocks.push(BlockLayout {
                inputs,
                outputs,
                h: bh,
                w: bw,
                input: take(bordered * inputs, &mut scratch),
                output: take(bh * bw * outputs, &mut scratch),
                winner: take(
                    if pool {
                        (bh / 2) * (bw / 2) * outputs
                    } else {
                        0
                    },
                    &mut scratch,
                ),
                dout: take(bordered * outputs, &mut scratch),
                din: take(bh * bw * inputs, &mut scratch),
                weight: take(outputs * inputs * 9, &mut param),
                bias: take(outputs, &mut param),
                pool: pool as usize,
                norm: batch_norm as usize,
                gamma: take(normed(4 * outputs + 1), &mut param),
                xhat: take(normed(bh * bw * outputs), &mut scratch),
            });
            inputs = outputs;
            bh /= 2;
            bw /= 2;
        }
        let (classifier, head) = match blocks.last() {
            Some(last) if !head.is_plain() => {
                let last = (last.outputs, last.h, last.w);
                let head = HeadLayout::of(head, last, classes, &mut param, &mut scratch);
                (head.w1, head)
            }
            _ => (
                take((inputs + 1) * classes, &mut param),
                HeadLayout::default(),
            ),
        };
        if is_tiny(model, channels) {
            // The Tiny CNN's own kernel keeps its own scratch (see its header): the padded
            // image, pooled map, winners, conv2's activations and gradient, pooled gradient.
            let (hp, wp) = (h / 2, w / 2);
            let padded = (hp + 2) * (wp + 2);
            scratch = (h + 2) * (w + 2) + 8 * padded + 8 * hp * wp + 16 * padded + 8 * hp * wp;
        }
        Layout {
            blocks,
            classifier,
            head,
            params: param,
            scratch,
        }
    }

    /// The parameters the optimizer leaves out, per block (zeros past the last and without
    /// batch norm): where its convolution's bias starts and its length (frozen before a
    /// batch norm, as the layer path drops its gradient), then where its running statistics
    /// start and their length (the sample kernel writes their new values in its row).
    fn untrained(&self) -> [usize; 4 * MAX_BLOCKS] {
        let mut ranges = [0; 4 * MAX_BLOCKS];
        for (b, k) in self.blocks.iter().enumerate().filter(|(_, k)| k.norm != 0) {
            let (running, len) = k.running();
            ranges[4 * b..4 * b + 4].copy_from_slice(&[k.bias, k.outputs, running, len]);
        }
        ranges
    }

    /// The length of a workgroup's gradient row: every parameter but the head's dense block.
    fn row(&self) -> usize {
        self.params - self.head.dense
    }

    /// The uniform `SampleDims` of a launch: the sizes, the label smoothing's bits,
    /// [`MAX_BLOCKS`] blocks, then the head (`HeadDims`, for `keys`).
    fn uniform(
        &self,
        sizes: [usize; 8],
        (channels, smoothing): (usize, f32),
        keys: [u32; 2],
    ) -> Vec<u32> {
        let mut values: Vec<u32> = sizes.iter().map(|v| *v as u32).collect();
        values.extend([
            channels as u32,
            self.blocks.len() as u32,
            self.classifier as u32,
            smoothing.to_bits(),
            (BATCH_NORM_MOMENTUM as f32).to_bits(),
            (BATCH_NORM_EPSILON as f32).to_bits(),
            0,
            0,
        ]);
        for b in 0..MAX_BLOCKS {
            let k = self.blocks.get(b).copied().unwrap_or_default();
            values.extend(
                [
                    k.inputs, k.outputs, k.h, k.w, k.input, k.output, k.winner, k.dout, k.din,
                    k.weight, k.bias, k.pool, k.norm, k.gamma, k.xhat, 0,
                ]
                .map(|v| v as u32),
            );
        }
        values.extend(self.head.uniform((sizes[7], self.row(), sizes[0]), keys));
        values
    }
}

/// Whether a launch is the workshop's Tiny CNN (one channel, widths 8 and 16), which keeps
/// its hand-tuned kernel, `shaders/tiny_cnn_sample.wgsl`: it needs no subgroups, and it is
/// the kernel the GPU figures in the README measured. (On lavapipe the family kernel is now
/// as fast or faster on this shape; retiring this one waits for a GPU measurement.) Every
/// other shape runs `shaders/cnn_sample.wgsl`.
fn is_tiny(model: Model, channels: usize) -> bool {
    matches!(model, Model::Cnn(w, head)
        if channels == 1 && w.get() == [8, 16] && head.is_plain() && !w.batch_norm)
}

/// Logits of `images` under the flat parameters `params`, by the model's sample kernel.
pub fn logits(model: Model, images: Tensor<4>, params: Tensor<1>, classes: usize) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as TrainKernels>::model_logits(
        images.into_dispatch(),
        params.into_dispatch(),
        classes as u32,
        model.arch(),
    ))
}

/// (logits, per-sample [loss, correct]) of a batch, by the model's sample kernel.
pub fn evaluate(
    model: Model,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    params: Tensor<1>,
    classes: usize,
) -> (Tensor<2>, Tensor<2>) {
    let labels = labels.cast(burn::tensor::IntDType::I32);
    let (logits, samples) = <Dispatch as TrainKernels>::model_eval(
        images.into_dispatch(),
        labels.into_dispatch(),
        params.into_dispatch(),
        classes as u32,
        model.arch(),
    );
    (
        Tensor::from_dispatch(logits),
        Tensor::from_dispatch(samples),
    )
}

/// What a step needs besides the batch and the state.
#[derive(Clone, Copy, Debug)]
pub struct StepHyper {
    pub lr: f64,
    /// The optimizer's kind, decay and momentum, and the label smoothing.
    pub recipe: crate::recipe::Recipe,
    /// Adam's step number, from 1.
    pub time: usize,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub max_norm: f32,
    pub diverged_norm: f32,
    /// The step's dropout key (`rng::key(seed, DROPOUT, step)`, as the layer path's): the
    /// head's masks come from it.
    pub dropout_key: u32,
}

impl StepHyper {
    /// The numbers the update kernel reads ([`HYPER`] of them), computed as burn's optimizers
    /// compute them: lr, Adam's two bias corrections and betas, the norms, then the
    /// optimizer (0 Adam, 1 AdamW, 2 SGD), AdamW's factor 1 - lr * decay or SGD's L2 term,
    /// SGD's momentum, Nesterov (0 or 1), AdamW's 1 - beta1^t, 1 - beta2^t and epsilon, and
    /// the label smoothing (read by the sample kernel).
    fn values(&self) -> [f32; HYPER] {
        let time = self.time as i32;
        let correction2 = (1.0 - self.beta_2.powi(time)).sqrt();
        let combined = correction2 / (1.0 - self.beta_1.powi(time));
        let r = &self.recipe;
        let (kind, decay) = match r.optimizer {
            Optimizer::Adam => (0.0, 0.0),
            // burn's AdamW: w * (1 - lr * decay), the factor computed in f64.
            Optimizer::Adamw => (1.0, (1.0 - self.lr * r.weight_decay) as f32),
            Optimizer::Sgd => (2.0, r.weight_decay as f32),
        };
        [
            self.lr as f32,
            combined,
            self.epsilon * correction2,
            self.beta_1,
            1.0 - self.beta_1,
            self.beta_2,
            1.0 - self.beta_2,
            self.max_norm,
            self.diverged_norm,
            kind,
            decay,
            r.momentum as f32,
            if r.nesterov { 1.0 } else { 0.0 },
            // AdamW's bias corrections and epsilon, as burn's AdamW applies them.
            1.0 - self.beta_1.powi(time),
            1.0 - self.beta_2.powi(time),
            self.epsilon,
            r.label_smoothing as f32,
        ]
    }
}

/// How many numbers [`StepHyper::values`] gives the update kernel.
pub const HYPER: usize = 17;

/// One step: (next state, stats [mean loss, correct, norm, diverged flag]).
pub fn step(
    model: Model,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    state: Tensor<1>,
    hyper: &StepHyper,
    classes: usize,
    gradients_only: bool,
) -> (Tensor<1>, Tensor<1>) {
    let labels = labels.cast(burn::tensor::IntDType::I32);
    let (next, stats) = <Dispatch as TrainKernels>::model_step(
        images.into_dispatch(),
        labels.into_dispatch(),
        state.into_dispatch(),
        hyper.values(),
        classes as u32,
        model.arch(),
        gpu_head::mask_keys(hyper.dropout_key),
        gradients_only,
    );
    (Tensor::from_dispatch(next), Tensor::from_dispatch(stats))
}

/// Workgroups of a sample kernel for a batch of `n` in `mode`: one per sample up to
/// [`MAX_SLOTS`]; one for a batch-norm model's training step ([`whole_batch`]).
fn slots(model: Model, n: usize, mode: u32) -> usize {
    match whole_batch(model, mode) {
        true => 1,
        false => n.clamp(1, MAX_SLOTS),
    }
}

/// Whether a launch runs the whole batch in one workgroup: a batch-norm model's training
/// step, whose phases each need the batch's statistics of the one before (WGSL has no
/// barrier across workgroups; `shaders/cnn_sample.wgsl`, "Batch norm"). Its evaluation
/// normalizes with the running statistics, a sample at a time as any other model.
fn whole_batch(model: Model, mode: u32) -> bool {
    mode == 2 && matches!(model, Model::Cnn(w, _) if w.batch_norm)
}

/// How many samples' scratch a launch keeps: one per workgroup, or every sample's when one
/// workgroup runs the whole batch.
fn scratched(model: Model, n: usize, mode: u32) -> usize {
    match whole_batch(model, mode) {
        true => n.max(1),
        false => slots(model, n, mode),
    }
}

/// `count` workgroups, spread over y past the per-dimension limit.
fn workgroups(count: usize) -> CubeCount {
    let x = count.clamp(1, MAX_GROUPS);
    CubeCount::Static(x as u32, count.div_ceil(MAX_GROUPS).max(1) as u32, 1)
}

/// What the sample kernel wrote.
struct Samples {
    logits: CubeTensor,
    /// (N, 2): loss and correct of each sample (modes 1 and 2).
    stats: CubeTensor,
    /// (G, R): each workgroup's sum of its samples' gradients (mode 2), then the head's
    /// dense block and its per-sample values ([`HeadLayout::gradient_values`]).
    grads: Handle,
    /// G, the number of rows of `grads`.
    slots: usize,
    /// Where everything sits.
    layout: Layout,
}

/// Launches the model's sample kernel in `mode` (0 logits, 1 with losses, 2 with gradients),
/// with the training loss's label smoothing (0 for none) and the dropout masks' keys (read in
/// mode 2 only).
fn launch_samples(
    images: &CubeTensor,
    labels: Option<&CubeTensor>,
    params: &CubeTensor,
    classes: usize,
    model: Model,
    (mode, smoothing, keys): (u32, f32, [u32; 2]),
) -> Samples {
    let shape = images.meta.shape();
    let (n, channels, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    let layout = Layout::of(model, channels, h, w, classes);
    let row = layout.row();
    let client = images.client.clone();
    let slots = slots(model, n, mode);
    let tensor = |shape: [usize; 2]| {
        CubeTensor::new_contiguous(
            client.clone(),
            images.device.clone(),
            Shape::new(shape),
            client.empty(shape[0] * shape[1] * 4),
            DType::F32,
        )
    };
    let logits = tensor([n, classes]);
    let stats = tensor([n, 2]);
    let grads = client.empty(if mode == 2 {
        layout.head.gradient_values(slots, row, n) * 4
    } else {
        4
    });
    let scratch = client.empty((scratched(model, n, mode) * layout.scratch).max(1) * 4);
    let labels = match labels {
        Some(labels) => labels.handle.clone(),
        None => client.create_from_slice(&0i32.to_le_bytes()),
    };
    // The baseline sees a C x H x W image as one (C * H) x W plane (its linear layer
    // flattens it all the same).
    let (source, plane_h) = match model {
        Model::Baseline => (
            (
                "baseline_sample",
                include_str!("../../shaders/baseline_sample.wgsl"),
            ),
            channels * h,
        ),
        Model::Cnn(..) if is_tiny(model, channels) => (
            (
                "tiny_cnn_sample",
                include_str!("../../shaders/tiny_cnn_sample.wgsl"),
            ),
            h,
        ),
        Model::Cnn(..) => (
            ("cnn_sample", include_str!("../../shaders/cnn_sample.wgsl")),
            h,
        ),
    };
    let dims = layout.uniform(
        [
            n,
            plane_h,
            w,
            classes,
            row,
            mode as usize,
            layout.scratch,
            slots,
        ],
        (channels, smoothing),
        keys,
    );
    client.launch(
        kernel_sized(source.0, source.1, SAMPLE_WORKGROUP),
        workgroups(slots),
        KernelArguments::new()
            .with_buffers(vec![
                images.handle.clone().binding(),
                labels.binding(),
                params.handle.clone().binding(),
                logits.handle.clone().binding(),
                grads.clone().binding(),
                scratch.binding(),
                stats.handle.clone().binding(),
            ])
            .with_info(uniform(&dims)),
    );
    Samples {
        logits,
        stats,
        grads,
        slots,
        layout,
    }
}

impl TrainKernels for CubeBackend {
    fn model_logits(
        images: CubeTensor,
        params: CubeTensor,
        classes: u32,
        arch: [u32; ARCH],
    ) -> CubeTensor {
        let images = into_contiguous(images);
        let params = into_contiguous(params);
        let model = Model::from_arch(arch);
        launch_samples(
            &images,
            None,
            &params,
            classes as usize,
            model,
            (0, 0.0, [0; 2]),
        )
        .logits
    }

    fn model_eval(
        images: CubeTensor,
        labels: CubeTensor,
        params: CubeTensor,
        classes: u32,
        arch: [u32; ARCH],
    ) -> (CubeTensor, CubeTensor) {
        let images = into_contiguous(images);
        let labels = into_contiguous(labels);
        let params = into_contiguous(params);
        let model = Model::from_arch(arch);
        let samples = launch_samples(
            &images,
            Some(&labels),
            &params,
            classes as usize,
            model,
            (1, 0.0, [0; 2]),
        );
        (samples.logits, samples.stats)
    }

    fn model_step(
        images: CubeTensor,
        labels: CubeTensor,
        state: CubeTensor,
        hyper: [f32; HYPER],
        classes: u32,
        arch: [u32; ARCH],
        keys: [u32; 2],
        gradients_only: bool,
    ) -> (CubeTensor, CubeTensor) {
        let images = into_contiguous(images);
        let labels = into_contiguous(labels);
        let state = into_contiguous(state);
        let model = Model::from_arch(arch);
        let n = images.meta.shape()[0];
        // The label smoothing goes to the sample kernel, which computes the loss.
        let smoothing = hyper[HYPER - 1];
        let samples = launch_samples(
            &images,
            Some(&labels),
            &state,
            classes as usize,
            model,
            (2, smoothing, keys),
        );
        let layout = &samples.layout;
        let (p, row) = (layout.params, layout.row());
        if layout.head.dense > 0 {
            gpu_head::launch_gradient(
                &images,
                &samples.grads,
                &layout.head,
                (samples.slots, row, n),
            );
        }
        let client = state.client.clone();
        let next = CubeTensor::new_contiguous(
            client.clone(),
            state.device.clone(),
            state.meta.shape().clone(),
            client.empty(state.meta.shape().num_elements() * 4),
            DType::F32,
        );
        let stats = CubeTensor::new_contiguous(
            client.clone(),
            state.device.clone(),
            Shape::new([4]),
            client.empty(16),
            DType::F32,
        );
        // The sizes and Adam's numbers in a storage buffer: lavapipe reads a uniform in this
        // kernel's loops 60x slower, and none of its barriers depends on them (see the shader).
        let dense = [layout.head.w1, layout.head.dense, row, samples.slots * row];
        let words: Vec<u8> = [
            samples.slots as u32,
            p as u32,
            gradients_only as u32,
            n as u32,
        ]
        .into_iter()
        .chain(hyper.iter().map(|v| v.to_bits()))
        .chain(dense.map(|v| v as u32))
        .chain(layout.untrained().map(|v| v as u32))
        .flat_map(|v| v.to_le_bytes())
        .collect();
        let args = client.create_from_slice(&words);
        client.launch(
            kernel(
                "train_update",
                include_str!("../../shaders/train_update.wgsl"),
            ),
            CubeCount::Static(1, 1, 1),
            KernelArguments::new().with_buffers(vec![
                samples.grads.binding(),
                state.handle.clone().binding(),
                samples.stats.handle.clone().binding(),
                next.handle.clone().binding(),
                stats.handle.clone().binding(),
                args.binding(),
            ]),
        );
        (next, stats)
    }
}
