//! Evaluation: a model without autodiff on a data set, in order, with the results read back
//! once; an allocation failure there halves the batch and redoes it (nothing changes).

use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use burn::tensor::Transaction;
use burn::tensor::activation::softmax;

use super::{Context, StepFailure, device_error, halve, preflight};
use crate::data::{self, ImageDataset};
use crate::device::gpu_train;
use crate::error::{Result, TrainerError, root_cause};
use crate::memory::{Footprint, MemoryEvent, MemoryPolicy};
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

/// Evaluates `net` (without autodiff) on `dataset`, in dataset order. The results are read
/// back once; when that read reports an allocation failure, evaluation is redone at half the
/// batch size (it changes nothing, so redoing it loses nothing).
pub fn evaluate(
    net: &Net,
    dataset: &ImageDataset,
    classes: usize,
    batch_size: usize,
    keep_logits: bool,
    memory: &mut MemoryPolicy,
    ctx: &Context,
) -> Result<Evaluation> {
    dataset.check_labels(classes)?;
    let kind = net.kind();
    let footprint = Footprint::of(kind, dataset.image_size, classes);
    let mut batch_size = preflight(memory, kind, false, batch_size, &footprint, ctx)?;
    let device = ctx.device.clone().without_autodiff();
    let net = net.clone().to_device(&device);
    loop {
        let failure = match memory.injected_failure(batch_size) {
            Some(reason) => reason,
            None => match evaluate_once(&net, dataset, batch_size, &device, keep_logits) {
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
                "{}: evaluating a batch of 1 does not fit in memory ({})",
                kind.display_name(),
                root_cause(&failure)
            )));
        }
        let event = MemoryEvent {
            model: kind.display_name().to_string(),
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

fn evaluate_once(
    net: &Net,
    dataset: &ImageDataset,
    batch_size: usize,
    device: &Device,
    keep_logits: bool,
) -> std::result::Result<Evaluation, StepFailure> {
    // On wgpu, shaders/eval_summary.wgsl reduces each batch on the device, and only its small
    // summary comes back; elsewhere the logits come back and are summarized here.
    let kernels = crate::device::gpu_kernels::available(device)
        && crate::device::gpu_kernels::summary_fits(batch_size, net.classes());
    // The models' kernels give the logits and each sample's loss (src/device/gpu_train.rs).
    let classes = net.classes();
    let params = gpu_train::available(device, classes).then(|| flat::to_flat(net));
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut loss_sum: Option<Tensor<1>> = None;
    let mut sample_losses = Vec::new();
    let mut all_logits = Vec::new();
    let mut summaries = Vec::new();
    let mut confusion: Option<Tensor<2, Int>> = None;
    let mut labels = Vec::new();
    let mut ids = Vec::new();
    for batch in data::loader(dataset, batch_size, None, None, device).iter() {
        if crate::interrupt::requested() {
            return Err(StepFailure::Other("interrupted".into()));
        }
        let batch = batch.map_err(|e| StepFailure::Other(e.to_string()))?;
        let logits = match &params {
            Some(params) => {
                let dims = batch.images.dims();
                gpu_train::check_fits(
                    net.kind().kernel(),
                    dims[0],
                    (dims[2], dims[3]),
                    classes,
                    false,
                )
                .map_err(StepFailure::from)?;
                let (logits, samples) = gpu_train::evaluate(
                    net.kind().kernel(),
                    batch.images.clone(),
                    batch.labels.clone(),
                    params.clone(),
                    classes,
                );
                sample_losses.push(samples);
                logits
            }
            None => {
                let logits = net.forward(batch.images.clone());
                let loss = loss_fn
                    .forward(logits.clone(), batch.labels.clone())
                    .mul_scalar(batch.len() as f32);
                loss_sum = Some(match loss_sum {
                    Some(sum) => sum + loss,
                    None => loss,
                });
                logits
            }
        };
        if kernels {
            let (summary, counts) =
                crate::device::gpu_kernels::summarize(logits.clone(), batch.labels.clone());
            summaries.push(summary);
            confusion = Some(match confusion {
                Some(total) => total + counts,
                None => counts,
            });
        }
        if keep_logits || !kernels {
            all_logits.push(logits);
        }
        labels.extend(batch.host_labels);
        ids.extend(batch.sample_ids);
    }
    if labels.is_empty() {
        return Ok(Evaluation {
            loss: 0.0,
            accuracy: 0.0,
            predictions: Vec::new(),
            logits: Vec::new(),
            confusion: None,
            batch_size,
        });
    };
    let read = |e: burn::tensor::DataError| StepFailure::Other(format!("{e:?}"));
    // One read: the loss, then either the kernel's summary and confusion counts or the
    // softmax's confidence and prediction, then the logits when asked for.
    let logits = (!all_logits.is_empty()).then(|| Tensor::cat(all_logits, 0));
    // The loss comes first: the layers' sum, or each batch's per-sample values.
    let loss_entries = match loss_sum {
        Some(_) => 1,
        None => sample_losses.len(),
    };
    let mut transaction = Transaction::default();
    for entry in loss_sum
        .into_iter()
        .map(|sum| sum.reshape([1, 1]))
        .chain(sample_losses)
    {
        transaction = transaction.register(entry);
    }
    match (kernels, &logits) {
        (true, _) => {
            transaction = transaction
                .register(Tensor::cat(summaries, 0))
                .register(confusion.expect("at least one batch"));
        }
        (false, Some(logits)) => {
            let (confidence, predicted) = softmax(logits.clone(), 1).max_dim_with_indices(1);
            transaction = transaction.register(confidence).register(predicted);
        }
        (false, None) => unreachable!("without the kernels the logits are kept"),
    }
    if keep_logits && let Some(logits) = &logits {
        transaction = transaction.register(logits.clone());
    }
    let data = transaction
        .try_execute()
        .map_err(|e| StepFailure::classify(e.to_string()))?;
    let loss_sum = if params.is_some() {
        let mut sum = 0.0;
        for entry in &data[..loss_entries] {
            let values = entry.try_to_vec_as::<f32>().map_err(read)?;
            sum += values.chunks(2).map(|s| s[0] as f64).sum::<f64>();
        }
        sum
    } else {
        data[0].try_to_vec_as::<f32>().map_err(read)?[0] as f64
    };
    // From here on, data[1] is the first entry after the loss.
    let data = &data[loss_entries - 1..];
    let (confidence, predicted, confusion): (Vec<f32>, Vec<i64>, _) = if kernels {
        let summary = data[1].try_to_vec_as::<f32>().map_err(read)?;
        let counts = data[2].try_to_vec_as::<i64>().map_err(read)?;
        let classes = data[2].shape()[0].max(1);
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
            data[1].try_to_vec_as::<f32>().map_err(read)?,
            data[2].try_to_vec_as::<i64>().map_err(read)?,
            None,
        )
    };
    let logits = match (keep_logits, data.get(3)) {
        (true, Some(values)) => values.try_to_vec_as::<f32>().map_err(read)?,
        _ => Vec::new(),
    };
    let predictions: Vec<Prediction> = ids
        .into_iter()
        .zip(labels)
        .zip(confidence.into_iter().zip(predicted))
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
        loss: loss_sum / n,
        accuracy: correct / n,
        predictions,
        logits,
        confusion,
        batch_size,
    })
}
