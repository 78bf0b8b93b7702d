//! Both models' training step on wgpu in two kernel launches, through burn's backend
//! extension API:
//!
//! - `shaders/tiny_cnn_sample.wgsl` or `shaders/baseline_sample.wgsl`: a workgroup per sample
//!   (up to 512, each then taking every 512th sample) runs the forward pass, the
//!   cross-entropy and the backward pass, and sums its samples' gradients of every parameter;
//! - `shaders/train_update.wgsl`: one workgroup sums those rows, takes the global norm, clips
//!   and applies Adam to all parameters at once.
//!
//! The model and Adam's moments live in one flat state tensor
//! `[parameters | first moments | second moments | diverged flag]` (the parameters in the
//! shaders' layout, which the model layer's `flat.rs` converts modules to); each step returns the next state and four numbers (mean loss,
//! correct count, gradient norm, flag) that stay on the device until the epoch is read. The
//! same sample kernels give evaluation's logits and per-sample losses (modes 0 and 1), so a
//! wgpu run launches no operation that cubecl autotunes.
//!
//! The layer path stays the reference: tests/gpu_kernels.rs compares logits, every gradient
//! and a whole step with it. `--no-gpu-kernels` turns these kernels off.

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::cubecl::CubeCount;
use burn::cubecl::server::{Handle, KernelArguments};
use burn::prelude::*;
use burn::tensor::{DType, Shape};

use super::gpu_kernels::{kernel, kernel_sized, uniform};

/// The most classes the kernels handle (their workgroup arrays); more take the layer path.
pub const MAX_CLASSES: usize = 256;
/// Invocations per sample: one per pixel of a 16x16 image's pooled map, the workshop's size.
const SAMPLE_WORKGROUP: u32 = 64;
/// Most workgroups of a sample kernel: each takes every G-th sample and keeps one row of
/// gradients and one sample's scratch, so the update kernel sums at most this many rows and
/// memory stops growing with the batch past it. 512 fills a large GPU several times over.
const MAX_SLOTS: usize = 512;
/// Most workgroups a dispatch may have along one dimension.
const MAX_GROUPS: usize = 65_535;

