//! What a step changes: the model and its optimizer state, either as burn modules (the layer
//! path, every backend) or, on wgpu with the kernels on, as the kernels' one flat state tensor
//! ([`crate::device::gpu_train`]). The loop does not see the difference.

use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;

use super::checkpointer::{WeightsKind, f32_bytes, f32_values};
use super::engine::Engine;
use super::{DIVERGED_GRAD_NORM, StepFailure, StepTrains, TrainSettings, train_step};
use crate::config::{ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON};
use crate::data::ImageBatch;
use crate::device::gpu_train;
use crate::model::{Net, flat};
use crate::recipe::{Optimizer, Recipe};

/// The model being trained and its optimizer. A clone shares its tensors (a snapshot to go
/// back to: steps make new tensors, they never write into these).
#[derive(Clone)]
pub(crate) enum Weights {
    /// burn modules and burn's Adam, on the autodiff device.
    Layers {
        net: Net,
        optim: ModuleOptimizer,
        loss_fn: CrossEntropyLoss,
        /// Its forward pass: the layers, or the fused CPU operation.
        engine: Engine,
        /// Steps taken: with the seed, the key of each step's dropout masks.
        steps: u32,
        /// Only the last layer trains (`--freeze-features`).
        frozen: bool,
    },
    /// The model in the kernels' state `[parameters | moments 1 | moments 2 | flag]`.
    Fused {
        /// The model the kernels know it as.
        model: gpu_train::Model,
        /// The model the parameters belong to (ids, shapes), without autodiff.
        template: Net,
        state: Tensor<1>,
        /// Steps taken (Adam's bias corrections count them).
        time: usize,
        recipe: Recipe,
        /// The largest batch a step has completed with (proven to fit).
        proven: usize,
        /// Whether every step is read before the next is queued: on a software adapter
        /// (lavapipe), where a step takes long enough that the read costs little, and steps
        /// queued ahead would make Ctrl-C and a device fault wait for all of them.
        paced: bool,
    },
}

/// What a completed step leaves on the device until the epoch is read.
pub(crate) enum StepValues {
    Layers {
        loss: Tensor<1>,
        correct: Tensor<1, Int>,
    },
    /// [mean loss, correct, gradient norm, diverged flag]
    Fused(Tensor<1>),
}

/// A completed step: its values, and its gradient norm when it was read right away.
pub(crate) struct StepDone {
    pub values: StepValues,
    pub norm: Option<f32>,
}

impl Weights {
    /// `net` (without autodiff) ready to train on `device` with `engine`: in the kernels'
    /// state for the wgpu kernels, as modules with a fresh Adam otherwise.
    pub(crate) fn new(net: Net, engine: Engine, device: &Device, recipe: &Recipe) -> Weights {
        match engine {
            Engine::GpuKernels(model) => Weights::Fused {
                model,
                state: initial_state(&net),
                template: net,
                time: 0,
                recipe: *recipe,
                proven: 0,
                paced: crate::device::wgpu_is_software(),
            },
            engine => Weights::Layers {
                engine,
                steps: 0,
                frozen: false,
                net: net.to_device(&device.clone().autodiff()).train(),
                optim: optimizer(recipe),
                loss_fn: CrossEntropyLossConfig::new()
                    // None, not Some(0): the workshop's loss stays the plain one, bit for bit.
                    .with_smoothing(
                        (recipe.label_smoothing > 0.0).then_some(recipe.label_smoothing as f32),
                    )
                    .init(&device.clone().autodiff()),
            },
        }
    }

    /// From now on only the last layer trains; false (nothing changed) for the kernels'
    /// state, which trains every parameter.
    pub fn freeze_features(&mut self) -> bool {
        match self {
            Weights::Layers { frozen, .. } => {
                *frozen = true;
                true
            }
            Weights::Fused { .. } => false,
        }
    }

