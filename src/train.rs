//! The training loop, written once for every model and every backend, and evaluation.
//!
//! One step: forward, cross-entropy on the logits, backward, clip all gradients together by
//! their global L2 norm (as `torch.nn.utils.clip_grad_norm_` does), Adam step. Losses and
//! accuracy counts stay on the device and are read back once per epoch.
//!
//! Each step reads its gradient norm back with a `try_` read before the loop adopts the step.
//! An allocation failure there drops the attempt, keeps the model and the optimizer state
//! from before it, halves the batch size and redoes the same samples, so every sample of the
//! epoch is trained on exactly once. A norm that is not finite, or above
//! [`DIVERGED_GRAD_NORM`], means training diverged: the model's training stops at that step.

use std::time::Instant;

use burn::module::{ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use burn::tensor::Transaction;
use burn::tensor::activation::softmax;

use crate::backend::DeviceInfo;
use crate::config::{MAX_GRAD_NORM, Monitor, Settings};
use crate::console::Progress;
use crate::data::{self, ImageBatch, ImageDataset, Splits};
use crate::error::{Result, TrainerError, root_cause};
use crate::interrupt;
use crate::memory::{Footprint, MemoryEvent, MemoryPolicy, is_allocation_failure};
use crate::models::{ModelKind, Net};

/// A gradient norm above this (half a million times the clipping threshold of 2) means the
/// parameters have blown up: healthy training of these models stays below 100.
pub const DIVERGED_GRAD_NORM: f32 = 1e6;

/// Hyperparameters of one model's training.
#[derive(Clone, Debug)]
pub struct TrainSettings {
    pub epochs: usize,
    pub lr: f64,
    pub batch_size: usize,
    pub max_grad_norm: f32,
    /// Seeds the per-epoch shuffling of the training set (and the augmentation).
    pub shuffle_seed: u64,
    /// What picks the best epoch.
    pub monitor: Monitor,
    /// Stop after this many epochs without improvement of the monitor.
    pub patience: Option<usize>,
    /// Augment the training batches.
    pub augment: bool,
}

impl TrainSettings {
    /// The settings of one model of a run.
    pub fn new(settings: &Settings, epochs: usize, lr: f64) -> TrainSettings {
        TrainSettings {
            epochs,
            lr,
            batch_size: settings.batch_size,
            max_grad_norm: MAX_GRAD_NORM,
            shuffle_seed: settings.seed,
            monitor: settings.monitor,
            patience: settings.patience,
            augment: settings.augment,
        }
    }
}

/// What one epoch did.
#[derive(Clone, Debug)]
pub struct EpochStats {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_acc: f64,
    pub val_loss: f64,
    pub val_acc: f64,
    /// The batch size at the end of the epoch.
    pub batch_size: usize,
    pub train_seconds: f64,
    pub val_seconds: f64,
    pub train_samples: usize,
}

/// Where training stopped because a value stopped being finite.
#[derive(Clone, Debug, PartialEq)]
pub struct Divergence {
    pub epoch: usize,
    /// 1-based step within the epoch.
    pub step: usize,
    pub what: &'static str,
}

/// The result of training one model.
#[derive(Debug)]
pub struct Trained {
    /// The best epoch's model, without autodiff.
    pub best: Net,
    /// The model after the last step, without autodiff.
    pub last: Net,
    pub history: Vec<EpochStats>,
    pub best_val_acc: f64,
    /// 0 when no epoch finished.
    pub best_epoch: usize,
    /// The loss of every training step, in order.
    pub step_losses: Vec<f32>,
    pub requested_batch: usize,
    pub final_batch: usize,
    pub divergence: Option<Divergence>,
    /// Why training ended before the last epoch (early stopping), if it did.
    pub stopped_early: Option<String>,
}

/// Everything a training run reads but does not own.
pub struct Context<'a> {
    pub device: &'a Device,
    pub device_info: &'a DeviceInfo,
    pub progress: &'a dyn Progress,
}

