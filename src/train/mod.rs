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

mod best;
pub mod checkpointer;
pub mod engine;
mod evaluate;
pub mod feed;
pub mod label_issues;
mod learner;
pub mod logger;
pub mod lr_range;
pub mod metrics;
pub mod select;
mod step;
mod tally;
mod weights;

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Transaction;

pub use best::BestTracker;
pub use evaluate::{EvalSettings, Evaluation, Prediction, evaluate};
pub(crate) use step::{StepFailure, StepTrains, train_step};
pub(crate) use weights::StepValues;
pub(crate) use weights::Weights;

use checkpointer::{Checkpointer, ModelState};
use learner::Learner;
use logger::EpochLogger;
use tally::{EpochTrain, Tally};

use crate::config::{MAX_GRAD_NORM, Monitor, Settings};
use crate::console::Progress;
use crate::data::{ImageDataset, Splits};
use crate::device::DeviceInfo;
use crate::error::{Result, TrainerError, root_cause};
use crate::interrupt;
use crate::memory::{Footprint, MemoryEvent, MemoryPolicy, is_allocation_failure};
use crate::model::Net;

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
    /// The training batches' augmentations (none: empty).
    pub augment: crate::data::Augment,
    /// Optimizer, schedule and label smoothing.
    pub recipe: crate::recipe::Recipe,
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
            // The overfit check trains its whole step budget.
            patience: settings
                .patience
                .filter(|_| settings.overfit_batches.is_none()),
            augment: settings.augment,
            recipe: settings.recipe(),
        }
    }

    /// The rate of the step that starts `done` samples into epoch `epoch` (from 1) of
    /// `train_len` samples: the schedule counts steps of the requested batch size, so a
    /// halved batch keeps its pace.
    pub fn lr_at(&self, epoch: usize, done: usize, train_len: usize) -> f64 {
        let batch = self.batch_size.max(1) as f64;
        let per_epoch = (train_len.max(1) as f64 / batch).ceil();
        let step = (epoch.saturating_sub(1)) as f64 * per_epoch + done as f64 / batch;
        self.recipe
            .lr_at(self.lr, step, self.epochs as f64 * per_epoch, per_epoch)
    }
}

/// What one epoch did (a run's state keeps it, every float exactly).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    #[serde(with = "checkpointer::exact")]
    pub train_loss: f64,
    #[serde(with = "checkpointer::exact")]
    pub train_acc: f64,
    #[serde(with = "checkpointer::exact")]
    pub val_loss: f64,
    #[serde(with = "checkpointer::exact")]
    pub val_acc: f64,
    /// The batch size at the end of the epoch.
    pub batch_size: usize,
    #[serde(with = "checkpointer::exact")]
    pub train_seconds: f64,
    #[serde(with = "checkpointer::exact")]
    pub val_seconds: f64,
    pub train_samples: usize,
    /// The learning rate of the epoch's last step.
    #[serde(with = "checkpointer::exact")]
    pub lr: f64,
}

/// Where training stopped because a value stopped being finite.
#[derive(Clone, Debug, PartialEq)]
pub struct Divergence {
    pub epoch: usize,
    /// 1-based step within the epoch.
    pub step: usize,
    pub what: &'static str,
}

impl Divergence {
    /// The words of a divergence a run's state recorded.
    pub fn named(what: &str) -> &'static str {
        [
            "gradient norm above 1e6",
            "gradient norm not finite",
            "loss not finite",
        ]
        .into_iter()
        .find(|w| *w == what)
        .unwrap_or("diverged")
    }

    /// What a gradient norm above [`DIVERGED_GRAD_NORM`] (or not a number) says.
    pub fn of_norm(norm: f32) -> &'static str {
        if norm.is_finite() {
            "gradient norm above 1e6"
        } else {
            "gradient norm not finite"
        }
    }
}

