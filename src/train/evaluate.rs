//! Evaluation: a model without autodiff on a data set, in order, with the results read back
//! once; an allocation failure there halves the batch and redoes it (nothing changes).

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::tensor::Transaction;
use burn::tensor::activation::softmax;

use super::engine::{Engine, EngineChoice};
use super::{Context, StepFailure, device_error, halve, preflight};
use crate::data::ImageDataset;
use crate::device::{faults, gpu_train};
use crate::error::{Result, TrainerError, root_cause};
use crate::memory::{MemoryEvent, MemoryPolicy};
use crate::model::{Net, flat};

/// One sample's prediction.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub sample_id: String,
    pub actual: usize,
    pub predicted: usize,
    pub confidence: f32,
}

/// The result of evaluating a model on a data set.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: f64,
    pub predictions: Vec<Prediction>,
    /// The logits of every sample, row-major (samples x classes), when asked for.
    pub logits: Vec<f32>,
    /// The confusion counts (actual x predicted), when the device computed them.
    pub confusion: Option<Vec<Vec<usize>>>,
    /// The batch size evaluation ended at.
    pub batch_size: usize,
}

/// How to evaluate: the number of classes, the engine that runs the model, the batch size
/// to start at, and whether to keep every sample's logits.
#[derive(Clone, Copy)]
pub struct EvalSettings<'a> {
    pub classes: usize,
    pub engine: &'a EngineChoice,
    pub batch_size: usize,
    pub keep_logits: bool,
}

/// Evaluates `net` (without autodiff) on `dataset`, in dataset order. The results are read
/// back once; when that read reports an allocation failure, evaluation is redone at half the
/// batch size (it changes nothing, so redoing it loses nothing).
pub fn evaluate(
    net: &Net,
    dataset: &ImageDataset,
    settings: &EvalSettings,
    memory: &mut MemoryPolicy,
    ctx: &Context,
) -> Result<Evaluation> {
    let classes = settings.classes;
    dataset.check_labels(classes)?;
    let spec = net.spec(dataset.channels);
    let name = spec.display_name();
    let footprint = settings
        .engine
        .engine
        .footprint(spec, dataset.image_size, classes);
    let mut batch_size = preflight(memory, &name, false, settings.batch_size, &footprint, ctx)?;
    let device = ctx.device.clone().without_autodiff();
    let net = net.clone().to_device(&device);
    loop {
        let attempt = EvalSettings {
            batch_size,
            ..*settings
        };
        let mark = faults::mark();
        let failure = match memory.injected_failure(batch_size) {
            Some(reason) => reason,
            None => match faulted(evaluate_once(&net, dataset, &attempt, &device), mark) {
                Ok(mut evaluation) => {
                    evaluation.batch_size = batch_size;
                    return Ok(evaluation);
                }
                // Ctrl-C stops evaluation within a batch, as it stops training within a step.
                Err(StepFailure::Other(_)) if crate::interrupt::requested() => {
                    return Err(TrainerError::Interrupted);
                }
                Err(StepFailure::Other(reason)) => return Err(device_error(ctx, &reason)),
                Err(StepFailure::Allocation(reason)) => reason,
            },
        };
        if batch_size == 1 {
            return Err(TrainerError::OutOfMemory(format!(
                "{name}: evaluating a batch of 1 does not fit in memory ({})",
                root_cause(&failure)
            )));
        }
        let event = MemoryEvent {
            model: name.clone(),
            phase: "eval",
            epoch: 0,
            step: 0,
            from_batch: batch_size,
            to_batch: batch_size / 2,
            reason: root_cause(&failure),
            requested_bytes: Some(footprint.step_bytes(batch_size, false)),
            budget_bytes: memory.budget(ctx.device_info),
        };
        batch_size = halve(memory, event, ctx);
    }
}

/// An evaluation's outcome as the device's own error reports ([`faults`]) have it: any error
/// the device reported while it ran makes it a failure whatever its read returned (an
/// out-of-memory one an allocation failure, to redo at half the batch).
fn faulted<T>(
    outcome: std::result::Result<T, StepFailure>,
    mark: faults::Mark,
) -> std::result::Result<T, StepFailure> {
    match faults::since(mark) {
        None => outcome,
        Some(fault) => {
            faults::clear();
            let reason = fault.reason();
            if fault.out_of_memory {
                Err(StepFailure::Allocation(reason))
            } else {
                Err(StepFailure::Other(reason))
            }
        }
    }
}

