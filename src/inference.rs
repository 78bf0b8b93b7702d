//! Inference from a checkpoint alone: `trainer evaluate` rebuilds the model and the test set
//! the checkpoint describes and measures the test accuracy again.

use std::path::Path;

use crate::backend::{self, BackendChoice, DeviceInfo};
use crate::checkpoint::{self, CheckpointMeta};
use crate::data;
use crate::error::Result;
use crate::memory::MemoryPolicy;
use crate::train::{self, Context, Evaluation, Progress};

/// What `trainer evaluate` found.
#[derive(Debug)]
pub struct CheckpointEvaluation {
    pub meta: CheckpointMeta,
    pub device: DeviceInfo,
    pub test: Evaluation,
}

/// Loads the checkpoint at `path`, regenerates its test set and evaluates it.
pub fn evaluate_checkpoint(
    path: &Path,
    choice: BackendChoice,
    batch_size: usize,
    progress: &dyn Progress,
) -> Result<CheckpointEvaluation> {
    let opened = backend::open(choice)?;
    let (net, meta) = checkpoint::load(path, &opened.device)?;
    let splits = data::stripe_splits(&meta.data)?;
    let mut memory = MemoryPolicy::new(None, true)?;
    let ctx = Context {
        device: &opened.device,
        device_info: &opened.info,
        progress,
    };
    let test = train::evaluate(
        &net,
        &splits.test,
        meta.classes.len(),
        batch_size,
        &mut memory,
        &ctx,
    )?;
    Ok(CheckpointEvaluation {
        meta,
        device: opened.info,
        test,
    })
}
