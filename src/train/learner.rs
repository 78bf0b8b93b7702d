//! One epoch of steps over the training data, with the memory policy's halving retry: a step
//! that cannot allocate is dropped (it changed nothing), the batch is halved and the same
//! samples are redone, so every sample of the epoch is trained on exactly once.
//!
//! An out-of-memory that the device reports on its own thread ([`faults`]: a buffer wgpu could
//! not allocate inside a queued step) is known only at the next read, when steps after it have
//! been queued on what it never made. Then nothing the epoch did is kept: the weights go back
//! to the epoch's start (a snapshot taken when it started, the kernels' state on the host),
//! what the attempt made is dropped and the device's cached memory released, the batch is
//! halved and the whole epoch is trained again, so every sample is still trained on once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::checkpointer::ModelState;
use super::engine::EngineChoice;
use super::weights::{StepValues, Weights};
use super::{
    Context, DIVERGED_GRAD_NORM, Divergence, EpochRead, StepFailure, TrainSettings, halve,
    preflight, read_epoch,
};
use crate::data::{ImageBatch, ImageDataset};
use crate::device::faults;
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
    /// Its short name ([`interrupt::inject`] names it).
    slug: String,
    footprint: Footprint,
    loader: Arc<dyn DataLoader<ImageBatch>>,
    /// Training samples an epoch, for the schedule's position.
    train_len: usize,
    /// The current attempt at an epoch: the device's error count at its start, and the
    /// samples and steps it has done (to rewind the progress bar and name the step).
    attempt: Attempt,
    /// Whether `TRAINER_CAP_MEMORY_AT` has capped the address space for this model.
    capped: bool,
    /// Passes made over the loader: each draws the next shuffle (a resumed run replays them).
    pub passes: usize,
    /// Samples the loader has augmented (each draws the next numbers).
    pub augmented: Arc<AtomicU64>,
}

#[derive(Clone, Copy)]
struct Attempt {
    mark: faults::Mark,
    samples: usize,
    steps: usize,
    /// Steps whose results were read with no device error reported: a fault came after.
    verified: usize,
}

impl Attempt {
    fn start() -> Attempt {
        Attempt {
            mark: faults::mark(),
            samples: 0,
            steps: 0,
            verified: 0,
        }
    }
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

impl EpochSteps {
    /// Where each step of epoch `epoch` (from 1) started, in epochs of `train_len` samples:
    /// 2.5 is half way through epoch 3. Steps of a halved batch are twice as close.
    pub fn starts(&self, epoch: usize, train_len: usize) -> Vec<f64> {
        let mut done = 0;
        self.sizes
            .iter()
            .map(|&size| {
                let at = (epoch - 1) as f64 + done as f64 / train_len.max(1) as f64;
                done += size;
                at
            })
            .collect()
    }
}

/// Off wgpu `TRAINER_CAP_MEMORY_AT` does not apply (it would starve the CPU backends' own
/// threads and buffers): the policy's cap is dropped, said once for the policy (one run, or
/// one backend of parity), whether or not its step would be reached. True off wgpu.
fn drop_cap_off_wgpu(memory: &mut MemoryPolicy, ctx: &Context) -> bool {
    if crate::device::is_wgpu(ctx.device) {
        return false;
    }
    if memory.cap.take().is_some() {
        ctx.progress.note(&format!(
            "memory: {} not applied: it starves wgpu's device memory on lavapipe, and this run is on {}",
            crate::device::address_cap::CAP_MEMORY_AT_ENV,
            ctx.device_info.backend.as_str()
        ));
    }
    true
}

impl Drop for Learner {
    /// A model's `TRAINER_CAP_MEMORY_AT` cap ends with its training.
    fn drop(&mut self) {
        if self.capped {
            crate::device::address_cap::lift();
        }
    }
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
        let mark = faults::mark();
        let weights = choice.engine.weights(net, ctx.device, &settings.recipe);
        check_made(&name, mark, ctx)?;
        let device = weights.batch_device(ctx.device);
        let feed = crate::train::feed::Feed {
            shuffle_seed: Some(settings.shuffle_seed),
            augment: settings.augment.seeded(settings.shuffle_seed),
            stripes_on_device: choice.stripes_on_device(),
        };
        let augmented = Arc::new(AtomicU64::new(0));
        Ok(Learner {
            weights,
            batch_size,
            name,
            slug: spec.slug(),
            footprint,
            loader: crate::train::feed::loader_counted(
                train,
                batch_size,
                feed,
                &device,
                augmented.clone(),
            ),
            train_len: train.len(),
            attempt: Attempt::start(),
            capped: false,
            passes: 0,
            augmented,
        })
    }

