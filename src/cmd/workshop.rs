//! The workshop run: data, both models, test evaluation, and the evidence pack, in the
//! order of the seed script. `trainer` with no subcommand runs this.

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
use crate::memory::{self, MemoryPolicy};
use crate::model::ModelKind;
use crate::pack::evidence;
use crate::pack::{self, OutputLock, Staging};
use crate::report::{ModelRun, Report, RunConfig, ShapeTrace, round4};
use crate::train::{self, Context, TrainSettings, Trained, select};

/// `trainer` with no subcommand: the settings from the flags and `--config` (a flag given on
/// the command line, as `matches` tells, wins over the file), the run, and its summary.
pub fn main(args: RunArgs, matches: &ArgMatches) -> Result<ExitCode> {
    let console = Console::new(args.quiet);
    let flags = args.train.settings(args.backend);
    let settings = match &args.config {
        None => flags,
        Some(path) => config::merge(&flags, Some(&config::ConfigFile::read(path)?), |key| {
            crate::cli::given_on_command_line(matches, key)
        })?,
    };
    let config = RunConfig {
        settings,
        out: args.out,
        memory_limit_bytes: args.memory_limit,
        memory_preflight: !args.no_memory_preflight,
        quiet: args.quiet,
        command: command_line(),
    };
    let report = run(config, &console)?;
    for line in console_summary(&report) {
        console.result(&line);
    }
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
    // A failed check is the run's verdict (exit 1), before a divergence's exit 3.
    if let Some(failure) = report.overfit_failure() {
        return Err(TrainerError::VerdictFailed(failure));
    }
    if report.diverged() {
        return Ok(ExitCode::from(EXIT_DIVERGED));
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the workshop and writes the evidence pack into `config.out`.
pub fn run(config: RunConfig, console: &Console) -> Result<Report> {
    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut config = config;
    // An absolute folder keeps outputs/config.json and the checkpoint usable from anywhere.
    if let Some(folder) = &config.settings.data {
        config.settings.data = Some(
            std::path::absolute(folder).map_err(|e| TrainerError::io("resolving", folder, e))?,
        );
    }
    let settings = config.settings.clone();
    settings.validate()?;
    pack::check_target(&config.out, pack::PackKind::Workshop)?;
    if let Some(folder) = &settings.data {
        pack::check_outside(&config.out, folder)?;
    }
    let _lock = OutputLock::acquire(&config.out)?;

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

    let splits = load_data(&mut config.settings, console)?;
    let settings = config.settings.clone();
    let mut memory = MemoryPolicy::new(config.memory_limit_bytes, config.memory_preflight)?;
    let ctx = Context {
        device: &opened.device,
        device_info: &opened.info,
        progress: console,
    };
    let shapes = trace_shapes(&splits, &settings)?;

    let trained = train_models(&settings, &splits, &opened, &mut memory, &ctx, console)?;
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
    let peak_device_bytes = trained.peak_device_bytes;

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
        peak_device_bytes,
        gpu_kernels,
        cpu_kernels,
    };

    let staging = Staging::begin(&report.config.out, pack::PackKind::Workshop)?;
    // The wall time and peak memory cover everything up to writing the pack.
    report.wall_seconds = started.elapsed().as_secs_f64();
    report.peak_rss_bytes = memory::peak_rss_bytes();
    evidence::write_pack(&staging, &report)?;
    if crate::interrupt::requested() {
        return Err(TrainerError::Interrupted);
    }
    let kept = staging.commit()?;
    if let Some(note) = pack::kept_note(&kept) {
        console.info(&note);
    }
    Ok(report)
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

/// Trains every model of `settings.models` in order, saying when one diverged.
fn train_models(
    settings: &Settings,
    splits: &Splits,
    opened: &device::OpenBackend,
    memory: &mut MemoryPolicy,
    ctx: &Context,
    console: &Console,
) -> Result<TrainedModels> {
    let mut models = Vec::new();
    let mut peak_device_bytes: Option<u64> = None;
    for &kind in &settings.models {
        let (epochs, lr) = settings.schedule(kind);
        let train_settings = TrainSettings::new(settings, epochs, lr);
        let net = crate::cmd::init_net(settings, kind, splits, &opened.device)?;
        let spec = settings.spec(kind, splits.train.channels)?;
        let classes = splits.classes.len();
        let trained = train::train_model(
            net,
            &splits.train,
            &splits.val,
            classes,
            &train_settings,
            memory,
            ctx,
        )?;
        if let Some(d) = &trained.divergence {
            let kept = match trained.best_epoch {
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
        if let Some(usage) = opened.device.memory_pool_usage() {
            peak_device_bytes = Some(peak_device_bytes.unwrap_or(0).max(usage.bytes_reserved));
        }
        models.push(TrainedModel {
            spec,
            epochs,
            lr,
            trained,
        });
    }
    Ok(TrainedModels {
        models,
        peak_device_bytes,
    })
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
