//! Where a model's steps and evaluations run, chosen once when its training (or an
//! evaluation) starts, the one place that asks which kernels can run a model:
//!
//! - [`Engine::GpuKernels`]: on wgpu, the model's WGSL kernels
//!   ([`crate::device::gpu_train`]): a step is two launches (three with a head other than
//!   the workshop's, [`crate::device::gpu_head`]), batch norm included, evaluation one;
//! - [`Engine::CpuFused`]: on burn-flex, the CNN's convolutions, batch norms, ReLUs and
//!   pooling as one fused operation ([`crate::device::cpu_kernels`]), the rest as layers;
//! - [`Engine::Layers`]: burn's layers, on any backend.
//!
//! The engine owns the forward pass, the model's training state ([`Weights`]), its memory
//! footprint and whether images are drawn on the device; the loop, evaluation and loader
//! never ask again. Every engine gives the layers' answer up to float summation order.

use burn::prelude::*;

use super::weights::Weights;
use crate::device::gpu_head::KernelHead;
use crate::device::{cpu_cnn, cpu_kernels, gpu_kernels, gpu_train};
use crate::memory::Footprint;
use crate::model::{HeadKind, ModelKind, ModelSpec, Net, TrainPass};

/// What runs a model's steps and evaluations.
#[derive(Clone, Debug, PartialEq)]
pub enum Engine {
    /// The wgpu kernels of this model.
    GpuKernels(gpu_train::Model),
    /// The fused CPU operation for the convolutions.
    CpuFused,
    /// burn's layers.
    Layers,
}

/// The largest launch an engine runs for a model (the loop cap of a software adapter
/// depends on it).
pub use crate::device::gpu_train::Workload;

/// The engine chosen for a model, and why a faster one was not (one line, for the console
/// and run_info.json).
#[derive(Clone, Debug)]
pub struct EngineChoice {
    pub engine: Engine,
    /// Set when the device has kernels that do not take this model.
    pub note: Option<String>,
    /// Whether evaluation summarizes logits on the device (`eval_summary`, any wgpu model).
    pub summary_on_device: bool,
}

impl EngineChoice {
    /// The console line for [`Self::note`], when there is one: "engine: " and the note, as
    /// every informational line names its topic first ("memory: ...", "data: ..."). Training,
    /// evaluate and predict print this same line.
    pub fn console_line(&self) -> Option<String> {
        self.note.as_ref().map(|note| format!("engine: {note}"))
    }

    /// Whether stripe images are drawn on the device (`stripe_synth`): with the kernels.
    pub fn stripes_on_device(&self) -> bool {
        matches!(self.engine, Engine::GpuKernels(_))
    }
}

impl Engine {
    /// The engine for a model of `spec` with `classes` classes on `device`, for images of
    /// `image_size` squared.
    /// `workload` is the largest batch it runs, and whether it trains (a software adapter's
    /// loop cap depends on both).
    pub fn choose(
        device: &Device,
        spec: ModelSpec,
        classes: usize,
        image_size: usize,
        workload: Workload,
    ) -> EngineChoice {
        let wgpu_kernels = gpu_kernels::available(device);
        let (engine, note) = if wgpu_kernels {
            match gpu_model(spec, classes, image_size, workload) {
                Ok(model) => (Engine::GpuKernels(model), None),
                Err(why) => (
                    Engine::Layers,
                    Some(format!("{}: {why}", spec.display_name())),
                ),
            }
        } else if cpu_kernels::available(device) && spec.kind == ModelKind::Cnn {
            match cpu_cnn::supports(spec.channels, &spec.widths.get()) {
                Ok(()) => (Engine::CpuFused, None),
                Err(why) => (
                    Engine::Layers,
                    Some(format!(
                        "{}: {why}; burn-flex's layers run it (same results, slower)",
                        spec.display_name()
                    )),
                ),
            }
        } else {
            (Engine::Layers, None)
        };
        EngineChoice {
            summary_on_device: wgpu_kernels,
            engine,
            note,
        }
    }

