//! The workshop run: data, both models, test evaluation, and the evidence pack, in the
//! order of the seed script. `trainer` with no subcommand runs this.
//!
//! After every epoch the run's state goes to `OUT/checkpoints/last.*` ([`RunState`]): an
//! interrupt keeps the epochs finished (the pack is written from each model's best epoch
//! so far and marked incomplete), and `--resume OUT` goes on from there.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use burn::prelude::*;
use clap::ArgMatches;

use crate::cli::RunArgs;
use crate::cmd::command_line;
use crate::config::{self, Selection, Settings};
use crate::console::Console;
use crate::data::{self, Splits};
use crate::device;
use crate::error::{EXIT_DIVERGED, Result, TrainerError};
use crate::interrupt;
use crate::memory::{self, MemoryPolicy};
use crate::model::{ModelKind, init_from};
use crate::pack::evidence;
use crate::pack::run_state::{DataFingerprint, RunState, RunStatus, STATE_BIN, STATE_JSON};
use crate::pack::{self, OutputLock, Staging};
use crate::report::{ModelRun, Report, RunConfig, ShapeTrace, round4};
use crate::train::checkpointer::Checkpointer;
use crate::train::logger::EpochLogger;
use crate::train::{self, Context, Hooks, TrainSettings, Trained, select};

/// `trainer` with no subcommand: the settings from the flags and `--config` (a flag given on
/// the command line, as `matches` tells, wins over the file), the run, and its summary.
/// `--resume` takes the stopped run's own settings.
pub fn main(args: RunArgs, matches: &ArgMatches) -> Result<ExitCode> {
    let console = Console::new(args.quiet);
    let flags = args.train.settings(args.backend);
    let file = match &args.config {
        None => None,
        Some(path) => Some(config::ConfigFile::read(path)?),
    };
    // A switch counts as given either way (`--augment` or `--no-augment`).
    let on_command_line = |key: &str| crate::cli::given_on_command_line(matches, key);
    let mut settings = config::merge(&flags, file.as_ref(), on_command_line)?;
    let mut out = args.out;
    if let Some(dir) = &args.resume {
        let explicit = |key: &str| {
            on_command_line(key) || file.as_ref().is_some_and(|f| f.values.contains_key(key))
        };
        let Some(theirs) = resumed_settings(dir, &out, &settings, explicit, &console)? else {
            return Ok(ExitCode::SUCCESS);
        };
        settings = theirs;
        out = dir.clone();
    }
    let config = RunConfig {
        settings,
        out,
        memory_limit_bytes: args.memory_limit,
        memory_preflight: !args.no_memory_preflight,
        quiet: args.quiet,
        command: command_line(),
        resume: args.resume.is_some(),
        init_from: args.init_from,
        freeze_features: args.freeze_features,
    };
    let report = run(config, &console)?;
    for line in console_summary(&report) {
        console.result(&line);
    }
    console.result(&format!("pack files in {}:", report.config.out.display()));
    for line in pack::listing(&report.config.out) {
        console.result(&line);
    }
    if let Some(stopped) = &report.stopped {
        console.result(&format!(
            "incomplete: {stopped}; `trainer --resume {}` continues the run",
            report.config.out.display()
        ));
    }
    print_verdicts(&report, &console);
    // A failed check is the run's verdict (exit 1), before a divergence's exit 3.
    if let Some(failure) = report.overfit_failure() {
        return Err(TrainerError::VerdictFailed(failure));
    }
    if report.stopped.is_some() {
        return Ok(ExitCode::from(interrupt::exit_code() as u8));
    }
    if report.diverged() {
        return Ok(ExitCode::from(EXIT_DIVERGED));
    }
    Ok(ExitCode::SUCCESS)
}

/// The settings of the run `--resume` names, checked against those asked (`explicit` says
/// which were given); none when that run finished (said in one line: nothing to do).
fn resumed_settings(
    dir: &Path,
    out: &Path,
    asked: &Settings,
    explicit: impl Fn(&str) -> bool,
    console: &Console,
) -> Result<Option<Settings>> {
    if explicit("out") && std::path::absolute(out).ok() != std::path::absolute(dir).ok() {
        return Err(TrainerError::bad_input(format!(
            "--out '{}' with --resume '{}': a resumed run goes on in its own folder; drop --out",
            out.display(),
            dir.display()
        )));
    }
    let state = RunState::read(dir)?;
    if *state.status() == RunStatus::Finished {
        console.result(&format!(
            "{}: this run finished ({} epochs trained); there is nothing to resume and nothing was changed",
            dir.display(),
            state.epochs_done()
        ));
        return Ok(None);
    }
    let mut asked = asked.clone();
    if let Some(folder) = &asked.data {
        asked.data = Some(
            std::path::absolute(folder).map_err(|e| TrainerError::io("resolving", folder, e))?,
        );
    }
    state.settings(&asked, explicit).map(Some)
}