/// The result of training one model.
#[derive(Debug)]
pub struct Trained {
    /// The best epoch's model, without autodiff.
    pub best: Net,
    /// The model after the last step, without autodiff.
    pub last: Net,
    pub history: Vec<EpochStats>,
    /// Validation accuracy of the kept (best) epoch; 0 when no epoch finished.
    pub best_val_acc: f64,
    /// Validation loss of the kept epoch (not the lowest of all epochs under val_acc);
    /// infinite when no epoch finished.
    pub best_val_loss: f64,
    /// 0 when no epoch finished.
    pub best_epoch: usize,
    /// The loss of every training step, in order.
    pub step_losses: Vec<f32>,
    /// The learning rate of every training step, in order.
    pub step_lrs: Vec<f64>,
    /// Where each of those steps started, in epochs (2.5: half way through epoch 3): the
    /// steps of a halved batch are twice as many and half as far apart.
    pub step_epochs: Vec<f64>,
    pub requested_batch: usize,
    pub final_batch: usize,
    pub divergence: Option<Divergence>,
    /// Why training ended before the last epoch (early stopping), if it did.
    pub stopped_early: Option<String>,
    /// The epoch an interrupt stopped, if one did (the epochs before it are kept).
    pub interrupted: Option<usize>,
    /// The model's shape.
    pub spec: crate::model::ModelSpec,
    /// Where it trained; its test evaluation runs there too.
    pub engine: engine::EngineChoice,
}

/// Everything a training run reads but does not own.
pub struct Context<'a> {
    pub device: &'a Device,
    pub device_info: &'a DeviceInfo,
    pub progress: &'a dyn Progress,
}

/// What the loop calls besides the learner, as in burn-train: the logger (one line an
/// epoch, the progress bar), the checkpointer (the state after every epoch), and the state
/// of a stopped run to go on from.
#[derive(Default)]
pub struct Hooks<'a> {
    pub logger: EpochLogger,
    pub checkpointer: Option<&'a mut dyn Checkpointer>,
    pub resume: Option<ModelState>,
    /// Train only the last layer (`--freeze-features`).
    pub freeze_features: bool,
}

/// Trains `net` on `train`, validating on `val` after every epoch; returns the best epoch's
/// model (by the monitor; the first best wins). An interrupt ends it after the epochs
/// finished so far (`interrupted` says which epoch it stopped).
#[allow(clippy::too_many_arguments)]
pub fn train_model(
    net: Net,
    train: &ImageDataset,
    val: &ImageDataset,
    classes: usize,
    settings: &TrainSettings,
    memory: &mut MemoryPolicy,
    ctx: &Context,
    hooks: Hooks,
) -> Result<Trained> {
    // Setup: labels checked, the engine chosen once, the learner (the batch size that fits,
    // the loader, the optimizer), put back where a stopped run was when resuming.
    let (spec, choice) = choose_engine(
        &net,
        train,
        val,
        classes,
        settings.batch_size,
        hooks.freeze_features,
        ctx,
    )?;
    let (mut learner, mut tally) =
        setup(net, train, classes, &choice, settings, &hooks, memory, ctx)?;
    let Hooks {
        mut logger,
        mut checkpointer,
        ..
    } = hooks;
    let name = spec.display_name();
    logger.start(&name, settings.epochs, tally.epoch + 1, train.len(), ctx);
    while tally.goes_on(settings.epochs) {
        let epoch = tally.epoch + 1;
        // Train: every sample once; a step that does not fit is redone at half the batch.
        // An interrupt stops here, keeping the epochs before this one.
        let started = Instant::now();
        let (steps, read) = match learner.train_epoch(epoch, settings, memory, ctx) {
            Err(TrainerError::Interrupted) => {
                tally.interrupted = Some(epoch);
                break;
            }
            done => done?,
        };
        // Read back once: the steps' losses and correct counts; a divergence stops this
        // model at the step it happened (its best epoch is kept).
        let Some(trained) = tally.record_steps(steps, read, epoch, train.len(), started) else {
            break;
        };

        // Validate the epoch's model.
        let valid = learner.weights.model();
        let at = EpochAt {
            epoch,
            batch_size: learner.batch_size,
            choice: &choice,
        };
        // An interrupt during validation drops this epoch, as one during training does.
        interrupt::inject_validation(&spec.slug(), epoch);
        let stats = match validate(&valid, val, classes, trained, &at, settings, memory, ctx) {
            Err(TrainerError::Interrupted) => {
                tally.interrupt_validation(epoch);
                break;
            }
            done => done?,
        };

        // Keep the best epoch (early stopping after `patience` epochs without one), say the
        // epoch's line, and checkpoint the whole state.
        let best = tally.observe(stats, valid);
        if let Some(stats) = tally.last() {
            logger.epoch(&name, settings.epochs, stats, best, ctx);
        }
        tally.checkpoint(&learner, &mut checkpointer, memory)?;
    }
    logger.finish(ctx);
    // An ended model's state says so, for a resumed run not to train it again.
    tally.end(&learner, &mut checkpointer, memory)?;
    Ok(tally.into_trained(learner, spec, choice, settings))
}