/// Trains `net` on `train`, validating on `val` after every epoch; returns the best epoch's
/// model (by validation accuracy; the first best wins).
pub fn train_model(
    net: Net,
    train: &ImageDataset,
    val: &ImageDataset,
    classes: usize,
    settings: &TrainSettings,
    memory: &mut MemoryPolicy,
    ctx: &Context,
) -> Result<Trained> {
    let kind = net.kind();
    let name = kind.display_name();
    let footprint = Footprint::of(kind, train.image_size, classes);
    let requested_batch = settings.batch_size;
    let mut batch_size = preflight(memory, kind, true, requested_batch, &footprint, ctx)?;

    let train_device = ctx.device.clone().autodiff();
    let augment = settings.augment.then_some(settings.shuffle_seed);
    let loader = data::loader(
        train,
        batch_size,
        Some(settings.shuffle_seed),
        augment,
        &train_device,
    );
    let mut net = net.train();
    let mut optim = AdamConfig::new().with_epsilon(1e-8).init();
    let loss_fn = CrossEntropyLossConfig::new().init(&train_device);

    let mut history = Vec::new();
    let mut best = net.valid();
    let mut best_score = settings.monitor.worst();
    let mut best_val_acc = 0.0;
    let mut best_epoch = 0;
    let mut stopped_early = None;
    let mut step_losses = Vec::new();
    let mut divergence = None;

    ctx.progress
        .start(kind, (settings.epochs * train.len()) as u64);
    for epoch in 1..=settings.epochs {
        let started = Instant::now();
        let mut losses: Vec<Tensor<1>> = Vec::new();
        let mut sizes: Vec<usize> = Vec::new();
        let mut correct: Vec<Tensor<1, Int>> = Vec::new();
        let mut step_divergence = None;

        'epoch: for batch in loader.iter() {
            let batch = batch.map_err(|e| TrainerError::bad_input(format!("reading data: {e}")))?;
            let mut start = 0;
            while start < batch.len() {
                if interrupt::requested() {
                    return Err(TrainerError::Interrupted);
                }
                let len = batch_size.min(batch.len() - start);
                let part = if len == batch.len() {
                    batch.clone()
                } else {
                    batch.narrow(start, len)
                };
                let attempt = match memory.injected_failure(len) {
                    Some(reason) => Err(StepFailure::Allocation(reason)),
                    None => train_step(&net, &optim, &part, &loss_fn, settings),
                };
                match attempt {
                    Ok(step) => {
                        if !(step.norm <= DIVERGED_GRAD_NORM) {
                            step_divergence = Some(Divergence {
                                epoch,
                                step: losses.len() + 1,
                                what: if step.norm.is_finite() {
                                    "gradient norm above 1e6"
                                } else {
                                    "gradient norm not finite"
                                },
                            });
                        }
                        net = step.net;
                        optim = step.optim;
                        losses.push(step.loss);
                        correct.push(step.correct);
                        sizes.push(len);
                        start += len;
                        ctx.progress.advance(
                            len as u64,
                            &format!(
                                "{name} epoch {epoch}/{} batch {batch_size}",
                                settings.epochs
                            ),
                        );
                        if step_divergence.is_some() {
                            break 'epoch;
                        }
                    }
                    Err(StepFailure::Allocation(reason)) => {
                        if batch_size == 1 {
                            return Err(TrainerError::OutOfMemory(format!(
                                "{name}: a training step of batch 1 does not fit in memory ({})",
                                root_cause(&reason)
                            )));
                        }
                        let event = MemoryEvent {
                            model: name.to_string(),
                            phase: "train",
                            epoch,
                            step: losses.len() + 1,
                            from_batch: batch_size,
                            to_batch: batch_size / 2,
                            reason: root_cause(&reason),
                            requested_bytes: Some(footprint.step_bytes(batch_size, true)),
                            budget_bytes: memory.budget(ctx.device_info),
                        };
                        batch_size = halve(memory, event, ctx);
                    }
                    Err(StepFailure::Other(reason)) => {
                        return Err(TrainerError::Device {
                            backend: ctx.device_info.backend.as_str().to_string(),
                            reason: root_cause(&reason),
                        });
                    }
                }
            }
        }

        // One read per epoch: every step's loss and the correct counts.
        let train_samples: usize = sizes.iter().sum();
        let (epoch_losses, epoch_correct) = read_epoch(losses, correct, ctx)?;
        let train_seconds = started.elapsed().as_secs_f64();
        let weighted: f64 = epoch_losses
            .iter()
            .zip(&sizes)
            .map(|(l, n)| *l as f64 * *n as f64)
            .sum();
        if step_divergence.is_none()
            && let Some(i) = epoch_losses.iter().position(|l| !l.is_finite())
        {
            step_divergence = Some(Divergence {
                epoch,
                step: i + 1,
                what: "loss not finite",
            });
        }
        step_losses.extend_from_slice(&epoch_losses);
        if let Some(d) = step_divergence {
            divergence = Some(d);
            break;
        }

        let val_started = Instant::now();
        let valid = net.valid();
        let eval = evaluate(&valid, val, classes, batch_size, false, memory, ctx)?;
        let val_seconds = val_started.elapsed().as_secs_f64();
        let stats = EpochStats {
            epoch,
            train_loss: weighted / train_samples as f64,
            train_acc: epoch_correct as f64 / train_samples as f64,
            val_loss: eval.loss,
            val_acc: eval.accuracy,
            batch_size,
            train_seconds,
            val_seconds,
            train_samples,
        };
        let score = match settings.monitor {
            Monitor::ValAcc => stats.val_acc,
            Monitor::ValLoss => stats.val_loss,
        };
        if settings.monitor.improves(score, best_score) {
            best_score = score;
            best_val_acc = stats.val_acc;
            best_epoch = epoch;
            best = valid;
        }
        history.push(stats);
        if let Some(patience) = settings.patience
            && epoch - best_epoch >= patience
            && epoch < settings.epochs
        {
            stopped_early = Some(format!(
                "{} did not improve for {patience} epoch(s) after epoch {best_epoch}; stopped after epoch {epoch} of {}",
                settings.monitor.as_str(),
                settings.epochs
            ));
            break;
        }
    }
    ctx.progress.finish();

    Ok(Trained {
        last: net.valid(),
        best,
        history,
        best_val_acc,
        best_epoch,
        stopped_early,
        step_losses,
        requested_batch,
        final_batch: batch_size,
        divergence,
    })
}

