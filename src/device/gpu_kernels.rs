//! The WGSL kernels of `shaders/`, wired into burn's wgpu backend through its backend
//! extension API.
//!
//! - `stripe_synth` writes a batch of stripe images into device memory from (seed, class,
//!   index) with the host's generator, so no image crosses the bus on wgpu.
//! - `eval_summary` turns logits and labels into confidence, prediction, correctness and
//!   confusion counts in one pass, so evaluation reads back only those.
//!
//! Both run on burn's CubeCL backend behind its fusion layer (the wgpu device), lazily like
//! any other operation. [`available`] says whether a device can run them; `--no-gpu-kernels`
//! (or `TRAINER_GPU_KERNELS=off`) turns them off, and the host implementations stay the
//! reference.

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{
    CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::{KernelArguments, MetadataBindingInfo};
use burn::cubecl::{CubeCount, CubeDim};
use burn::prelude::*;
use burn::tensor::{DType, Shape};

/// Invocations per workgroup of both kernels.
pub(crate) const WORKGROUP: u32 = 256;
/// Most workgroups a dispatch may have along one dimension.
const MAX_GROUPS: usize = 65_535;

/// The extension: the operations the `shaders/` kernels implement.
#[backend_extension(Cube, Fusion)]
pub trait GpuKernels: Backend {
    /// Stripe images (N, 1, S, S) from `spec` (N, 2) of (class, index), for `seed`.
    #[fusion(dtype = DType::F32, shape = Shape::new([spec[0], 1, *size as usize, *size as usize]))]
    fn stripe_synth(
        spec: IntTensor<Self>,
        seed_lo: u32,
        seed_hi: u32,
        size: u32,
    ) -> FloatTensor<Self>;

    /// (summary (N, 3): confidence, prediction, correct; confusion (C, C) counts) from
    /// logits (N, C) and labels (N).
    #[fusion(meta = |logits: &TensorSpec, labels: &TensorSpec| (
        TensorSpec::new(Shape::new([logits.shape[0], 3]), logits.dtype),
        TensorSpec::new(Shape::new([logits.shape[1], logits.shape[1]]), labels.dtype),
    ))]
    fn eval_summary(
        logits: FloatTensor<Self>,
        labels: IntTensor<Self>,
    ) -> (FloatTensor<Self>, IntTensor<Self>);
}

/// Whether `device` runs the kernels: the wgpu device `trainer` opened, with the kernels not
/// turned off.
pub fn available(device: &Device) -> bool {
    enabled() && crate::device::is_wgpu(device)
}

/// Whether every index of a kernel over `values` values fits the shaders' `u32` indices
/// (cubecl compiles WGSL without bounds checks: a wrapped index would be undefined
/// behaviour, so larger launches take the host path instead).
pub fn indexable(values: usize) -> bool {
    values <= u32::MAX as usize
}

/// Whether `eval_summary` can take a batch of `n` samples of `classes` classes: its summary
/// (3 per sample), logits and confusion counts all indexable.
pub fn summary_fits(n: usize, classes: usize) -> bool {
    indexable(n * classes.max(3)) && indexable(classes * classes)
}

/// Whether the kernels are turned on for this process (`TRAINER_GPU_KERNELS=off` turns them off).
pub fn enabled() -> bool {
    std::env::var("TRAINER_GPU_KERNELS").as_deref() != Ok("off")
}

/// Turns the kernels off for the rest of the process (`--no-gpu-kernels`). Call at start-up,
/// before any thread exists.
pub fn disable() {
    // SAFETY: called from `main` before other threads start.
    unsafe { std::env::set_var("TRAINER_GPU_KERNELS", "off") };
}

/// Stripe images for `(class, index)` pairs, made on `device` by the kernel.
pub fn stripe_images(recipes: &[(u32, u32)], seed: u64, size: usize, device: &Device) -> Tensor<4> {
    let flat: Vec<i32> = recipes
        .iter()
        .flat_map(|&(class, index)| [class as i32, index as i32])
        .collect();
    let spec = Tensor::<2, Int>::from_data(
        TensorData::new(flat, [recipes.len(), 2]).convert_dtype(DType::I32),
        device,
    );
    Tensor::from_dispatch(<Dispatch as GpuKernels>::stripe_synth(
        spec.into_dispatch(),
        seed as u32,
        (seed >> 32) as u32,
        size as u32,
    ))
}

/// (summary (N, 3), confusion (C, C)) of logits and labels, computed on the device.
pub fn summarize(logits: Tensor<2>, labels: Tensor<1, Int>) -> (Tensor<2>, Tensor<2, Int>) {
    let labels = labels.cast(burn::tensor::IntDType::I32);
    let (summary, confusion) =
        <Dispatch as GpuKernels>::eval_summary(logits.into_dispatch(), labels.into_dispatch());
    (
        Tensor::from_dispatch(summary),
        Tensor::from_dispatch(confusion),
    )
}