/// The learner of a model and its tally, from a stopped run's state when given: the memory
/// events of that run stand (the setup's preflight already made them).
#[allow(clippy::too_many_arguments)]
fn setup(
    net: Net,
    train: &ImageDataset,
    classes: usize,
    choice: &engine::EngineChoice,
    settings: &TrainSettings,
    hooks: &Hooks,
    memory: &mut MemoryPolicy,
    ctx: &Context,
) -> Result<(Learner, Tally)> {
    let events = memory.events.len();
    let mut learner = Learner::new(net, train, classes, choice, settings, memory, ctx)?;
    if hooks.resume.is_some() {
        memory.events.truncate(events);
    }
    if hooks.freeze_features {
        learner.weights.freeze_features();
    }
    let tally = Tally::start(&mut learner, settings, hooks.resume.clone(), ctx)?;
    Ok((learner, tally))
}

/// Where an epoch's validation runs.
struct EpochAt<'a> {
    epoch: usize,
    batch_size: usize,
    choice: &'a engine::EngineChoice,
}

/// Validates an epoch's model and makes the epoch's stats.
#[allow(clippy::too_many_arguments)]
fn validate(
    valid: &Net,
    val: &ImageDataset,
    classes: usize,
    trained: EpochTrain,
    at: &EpochAt,
    settings: &TrainSettings,
    memory: &mut MemoryPolicy,
    ctx: &Context,
) -> Result<EpochStats> {
    let started = Instant::now();
    let on_val = EvalSettings {
        classes,
        engine: at.choice,
        batch_size: at.batch_size,
        keep_logits: false,
    };
    let eval = evaluate(valid, val, &on_val, memory, ctx)?;
    Ok(EpochStats {
        epoch: at.epoch,
        train_loss: trained.loss,
        train_acc: trained.acc,
        val_loss: eval.loss,
        val_acc: eval.accuracy,
        batch_size: at.batch_size,
        train_seconds: trained.seconds,
        val_seconds: started.elapsed().as_secs_f64(),
        train_samples: trained.samples,
        lr: trained.lr.unwrap_or(settings.lr),
    })
}

/// The learning-rate range test of `net` on `train` ([`lr_range`]), on the engine the
/// training would use.
pub fn find_lr(
    net: Net,
    train: &ImageDataset,
    classes: usize,
    settings: &TrainSettings,
    range: &lr_range::LrRange,
    ctx: &Context,
) -> Result<lr_range::LrFound> {
    let (_, choice) = choose_engine(&net, train, train, classes, settings.batch_size, false, ctx)?;
    lr_range::run(net, train, &choice, settings, range, ctx)
}

/// Checks the labels and chooses the engine of `net` (saying so when a faster one of the
/// device does not take it).
fn choose_engine(
    net: &Net,
    train: &ImageDataset,
    val: &ImageDataset,
    classes: usize,
    batch: usize,
    freeze_features: bool,
    ctx: &Context,
) -> Result<(crate::model::ModelSpec, engine::EngineChoice)> {
    train.check_labels(classes)?;
    val.check_labels(classes)?;
    let spec = net.spec(train.channels);
    let workload = engine::Workload {
        batch,
        training: true,
    };
    let mut choice = engine::Engine::choose(ctx.device, spec, classes, train.image_size, workload);
    if freeze_features && matches!(choice.engine, engine::Engine::GpuKernels(_)) {
        choice.engine = engine::Engine::Layers;
        choice.note = Some(format!(
            "{}: the wgpu kernels train every parameter and cannot freeze the features; burn's layers run it (same results, slower)",
            spec.display_name()
        ));
    }
    if let Some(line) = choice.console_line() {
        ctx.progress.note(&line);
    }
    Ok((spec, choice))
}

/// The mean of step losses weighted by each step's samples (the epoch's training loss).
fn weighted_mean(losses: &[f32], sizes: &[usize]) -> f64 {
    let total: f64 = losses
        .iter()
        .zip(sizes)
        .map(|(l, n)| *l as f64 * *n as f64)
        .sum();
    total / sizes.iter().sum::<usize>() as f64
}

/// The first step of the epoch whose loss is not finite, as a divergence.
fn first_non_finite(losses: &[f32], epoch: usize) -> Option<Divergence> {
    losses
        .iter()
        .position(|l| !l.is_finite())
        .map(|i| Divergence {
            epoch,
            step: i + 1,
            what: "loss not finite",
        })
}

