//! What a model's training has done so far: its epochs' history, every step's loss and rate,
//! the best epoch, and why it ended. The loop adds to it; the checkpointer keeps it; a resumed
//! run starts from it.

use std::time::Instant;

use super::best::BestTracker;
use super::checkpointer::{
    Blobs, Checkpointer, Ended, ModelState, f32_bytes, f32_values, f64_bytes, f64_values,
};
use super::learner::{EpochSteps, Learner};
use super::weights::{net_bytes, net_from_bytes};
use super::{Context, Divergence, EpochRead, EpochStats, TrainSettings, Trained, engine};
use crate::error::Result;
use crate::memory::MemoryPolicy;
use crate::model::Net;

/// A model's training so far.
pub(super) struct Tally {
    model: String,
    /// Epochs finished.
    pub epoch: usize,
    pub best: BestTracker<Net>,
    pub history: Vec<EpochStats>,
    step_losses: Vec<f32>,
    step_lrs: Vec<f64>,
    /// Where (in epochs) each step started, for the schedule's plot.
    step_epochs: Vec<f64>,
    divergence: Option<Divergence>,
    stopped_early: Option<String>,
    /// The epoch an interrupt stopped (its steps are dropped).
    pub interrupted: Option<usize>,
    /// Whether the model had ended before this process started (a resumed run's).
    ended_before: bool,
    /// The steps recorded before the last epoch's (an epoch whose validation an interrupt
    /// stopped is dropped back to there).
    steps_before_epoch: usize,
}

/// An epoch's training, read back.
pub(super) struct EpochTrain {
    pub loss: f64,
    pub acc: f64,
    pub samples: usize,
    pub seconds: f64,
    /// The rate of the epoch's last step.
    pub lr: Option<f64>,
}

impl Tally {
    /// A fresh model's tally, or (with `resume`) the one a stopped run left, with the
    /// learner put back where that run was.
    pub fn start(
        learner: &mut Learner,
        settings: &TrainSettings,
        resume: Option<ModelState>,
        ctx: &Context,
    ) -> Result<Tally> {
        let start = learner.weights.model();
        let mut tally = Tally {
            model: learner.name().to_string(),
            epoch: 0,
            best: BestTracker::new(settings.monitor, settings.patience, settings.epochs, start),
            history: Vec::new(),
            step_losses: Vec::new(),
            step_lrs: Vec::new(),
            step_epochs: Vec::new(),
            divergence: None,
            stopped_early: None,
            interrupted: None,
            ended_before: false,
            steps_before_epoch: 0,
        };
        let Some(state) = resume else {
            return Ok(tally);
        };
        learner.restore(&state, ctx)?;
        let best = net_from_bytes(learner.weights.model(), &state.blobs.best)?;
        tally.best = BestTracker::restored(
            settings.monitor,
            settings.patience,
            settings.epochs,
            &state.best,
            best,
        );
        tally.epoch = state.epoch;
        tally.history = state.history;
        tally.step_losses = f32_values(&state.blobs.step_losses);
        tally.step_lrs = f64_values(&state.blobs.step_lrs);
        tally.step_epochs = f64_values(&state.blobs.step_epochs);
        tally.ended_before = state.ended.is_some();
        match state.ended {
            Some(Ended::Diverged { epoch, step, what }) => {
                tally.divergence = Some(Divergence {
                    epoch,
                    step,
                    what: Divergence::named(&what),
                })
            }
            Some(Ended::StoppedEarly(why)) => tally.stopped_early = Some(why),
            Some(Ended::Finished) | None => {}
        }
        Ok(tally)
    }

    /// Whether another epoch is to train.
    pub fn goes_on(&self, epochs: usize) -> bool {
        self.epoch < epochs
            && self.divergence.is_none()
            && self.stopped_early.is_none()
            && self.interrupted.is_none()
    }

    /// Keeps an epoch's step values; none when a value diverged (training stops there).
    pub fn record_steps(
        &mut self,
        mut steps: EpochSteps,
        read: EpochRead,
        epoch: usize,
        train_len: usize,
        started: Instant,
    ) -> Option<EpochTrain> {
        steps.sizes.truncate(read.losses.len());
        steps.lrs.truncate(read.losses.len());
        let samples: usize = steps.sizes.iter().sum();
        let seconds = started.elapsed().as_secs_f64();
        self.steps_before_epoch = self.step_losses.len();
        self.step_losses.extend_from_slice(&read.losses);
        self.step_lrs.extend_from_slice(&steps.lrs);
        self.step_epochs.extend(steps.starts(epoch, train_len));
        self.divergence = steps
            .divergence
            .or(read.divergence)
            .or_else(|| super::first_non_finite(&read.losses, epoch));
        if self.divergence.is_some() {
            return None;
        }
        Some(EpochTrain {
            loss: super::weighted_mean(&read.losses, &steps.sizes),
            acc: read.correct as f64 / samples as f64,
            samples,
            seconds,
            lr: steps.lrs.last().copied(),
        })
    }