    /// How run_info.json and the README name it.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::GpuKernels(_) => "wgpu kernels",
            Engine::CpuFused => "fused CPU operation",
            Engine::Layers => "layers",
        }
    }

    /// Logits of `images` through the fused operation (with or without autodiff), or the
    /// layers. The wgpu kernels do not come through here: they take the flat parameters once
    /// per step or evaluation ([`Weights`], `evaluate`).
    pub fn forward(&self, net: &Net, images: Tensor<4>) -> Tensor<2> {
        self.forward_train(net, images, None)
    }

    /// [`Engine::forward`] while training: `dropout` is the step's key for the head's
    /// dropout masks (none in evaluation).
    /// With batch norm, a training pass ([`Engine::forward_step`]) normalizes with the
    /// batch's statistics; evaluation folds the running ones into the convolutions.
    pub fn forward_train(&self, net: &Net, images: Tensor<4>, dropout: Option<u32>) -> Tensor<2> {
        match (self, net, dropout) {
            (Engine::CpuFused, Net::Cnn(cnn), Some(key)) if !cnn.norms.is_empty() => {
                self.forward_step(net, images, key).logits
            }
            (Engine::CpuFused, Net::Cnn(cnn), _) => {
                let convs = cnn.convs();
                let features = match cnn.norms.is_empty() {
                    true => cpu_cnn::cnn_features(images.clone(), &convs, feature_map(cnn)),
                    false => {
                        let norms: Vec<cpu_cnn::EvalNorm> = (cnn.norms.iter())
                            .map(|norm| {
                                let (scale, shift) = norm.eval_affine();
                                cpu_cnn::EvalNorm { scale, shift }
                            })
                            .collect();
                        cpu_cnn::cnn_features_folded(
                            images.clone(),
                            &convs,
                            &norms,
                            feature_map(cnn),
                        )
                    }
                };
                match features {
                    Some(features) => cnn.head_forward(features, dropout, &mut |_, _| {}),
                    None => net.forward_train(images, dropout),
                }
            }
            _ => net.forward_train(images, dropout),
        }
    }

    /// One training pass of a step: the logits, and the batch norms' new running statistics
    /// (the fused operation returns the batch's statistics; the layers compute them; the wgpu
    /// kernels' step does not come through here, it writes them into the kernels' state).
    pub fn forward_step(&self, net: &Net, images: Tensor<4>, dropout: u32) -> TrainPass {
        match (self, net) {
            (Engine::CpuFused, Net::Cnn(cnn)) if !cnn.norms.is_empty() => {
                let norms: Vec<cpu_cnn::NormParams> = (cnn.norms.iter())
                    .map(|norm| cpu_cnn::NormParams {
                        weight: norm.weight.val(),
                        bias: norm.bias.val(),
                    })
                    .collect();
                let convs = cnn.convs();
                match cpu_cnn::cnn_features_normed(images.clone(), &convs, &norms, feature_map(cnn))
                {
                    Some(pass) => TrainPass {
                        logits: cnn.head_forward(pass.features, Some(dropout), &mut |_, _| {}),
                        norms: (cnn.norms.iter().zip(pass.stats))
                            .map(|(norm, s)| norm.stats_after(s.mean, s.variance, s.count))
                            .collect(),
                    },
                    None => net.forward_step(images, dropout),
                }
            }
            (_, Net::Cnn(cnn)) if !cnn.norms.is_empty() => net.forward_step(images, dropout),
            _ => TrainPass {
                logits: self.forward_train(net, images, Some(dropout)),
                norms: Vec::new(),
            },
        }
    }

    /// `net` (without autodiff) ready to train on `device` with this engine.
    pub(crate) fn weights(
        &self,
        net: Net,
        device: &Device,
        recipe: &crate::recipe::Recipe,
    ) -> Weights {
        Weights::new(net, self.clone(), device, recipe)
    }

    /// The memory one step (or one evaluation batch) of this engine needs.
    pub fn footprint(&self, spec: ModelSpec, image_size: usize, classes: usize) -> Footprint {
        match self {
            Engine::GpuKernels(model) => {
                let kernel =
                    gpu_train::footprint(*model, spec.channels, (image_size, image_size), classes);
                let mut footprint = Footprint::kernels(
                    kernel.params as u64,
                    (spec.channels * image_size * image_size) as u64,
                    // The head's per-sample values count as activations, as the logits.
                    (classes + kernel.head_per_sample) as u64,
                    kernel.scratch_per_slot as u64,
                    kernel.slot_cap as u64,
                );
                // A slot's gradient row leaves out the head's dense block (one per batch).
                footprint.slot_gradient = kernel.row as u64;
                footprint
            }
            Engine::CpuFused | Engine::Layers => Footprint::of(spec, image_size, classes),
        }
    }
}

/// What the fused CPU operation makes of a CNN's last map, for its head.
fn feature_map(cnn: &crate::model::Cnn) -> cpu_cnn::FeatureMap {
    match cnn.head.kind {
        HeadKind::Gap => cpu_cnn::FeatureMap::GlobalAverage,
        HeadKind::Flatten => cpu_cnn::FeatureMap::Flatten,
    }
}