/// [`MemoryPolicy::preflight`], with a console line for each halving.
fn preflight(
    memory: &mut MemoryPolicy,
    kind: ModelKind,
    training: bool,
    batch_size: usize,
    footprint: &Footprint,
    ctx: &Context,
) -> Result<usize> {
    let before = memory.events.len();
    let size = memory.preflight(kind, training, batch_size, footprint, ctx.device_info)?;
    for event in &memory.events[before..] {
        ctx.progress.note(&halving_line(event));
    }
    Ok(size)
}

/// Records a halving (console line and event), frees what the failed attempt held, and
/// returns the new batch size.
fn halve(memory: &mut MemoryPolicy, event: MemoryEvent, ctx: &Context) -> usize {
    ctx.progress.note(&halving_line(&event));
    let size = event.to_batch;
    memory.events.push(event);
    ctx.device.memory_cleanup();
    size
}

/// Trains a model (see [`train_model`]) and then tests its best epoch on `splits.test`,
/// once, at the batch size training ended with (keeping the test logits when asked).
pub fn train_and_test(
    net: Net,
    splits: &Splits,
    settings: &TrainSettings,
    keep_logits: bool,
    memory: &mut MemoryPolicy,
    ctx: &Context,
) -> Result<(Trained, Evaluation)> {
    let classes = splits.classes.len();
    let trained = train_model(
        net,
        &splits.train,
        &splits.val,
        classes,
        settings,
        memory,
        ctx,
    )?;
    let test = evaluate(
        &trained.best,
        &splits.test,
        classes,
        trained.final_batch,
        keep_logits,
        memory,
        ctx,
    )?;
    Ok((trained, test))
}

/// The console line for a change of batch size.
pub fn halving_line(event: &MemoryEvent) -> String {
    format!(
        "memory: {} {} epoch {} step {}: batch {} -> {} ({})",
        event.model,
        event.phase,
        event.epoch,
        event.step,
        event.from_batch,
        event.to_batch,
        event.reason
    )
}

/// A step's outcome that the loop keeps.
pub(crate) struct Step {
    pub net: Net,
    pub optim: ModuleOptimizer,
    pub loss: Tensor<1>,
    pub correct: Tensor<1, Int>,
    /// The global gradient norm before clipping, read back from the device.
    pub norm: f32,
}

/// Why a step did not complete.
pub(crate) enum StepFailure {
    /// The device could not allocate what the step needs.
    Allocation(String),
    /// Anything else.
    Other(String),
}

impl StepFailure {
    pub(crate) fn classify(message: String) -> StepFailure {
        if is_allocation_failure(&message) {
            StepFailure::Allocation(message)
        } else {
            StepFailure::Other(message)
        }
    }
}

