//! One epoch of steps over the training data, with the memory policy's halving retry: a step
//! that cannot allocate is dropped (it changed nothing), the batch is halved and the same
//! samples are redone, so every sample of the epoch is trained on exactly once.

use std::sync::Arc;

use super::engine::EngineChoice;
use super::weights::{StepValues, Weights};
use super::{
    Context, DIVERGED_GRAD_NORM, Divergence, StepFailure, TrainSettings, halve, preflight,
};
use crate::data::{self, ImageBatch, ImageDataset};
use crate::error::{Result, TrainerError, root_cause};
use crate::interrupt;
use crate::memory::{Footprint, MemoryEvent, MemoryPolicy};
use crate::model::Net;
use burn::data::dataloader::DataLoader;

/// The model being trained, its optimizer, its data, and the batch size it is at.
pub(super) struct Learner {
    pub weights: Weights,
    pub batch_size: usize,
    /// The model's display name, for progress and memory events.
    name: String,
    footprint: Footprint,
    loader: Arc<dyn DataLoader<ImageBatch>>,
    /// Training samples an epoch, for the schedule's position.
    train_len: usize,
}

/// An epoch's steps, not yet read back from the device.
#[derive(Default)]
pub(super) struct EpochSteps {
    pub values: Vec<StepValues>,
    /// Samples of each step.
    pub sizes: Vec<usize>,
    /// The learning rate of each step.
    pub lrs: Vec<f64>,
    /// Set when a step's gradient norm was not finite or too large (the epoch ends there).
    pub divergence: Option<Divergence>,
}

impl Learner {
    /// `net` ready to train on `choice`'s engine with a fresh Adam, at the batch size the
    /// memory policy allows for that engine.
    pub fn new(
        net: Net,
        train: &ImageDataset,
        classes: usize,
        choice: &EngineChoice,
        settings: &TrainSettings,
        memory: &mut MemoryPolicy,
        ctx: &Context,
    ) -> Result<Learner> {
        let spec = net.spec(train.channels);
        let name = spec.display_name();
        let footprint = choice.engine.footprint(spec, train.image_size, classes);
        let batch_size = preflight(memory, &name, true, settings.batch_size, &footprint, ctx)?;
        let weights = choice.engine.weights(net, ctx.device, &settings.recipe);
        let device = weights.batch_device(ctx.device);
        let feed = data::Feed {
            shuffle_seed: Some(settings.shuffle_seed),
            augment: settings.augment.then_some(settings.shuffle_seed),
            stripes_on_device: choice.stripes_on_device(),
        };
        Ok(Learner {
            weights,
            batch_size,
            name,
            footprint,
            loader: data::loader(train, batch_size, feed, &device),
            train_len: train.len(),
        })
    }

    /// One pass over the training data, adopting each step that completes.
    pub fn run_epoch(
        &mut self,
        epoch: usize,
        settings: &TrainSettings,
        memory: &mut MemoryPolicy,
        ctx: &Context,
    ) -> Result<EpochSteps> {
        let name = self.name.clone();
        let mut steps = EpochSteps::default();
        // Samples of the completed batches this epoch (the schedule's position).
        let mut trained = 0;
        for batch in self.loader.clone().iter() {
            let batch = batch.map_err(|e| TrainerError::bad_input(format!("reading data: {e}")))?;
            let mut start = 0;
            while start < batch.len() {
                if interrupt::requested() {
                    return Err(TrainerError::Interrupted);
                }
                let len = self.batch_size.min(batch.len() - start);
                let part = if len == batch.len() {
                    batch.clone()
                } else {
                    batch.narrow(start, len)
                };
                let lr = settings.lr_at(epoch, trained + start, self.train_len);
                let attempt = match memory.injected_failure(len) {
                    Some(reason) => Err(StepFailure::Allocation(reason)),
                    None => self.weights.step(&part, settings, lr),
                };
                match attempt {
                    Ok(step) => {
                        if let Some(norm) = step.norm
                            && !(norm <= DIVERGED_GRAD_NORM)
                        {
                            steps.divergence = Some(Divergence {
                                epoch,
                                step: steps.values.len() + 1,
                                what: Divergence::of_norm(norm),
                            });
                        }
                        steps.values.push(step.values);
                        steps.sizes.push(len);
                        steps.lrs.push(lr);
                        start += len;
                        let message = format!(
                            "{name} epoch {epoch}/{} batch {}",
                            settings.epochs, self.batch_size
                        );
                        ctx.progress.advance(len as u64, &message);
                        if steps.divergence.is_some() {
                            return Ok(steps);
                        }
                    }
                    Err(StepFailure::Allocation(reason)) => {
                        self.halve(&reason, epoch, steps.values.len() + 1, memory, ctx)?
                    }
                    Err(StepFailure::Other(reason)) => {
                        return Err(TrainerError::Device {
                            backend: ctx.device_info.backend.as_str().to_string(),
                            reason: root_cause(&reason),
                        });
                    }
                }
            }
            trained += batch.len();
        }
        Ok(steps)
    }

    /// Halves the batch after a step at `step` could not allocate; at batch 1 there is no
    /// smaller batch to try, and the run fails.
    fn halve(
        &mut self,
        reason: &str,
        epoch: usize,
        step: usize,
        memory: &mut MemoryPolicy,
        ctx: &Context,
    ) -> Result<()> {
        let name = self.name.clone();
        if self.batch_size == 1 {
            return Err(TrainerError::OutOfMemory(format!(
                "{name}: a training step of batch 1 does not fit in memory ({})",
                root_cause(reason)
            )));
        }
        let event = MemoryEvent {
            model: name.to_string(),
            phase: "train",
            epoch,
            step,
            from_batch: self.batch_size,
            to_batch: self.batch_size / 2,
            reason: root_cause(reason),
            requested_bytes: Some(self.footprint.step_bytes(self.batch_size, true)),
            budget_bytes: memory.budget(ctx.device_info),
        };
        self.batch_size = halve(memory, event, ctx);
        Ok(())
    }
}