    /// The model's display name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Samples augmented so far.
    pub fn augmented_count(&self) -> u64 {
        self.augmented.load(Ordering::SeqCst)
    }

    /// Where a stopped run was: its weights and optimizer state, batch size, the loader's
    /// passes (replayed, so the next pass draws the same permutation) and the augmentation's
    /// count.
    pub fn restore(&mut self, state: &ModelState, ctx: &Context) -> Result<()> {
        let blobs = &state.blobs;
        self.weights
            .load(state.weights_kind, &blobs.weights, &blobs.optim, ctx.device)?;
        self.weights.resume_dropout_steps(state.dropout_steps);
        self.batch_size = state.batch_size;
        while self.passes < state.loader_passes {
            drop(self.loader.iter());
            self.passes += 1;
        }
        self.augmented.store(state.augmented, Ordering::SeqCst);
        Ok(())
    }

    /// One epoch, trained and read back. When the device reported an out-of-memory inside
    /// its work meanwhile, the weights go back to the epoch's start and the epoch is trained
    /// again at half the batch (see the module's note); any other error it reported ends
    /// the run with the device's own words.
    pub fn train_epoch(
        &mut self,
        epoch: usize,
        settings: &TrainSettings,
        memory: &mut MemoryPolicy,
        ctx: &Context,
    ) -> Result<(EpochSteps, EpochRead)> {
        interrupt::inject(&self.slug, epoch);
        loop {
            self.attempt = Attempt::start();
            let start = self.weights.snapshot().map_err(|failure| match failure {
                StepFailure::Allocation(reason) | StepFailure::Other(reason) => {
                    super::device_error(ctx, &reason)
                }
            })?;
            let outcome = self
                .run_epoch(epoch, settings, memory, ctx)
                .and_then(|mut steps| {
                    let read = read_epoch(std::mem::take(&mut steps.values), epoch, ctx)?;
                    Ok((steps, read))
                });
            if epoch == 1 && outcome.is_ok() {
                self.note_cap_not_reached(memory, ctx);
            }
            let fault = match faults::since(self.attempt.mark) {
                None => return outcome,
                Some(_) if matches!(outcome, Err(TrainerError::Interrupted)) => return outcome,
                Some(fault) => fault,
            };
            faults::clear();
            if !fault.out_of_memory {
                return Err(super::device_failure(ctx, fault.reason()));
            }
            // Drop all the attempt made before the halving releases the device's memory.
            drop(outcome);
            self.weights = start.restore();
            ctx.progress.rewind(self.attempt.samples as u64);
            let reason = format!("{}; redoing epoch {epoch} from its start", fault.reason());
            // The first step whose results were not read back clean is where it failed.
            self.halve(&reason, epoch, self.attempt.verified + 1, memory, ctx)?;
        }
    }

