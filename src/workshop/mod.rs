//! The workshop run as a library: data, every model, test evaluation and the evidence pack,
//! in the order of the seed script (`trainer` with no subcommand calls [`run`]).
//!
//! After every epoch the run's state goes to `OUT/checkpoints/last.*`
//! ([`crate::pack::run_state::RunState`]): an interrupt keeps the epochs finished (the pack is
//! written from each model's best epoch so far and marked incomplete), and `--resume OUT`
//! goes on from there. `state.rs` holds that state's steps, `models.rs` the training and
//! testing of the models.

mod models;
mod state;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::config::{self, Settings};
use crate::console::Console;
use crate::data::{self, Splits};
use crate::device;
use crate::error::{Result, TrainerError};
use crate::memory::{self, MemoryPolicy};
use crate::pack::{self, OutputLock};
use crate::report::{Report, RunConfig};
use crate::train::{self, Context};

pub use state::resumed_settings;

/// Runs the workshop and writes the evidence pack into `config.out`.
pub fn run(config: RunConfig, console: &Console) -> Result<Report> {
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut config = prepare(config)?;
    let _lock = OutputLock::acquire(&config.out)?;
    let opened = open_device(&config.settings, console)?;
    state::check_resumed_fine_tuning(&config, &opened.device)?; // before the data loads

    let splits = load_data(&mut config.settings, console)?;
    let settings = config.settings.clone();
    let mut memory = MemoryPolicy::new(config.memory_limit_bytes, config.memory_preflight)?;
    let ctx = Context {
        device: &opened.device,
        device_info: &opened.info,
        progress: console,
    };
    let mut state = state::run_state(&config, &splits, &mut memory, console)?;
    state::adopt_command(&mut config, &mut state);
    state::adopt_fine_tuning(&mut config, &mut state, &opened.device)?;
    let test_overlap = models::check_init_from(&config, &splits, &opened.device, console)?;
    let shapes = models::trace_shapes(&splits, &settings)?;

    let mut trained = models::train_models(
        &config,
        &splits,
        &opened,
        &mut memory,
        &ctx,
        &mut state,
        console,
    )?;
    // Training is over: from here an interrupt no longer stops the run (the finished epochs
    // are tested and the pack written; a second interrupt exits at once).
    let _finishing = crate::interrupt::Finishing::begin();
    let stopped = state::keep_finished(&mut trained, &mut state, console)?;
    let (models, ranking) =
        models::test_and_rank(trained.models, &settings, &splits, &mut memory, &ctx)?;
    let label_issues = train::label_issues::find(
        &models[ranking[0]].trained,
        [
            (data::Part::Train, &splits.train),
            (data::Part::Val, &splits.val),
        ],
        splits.classes.len(),
        &mut memory,
        &ctx,
    )?;
    let gpu_kernels = models.iter().any(|m| m.trained.engine.summary_on_device);
    let cpu_kernels = models
        .iter()
        .any(|m| m.trained.engine.engine == train::engine::Engine::CpuFused)
        .then(crate::device::cpu_kernels::instruction_set);

    let mut report = Report {
        config,
        device: opened.info.clone(),
        choice_note: opened.choice_note.clone(),
        classes: splits.classes.clone(),
        split_sizes: [splits.train.len(), splits.val.len(), splits.test.len()],
        test_set: splits.test.clone(),
        normalization: splits.normalization.clone(),
        skipped: splits.skipped.clone(),
        manifest: splits.manifest.clone(),
        color: splits.color.clone(),
        data_issues: splits.issues.clone(),
        data_folder: splits.folder.clone(),
        models,
        ranking,
        shapes,
        label_issues,
        memory_events: memory.events.clone(),
        started_unix,
        wall_seconds: 0.0,
        peak_rss_bytes: None,
        peak_device_bytes: trained.peak_device_bytes,
        gpu_kernels,
        cpu_kernels,
        stopped,
        init_from: state.init_from().cloned(),
        test_overlap,
    };
    // The wall time and peak memory cover everything up to writing the pack.
    report.wall_seconds = started.elapsed().as_secs_f64();
    report.peak_rss_bytes = memory::peak_rss_bytes();
    state::write_pack(&report, &mut state, console)?;
    Ok(report)
}

/// The run's settings checked and its paths made absolute (an absolute folder keeps
/// outputs/config.json and the checkpoint usable from anywhere); the output folder checked.
fn prepare(mut config: RunConfig) -> Result<RunConfig> {
    if let Some(folder) = &config.settings.data {
        config.settings.data = Some(
            std::path::absolute(folder).map_err(|e| TrainerError::io("resolving", folder, e))?,
        );
    }
    config.settings.validate()?;
    pack::check_target(&config.out, pack::PackKind::Workshop)?;
    if let Some(folder) = &config.settings.data {
        pack::check_outside(&config.out, folder)?;
    }
    Ok(config)
}

/// Opens the backend, saying what it is and the settings that have no effect on it.
fn open_device(settings: &Settings, console: &Console) -> Result<device::OpenBackend> {
    let opened = device::open(settings.backend)?;
    if let Some(note) = &opened.choice_note {
        console.info(note);
    }
    for note in settings.without_effect() {
        console.warn(&note);
    }
    for note in settings.cautions() {
        console.info(&note);
    }
    if device::chosen_adapter().is_some() && opened.info.backend != device::BackendName::Wgpu {
        console.warn(&format!(
            "--device picks a wgpu adapter; the {} backend does not use one",
            opened.info.backend.as_str()
        ));
    }
    console.info(&opened.info.summary());
    Ok(opened)
}

/// The run's data: the split, its skipped files and colour said on the console, and under
/// `--overfit-batches` only the first batches (the settings then record what ran).
fn load_data(settings: &mut Settings, console: &Console) -> Result<Splits> {
    let mut splits = crate::setup::load_data(settings, console, "")?;
    if let Some(asked) = settings.overfit_batches {
        let settings = overfit_settings(settings, &mut splits, asked, console);
        let batches = settings.overfit_batches.unwrap_or(asked);
        let epochs = settings.schedule(crate::model::ModelKind::Cnn).0;
        console.info(&format!(
            "overfit check: {} training samples in {batches} batch(es), {epochs} epochs of them ({} steps) a model; it passes when the training loss falls below {:.4}",
            splits.train.len(),
            epochs * batches,
            config::overfit_threshold(settings.label_smoothing, splits.classes.len())
        ));
    }
    Ok(splits)
}

/// The overfit check's data: the first N batches of the training part. Asking for more
/// batches than there are uses all of them (the settings record what ran), so the step budget
/// stays whole. Returns the settings the run now has.
fn overfit_settings<'a>(
    settings: &'a mut Settings,
    splits: &mut Splits,
    asked: usize,
    console: &Console,
) -> &'a Settings {
    let have = splits.train.len().div_ceil(settings.batch_size).max(1);
    if asked > have {
        console.warn(&format!(
            "--overfit-batches {asked}: the training part has {have} batch(es) of {}; the check uses {have}",
            settings.batch_size
        ));
        settings.overfit_batches = Some(have);
    }
    if let Some(keep) = settings.overfit_samples(splits.train.len()) {
        splits.train.samples.truncate(keep);
    }
    settings
}