/// The wgpu kernels' name for a model of `spec`.
pub fn kernel_model(spec: ModelSpec) -> gpu_train::Model {
    match spec.kind {
        ModelKind::Baseline => gpu_train::Model::Baseline,
        ModelKind::Cnn => gpu_train::Model::Cnn(
            gpu_train::Widths::new(&spec.widths.get()).with_batch_norm(spec.batch_norm),
            KernelHead::new(
                spec.head.kind == HeadKind::Flatten,
                spec.head.hidden,
                spec.head.dropout() as f32,
            ),
        ),
    }
}

/// The wgpu kernels' name for a model, or why they do not take it (a batch-norm step too
/// long for one workgroup; on a software adapter, also when its launches would pass the
/// adapter's loop cap).
fn gpu_model(
    spec: ModelSpec,
    classes: usize,
    size: usize,
    workload: Workload,
) -> Result<gpu_train::Model, String> {
    const SLOWER: &str = "burn's layers run it (same results, slower)";
    let model = kernel_model(spec);
    gpu_train::supports(model, spec.channels, size, classes)
        .map_err(|why| format!("{why}; {SLOWER}"))?;
    let laps = gpu_train::sample_laps(model, spec.channels, size, classes, workload);
    if let Some(why) =
        laps.and_then(|laps| gpu_train::past_whole_batch_budget(model, laps, workload))
    {
        return Err(format!(
            "{why}; burn's layers run it over the whole device (faster)"
        ));
    }
    if !crate::device::wgpu_is_software() {
        return Ok(model);
    }
    match laps.and_then(|laps| gpu_train::past_software_loop_cap(laps, workload)) {
        Some(why) => Err(format!("{why}; {SLOWER}")),
        None => Ok(model),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CnnWidths, Head};

    const TRAINING: Workload = Workload {
        batch: 128,
        training: true,
    };

    #[test]
    fn every_head_and_batch_norm_run_on_the_fused_cpu_operation() {
        let device = Device::flex();
        for kind in [HeadKind::Gap, HeadKind::Flatten] {
            for (hidden, dropout) in [(0, 0.0), (128, 0.25)] {
                let spec = ModelSpec {
                    kind: ModelKind::Cnn,
                    channels: 1,
                    widths: CnnWidths::new(&[32, 64]).unwrap(),
                    head: Head::new(kind, hidden, dropout).unwrap(),
                    batch_norm: false,
                };
                let choice = Engine::choose(&device, spec, 10, 28, TRAINING);
                assert_eq!(
                    choice.engine,
                    Engine::CpuFused,
                    "{kind:?} {hidden} {dropout}"
                );
                assert_eq!(choice.note, None);
                let normed = ModelSpec {
                    batch_norm: true,
                    ..spec
                };
                let choice = Engine::choose(&device, normed, 10, 28, TRAINING);
                assert_eq!(choice.engine, Engine::CpuFused, "{kind:?} with batch norm");
                assert_eq!(choice.note, None);
            }
        }
    }

    /// A batch-norm step runs its whole batch in one workgroup: past the budget (the README's
    /// network at batch 128) it takes burn's layers on every adapter, GPU or not; small ones
    /// and every step without batch norm stay on the kernels.
    #[test]
    fn a_batch_norm_step_too_long_for_one_workgroup_takes_the_layers_on_every_adapter() {
        let spec = |batch_norm: bool, widths: &[usize], hidden: usize| ModelSpec {
            kind: ModelKind::Cnn,
            channels: 1,
            widths: CnnWidths::new(widths).unwrap(),
            head: Head::new(HeadKind::Flatten, hidden, 0.25).unwrap(),
            batch_norm,
        };
        let verdict = |spec: ModelSpec, size: usize, workload: Workload| {
            let model = kernel_model(spec);
            let laps = gpu_train::sample_laps(model, 1, size, 10, workload).unwrap();
            (
                laps,
                gpu_train::past_whole_batch_budget(model, laps, workload),
            )
        };
        let (laps, why) = verdict(spec(true, &[32, 64], 128), 28, TRAINING);
        assert!(laps > 1_000_000, "{laps}");
        let why = why.expect("the README's network at batch 128 takes the layers");
        assert!(
            why.contains("batch 128") && why.contains("one workgroup"),
            "{why}"
        );
        let small = Workload {
            batch: 4,
            training: true,
        };
        assert_eq!(verdict(spec(true, &[8, 16], 0), 12, small).1, None);
        assert_eq!(verdict(spec(false, &[32, 64], 128), 28, TRAINING).1, None);
        let evaluation = Workload {
            batch: 128,
            training: false,
        };
        assert_eq!(verdict(spec(true, &[32, 64], 128), 28, evaluation).1, None);
    }
}