    /// One pass over the training data, adopting each step that completes.
    fn run_epoch(
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
        self.passes += 1;
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
                if epoch == 1 && memory.cap.is_some_and(|c| c.step == self.attempt.steps + 1) {
                    self.cap_memory(memory, ctx)?;
                }
                let lr = settings.lr_at(epoch, trained + start, self.train_len);
                let attempt = match (
                    memory.injected_failure(len),
                    memory.injected_device_error(len),
                ) {
                    (Some(reason), _) => Err(StepFailure::Allocation(reason)),
                    (None, Some(reason)) => Err(StepFailure::Other(reason)),
                    (None, None) => self.weights.step(&part, settings, lr),
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
                        self.attempt.samples += len;
                        self.attempt.steps += 1;
                        if step.norm.is_some() && faults::since(self.attempt.mark).is_none() {
                            self.attempt.verified = self.attempt.steps;
                        }
                        let message = format!(
                            "{name} epoch {epoch}/{} batch {}",
                            settings.epochs, self.batch_size
                        );
                        ctx.progress.advance(len as u64, &message);
                        if steps.divergence.is_some() {
                            return Ok(steps);
                        }
                    }
                    // An out-of-memory the device reported: the epoch is redone (train_epoch).
                    Err(StepFailure::Allocation(reason))
                        if faults::since(self.attempt.mark).is_some() =>
                    {
                        return Err(TrainerError::OutOfMemory(reason));
                    }
                    Err(StepFailure::Allocation(reason)) => {
                        self.halve(&reason, epoch, steps.values.len() + 1, memory, ctx)?
                    }
                    Err(StepFailure::Other(reason)) => {
                        return Err(super::device_failure(ctx, root_cause(&reason)));
                    }
                }
            }
            trained += batch.len();
        }
        Ok(steps)
    }

    /// Applies the address-space cap of `TRAINER_CAP_MEMORY_AT` (once a model, on wgpu),
    /// saying so.
    fn cap_memory(&mut self, memory: &mut MemoryPolicy, ctx: &Context) -> Result<()> {
        if drop_cap_off_wgpu(memory, ctx) {
            return Ok(());
        }
        if let Some(cap) = memory.cap.filter(|_| !self.capped) {
            self.capped = true;
            let limit = cap.apply(ctx.device)?;
            ctx.progress.note(&format!(
                "memory: {} capped the address space at {} MiB before step {}",
                crate::device::address_cap::CAP_MEMORY_AT_ENV,
                limit >> 20,
                cap.step
            ));
        }
        Ok(())
    }

    /// Says so when `TRAINER_CAP_MEMORY_AT` names a step the first epoch does not have.
    fn note_cap_not_reached(&mut self, memory: &mut MemoryPolicy, ctx: &Context) {
        if drop_cap_off_wgpu(memory, ctx) {
            return;
        }
        if let Some(cap) = memory.cap.filter(|_| !self.capped) {
            self.capped = true;
            ctx.progress.note(&format!(
                "memory: {} not applied: {}'s first epoch has {} step(s), not {}",
                crate::device::address_cap::CAP_MEMORY_AT_ENV,
                self.name,
                self.attempt.steps,
                cap.step
            ));
        }
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

/// Waits for the model's weights to be made on the device, so that an epoch can go back to
/// them: a device error meanwhile (their memory could not be had) ends the run.
fn check_made(name: &str, mark: faults::Mark, ctx: &Context) -> Result<()> {
    let synced = ctx.device.sync();
    match (faults::since(mark), synced) {
        (None, Ok(())) => Ok(()),
        (Some(fault), _) if fault.out_of_memory => Err(TrainerError::OutOfMemory(format!(
            "{name}: the model's weights do not fit in the device's memory ({})",
            fault.reason()
        ))),
        (Some(fault), _) => Err(super::device_failure(ctx, fault.reason())),
        (None, Err(e)) => Err(super::device_error(ctx, &e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::EpochSteps;

    /// lr_schedule.png places each step where it started: an epoch of 100 samples halved
    /// from 32 to 16 after its second step has its later steps 0.16 apart, not spread evenly
    /// over the epoch as if every step had the batch the run started with.
    #[test]
    fn steps_start_where_their_samples_start() {
        let steps = EpochSteps {
            sizes: vec![32, 32, 16, 16, 4],
            ..EpochSteps::default()
        };
        let starts = steps.starts(3, 100);
        let expected = [2.0, 2.32, 2.64, 2.8, 2.96];
        assert_eq!(starts.len(), expected.len());
        for (got, want) in starts.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{starts:?}");
        }
    }
}