/// The overfit check's verdicts, when it ran.
fn print_verdicts(report: &Report, console: &Console) {
    if let Some(verdicts) = report.overfit_verdicts() {
        for v in &verdicts {
            console.result(&format!(
                "overfit_check: {}: {} (train loss {:.4} after {} steps{})",
                v.model,
                if v.passed { "passed" } else { "FAILED" },
                v.final_loss,
                v.steps,
                if v.diverged { ", diverged" } else { "" }
            ));
        }
    }
}

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

    let splits = load_data(&mut config.settings, console)?;
    let settings = config.settings.clone();
    let mut memory = MemoryPolicy::new(config.memory_limit_bytes, config.memory_preflight)?;
    let ctx = Context {
        device: &opened.device,
        device_info: &opened.info,
        progress: console,
    };
    let mut state = run_state(&config, &splits, &mut memory, console)?;
    // A resumed run starts the models it had not started as it would have (--init-from and
    // --freeze-features are the run's own).
    config.freeze_features |= state.freeze_features();
    state.set_freeze_features(config.freeze_features);
    if config.init_from.is_none() {
        config.init_from = state.init_from().map(|i| i.path.clone().into());
    }
    if let Some(path) = &config.init_from {
        // Checked before any training, and recorded for a resumed run.
        let (_, meta) = init_from::read(path, &opened.device)?;
        state.set_init_from(Some(init_from::described(path, &meta)));
    }
    let shapes = trace_shapes(&splits, &settings)?;

    let mut trained = train_models(
        &config,
        &splits,
        &opened,
        &mut memory,
        &ctx,
        &mut state,
        console,
    )?;
    let stopped = keep_finished(&mut trained, &mut state, console)?;
    let (models, ranking) = test_and_rank(trained.models, &settings, &splits, &mut memory, &ctx)?;
    let label_issues = train::label_issues::find(
        &models[ranking[0]].trained,
        [(data::Part::Train, &splits.train), (data::Part::Val, &splits.val)],
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
    };
    // The wall time and peak memory cover everything up to writing the pack.
    report.wall_seconds = started.elapsed().as_secs_f64();
    report.peak_rss_bytes = memory::peak_rss_bytes();
    write_pack(&report, &mut state, console)?;
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
    if device::chosen_adapter().is_some() && opened.info.backend != device::BackendName::Wgpu {
        console.warn(&format!(
            "--device picks a wgpu adapter; the {} backend does not use one",
            opened.info.backend.as_str()
        ));
    }
    console.info(&opened.info.summary());
    Ok(opened)
}

/// The run's state: a new one, or (with `--resume`) the one `out` holds, on the same data,
/// with its memory events. A new run into a folder that holds a stopped run says that it
/// starts over.
fn run_state(
    config: &RunConfig,
    splits: &Splits,
    memory: &mut MemoryPolicy,
    console: &Console,
) -> Result<RunState> {
    let data = DataFingerprint::of(splits)?;
    if config.resume {
        let mut state = RunState::read(&config.out)?;
        state.check_data(&data)?;
        state.set_status(RunStatus::InProgress);
        memory.events = state.events();
        console.info(&format!(
            "resuming {} after {} epoch(s) trained",
            config.out.display(),
            state.epochs_done()
        ));
        return Ok(state);
    }
    if let Ok(old) = RunState::read(&config.out)
        && *old.status() != RunStatus::Finished
    {
        console.warn(&format!(
            "'{}' holds a run stopped after {} epoch(s); this run starts over and replaces it (`--resume {}` would have continued it)",
            config.out.display(),
            old.epochs_done(),
            config.out.display()
        ));
    }
    RunState::new(&config.out, &config.settings, data)
}

/// After an interrupt: the models with a finished epoch are kept (their best epoch so far),
/// the state is marked stopped, and the rest of the run (testing, the pack) goes on. Returns
/// "stopped at epoch 4 of 10 (CNN)" then; an interrupt before any epoch finished keeps
/// nothing.
fn keep_finished(
    trained: &mut TrainedModels,
    state: &mut RunState,
    console: &Console,
) -> Result<Option<String>> {
    let Some(cut) = trained
        .models
        .iter()
        .find(|m| m.trained.interrupted.is_some())
    else {
        return Ok(None);
    };
    let epoch = cut.trained.interrupted.unwrap_or(0);
    let stopped = format!(
        "stopped at epoch {epoch} of {} ({})",
        cut.epochs,
        cut.spec.display_name()
    );
    trained.models.retain(|m| m.trained.best_epoch > 0);
    if trained.models.is_empty() {
        return Err(TrainerError::Interrupted);
    }
    interrupt::acknowledge();
    state.set_status(RunStatus::Stopped(stopped.clone()));
    state.write()?;
    console.warn(&format!(
        "{}: {stopped}; the pack is written from the epochs finished (each model's best so far) and marked incomplete",
        interrupt::signal_name()
    ));
    Ok(Some(stopped))
}