/// One training step. `net` and `optim` are not changed: the step returns the updated ones,
/// so a failed attempt leaves the loop with the state from before it. The gradient norm is
/// read back with a `try_` read (one sync per step), which surfaces allocation failures.
pub(crate) fn train_step(
    net: &Net,
    optim: &ModuleOptimizer,
    batch: &ImageBatch,
    loss_fn: &burn::nn::loss::CrossEntropyLoss,
    settings: &TrainSettings,
) -> std::result::Result<Step, StepFailure> {
    let logits = net.forward(batch.images.clone());
    let loss = loss_fn.forward(logits.clone(), batch.labels.clone());
    let correct = logits
        .argmax(1)
        .squeeze_dim::<1>(1)
        .equal(batch.labels.clone())
        .int()
        .sum();
    let mut grads = GradientsParams::from_grads(loss.backward(), net);
    let norm = clip_by_global_norm(net, &mut grads, settings.max_grad_norm);
    let mut optim = optim.clone();
    let updated = optim.step(settings.lr, net.clone(), grads);
    let norm = norm
        .try_into_scalar::<f32>()
        .map_err(|e| StepFailure::classify(e.to_string()))?;
    Ok(Step {
        net: updated,
        optim,
        loss: loss.inner(),
        correct: correct.inner(),
        norm,
    })
}

/// Scales all gradients together so that their global L2 norm is at most `max_norm`
/// (coefficient max_norm / (norm + 1e-6), capped at 1). Returns the norm before clipping.
/// Stays on the device: no read.
fn clip_by_global_norm(net: &Net, grads: &mut GradientsParams, max_norm: f32) -> Tensor<1> {
    struct SumOfSquares<'a> {
        grads: &'a GradientsParams,
        total: Option<Tensor<1>>,
    }
    impl ModuleVisitor for SumOfSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.get::<D>(param.id) {
                let squares = grad.square().sum();
                self.total = Some(match self.total.take() {
                    Some(total) => total + squares,
                    None => squares,
                });
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        coefficient: Tensor<1>,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.remove::<D>(param.id) {
                let scaled = grad * self.coefficient.clone().unsqueeze::<D>();
                self.grads.register::<D>(param.id, scaled);
            }
        }
    }

    let mut sum = SumOfSquares { grads, total: None };
    net.visit(&mut sum);
    let norm = sum.total.expect("both models have parameters").sqrt();
    let coefficient = norm
        .clone()
        .add_scalar(1e-6)
        .recip()
        .mul_scalar(max_norm)
        .clamp_max(1.0);
    net.visit(&mut Scale { grads, coefficient });
    norm
}

/// Reads an epoch's step losses and the total of correct predictions in one transaction.
fn read_epoch(
    losses: Vec<Tensor<1>>,
    correct: Vec<Tensor<1, Int>>,
    ctx: &Context,
) -> Result<(Vec<f32>, i64)> {
    if losses.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let correct = correct
        .into_iter()
        .reduce(|a, b| a + b)
        .expect("at least one step");
    let data = Transaction::default()
        .register(Tensor::cat(losses, 0))
        .register(correct)
        .try_execute()
        .map_err(|e| device_error(ctx, &e.to_string()))?;
    let losses = data[0]
        .try_to_vec_as::<f32>()
        .map_err(|e| device_error(ctx, &format!("{e:?}")))?;
    let correct = data[1]
        .try_to_vec_as::<i64>()
        .map_err(|e| device_error(ctx, &format!("{e:?}")))?;
    Ok((losses, correct.first().copied().unwrap_or(0)))
}

fn device_error(ctx: &Context, message: &str) -> TrainerError {
    if is_allocation_failure(message) {
        TrainerError::OutOfMemory(format!(
            "the device ran out of memory reading results ({}); try a smaller --batch-size",
            root_cause(message)
        ))
    } else {
        TrainerError::Device {
            backend: ctx.device_info.backend.as_str().to_string(),
            reason: root_cause(message),
        }
    }
}

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
    let kernels = crate::gpu_kernels::available(device);
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut loss_sum: Option<Tensor<1>> = None;
    let mut all_logits = Vec::new();
    let mut summaries = Vec::new();
    let mut confusion: Option<Tensor<2, Int>> = None;
    let mut labels = Vec::new();
    let mut ids = Vec::new();
    for batch in data::loader(dataset, batch_size, None, None, device).iter() {
        let batch = batch.map_err(|e| StepFailure::Other(e.to_string()))?;
        let logits = net.forward(batch.images.clone());
        let loss = loss_fn
            .forward(logits.clone(), batch.labels.clone())
            .mul_scalar(batch.len() as f32);
        loss_sum = Some(match loss_sum {
            Some(sum) => sum + loss,
            None => loss,
        });
        if kernels {
            let (summary, counts) =
                crate::gpu_kernels::summarize(logits.clone(), batch.labels.clone());
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
    let Some(loss_sum) = loss_sum else {
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
    let mut transaction = Transaction::default().register(loss_sum);
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
    let loss_sum = data[0].try_to_vec_as::<f32>().map_err(read)?[0] as f64;
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