    /// An interrupt stopped the validation of `epoch`: the epoch is dropped (its steps too)
    /// and the model stops as when an interrupt comes during training.
    pub fn interrupt_validation(&mut self, epoch: usize) {
        self.step_losses.truncate(self.steps_before_epoch);
        self.step_lrs.truncate(self.steps_before_epoch);
        self.step_epochs.truncate(self.steps_before_epoch);
        self.interrupted = Some(epoch);
    }

    /// Records a validated epoch and its model; returns whether it is the best so far.
    pub fn observe(&mut self, stats: EpochStats, model: Net) -> bool {
        self.stopped_early = self.best.observe(&stats, model);
        self.epoch = stats.epoch;
        let best = self.best.epoch == stats.epoch;
        self.history.push(stats);
        best
    }

    /// The last epoch's stats.
    pub fn last(&self) -> Option<&EpochStats> {
        self.history.last()
    }

    /// Hands the state after an epoch to the checkpointer (when it keeps anything).
    pub fn checkpoint(
        &self,
        learner: &Learner,
        checkpointer: &mut Option<&mut dyn Checkpointer>,
        memory: &MemoryPolicy,
    ) -> Result<()> {
        let Some(keeper) = checkpointer.as_deref_mut().filter(|c| c.wanted()) else {
            return Ok(());
        };
        let (weights_kind, weights, optim) = learner.weights.save()?;
        let state = ModelState {
            model: self.model.clone(),
            epochs: self.best_epochs(),
            epoch: self.epoch,
            ended: self.ended(),
            batch_size: learner.batch_size,
            loader_passes: learner.passes,
            augmented: learner.augmented_count(),
            weights_kind,
            dropout_steps: learner.weights.dropout_steps(),
            best: self.best.state(),
            history: self.history.clone(),
            blobs: Blobs {
                weights,
                optim,
                best: net_bytes(&self.best.model)?,
                step_losses: f32_bytes(&self.step_losses),
                step_lrs: f64_bytes(&self.step_lrs),
                step_epochs: f64_bytes(&self.step_epochs),
            },
        };
        keeper.save(state, &memory.events)
    }

    /// The end of the model's training in this process: one that ended (not interrupted,
    /// and not ended before) is checkpointed as ended, so a resumed run does not train it.
    pub fn end(
        &self,
        learner: &Learner,
        checkpointer: &mut Option<&mut dyn Checkpointer>,
        memory: &MemoryPolicy,
    ) -> Result<()> {
        if self.interrupted.is_some() || self.ended_before {
            return Ok(());
        }
        self.checkpoint(learner, checkpointer, memory)
    }

    /// How training ended, when it has; `Finished` once no epoch is left and nothing stopped
    /// it.
    fn ended(&self) -> Option<Ended> {
        if let Some(d) = &self.divergence {
            return Some(Ended::Diverged {
                epoch: d.epoch,
                step: d.step,
                what: d.what.to_string(),
            });
        }
        if let Some(why) = &self.stopped_early {
            return Some(Ended::StoppedEarly(why.clone()));
        }
        (self.interrupted.is_none() && self.epoch >= self.best_epochs()).then_some(Ended::Finished)
    }

    fn best_epochs(&self) -> usize {
        self.best.epochs()
    }

    /// The model's result.
    pub fn into_trained(
        self,
        learner: Learner,
        spec: crate::model::ModelSpec,
        engine: engine::EngineChoice,
        settings: &TrainSettings,
    ) -> Trained {
        Trained {
            last: learner.weights.model(),
            best_val_acc: self.best.val_acc,
            best_val_loss: self.best.val_loss,
            best_epoch: self.best.epoch,
            best: self.best.model,
            history: self.history,
            stopped_early: self.stopped_early,
            step_losses: self.step_losses,
            step_lrs: self.step_lrs,
            step_epochs: self.step_epochs,
            requested_batch: settings.batch_size,
            final_batch: learner.batch_size,
            divergence: self.divergence,
            interrupted: self.interrupted,
            spec,
            engine,
        }
    }
}
