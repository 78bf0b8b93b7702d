//! The models of a run: each trained in order (from the seed or `--init-from`), then
//! ranked on validation and tested once; and the shape trace of one batch.

use burn::prelude::*;

use crate::config::{Selection, Settings};
use crate::console::Console;
use crate::data::{self, Splits};
use crate::device;
use crate::error::{Result, TrainerError};
use crate::memory::MemoryPolicy;
use crate::model::{ModelKind, init_from};
use crate::pack::run_state::RunState;
use crate::report::{ModelRun, RunConfig, ShapeTrace};
use crate::train::checkpointer::Checkpointer;
use crate::train::logger::EpochLogger;
use crate::train::{self, Context, Hooks, TrainSettings, Trained, select};

/// One model, trained and not yet tested.
pub(super) struct TrainedModel {
    pub(super) spec: crate::model::ModelSpec,
    pub(super) epochs: usize,
    pub(super) lr: f64,
    pub(super) trained: Trained,
}

/// What training every model gave.
pub(super) struct TrainedModels {
    pub(super) models: Vec<TrainedModel>,
    /// Device memory held by burn's allocator after each model (wgpu reports it).
    pub(super) peak_device_bytes: Option<u64>,
}

/// Trains every model of `settings.models` in order, saying when one diverged; the state
/// goes to `state` after every epoch, and a resumed run goes on from it. An interrupt ends
/// the run after the model it stopped.
pub(super) fn train_models(
    config: &RunConfig,
    splits: &Splits,
    opened: &device::OpenBackend,
    memory: &mut MemoryPolicy,
    ctx: &Context,
    state: &mut RunState,
    console: &Console,
) -> Result<TrainedModels> {
    let settings = &config.settings;
    let mut models = Vec::new();
    let mut peak_device_bytes: Option<u64> = None;
    for (i, &kind) in settings.models.iter().enumerate() {
        let (epochs, lr) = settings.schedule(kind);
        let train_settings = TrainSettings::new(settings, epochs, lr);
        let net = initial_net(config, kind, splits, &opened.device, state, console)?;
        let spec = settings.spec(kind, splits.train.channels)?;
        say_frozen(config.freeze_features, kind, console);
        let later = settings.models[i + 1..]
            .iter()
            .map(|k| settings.schedule(*k).0);
        let hooks = Hooks {
            logger: EpochLogger::new(later.sum()),
            resume: state.model(&spec.display_name()),
            checkpointer: Some(&mut *state as &mut dyn Checkpointer),
            freeze_features: config.freeze_features,
        };
        let (train, val) = (&splits.train, &splits.val);
        let classes = splits.classes.len();
        let trained = train::train_model(
            net,
            train,
            val,
            classes,
            &train_settings,
            memory,
            ctx,
            hooks,
        )?;
        if let Some(d) = &trained.divergence {
            warn_diverged(&spec, d, trained.best_epoch, console);
        }
        if let Some(usage) = opened.device.memory_pool_usage() {
            peak_device_bytes = Some(peak_device_bytes.unwrap_or(0).max(usage.bytes_reserved));
        }
        let interrupted = trained.interrupted.is_some();
        models.push(TrainedModel {
            spec,
            epochs,
            lr,
            trained,
        });
        if interrupted {
            break;
        }
    }
    Ok(TrainedModels {
        models,
        peak_device_bytes,
    })
}

/// Says what `--freeze-features` does to a model: only the CNN has feature layers to freeze.
fn say_frozen(freeze: bool, kind: ModelKind, console: &Console) {
    match (freeze, kind) {
        (false, _) => {}
        (true, ModelKind::Baseline) => console.warn(&format!(
            "--freeze-features has no effect on the {}: it has no feature layers, only its head",
            kind.display_name()
        )),
        (true, _) => console.info("features frozen: only the head trains"),
    }
}

/// A model's starting weights: fresh from the seed, or (`--init-from`, for a model of the
/// checkpoint's kind) the checkpoint's, which the run's state records.
fn initial_net(
    config: &RunConfig,
    kind: ModelKind,
    splits: &Splits,
    device: &Device,
    state: &mut RunState,
    console: &Console,
) -> Result<crate::model::Net> {
    match start(config, kind, splits, device)? {
        Start::Fresh(net, note) => {
            if let Some(note) = note {
                console.info(&note);
            }
            Ok(net)
        }
        Start::From(started) => {
            if let Some(note) = &started.note {
                console.info(note);
            }
            console.info(&format!(
                "{} starts from {} (parameters {})",
                started.net.spec(splits.train.channels).display_name(),
                started.from.path,
                started.from.params_checksum
            ));
            state.set_init_from(Some(started.from));
            Ok(started.net)
        }
    }
}

/// Checks, before any model trains, that `--init-from` applies to every model of the run
/// (its kind is trained, its shape is each model's of that kind: a mismatch found only
/// after another model trained would leave a run that can never resume); and how many of
/// the run's test images its checkpoint saw ([`test_overlap`]).
pub(super) fn check_init_from(
    config: &RunConfig,
    splits: &Splits,
    device: &Device,
    console: &Console,
) -> Result<Option<init_from::TestOverlap>> {
    if config.init_from.is_none() {
        return Ok(None);
    }
    for &kind in &config.settings.models {
        start(config, kind, splits, device)?;
    }
    test_overlap(config, splits, device, console)
}