/// Writes the pack (with the run's state, marked finished or stopped) into a staging
/// folder and swaps it in place of `out`.
fn write_pack(report: &Report, state: &mut RunState, console: &Console) -> Result<()> {
    let staging = Staging::begin(&report.config.out, pack::PackKind::Workshop)?;
    evidence::write_pack(&staging, report)?;
    if report.stopped.is_none() {
        state.set_status(RunStatus::Finished);
    }
    let (bin, json) = state.encode()?;
    staging.write(STATE_BIN, bin)?;
    staging.write(STATE_JSON, json)?;
    if interrupt::requested() {
        return Err(TrainerError::Interrupted);
    }
    let kept = staging.commit()?;
    if let Some(note) = pack::kept_note(&kept) {
        console.info(&note);
    }
    Ok(())
}

/// The run's data: the split, its skipped files and colour said on the console, and under
/// `--overfit-batches` only the first batches (the settings then record what ran).
fn load_data(settings: &mut Settings, console: &Console) -> Result<Splits> {
    let mut splits = crate::cmd::load_data(settings, console, "")?;
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

/// One model, trained and not yet tested.
struct TrainedModel {
    spec: crate::model::ModelSpec,
    epochs: usize,
    lr: f64,
    trained: Trained,
}

/// What training every model gave.
struct TrainedModels {
    models: Vec<TrainedModel>,
    /// Device memory held by burn's allocator after each model (wgpu reports it).
    peak_device_bytes: Option<u64>,
}

/// Trains every model of `settings.models` in order, saying when one diverged; the state
/// goes to `state` after every epoch, and a resumed run goes on from it. An interrupt ends
/// the run after the model it stopped.
fn train_models(
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
    let fresh = crate::cmd::init_net(&config.settings, kind, splits, device)?;
    let Some(path) = &config.init_from else {
        return Ok(fresh);
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
        console.info(&format!(
            "--init-from: {} starts fresh (the checkpoint is a {})",
            kind.display_name(),
            meta.model_name
        ));
        return Ok(fresh);
    }
    let channels = splits.train.channels;
    let started = init_from::start_from(fresh, loaded, &meta, path, splits.image_size, channels)?;
    if let Some(note) = &started.note {
        console.info(note);
    }
    console.info(&format!(
        "{} starts from {} (parameters {})",
        kind.display_name(),
        started.from.path,
        started.from.params_checksum
    ));
    state.set_init_from(Some(started.from));
    Ok(started.net)
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
fn test_and_rank(
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
fn trace_shapes(splits: &Splits, settings: &Settings) -> Result<ShapeTrace> {
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
        let net = crate::cmd::init_net(settings, kind, splits, device)?;
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

/// The seed's console summary: STEP 1/2/3 with the same keys, then the evidence paths.
pub fn console_summary(report: &Report) -> Vec<String> {
    let acc = |kind: ModelKind| {
        report
            .model(kind)
            .map(|m| match m.trained.best_epoch {
                0 => "n/a (no epoch finished)".to_string(),
                _ => format!("{:.3}", round4(m.trained.best_val_acc)),
            })
            .unwrap_or_else(|| "n/a".into())
    };
    let out = &report.config.out;
    let path = |rel: &str| out.join(rel).display().to_string();
    vec![
        "STEP 1: data prepared".to_string(),
        format!("train_samples: {}", report.split_sizes[0]),
        format!("val_samples: {}", report.split_sizes[1]),
        format!("test_samples: {}", report.split_sizes[2]),
        format!("classes: {}", report.classes.len()),
        "STEP 2: model comparison".to_string(),
        format!("baseline_val_acc: {}", acc(ModelKind::Baseline)),
        format!("cnn_val_acc: {}", acc(ModelKind::Cnn)),
        format!("best_model: {}", report.best().spec.display_name()),
        format!("test_accuracy: {:.3}", round4(report.best().test.accuracy)),
        "STEP 3: evidence files".to_string(),
        path("README.md"),
        path("outputs/training_log.csv"),
        path("outputs/model_comparison.csv"),
        path("curves/loss_curve.png"),
        path("reports/shape_trace.md"),
    ]
}