/// The extension: the models' kernels. `model` is a [`Model`] as a number (see
/// [`model_code`]).
#[backend_extension(Cube, Fusion)]
pub trait TrainKernels: Backend {
    /// Logits (N, classes) of images (N, 1, H, W) under the flat parameters `params` (the
    /// state's first P values are enough).
    #[fusion(meta = |images: &TensorSpec, _params: &TensorSpec, classes: &u32, _model: &u32|
        TensorSpec::new(Shape::new([images.shape[0], *classes as usize]), images.dtype))]
    fn model_logits(
        images: FloatTensor<Self>,
        params: FloatTensor<Self>,
        classes: u32,
        model: u32,
    ) -> FloatTensor<Self>;

    /// (logits (N, classes), per-sample [loss, correct] (N, 2)) of images and labels.
    #[fusion(meta = |images: &TensorSpec, _labels: &TensorSpec, _params: &TensorSpec, classes: &u32, _model: &u32| (
        TensorSpec::new(Shape::new([images.shape[0], *classes as usize]), images.dtype),
        TensorSpec::new(Shape::new([images.shape[0], 2]), images.dtype),
    ))]
    fn model_eval(
        images: FloatTensor<Self>,
        labels: IntTensor<Self>,
        params: FloatTensor<Self>,
        classes: u32,
        model: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// One training step on images (N, 1, H, W) and labels (N): (next state, stats (4)).
    /// `hyper` holds lr, Adam's two bias corrections and the norms (see the update shader),
    /// passed in the launch's uniform; with `gradients_only`, the next state's first P values
    /// are the summed gradients instead.
    #[fusion(meta = |_images: &TensorSpec, _labels: &TensorSpec, state: &TensorSpec, _hyper: &[f32; 9], _classes: &u32, _model: &u32, _gradients_only: &bool| (
        state.clone(),
        TensorSpec::new(Shape::new([4]), state.dtype),
    ))]
    fn model_step(
        images: FloatTensor<Self>,
        labels: IntTensor<Self>,
        state: FloatTensor<Self>,
        hyper: [f32; 9],
        classes: u32,
        model: u32,
        gradients_only: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// Whether the kernels run a model with `classes` classes on `device`: the wgpu device with
/// the kernels on, and at most [`MAX_CLASSES`] classes.
pub fn available(device: &Device, classes: usize) -> bool {
    super::gpu_kernels::available(device) && classes <= MAX_CLASSES
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
    (h, w): (usize, usize),
    classes: usize,
    training: bool,
) -> Result<(), Refusal> {
    if !(1..=MAX_CLASSES).contains(&classes) {
        return Err(Refusal::Unsupported(format!(
            "the wgpu kernels take 1 to {MAX_CLASSES} classes, not {classes}"
        )));
    }
    let code = model_code(model);
    let p = params_len(model, h * w, classes);
    let scratch = slots(n) * scratch_per_sample(code, h, w);
    let grads = if training { slots(n) * p } else { 0 };
    let elements = [n * h * w, n * classes, 2 * n, scratch, grads, 3 * p + 1];
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

/// Which model's sample kernel: the device layer's own name for the two models, so that it
/// does not depend on the model layer above it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// `shaders/baseline_sample.wgsl`: Flatten + Linear.
    Baseline,
    /// `shaders/tiny_cnn_sample.wgsl`.
    TinyCnn,
}

/// The number the kernels know a model by.
fn model_code(model: Model) -> u32 {
    match model {
        Model::Baseline => 0,
        Model::TinyCnn => 1,
    }
}

/// Number of parameters in the kernels' flat layout (see the shaders' headers): the
/// baseline's linear layer, or the Tiny CNN's two convolutions (1,248 values) and classifier.
pub fn params_len(model: Model, pixels: usize, classes: usize) -> usize {
    match model {
        Model::Baseline => (pixels + 1) * classes,
        Model::TinyCnn => 1248 + 17 * classes,
    }
}

/// Logits of `images` under the flat parameters `params`, by the model's sample kernel.
pub fn logits(model: Model, images: Tensor<4>, params: Tensor<1>, classes: usize) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as TrainKernels>::model_logits(
        images.into_dispatch(),
        params.into_dispatch(),
        classes as u32,
        model_code(model),
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
        model_code(model),
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
    /// Adam's step number, from 1.
    pub time: usize,
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub max_norm: f32,
    pub diverged_norm: f32,
}

impl StepHyper {
    /// The nine numbers the update kernel reads, computed as burn's Adam computes them.
    fn values(&self) -> [f32; 9] {
        let time = self.time as i32;
        let correction2 = (1.0 - self.beta_2.powi(time)).sqrt();
        let combined = correction2 / (1.0 - self.beta_1.powi(time));
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
        ]
    }
}

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
        model_code(model),
        gradients_only,
    );
    (Tensor::from_dispatch(next), Tensor::from_dispatch(stats))
}

/// Scratch values per sample of the Tiny CNN's kernel (see the shader): padded image, padded
/// pooled map, argmax, conv2's padded activations and gradient, pooled gradient. The
/// baseline's kernel needs none.
fn scratch_per_sample(model: u32, h: usize, w: usize) -> usize {
    if model == model_code(Model::Baseline) {
        return 0;
    }
    let (hp, wp) = (h / 2, w / 2);
    let padded = (hp + 2) * (wp + 2);
    (h + 2) * (w + 2) + 8 * padded + 8 * hp * wp + 16 * padded + 8 * hp * wp
}

/// Workgroups of a sample kernel for a batch of `n`: one per sample up to [`MAX_SLOTS`].
fn slots(n: usize) -> usize {
    n.clamp(1, MAX_SLOTS)
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
    /// (G, P): each workgroup's sum of its samples' gradients (mode 2).
    grads: Handle,
    /// G, the number of rows of `grads`.
    slots: usize,
}