    /// Steps taken (with the seed, the key of the next step's dropout masks): the kernels
    /// count them as Adam's time, which their saved state restores.
    pub fn dropout_steps(&self) -> u32 {
        match self {
            Weights::Layers { steps, .. } => *steps,
            Weights::Fused { time, .. } => *time as u32,
        }
    }

    /// Goes on from `taken` steps (a resumed run), so the next step draws the masks an
    /// unstopped run would (the kernels' state carries its own count).
    pub fn resume_dropout_steps(&mut self, taken: u32) {
        if let Weights::Layers { steps, .. } = self {
            *steps = taken;
        }
    }

    /// The device batches go to: without autodiff for the kernels.
    pub fn batch_device(&self, device: &Device) -> Device {
        match self {
            Weights::Layers { .. } => device.clone().autodiff(),
            Weights::Fused { .. } => device.clone().without_autodiff(),
        }
    }

    /// Whether the kernels train this model.
    pub fn is_fused(&self) -> bool {
        matches!(self, Weights::Fused { .. })
    }

    /// The model as it is now, without autodiff.
    pub fn model(&self) -> Net {
        match self {
            Weights::Layers { net, .. } => net.valid(),
            Weights::Fused {
                template, state, ..
            } => flat::from_flat(template, state.clone()),
        }
    }

    /// The mean loss of a completed step, read from the device now (a sync).
    pub fn read_loss(&self, done: &StepDone) -> Result<f32, StepFailure> {
        match &done.values {
            StepValues::Fused(stats) => Ok(read_stats(stats.clone())?[0]),
            StepValues::Layers { loss, .. } => loss
                .clone()
                .try_into_scalar::<f32>()
                .map_err(|e| StepFailure::classify(e.to_string())),
        }
    }

    /// The gradient norm of a completed step, read from the device now if it was not yet.
    pub fn read_norm(&self, done: StepDone) -> Result<f32, StepFailure> {
        match (done.norm, done.values) {
            (Some(norm), _) => Ok(norm),
            (None, StepValues::Fused(stats)) => Ok(read_stats(stats)?[2]),
            (None, StepValues::Layers { .. }) => unreachable!("the layer path reads its norm"),
        }
    }

    /// One step on `batch`; the weights change only when it completes. The layer path reads
    /// its gradient norm every step; the kernels read their step only while `batch` is larger
    /// than any batch that completed, which surfaces an allocation failure before the step is
    /// adopted.
    pub fn step(
        &mut self,
        batch: &ImageBatch,
        settings: &TrainSettings,
        lr: f64,
    ) -> Result<StepDone, StepFailure> {
        match self {
            Weights::Layers {
                net,
                optim,
                loss_fn,
                engine,
                steps,
                frozen,
            } => {
                let key =
                    crate::rng::key(settings.shuffle_seed, crate::rng::stream::DROPOUT, *steps);
                let trains = StepTrains {
                    dropout: key,
                    frozen: *frozen,
                };
                let step = train_step(net, optim, batch, loss_fn, settings, lr, engine, trains)?;
                *steps += 1;
                *net = step.net;
                *optim = step.optim;
                Ok(StepDone {
                    values: StepValues::Layers {
                        loss: step.loss,
                        correct: step.correct,
                    },
                    norm: Some(step.norm),
                })
            }
            Weights::Fused {
                model,
                template,
                state,
                time,
                recipe,
                proven,
                paced,
            } => {
                let dims = batch.images.dims();
                gpu_train::check_fits(
                    *model,
                    dims[0],
                    (dims[1], dims[2], dims[3]),
                    template.classes(),
                    true,
                )
                .map_err(StepFailure::from)?;
                let hyper = gpu_train::StepHyper {
                    lr,
                    recipe: *recipe,
                    time: *time + 1,
                    beta_1: ADAM_BETA_1,
                    beta_2: ADAM_BETA_2,
                    epsilon: ADAM_EPSILON,
                    max_norm: settings.max_grad_norm,
                    diverged_norm: DIVERGED_GRAD_NORM,
                    dropout_key: crate::rng::key(
                        settings.shuffle_seed,
                        crate::rng::stream::DROPOUT,
                        *time as u32,
                    ),
                };
                let (next, stats) = gpu_train::step(
                    *model,
                    batch.images.clone(),
                    batch.labels.clone(),
                    state.clone(),
                    &hyper,
                    template.classes(),
                    false,
                );
                let mut norm = None;
                if batch.len() > *proven || *paced {
                    let values = read_stats(stats.clone())?;
                    if values[0] < 0.0 {
                        return Err(StepFailure::Other(LOOP_CAP.to_string()));
                    }
                    norm = Some(values[2]);
                    *proven = (*proven).max(batch.len());
                }
                *state = next;
                *time += 1;
                Ok(StepDone {
                    values: StepValues::Fused(stats),
                    norm,
                })
            }
        }
    }
}