/// A kernel read from `shaders/`, with its workgroup size and element type filled in.
pub(crate) struct WgslKernel {
    name: &'static str,
    source: &'static str,
    cube_dim: CubeDim,
}

impl KernelSource for WgslKernel {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(self.source)
            .register("workgroup_size", self.cube_dim.x.to_string())
            .register("elem", "f32")
            .register(
                "sample_common",
                include_str!("../../shaders/sample_common.wgsl"),
            )
            .register("rng", include_str!("../../shaders/rng.wgsl"))
            .register("max_classes", super::gpu_train::MAX_CLASSES.to_string())
            .register("max_width", super::gpu_train::MAX_WIDTH.to_string())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.name, self.cube_dim))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// The kernel `name` from `source` with [`WORKGROUP`] invocations per workgroup.
pub(crate) fn kernel(name: &'static str, source: &'static str) -> Box<SourceKernel<WgslKernel>> {
    kernel_sized(name, source, WORKGROUP)
}

/// The kernel `name` from `source` with `workgroup` invocations per workgroup.
pub(crate) fn kernel_sized(
    name: &'static str,
    source: &'static str,
    workgroup: u32,
) -> Box<SourceKernel<WgslKernel>> {
    let cube_dim = CubeDim::new_1d(workgroup);
    Box::new(SourceKernel::new(
        WgslKernel {
            name,
            source,
            cube_dim,
        },
        cube_dim,
    ))
}

/// Workgroups for `invocations`, spread over y when x would pass the limit.
fn groups(invocations: usize) -> CubeCount {
    let groups = invocations.div_ceil(WORKGROUP as usize).max(1);
    let (x, y) = if groups > MAX_GROUPS {
        (MAX_GROUPS, groups.div_ceil(MAX_GROUPS))
    } else {
        (groups, 1)
    };
    CubeCount::Static(x as u32, y as u32, 1)
}

/// A launch's uniform: `values` (u32s, or f32s as their bits) in order, padded to a whole
/// 16 bytes. cubecl binds it after the buffers (the next binding number) as a uniform buffer,
/// which the shaders declare `var<uniform>`: values read from it are provably the same across
/// a workgroup, so the barriers that depend on them are reached by the whole workgroup.
pub(crate) fn uniform(values: &[u32]) -> MetadataBindingInfo {
    let mut words = values.to_vec();
    words.resize(words.len().next_multiple_of(4).max(4), 0);
    MetadataBindingInfo::custom(
        words
            .chunks(2)
            .map(|pair| pair[0] as u64 | (pair[1] as u64) << 32)
            .collect(),
    )
}

/// The kernels on burn's CubeCL backend; the fusion layer above it is generated by
/// `#[backend_extension(Cube, Fusion)]` and defers to this.
impl GpuKernels for CubeBackend {
    fn stripe_synth(spec: CubeTensor, seed_lo: u32, seed_hi: u32, size: u32) -> CubeTensor {
        let spec = into_contiguous(spec);
        let n = spec.meta.shape()[0];
        let s = size as usize;
        let client = spec.client.clone();
        let output = CubeTensor::new_contiguous(
            client.clone(),
            spec.device.clone(),
            Shape::new([n, 1, s, s]),
            client.empty(n * s * s * 4),
            DType::F32,
        );
        client.launch(
            kernel(
                "stripe_synth",
                include_str!("../../shaders/stripe_synth.wgsl"),
            ),
            groups(n * s * s),
            KernelArguments::new()
                .with_buffers(vec![spec.handle.binding(), output.handle.clone().binding()])
                .with_info(uniform(&[seed_lo, seed_hi, size, n as u32])),
        );
        output
    }

    fn eval_summary(logits: CubeTensor, labels: CubeTensor) -> (CubeTensor, CubeTensor) {
        let logits = into_contiguous(logits);
        let labels = into_contiguous(labels);
        let n = logits.meta.shape()[0];
        let c = logits.meta.shape()[1];
        let client = logits.client.clone();
        let summary = CubeTensor::new_contiguous(
            client.clone(),
            logits.device.clone(),
            Shape::new([n, 3]),
            client.empty(n * 3 * 4),
            DType::F32,
        );
        let confusion = CubeTensor::new_contiguous(
            client.clone(),
            logits.device.clone(),
            Shape::new([c, c]),
            client.create_from_slice(&vec![0u8; c * c * 4]),
            labels.dtype,
        );
        client.launch(
            kernel(
                "eval_summary",
                include_str!("../../shaders/eval_summary.wgsl"),
            ),
            groups(n),
            KernelArguments::new()
                .with_buffers(vec![
                    logits.handle.binding(),
                    labels.handle.binding(),
                    summary.handle.clone().binding(),
                    confusion.handle.clone().binding(),
                ])
                .with_info(uniform(&[n as u32, c as u32])),
        );
        (summary, confusion)
    }
}