/// What evaluation leaves on the device, batch by batch, until its one read.
#[derive(Default)]
struct Pending {
    /// The layers' summed loss, or the kernels' per-sample [loss, correct] of each batch.
    loss_sum: Option<Tensor<1>>,
    sample_losses: Vec<Tensor<2>>,
    /// `eval_summary`'s per-sample [confidence, prediction, correct] and confusion counts.
    summaries: Vec<Tensor<2>>,
    confusion: Option<Tensor<2, Int>>,
    /// Logits, kept when asked for or when there is no on-device summary.
    logits: Vec<Tensor<2>>,
    labels: Vec<usize>,
    ids: Vec<String>,
}

/// What the one read gives back, named.
struct Read {
    loss_sum: f64,
    confidence: Vec<f32>,
    predicted: Vec<i64>,
    confusion: Option<Vec<Vec<usize>>>,
    logits: Vec<f32>,
}

fn evaluate_once(
    net: &Net,
    dataset: &ImageDataset,
    settings: &EvalSettings,
    device: &Device,
) -> std::result::Result<Evaluation, StepFailure> {
    // Run: every batch through the engine; nothing is read yet.
    let mut pending = run_batches(net, dataset, settings, device)?;
    if pending.labels.is_empty() {
        return Ok(Evaluation {
            loss: 0.0,
            accuracy: 0.0,
            predictions: Vec::new(),
            logits: Vec::new(),
            confusion: None,
            batch_size: settings.batch_size,
        });
    }
    // Read: one transaction for everything.
    let (labels, ids) = (
        std::mem::take(&mut pending.labels),
        std::mem::take(&mut pending.ids),
    );
    let read = read_back(pending, settings)?;
    // Summarize on the host.
    let predictions: Vec<Prediction> = ids
        .into_iter()
        .zip(labels)
        .zip(read.confidence.into_iter().zip(read.predicted))
        .map(
            |((sample_id, actual), (confidence, predicted))| Prediction {
                sample_id,
                actual,
                predicted: predicted as usize,
                confidence,
            },
        )
        .collect();
    let n = predictions.len() as f64;
    let correct = predictions
        .iter()
        .filter(|p| p.actual == p.predicted)
        .count() as f64;
    Ok(Evaluation {
        loss: read.loss_sum / n,
        accuracy: correct / n,
        predictions,
        logits: read.logits,
        confusion: read.confusion,
        batch_size: settings.batch_size,
    })
}

/// Every batch of `dataset` through the engine: the kernels give logits and per-sample
/// losses, the layers (or the fused CPU operation) logits and a summed loss; on wgpu,
/// `shaders/eval_summary.wgsl` reduces each batch on the device.
fn run_batches(
    net: &Net,
    dataset: &ImageDataset,
    settings: &EvalSettings,
    device: &Device,
) -> std::result::Result<Pending, StepFailure> {
    let classes = settings.classes;
    let summarize = settings.engine.summary_on_device
        && crate::device::gpu_kernels::summary_fits(settings.batch_size, classes);
    let kernels = match &settings.engine.engine {
        Engine::GpuKernels(model) => Some((*model, flat::to_flat(net))),
        _ => None,
    };
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let feed = crate::train::feed::Feed {
        shuffle_seed: None,
        augment: None,
        stripes_on_device: settings.engine.stripes_on_device(),
    };
    let mut pending = Pending::default();
    for batch in crate::train::feed::loader(dataset, settings.batch_size, feed, device).iter() {
        if crate::interrupt::requested() {
            return Err(StepFailure::Other("interrupted".into()));
        }
        let batch = batch.map_err(|e| StepFailure::Other(e.to_string()))?;
        let logits = match &kernels {
            Some((model, params)) => {
                let dims = batch.images.dims();
                gpu_train::check_fits(*model, dims[0], (dims[1], dims[2], dims[3]), classes, false)
                    .map_err(StepFailure::from)?;
                let (logits, samples) = gpu_train::evaluate(
                    *model,
                    batch.images.clone(),
                    batch.labels.clone(),
                    params.clone(),
                    classes,
                );
                pending.sample_losses.push(samples);
                logits
            }
            None => {
                let logits = settings.engine.engine.forward(net, batch.images.clone());
                let loss = loss_fn
                    .forward(logits.clone(), batch.labels.clone())
                    .mul_scalar(batch.len() as f32);
                pending.loss_sum = Some(match pending.loss_sum.take() {
                    Some(sum) => sum + loss,
                    None => loss,
                });
                logits
            }
        };
        if summarize {
            let (summary, counts) =
                crate::device::gpu_kernels::summarize(logits.clone(), batch.labels.clone());
            pending.summaries.push(summary);
            pending.confusion = Some(match pending.confusion.take() {
                Some(total) => total + counts,
                None => counts,
            });
        }
        if settings.keep_logits || !summarize {
            pending.logits.push(logits);
        }
        pending.labels.extend(batch.host_labels);
        pending.ids.extend(batch.sample_ids);
    }
    Ok(pending)
}

