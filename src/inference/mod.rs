//! Inference from a checkpoint alone: the model and its preprocessing come from the
//! checkpoint, nothing else from the run that trained it.
//! - [`recorded`]: the recorded test set scored again (`trainer evaluate --checkpoint C`).
//! - [`folder`]: any labelled folder scored, per class (`trainer evaluate --data DIR`).
//! - [`predict`]: files and folders classified in batches (`trainer predict`).
//! - [`inputs`]: gathering image files and reading them at the checkpoint's size and mode.

pub mod folder;
pub mod inputs;
pub mod predict;
pub mod recorded;

use std::path::Path;

use crate::console::Progress;
use crate::data::ImageDataset;
use crate::device::{self, BackendChoice, OpenBackend};
use crate::error::Result;
use crate::memory::MemoryPolicy;
use crate::model::Net;
use crate::model::checkpoint::{self, CheckpointMeta};
use crate::train::engine::{Engine, Workload};
use crate::train::{self, Context, Evaluation};

/// A checkpoint's model, on the device opened for it.
pub struct Loaded {
    pub net: Net,
    pub meta: CheckpointMeta,
    pub opened: OpenBackend,
}

/// Opens the backend `choice` and loads the checkpoint at `path` onto it.
pub fn load(path: &Path, choice: BackendChoice) -> Result<Loaded> {
    let opened = device::open(choice)?;
    let (net, meta) = checkpoint::load(path, &opened.device)?;
    Ok(Loaded { net, meta, opened })
}

/// How one evaluation pass of a checkpoint runs.
pub struct Pass<'a> {
    pub batch_size: usize,
    pub keep_logits: bool,
    pub progress: &'a dyn Progress,
}

/// Evaluates the loaded model on `dataset`, with the engine chosen for it and the same
/// memory protection as training (a batch that does not fit is halved).
pub fn run_pass(loaded: &Loaded, dataset: &ImageDataset, pass: Pass) -> Result<Evaluation> {
    let classes = loaded.meta.classes.len();
    let mut memory = MemoryPolicy::new(None, true)?;
    let ctx = Context {
        device: &loaded.opened.device,
        device_info: &loaded.opened.info,
        progress: pass.progress,
    };
    let engine = Engine::choose(
        &loaded.opened.device,
        loaded.net.spec(dataset.channels),
        classes,
        dataset.image_size,
        Workload {
            batch: pass.batch_size,
            training: false,
        },
    );
    let settings = train::EvalSettings {
        classes,
        engine: &engine,
        batch_size: pass.batch_size,
        keep_logits: pass.keep_logits,
    };
    train::evaluate(&loaded.net, dataset, &settings, &mut memory, &ctx)
}