/// [`MemoryPolicy::preflight`], with a console line for each halving.
pub(crate) fn preflight(
    memory: &mut MemoryPolicy,
    model: &str,
    training: bool,
    batch_size: usize,
    footprint: &Footprint,
    ctx: &Context,
) -> Result<usize> {
    let before = memory.events.len();
    let size = memory.preflight(model, training, batch_size, footprint, ctx.device_info)?;
    for event in &memory.events[before..] {
        ctx.progress.note(&halving_line(event));
    }
    Ok(size)
}

/// Records a halving (console line and event), frees what the failed attempt held, and
/// returns the new batch size.
pub(crate) fn halve(memory: &mut MemoryPolicy, event: MemoryEvent, ctx: &Context) -> usize {
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
        Hooks::default(),
    )?;
    let test = test_kept(&trained, &splits.test, classes, keep_logits, memory, ctx)?;
    Ok((trained, test))
}

/// Tests the kept model of `trained` on `test`, on the engine it trained on, starting at the
/// batch size its training ended at.
pub fn test_kept(
    trained: &Trained,
    test: &ImageDataset,
    classes: usize,
    keep_logits: bool,
    memory: &mut MemoryPolicy,
    ctx: &Context,
) -> Result<Evaluation> {
    let on_test = EvalSettings {
        classes,
        engine: &trained.engine,
        batch_size: trained.final_batch,
        keep_logits,
    };
    evaluate(&trained.best, test, &on_test, memory, ctx)
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

/// An epoch's values, read back.
pub(crate) struct EpochRead {
    /// Every step's loss, up to and with the step that diverged.
    losses: Vec<f32>,
    /// Correct predictions over those steps.
    correct: i64,
    /// The first step whose gradient norm diverged (the kernels' steps only; the layer path
    /// reads its norms as it goes).
    divergence: Option<Divergence>,
}

/// Reads an epoch's step values in one transaction.
pub(crate) fn read_epoch(
    values: Vec<StepValues>,
    epoch: usize,
    ctx: &Context,
) -> Result<EpochRead> {
    let mut read = EpochRead {
        losses: Vec::new(),
        correct: 0,
        divergence: None,
    };
    let (mut losses, mut correct, mut fused) = (Vec::new(), Vec::new(), Vec::new());
    for value in values {
        match value {
            StepValues::Layers { loss, correct: c } => {
                losses.push(loss);
                correct.push(c);
            }
            StepValues::Fused(stats) => fused.push(stats),
        }
    }
    let mut transaction = Transaction::default();
    if !losses.is_empty() {
        let total = correct.into_iter().reduce(|a, b| a + b).expect("one step");
        transaction = transaction.register(Tensor::cat(losses, 0)).register(total);
    }
    let steps = fused.len();
    for stats in fused {
        transaction = transaction.register(stats);
    }
    let data = transaction
        .try_execute()
        .map_err(|e| device_error(ctx, &e.to_string()))?;
    let vec_f32 = |d: &TensorData| {
        d.try_to_vec_as::<f32>()
            .map_err(|e| device_error(ctx, &format!("{e:?}")))
    };
    if data.len() == 2 && steps == 0 {
        read.losses = vec_f32(&data[0])?;
        let total = data[1]
            .try_to_vec_as::<i64>()
            .map_err(|e| device_error(ctx, &format!("{e:?}")))?;
        read.correct = total.first().copied().unwrap_or(0);
    }
    for (i, d) in data.iter().skip(data.len() - steps).enumerate() {
        let stats = vec_f32(d)?;
        read.losses.push(stats[0]);
        read.correct += stats[1] as i64;
        if stats[3] != 0.0 {
            read.divergence = Some(Divergence {
                epoch,
                step: i + 1,
                what: Divergence::of_norm(stats[2]),
            });
            break;
        }
    }
    Ok(read)
}

pub(crate) fn device_error(ctx: &Context, message: &str) -> TrainerError {
    if is_allocation_failure(message) {
        TrainerError::OutOfMemory(format!(
            "the device ran out of memory reading results ({}); try a smaller --batch-size",
            root_cause(message)
        ))
    } else {
        device_failure(ctx, root_cause(message))
    }
}

/// The run's device failed, for `reason` (one line).
pub(crate) fn device_failure(ctx: &Context, reason: String) -> TrainerError {
    TrainerError::Device {
        backend: ctx.device_info.backend.as_str().to_string(),
        reason,
    }
}