/// Reads everything evaluation left on the device in one transaction: the loss entries, then
/// either the on-device summary and confusion counts or the softmax's confidence and
/// prediction, then the logits when asked for.
fn read_back(pending: Pending, settings: &EvalSettings) -> std::result::Result<Read, StepFailure> {
    let read = |e: burn::tensor::DataError| StepFailure::Other(format!("{e:?}"));
    let summarized = !pending.summaries.is_empty();
    let logits = (!pending.logits.is_empty()).then(|| Tensor::cat(pending.logits, 0));
    let per_sample = pending.loss_sum.is_none();
    let mut transaction = Transaction::default();
    let loss_entries: Vec<Tensor<2>> = match pending.loss_sum {
        Some(sum) => vec![sum.reshape([1, 1])],
        None => pending.sample_losses,
    };
    let losses = loss_entries.len();
    for entry in loss_entries {
        transaction = transaction.register(entry);
    }
    match (summarized, &logits) {
        (true, _) => {
            transaction =
                transaction
                    .register(Tensor::cat(pending.summaries, 0))
                    .register(pending.confusion.ok_or_else(|| {
                        StepFailure::Other("no confusion counts were summed".into())
                    })?);
        }
        (false, Some(logits)) => {
            let (confidence, predicted) = softmax(logits.clone(), 1).max_dim_with_indices(1);
            transaction = transaction.register(confidence).register(predicted);
        }
        (false, None) => return Err(StepFailure::Other("no logits were kept".into())),
    }
    if settings.keep_logits
        && let Some(logits) = &logits
    {
        transaction = transaction.register(logits.clone());
    }
    let data = transaction
        .try_execute()
        .map_err(|e| StepFailure::classify(e.to_string()))?;
    // The entries, in the order they were registered.
    let (loss_data, rest) = data.split_at(losses);
    let mut loss_sum = 0.0;
    for entry in loss_data {
        let values = entry.try_to_vec_as::<f32>().map_err(read)?;
        loss_sum += match per_sample {
            true => values.chunks(2).map(|s| s[0] as f64).sum::<f64>(),
            false => values[0] as f64,
        };
    }
    let (first, second) = (&rest[0], &rest[1]);
    let (confidence, predicted, confusion) = if summarized {
        let summary = first.try_to_vec_as::<f32>().map_err(read)?;
        let counts = second.try_to_vec_as::<i64>().map_err(read)?;
        let classes = second.shape()[0].max(1);
        let confusion: Vec<Vec<usize>> = counts
            .chunks(classes)
            .map(|row| row.iter().map(|c| *c as usize).collect())
            .collect();
        (
            summary.chunks(3).map(|s| s[0]).collect(),
            summary.chunks(3).map(|s| s[1] as i64).collect(),
            Some(confusion),
        )
    } else {
        (
            first.try_to_vec_as::<f32>().map_err(read)?,
            second.try_to_vec_as::<i64>().map_err(read)?,
            None,
        )
    };
    let logits = match rest.get(2) {
        Some(values) if settings.keep_logits => values.try_to_vec_as::<f32>().map_err(read)?,
        _ => Vec::new(),
    };
    Ok(Read {
        loss_sum,
        confidence,
        predicted,
        confusion,
        logits,
    })
}
