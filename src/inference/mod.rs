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
use crate::train::engine::{Engine, EngineChoice, Workload};
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

/// The engine that evaluates the loaded model on images of `channels` channels and
/// `image_size` squared, in batches of `batch_size`.
fn choose_engine(
    loaded: &Loaded,
    channels: usize,
    image_size: usize,
    batch_size: usize,
) -> EngineChoice {
    Engine::choose(
        &loaded.opened.device,
        loaded.net.spec(channels),
        loaded.meta.classes.len(),
        image_size,
        Workload {
            batch: batch_size,
            training: false,
        },
    )
}

/// The line training prints when the device's faster engine does not take the model
/// ([`EngineChoice::console_line`]), for evaluate and predict to print once before they
/// run: the checkpoint's model on images of its own size and channels, in batches of
/// `batch_size`.
pub fn engine_line(loaded: &Loaded, batch_size: usize) -> Option<String> {
    let meta = &loaded.meta;
    choose_engine(loaded, meta.channels, meta.image_size, batch_size).console_line()
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
    let engine = choose_engine(
        loaded,
        dataset.channels,
        dataset.image_size,
        pass.batch_size,
    );
    let settings = train::EvalSettings {
        classes,
        engine: &engine,
        batch_size: pass.batch_size,
        keep_logits: pass.keep_logits,
    };
    train::evaluate(&loaded.net, dataset, &settings, &mut memory, &ctx)
}