/// Launches the model's sample kernel in `mode` (0 logits, 1 with losses, 2 with gradients).
fn launch_samples(
    images: &CubeTensor,
    labels: Option<&CubeTensor>,
    params: &CubeTensor,
    classes: usize,
    model: u32,
    mode: u32,
) -> Samples {
    let shape = images.meta.shape();
    let (n, h, w) = (shape[0], shape[2], shape[3]);
    let p = params_len_of(model, h * w, classes);
    let client = images.client.clone();
    let stride = scratch_per_sample(model, h, w);
    let slots = slots(n);
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
    let grads = client.empty(if mode == 2 { slots * p * 4 } else { 4 });
    let scratch = client.empty((slots * stride).max(1) * 4);
    let labels = match labels {
        Some(labels) => labels.handle.clone(),
        None => client.create_from_slice(&0i32.to_le_bytes()),
    };
    let source = if model == model_code(Model::Baseline) {
        (
            "baseline_sample",
            include_str!("../../shaders/baseline_sample.wgsl"),
        )
    } else {
        (
            "tiny_cnn_sample",
            include_str!("../../shaders/tiny_cnn_sample.wgsl"),
        )
    };
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
            .with_info(uniform(&[
                n as u32,
                h as u32,
                w as u32,
                classes as u32,
                p as u32,
                mode,
                stride as u32,
                slots as u32,
            ])),
    );
    Samples {
        logits,
        stats,
        grads,
        slots,
    }
}

/// [`params_len`] of the model the kernels know as `code`.
fn params_len_of(code: u32, pixels: usize, classes: usize) -> usize {
    let model = if code == model_code(Model::Baseline) {
        Model::Baseline
    } else {
        Model::TinyCnn
    };
    params_len(model, pixels, classes)
}

impl TrainKernels for CubeBackend {
    fn model_logits(
        images: CubeTensor,
        params: CubeTensor,
        classes: u32,
        model: u32,
    ) -> CubeTensor {
        let images = into_contiguous(images);
        let params = into_contiguous(params);
        launch_samples(&images, None, &params, classes as usize, model, 0).logits
    }

    fn model_eval(
        images: CubeTensor,
        labels: CubeTensor,
        params: CubeTensor,
        classes: u32,
        model: u32,
    ) -> (CubeTensor, CubeTensor) {
        let images = into_contiguous(images);
        let labels = into_contiguous(labels);
        let params = into_contiguous(params);
        let samples = launch_samples(&images, Some(&labels), &params, classes as usize, model, 1);
        (samples.logits, samples.stats)
    }

    fn model_step(
        images: CubeTensor,
        labels: CubeTensor,
        state: CubeTensor,
        hyper: [f32; 9],
        classes: u32,
        model: u32,
        gradients_only: bool,
    ) -> (CubeTensor, CubeTensor) {
        let images = into_contiguous(images);
        let labels = into_contiguous(labels);
        let state = into_contiguous(state);
        let shape = images.meta.shape();
        let (n, pixels) = (shape[0], shape[2] * shape[3]);
        let p = params_len_of(model, pixels, classes as usize);
        let samples = launch_samples(&images, Some(&labels), &state, classes as usize, model, 2);
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
        client.launch(
            kernel(
                "train_update",
                include_str!("../../shaders/train_update.wgsl"),
            ),
            CubeCount::Static(1, 1, 1),
            KernelArguments::new()
                .with_buffers(vec![
                    samples.grads.binding(),
                    state.handle.clone().binding(),
                    samples.stats.handle.clone().binding(),
                    next.handle.clone().binding(),
                    stats.handle.clone().binding(),
                ])
                .with_info(uniform(
                    &[
                        samples.slots as u32,
                        p as u32,
                        gradients_only as u32,
                        n as u32,
                    ]
                    .into_iter()
                    .chain(hyper.iter().map(|v| v.to_bits()))
                    .collect::<Vec<_>>(),
                )),
        );
        (next, stats)
    }
}