/// The weights as they were at an epoch's start, to go back to after an out-of-memory inside
/// the device's work. The kernels' state is copied to the host: cubecl cannot tell which
/// buffers of a WGSL kernel it reads and which it writes, so a launch that failed marks every
/// buffer it was given as never written, the state it read included.
pub(crate) struct Snapshot {
    weights: Weights,
    host_state: Option<TensorData>,
}

impl Weights {
    /// A snapshot of the weights now (for the kernels, a read of their state: a sync).
    pub fn snapshot(&self) -> Result<Snapshot, StepFailure> {
        let host_state = match self {
            Weights::Fused { state, .. } => Some(
                state
                    .clone()
                    .try_into_data()
                    .map_err(|e| StepFailure::classify(e.to_string()))?,
            ),
            Weights::Layers { .. } => None,
        };
        Ok(Snapshot {
            weights: self.clone(),
            host_state,
        })
    }
}

impl Snapshot {
    /// The weights of the snapshot, the kernels' state in a new buffer.
    pub fn restore(self) -> Weights {
        let mut weights = self.weights;
        if let (Weights::Fused { state, .. }, Some(data)) = (&mut weights, self.host_state) {
            *state = Tensor::from_data(data, &state.device());
        }
        weights
    }
}

/// burn's optimizer for the recipe, with PyTorch's defaults where burn's differ (AdamW's
/// epsilon, SGD's dampening).
fn optimizer(recipe: &Recipe) -> ModuleOptimizer {
    match recipe.optimizer {
        Optimizer::Adam => AdamConfig::new()
            .with_beta_1(ADAM_BETA_1)
            .with_beta_2(ADAM_BETA_2)
            .with_epsilon(ADAM_EPSILON)
            .init(),
        Optimizer::Adamw => AdamWConfig::new()
            .with_beta_1(ADAM_BETA_1)
            .with_beta_2(ADAM_BETA_2)
            .with_epsilon(ADAM_EPSILON)
            .with_weight_decay(recipe.weight_decay as f32)
            .init(),
        Optimizer::Sgd => SgdConfig::new()
            .with_weight_decay(
                (recipe.weight_decay > 0.0)
                    .then(|| WeightDecayConfig::new(recipe.weight_decay as f32)),
            )
            .with_momentum((recipe.momentum > 0.0).then(|| {
                MomentumConfig::new()
                    .with_momentum(recipe.momentum)
                    .with_dampening(0.0)
                    .with_nesterov(recipe.nesterov)
            }))
            .init(),
    }
}

/// A checkpoint's failure to read or rebuild weights, in words.
fn record_error(what: &str, e: impl std::fmt::Display) -> crate::error::TrainerError {
    crate::error::TrainerError::Serialize(format!("{what}: {e}"))
}