/// How many of the run's test images `--init-from`'s checkpoint trained or validated on:
/// refused before any training unless `--allow-test-overlap` (then said as a warning). A
/// resumed run is checked again, allowed as its state records.
fn test_overlap(
    config: &RunConfig,
    splits: &Splits,
    device: &Device,
    console: &Console,
) -> Result<Option<init_from::TestOverlap>> {
    let Some(path) = &config.init_from else {
        return Ok(None);
    };
    let (_, meta) = init_from::read(path, device)?;
    let overlap = init_from::test_overlap(&meta, splits)?;
    init_from::check_test_overlap(overlap, path, config.allow_test_overlap)?;
    if let Some(o) = overlap.filter(|o| o.seen > 0) {
        console.warn(&format!(
            "{} of the {} test images were the checkpoint's training or validation images: the test accuracy overstates",
            o.seen, o.test
        ));
    }
    Ok(overlap)
}

/// How a model starts: fresh (with a note when `--init-from` names another kind), or from
/// the checkpoint.
enum Start {
    Fresh(crate::model::Net, Option<String>),
    From(init_from::Started),
}

/// A model's start, said nowhere: [`initial_net`] says it, [`check_init_from`] only checks.
fn start(config: &RunConfig, kind: ModelKind, splits: &Splits, device: &Device) -> Result<Start> {
    let fresh = crate::setup::init_net(&config.settings, kind, splits, device)?;
    let Some(path) = &config.init_from else {
        return Ok(Start::Fresh(fresh, None));
    };
    let (loaded, meta) = init_from::read(path, device)?;
    if !init_from::applies(&meta, kind) {
        if !config.settings.models.contains(&meta.model_kind) {
            return Err(TrainerError::bad_input(format!(
                "--init-from '{}' is a {} checkpoint and this run trains no {}: choose --models {}",
                path.display(),
                meta.model_name,
                meta.model_kind.display_name(),
                meta.model_kind.slug()
            )));
        }
        let note = format!(
            "--init-from: {} starts fresh (the checkpoint is a {})",
            kind.display_name(),
            meta.model_name
        );
        return Ok(Start::Fresh(fresh, Some(note)));
    }
    let channels = splits.train.channels;
    let run = init_from::RunData {
        image_size: splits.image_size,
        channels,
        classes: &splits.classes,
    };
    let started = init_from::start_from(fresh, loaded, &meta, path, run)?;
    Ok(Start::From(started))
}

/// The warning for a model whose training diverged.
fn warn_diverged(
    spec: &crate::model::ModelSpec,
    d: &train::Divergence,
    best_epoch: usize,
    console: &Console,
) {
    let kept = match best_epoch {
        0 => "no epoch finished, so the initial parameters are kept".to_string(),
        e => format!("the best epoch so far ({e}) is kept"),
    };
    console.warn(&format!(
        "{} diverged ({}) at epoch {} step {}: its training stopped there and {kept}; see 'Divergence' in reports/debug_checklist.md",
        spec.display_name(),
        d.what,
        d.epoch,
        d.step
    ));
}

/// Chooses the best model and tests every model's kept epoch once: by validation (the
/// default) the choice is made before the test part is measured; `--select-by test` ranks
/// after it, as the workshop script does. Returns the models and their ranking, best first.
pub(super) fn test_and_rank(
    trained: Vec<TrainedModel>,
    settings: &Settings,
    splits: &Splits,
    memory: &mut MemoryPolicy,
    ctx: &Context,
) -> Result<(Vec<ModelRun>, Vec<usize>)> {
    let candidate = |t: &Trained, test_acc: Option<f64>| select::Candidate {
        val_acc: t.best_val_acc,
        val_loss: t.best_val_loss,
        test_acc,
        kept_epoch: t.best_epoch > 0,
    };
    let chosen_on_validation = (settings.select_by == Selection::Val).then(|| {
        let candidates: Vec<_> = trained
            .iter()
            .map(|m| candidate(&m.trained, None))
            .collect();
        select::rank(&candidates, Selection::Val, settings.monitor)
    });
    let mut models = Vec::new();
    for m in trained {
        let classes = splits.classes.len();
        let test = train::test_kept(&m.trained, &splits.test, classes, false, memory, ctx)?;
        models.push(ModelRun {
            spec: m.spec,
            epochs: m.epochs,
            lr: m.lr,
            trained: m.trained,
            test,
        });
    }
    let ranking = chosen_on_validation.unwrap_or_else(|| {
        let candidates: Vec<_> = models
            .iter()
            .map(|m| candidate(&m.trained, Some(m.test.accuracy)))
            .collect();
        select::rank(&candidates, Selection::Test, settings.monitor)
    });
    Ok((models, ranking))
}

/// Runs one batch through the (untrained) models, layer by layer, to record the real shapes.
/// Shapes do not depend on the backend, so this runs on the CPU: on wgpu the layers would be
/// the only operations that cubecl autotunes, and a cold first run would pay for that.
pub(super) fn trace_shapes(splits: &Splits, settings: &Settings) -> Result<ShapeTrace> {
    let device = &Device::flex();
    let mut shapes = ShapeTrace::default();
    let first = splits
        .train
        .samples
        .iter()
        .take(settings.batch_size)
        .cloned()
        .collect::<Vec<_>>();
    let batch = burn::data::dataloader::batcher::Batcher::batch(
        &data::ImageBatcher::plain(splits.image_size, splits.train.channels),
        first,
        device,
    );
    shapes.images = batch.images.dims().to_vec();
    shapes.labels = batch.labels.dims().to_vec();
    for &kind in &settings.models {
        let net = crate::setup::init_net(settings, kind, splits, device)?;
        let spec = settings.spec(kind, splits.train.channels)?;
        let mut layers = Vec::new();
        let logits = net.forward_traced(batch.images.clone(), &mut |layer, shape| {
            layers.push((spec, layer.to_string(), shape));
        });
        shapes.logits.push((spec, logits.dims().to_vec()));
        shapes.layers.extend(layers);
    }
    Ok(shapes)
}