impl Weights {
    /// The weights and the optimizer state as bytes, for the run's state file (a read of the
    /// device).
    pub fn save(&self) -> crate::error::Result<(WeightsKind, Vec<u8>, Vec<u8>)> {
        match self {
            Weights::Layers { net, optim, .. } => {
                let weights = net
                    .clone()
                    .into_record()
                    .into_bytes()
                    .map_err(|e| record_error("the model's weights", e))?;
                let optim = optim
                    .into_bytes()
                    .map_err(|e| record_error("the optimizer's state", e))?;
                Ok((WeightsKind::Layers, weights.to_vec(), optim.to_vec()))
            }
            Weights::Fused { state, time, .. } => {
                let values = state
                    .clone()
                    .try_into_data()
                    .map_err(|e| record_error("the kernels' state", e))?
                    .try_to_vec_as::<f32>()
                    .map_err(|e| record_error("the kernels' state", format!("{e:?}")))?;
                Ok((
                    WeightsKind::Fused { time: *time },
                    f32_bytes(&values),
                    Vec::new(),
                ))
            }
        }
    }

    /// Puts back weights and optimizer state [`Weights::save`] gave, on `device`.
    pub fn load(
        &mut self,
        kind: WeightsKind,
        weights: &[u8],
        optim_bytes: &[u8],
        device: &Device,
    ) -> crate::error::Result<()> {
        match (self, kind) {
            (Weights::Layers { net, optim, .. }, WeightsKind::Layers) => {
                let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(weights.to_vec()))
                    .map_err(|e| record_error("the model's weights", e))?;
                let loaded = net
                    .valid()
                    .try_load_record(record)
                    .map_err(|e| record_error("the model's weights", e))?;
                *net = loaded.to_device(&device.clone().autodiff()).train();
                *optim = optim
                    .clone()
                    .from_bytes(Bytes::from_bytes_vec(optim_bytes.to_vec()))
                    .map_err(|e| record_error("the optimizer's state", e))?;
                Ok(())
            }
            (Weights::Fused { state, time, .. }, WeightsKind::Fused { time: steps }) => {
                let values = f32_values(weights);
                if values.len() != state.dims()[0] {
                    return Err(record_error(
                        "the kernels' state",
                        format!("{} values, the model has {}", values.len(), state.dims()[0]),
                    ));
                }
                let len = values.len();
                *state = Tensor::from_data(TensorData::new(values, [len]), &state.device());
                *time = steps;
                Ok(())
            }
            _ => Err(crate::error::TrainerError::bad_input(
                "the run's state was written by another engine (layers or kernels) than this run chose; resume on the run's own backend",
            )),
        }
    }
}

/// A model's parameters as a record's bytes (the best epoch's model in the run's state).
pub(crate) fn net_bytes(net: &Net) -> crate::error::Result<Vec<u8>> {
    Ok(net
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| record_error("the model's weights", e))?
        .to_vec())
}

/// `template` with the parameters of a record's bytes ([`net_bytes`]).
pub(crate) fn net_from_bytes(template: Net, bytes: &[u8]) -> crate::error::Result<Net> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| record_error("the model's weights", e))?;
    template
        .try_load_record(record)
        .map_err(|e| record_error("the model's weights", e))
}

/// What a kernel step whose loops a software adapter cut short says (a mean loss below 0, which
/// no batch can have: shaders/sample_common.wgsl's poison_if_loops_were_cut).
const LOOP_CAP: &str = "this model is too large for the WGSL kernels on a software adapter (llvmpipe stops a shader invocation's loops after 65,535 laps): train it with --no-gpu-kernels (burn's layers), with --backend cpu, or on a GPU";

/// A step's [mean loss, correct, norm, flag], read back (a sync).
fn read_stats(stats: Tensor<1>) -> Result<Vec<f32>, StepFailure> {
    stats
        .try_into_data()
        .map_err(|e| StepFailure::classify(e.to_string()))?
        .try_to_vec_as::<f32>()
        .map_err(|e| StepFailure::Other(format!("{e:?}")))
}

/// The kernels' state of a fresh model: its parameters, zero moments, no divergence.
fn initial_state(net: &Net) -> Tensor<1> {
    let params = flat::to_flat(net);
    let rest = Tensor::zeros([2 * params.dims()[0] + 1], &params.device());
    Tensor::cat(vec![params, rest], 0)
}
