//! Evidence writers: every file of the pack, from a [`Report`].
//!
//! The files named by the workshop keep its names and columns. Timing lives only in
//! `outputs/run_info.json` and `outputs/epoch_timing.csv`, so that every other file is
//! byte-identical when a run is repeated with the same seed on the same backend.

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::{Monitor, Selection};
use crate::error::{Result, TrainerError};
use crate::export;
use crate::memory::format_bytes;
use crate::model::checkpoint;
use crate::pack::Staging;
use crate::pack::plots::{self, LineChart, Series};
use crate::report::{ModelRun, Report, round4};
use crate::train::Prediction;

/// The evidence files, relative to the pack folder, in the order the README lists them.
pub const FILES: [&str; 23] = [
    "README.md",
    "outputs/training_log.csv",
    "outputs/model_comparison.csv",
    "outputs/confusion_matrix.csv",
    "outputs/error_samples.csv",
    "outputs/label_issues.csv",
    "outputs/metrics_summary.json",
    "outputs/run_info.json",
    "outputs/epoch_timing.csv",
    "outputs/memory_events.csv",
    "outputs/config.json",
    "curves/loss_curve.png",
    "curves/accuracy_curve.png",
    "curves/lr_schedule.png",
    "curves/confusion_matrix.png",
    "curves/review_grid.png",
    "curves/top_losses.png",
    "checkpoints/best_model.bpk",
    "checkpoints/best_model.json",
    "checkpoints/best_model.safetensors",
    "checkpoints/best_model.onnx",
    "reports/shape_trace.md",
    "reports/debug_checklist.md",
];

/// Writes the whole pack into the staging folder.
pub fn write_pack(staging: &Staging, report: &Report) -> Result<()> {
    staging.write("outputs/training_log.csv", training_log_csv(report)?)?;
    staging.write(
        "outputs/model_comparison.csv",
        model_comparison_csv(report)?,
    )?;
    let best = report.best();
    staging.write(
        "outputs/confusion_matrix.csv",
        confusion_csv(&report.classes, &confusion_of(report, best))?,
    )?;
    staging.write(
        "outputs/error_samples.csv",
        error_samples_csv(&review_rows(&best.test.predictions), &report.classes)?,
    )?;
    staging.write(
        "outputs/metrics_summary.json",
        metrics_summary_json(report)?,
    )?;
    staging.write("outputs/run_info.json", run_info_json(report)?)?;
    staging.write("outputs/epoch_timing.csv", epoch_timing_csv(report)?)?;
    staging.write("outputs/memory_events.csv", memory_events_csv(report)?)?;
    staging.write("outputs/config.json", report.config.settings.to_json()?)?;
    if report.config.settings.data.is_some() {
        staging.write(
            "outputs/data_issues.csv",
            csv_text(crate::data::issues::rows(&report.data_issues))?,
        )?;
    }
    plots::draw_line_chart(&staging.path("curves/loss_curve.png")?, &loss_chart(report))?;
    plots::draw_line_chart(
        &staging.path("curves/accuracy_curve.png")?,
        &accuracy_chart(report),
    )?;
    plots::draw_line_chart(&staging.path("curves/lr_schedule.png")?, &lr_chart(report))?;
    draw_review_grid(staging, report)?;
    write_label_issues(staging, report)?;
    draw_confusion_of(&staging.path("curves/confusion_matrix.png")?, report, best)?;
    write_checkpoint(staging, report)?;
    super::board::write_runs(staging, report)?;
    staging.write("reports/shape_trace.md", shape_trace_md(report))?;
    staging.write("reports/debug_checklist.md", debug_checklist_md(report))?;
    staging.write("README.md", readme_md(report))?;
    Ok(())
}

/// A float as the seed script writes it: rounded to 4 decimals, Python's repr (`1.0`, `0.9286`).
pub fn py_float(x: f64) -> String {
    format!("{:?}", round4(x))
}

fn csv_error(e: impl std::fmt::Display) -> TrainerError {
    TrainerError::Serialize(format!("CSV: {e}"))
}

/// The one CSV writer: the seed's CRLF line ends, quoting where a cell needs it.
pub fn csv_text(rows: Vec<Vec<String>>) -> Result<String> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    for row in rows {
        writer.write_record(&row).map_err(csv_error)?;
    }
    let bytes = writer.into_inner().map_err(csv_error)?;
    String::from_utf8(bytes).map_err(csv_error)
}

/// The one Markdown table writer: a header row, its `| --- |` rule, then the rows, each
/// cell between `| ` and ` |` (a `|` inside a cell is escaped).
pub fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let line = |cells: &mut dyn Iterator<Item = String>| {
        let cells: Vec<String> = cells.map(|c| c.replace('|', "\\|")).collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut out = line(&mut header.iter().map(|h| h.to_string()));
    out += &line(&mut header.iter().map(|_| "---".to_string()));
    for row in rows {
        out += &line(&mut row.iter().cloned());
    }
    out
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// outputs/training_log.csv: model, epoch, train_loss, train_acc, val_loss, val_acc; with
/// early stopping (`--patience`) a last column, note, says which epoch was kept and why
/// training stopped.
pub fn training_log_csv(report: &Report) -> Result<String> {
    let early_stopping = report.config.settings.patience.is_some();
    let mut header = row([
        "model",
        "epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
    ]);
    // The rate is a column when it moves (a schedule or a warm-up); the workshop's recipe
    // keeps the workshop's columns.
    let moving_rate = report.config.settings.recipe().moves_rate();
    if moving_rate {
        header.push("lr".to_string());
    }
    if early_stopping {
        header.push("note".to_string());
    }
    let mut rows = vec![header];
    for run in &report.models {
        let last = run.trained.history.last().map(|e| e.epoch);
        for e in &run.trained.history {
            let mut r = vec![
                run.spec.display_name().to_string(),
                e.epoch.to_string(),
                py_float(e.train_loss),
                py_float(e.train_acc),
                py_float(e.val_loss),
                py_float(e.val_acc),
            ];
            if moving_rate {
                // Every digit: a rate of 0.00004 is not 0.0.
                r.push(format!("{:?}", e.lr));
            }
            if early_stopping {
                let mut notes = Vec::new();
                if e.epoch == run.trained.best_epoch {
                    notes.push(format!(
                        "kept: best {}",
                        report.config.settings.monitor.as_str()
                    ));
                }
                if Some(e.epoch) == last
                    && let Some(why) = &run.trained.stopped_early
                {
                    notes.push(format!("early stop: {why}"));
                }
                r.push(notes.join("; "));
            }
            rows.push(r);
        }
    }
    csv_text(rows)
}

/// The epochs a model trained: its schedule's, or (stopped by an interrupt, by `--patience`
/// or by a divergence) those it finished; a model that diverged in epoch 2 finished 1.
pub fn epochs_trained(run: &ModelRun) -> usize {
    let trained = &run.trained;
    let stopped = trained.interrupted.is_some()
        || trained.stopped_early.is_some()
        || trained.divergence.is_some();
    match stopped {
        false => run.epochs,
        true => trained.history.last().map_or(0, |e| e.epoch),
    }
}

/// The status of a model's training, for the comparison and the README.
pub fn status(run: &ModelRun) -> String {
    if let Some(epoch) = run.trained.interrupted {
        return format!("stopped at epoch {epoch}");
    }
    match &run.trained.divergence {
        None => match run.trained.history.last() {
            Some(last) if run.trained.stopped_early.is_some() => {
                format!("ok, stopped early after epoch {}", last.epoch)
            }
            _ => "ok".to_string(),
        },
        Some(d) => format!("diverged at epoch {} step {} ({})", d.epoch, d.step, d.what),
    }
}

/// outputs/model_comparison.csv: the seed's columns (model, epochs, best_val_acc, test_loss,
/// test_accuracy), ordered by the rule that chose (best first), then best_epoch and status.
/// Under `--monitor val_loss` the kept epoch is the one of lowest validation loss, so the
/// validation columns are `best_val_loss` and `val_acc_at_best_val_loss` instead.
pub fn model_comparison_csv(report: &Report) -> Result<String> {
    let by_loss = report.config.settings.monitor == Monitor::ValLoss;
    let mut header = vec!["model", "epochs"];
    header.extend(match by_loss {
        true => vec!["best_val_loss", "val_acc_at_best_val_loss"],
        false => vec!["best_val_acc"],
    });
    header.extend(["test_loss", "test_accuracy", "best_epoch", "status"]);
    let mut rows = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    for &i in &report.ranking {
        let run = &report.models[i];
        let epochs = epochs_trained(run).to_string();
        let mut line = vec![run.spec.display_name().to_string(), epochs];
        if by_loss {
            line.push(py_float(run.trained.best_val_loss));
        }
        line.extend([
            py_float(run.trained.best_val_acc),
            py_float(run.test.loss),
            py_float(run.test.accuracy),
            run.trained.best_epoch.to_string(),
            status(run),
        ]);
        rows.push(line);
    }
    csv_text(rows)
}

pub use crate::train::metrics::confusion_counts;

/// outputs/confusion_matrix.csv: `actual/predicted` then one column per class.
pub fn confusion_csv(classes: &[String], counts: &[Vec<usize>]) -> Result<String> {
    let mut header = vec!["actual/predicted".to_string()];
    header.extend(classes.iter().cloned());
    let mut rows = vec![header];
    for (name, values) in classes.iter().zip(counts) {
        let mut r = vec![name.clone()];
        r.extend(values.iter().map(|v| v.to_string()));
        rows.push(r);
    }
    csv_text(rows)
}

/// The review samples: the wrong predictions (first 10, in test order), or when there are
/// none, the 10 lowest-confidence correct ones.
pub fn review_rows(predictions: &[Prediction]) -> Vec<(Prediction, &'static str)> {
    let errors: Vec<&Prediction> = predictions
        .iter()
        .filter(|p| p.actual != p.predicted)
        .collect();
    if !errors.is_empty() {
        return errors
            .into_iter()
            .take(10)
            .map(|p| (p.clone(), "wrong prediction"))
            .collect();
    }
    let mut sorted: Vec<&Prediction> = predictions.iter().collect();
    sorted.sort_by(|a, b| a.confidence.total_cmp(&b.confidence));
    sorted
        .into_iter()
        .take(10)
        .map(|p| (p.clone(), "lowest-confidence correct prediction"))
        .collect()
}

/// outputs/error_samples.csv: sample_id, actual, predicted, confidence, correct, review_reason.
pub fn error_samples_csv(rows: &[(Prediction, &str)], classes: &[String]) -> Result<String> {
    let mut out = vec![row([
        "sample_id",
        "actual",
        "predicted",
        "confidence",
        "correct",
        "review_reason",
    ])];
    for (p, reason) in rows {
        out.push(vec![
            p.sample_id.clone(),
            classes[p.actual].clone(),
            classes[p.predicted].clone(),
            py_float(p.confidence as f64),
            if p.actual == p.predicted {
                "True"
            } else {
                "False"
            }
            .to_string(),
            reason.to_string(),
        ]);
    }
    csv_text(out)
}

#[derive(Serialize)]
struct MetricsSummary<'a> {
    best_model: &'a str,
    test_accuracy: f64,
    classes: &'a [String],
    train_samples: usize,
    val_samples: usize,
    test_samples: usize,
    /// Only in a pack an interrupt cut short: "stopped at epoch 4 of 10 (CNN)".
    #[serde(skip_serializing_if = "Option::is_none")]
    incomplete: Option<&'a str>,
}

/// outputs/metrics_summary.json, with the seed's keys in the seed's order.
pub fn metrics_summary_json(report: &Report) -> Result<String> {
    let best = report.best();
    let summary = MetricsSummary {
        best_model: &best.spec.display_name(),
        test_accuracy: round4(best.test.accuracy),
        classes: &report.classes,
        train_samples: report.split_sizes[0],
        val_samples: report.split_sizes[1],
        test_samples: report.split_sizes[2],
        incomplete: report.stopped.as_deref(),
    };
    serde_json::to_string_pretty(&summary).map_err(|e| TrainerError::Serialize(e.to_string()))
}

#[derive(Serialize)]
struct ModelInfo {
    model: String,
    epochs: usize,
    lr: f64,
    requested_batch_size: usize,
    final_batch_size: usize,
    best_epoch: usize,
    status: String,
    train_seconds: f64,
    val_seconds: f64,
    train_samples_per_sec: f64,
    /// What ran its steps: "wgpu kernels", "fused CPU operation" or "layers".
    engine: &'static str,
    /// Why a faster engine of this device did not take it, when one did not.
    engine_note: Option<String>,
}

/// The settings as asked (`batch_size` is the requested batch, as in outputs/config.json),
/// and `final_batch_size`: the batch the run ended on after any halving (the smallest of
/// the models' `final_batch_size`; the requested one when nothing was halved).
#[derive(Serialize)]
struct RunSettings<'a> {
    #[serde(flatten)]
    settings: &'a crate::config::Settings,
    final_batch_size: usize,
}

#[derive(Serialize)]
struct RunInfo<'a> {
    command: &'a str,
    trainer_version: &'static str,
    burn_version: &'static str,
    rustc_version: &'static str,
    started_at_utc: String,
    total_wall_seconds: f64,
    device: &'a crate::device::DeviceInfo,
    backend_choice: Option<&'a str>,
    /// Whether the WGSL kernels of shaders/ drew the images and summarized evaluation.
    gpu_kernels: bool,
    /// The vector instruction set of the fused CNN operation on the CPU backend
    /// (src/device/cpu_kernels.rs), or null when the layers ran one by one.
    cpu_kernels: Option<&'static str>,
    /// The effective settings (also outputs/config.json), with the batch the run ended on.
    settings: RunSettings<'a>,
    normalization: crate::data::Normalization,
    skipped_files: usize,
    /// The channels the images were read with, and why (`--color`).
    color: &'a crate::data::folder::ColorChoice,
    /// An image folder's layout, where each part came from and its size, what was decoded.
    data_folder: Option<&'a crate::data::load::FolderSummary>,
    /// Files of an image folder left out or merged (rows of outputs/data_issues.csv).
    data_issues: usize,
    max_grad_norm: f32,
    optimizer: String,
    memory_limit_bytes: Option<u64>,
    memory_preflight: bool,
    memory_events: usize,
    peak_host_rss_bytes: Option<u64>,
    peak_device_memory_bytes: Option<u64>,
    models: Vec<ModelInfo>,
    /// Set when an interrupt stopped the run ("stopped at epoch 4 of 10 (CNN)").
    stopped: Option<&'a str>,
    /// Whether the run went on from a stopped run's state (`--resume`).
    resumed: bool,
    /// The checkpoint the run started from (`--init-from`) and its parameters' checksum.
    init_from: Option<&'a crate::model::checkpoint::InitFrom>,
    /// How many test images that checkpoint trained or validated on (`seen` of `test`).
    #[serde(skip_serializing_if = "Option::is_none")]
    init_from_test_overlap: Option<crate::model::init_from::TestOverlap>,
    /// Whether the run was let train on test images the checkpoint saw
    /// (`--allow-test-overlap`, kept by a resumed run).
    allow_test_overlap: bool,
    /// Whether only the last layer trained (`--freeze-features`).
    freeze_features: bool,
}

/// outputs/run_info.json: device, versions, hyperparameters, timing and memory.
pub fn run_info_json(report: &Report) -> Result<String> {
    let c = &report.config;
    let models = report
        .models
        .iter()
        .map(|run| {
            let train_seconds: f64 = run.trained.history.iter().map(|e| e.train_seconds).sum();
            let val_seconds: f64 = run.trained.history.iter().map(|e| e.val_seconds).sum();
            let samples: usize = run.trained.history.iter().map(|e| e.train_samples).sum();
            ModelInfo {
                model: run.spec.display_name().to_string(),
                epochs: run.epochs,
                lr: run.lr,
                requested_batch_size: run.trained.requested_batch,
                final_batch_size: run.trained.final_batch,
                best_epoch: run.trained.best_epoch,
                status: status(run),
                train_seconds,
                val_seconds,
                train_samples_per_sec: samples as f64 / train_seconds.max(1e-9),
                engine: run.trained.engine.engine.name(),
                engine_note: run.trained.engine.note.clone(),
            }
        })
        .collect();
    let info = RunInfo {
        command: &c.command,
        trainer_version: env!("CARGO_PKG_VERSION"),
        burn_version: env!("TRAINER_BURN_VERSION"),
        rustc_version: env!("TRAINER_RUSTC_VERSION"),
        started_at_utc: utc_timestamp(report.started_unix),
        total_wall_seconds: report.wall_seconds,
        device: &report.device,
        backend_choice: report.choice_note.as_deref(),
        gpu_kernels: report.gpu_kernels,
        cpu_kernels: report.cpu_kernels,
        settings: RunSettings {
            settings: &c.settings,
            final_batch_size: report
                .models
                .iter()
                .map(|run| run.trained.final_batch)
                .min()
                .unwrap_or(c.settings.batch_size),
        },
        normalization: report.normalization.clone(),
        skipped_files: report.skipped.len(),
        color: &report.color,
        data_folder: report.data_folder.as_ref(),
        data_issues: report.data_issues.len(),
        max_grad_norm: crate::config::MAX_GRAD_NORM,
        optimizer: c.settings.recipe().describe(
            (crate::config::ADAM_BETA_1, crate::config::ADAM_BETA_2),
            crate::config::ADAM_EPSILON,
        ),
        memory_limit_bytes: c.memory_limit_bytes,
        memory_preflight: c.memory_preflight,
        memory_events: report.memory_events.len(),
        peak_host_rss_bytes: report.peak_rss_bytes,
        peak_device_memory_bytes: report.peak_device_bytes,
        models,
        stopped: report.stopped.as_deref(),
        resumed: c.resume,
        init_from: report.init_from.as_ref(),
        init_from_test_overlap: report.test_overlap,
        allow_test_overlap: c.allow_test_overlap,
        freeze_features: c.freeze_features,
    };
    serde_json::to_string_pretty(&info).map_err(|e| TrainerError::Serialize(e.to_string()))
}

/// outputs/epoch_timing.csv: model, epoch, batch_size, train_seconds, val_seconds,
/// train_samples_per_sec, and train_samples (how many samples the epoch trained on).
pub fn epoch_timing_csv(report: &Report) -> Result<String> {
    let mut rows = vec![row([
        "model",
        "epoch",
        "batch_size",
        "train_seconds",
        "val_seconds",
        "train_samples_per_sec",
        "train_samples",
    ])];
    for run in &report.models {
        for e in &run.trained.history {
            rows.push(vec![
                run.spec.display_name().to_string(),
                e.epoch.to_string(),
                e.batch_size.to_string(),
                format!("{:.6}", e.train_seconds),
                format!("{:.6}", e.val_seconds),
                format!("{:.1}", e.train_samples as f64 / e.train_seconds.max(1e-9)),
                e.train_samples.to_string(),
            ]);
        }
    }
    csv_text(rows)
}

/// outputs/memory_events.csv: one row per change of batch size (header only when none).
pub fn memory_events_csv(report: &Report) -> Result<String> {
    let mut rows = vec![row([
        "model",
        "phase",
        "epoch",
        "step",
        "from_batch",
        "to_batch",
        "reason",
        "requested_bytes",
        "budget_bytes",
    ])];
    let opt = |v: Option<u64>| v.map(|b| b.to_string()).unwrap_or_default();
    for e in &report.memory_events {
        rows.push(vec![
            e.model.clone(),
            e.phase.to_string(),
            e.epoch.to_string(),
            e.step.to_string(),
            e.from_batch.to_string(),
            e.to_batch.to_string(),
            e.reason.clone(),
            opt(e.requested_bytes),
            opt(e.budget_bytes),
        ]);
    }
    csv_text(rows)
}

/// curves/lr_schedule.png: every step's learning rate, by epoch.
fn lr_chart(report: &Report) -> LineChart {
    let recipe = report.config.settings.recipe();
    let title = format!(
        "Learning rate per step ({}, {}{})",
        recipe.optimizer.as_str(),
        recipe.schedule.as_str(),
        match recipe.warmup_epochs {
            w if w > 0.0 => format!(", {w} warm-up epoch(s)"),
            _ => String::new(),
        }
    );
    let mut chart = LineChart::by_epoch(&title, "learning rate");
    for (i, run) in report.models.iter().enumerate() {
        chart.series.push(Series {
            label: run.spec.display_name(),
            points: lr_points(&run.trained),
            dashed: false,
            colour: i,
        });
    }
    chart
}

/// Every step's rate at the point of the run where the step started (in epochs): after a
/// halved batch the steps are twice as dense, so the curve keeps its shape in epochs.
pub fn lr_points(trained: &crate::train::Trained) -> Vec<(f64, f64)> {
    trained
        .step_epochs
        .iter()
        .zip(&trained.step_lrs)
        .map(|(&at, &lr)| (at, lr))
        .collect()
}

fn loss_chart(report: &Report) -> LineChart {
    curve_chart(report, "Training and validation loss", "loss", |e| {
        (e.train_loss, e.val_loss)
    })
}

fn accuracy_chart(report: &Report) -> LineChart {
    curve_chart(
        report,
        "Training and validation accuracy",
        "accuracy",
        |e| (e.train_acc, e.val_acc),
    )
}

fn curve_chart(
    report: &Report,
    title: &str,
    metric: &str,
    pick: impl Fn(&crate::train::EpochStats) -> (f64, f64),
) -> LineChart {
    let mut series = Vec::new();
    for (i, run) in report.models.iter().enumerate() {
        let name = run.spec.display_name();
        let history = &run.trained.history;
        series.push(Series {
            label: format!("{name} train_{metric}"),
            points: history
                .iter()
                .map(|e| (e.epoch as f64, pick(e).0))
                .collect(),
            dashed: false,
            colour: i,
        });
        series.push(Series {
            label: format!("{name} val_{metric}"),
            points: history
                .iter()
                .map(|e| (e.epoch as f64, pick(e).1))
                .collect(),
            dashed: true,
            colour: i,
        });
    }
    let mut chart = LineChart::by_epoch(title, metric);
    chart.series = series;
    chart
}

/// What the exports say of the best model.
fn best_facts(report: &Report) -> export::ModelFacts<'_> {
    let best = report.best();
    export::ModelFacts {
        spec: best.spec,
        image_size: report.config.settings.image_size,
        classes: &report.classes,
        normalization: &report.normalization,
        test_accuracy: round4(best.test.accuracy),
    }
}

fn write_checkpoint(staging: &Staging, report: &Report) -> Result<()> {
    let best = report.best();
    let data = report.config.settings.data_config();
    let on = checkpoint::TrainedOn {
        classes: &report.classes,
        data: &data,
        normalization: &report.normalization,
        manifest: report.manifest.as_ref(),
    };
    let (params, description) = checkpoint::encode(
        &best.trained.best,
        on,
        best.spec.channels,
        best.trained.best_epoch,
        round4(best.test.accuracy),
    )?;
    staging.write(&format!("checkpoints/{}", checkpoint::PARAMS_FILE), params)?;
    staging.write(
        &format!("checkpoints/{}", checkpoint::META_FILE),
        description,
    )?;
    let exports = export::encode_all(&best.trained.best, &best_facts(report))?;
    staging.write(
        &format!("checkpoints/{}", export::SAFETENSORS_FILE),
        exports.safetensors,
    )?;
    staging.write(&format!("checkpoints/{}", export::ONNX_FILE), exports.onnx)
}

/// outputs/label_issues.csv and curves/top_losses.png: the training and validation images
/// the kept model most confidently puts in another class.
fn write_label_issues(staging: &Staging, report: &Report) -> Result<()> {
    use super::label_issues::{Pictures, draw_top_losses, label_issues_csv};
    staging.write(
        "outputs/label_issues.csv",
        label_issues_csv(&report.label_issues, &report.classes)?,
    )?;
    let pictures = Pictures {
        size: report.test_set.image_size,
        channels: report.test_set.channels,
        normalization: &report.normalization,
    };
    draw_top_losses(
        &staging.path("curves/top_losses.png")?,
        &report.label_issues,
        &report.classes,
        &pictures,
    )
}

/// curves/review_grid.png: the review samples as images, captioned.
fn draw_review_grid(staging: &Staging, report: &Report) -> Result<()> {
    draw_review_grid_of(
        &staging.path("curves/review_grid.png")?,
        report,
        report.best(),
    )
}

/// The review grid of one model's test predictions, drawn into `path`.
pub fn draw_review_grid_of(path: &std::path::Path, report: &Report, best: &ModelRun) -> Result<()> {
    let review = Review {
        model: best.spec.display_name(),
        part: "test",
        predictions: &best.test.predictions,
        images: &report.test_set,
        normalization: &report.normalization,
        classes: &report.classes,
    };
    draw_review_grid_from(path, &review)
}

/// What a review grid shows: one model's predictions on one set of images.
pub struct Review<'a> {
    pub model: String,
    /// The set, as the title names it ("test").
    pub part: &'a str,
    pub predictions: &'a [Prediction],
    pub images: &'a crate::data::ImageDataset,
    pub normalization: &'a crate::data::Normalization,
    pub classes: &'a [String],
}

/// An image as a grid shows it: gray as the model saw it (each picture is scaled to its own
/// range), colour as it was read (normalization undone).
pub fn grid_pixels<'a>(
    pixels: &'a [f32],
    channels: usize,
    normalization: &crate::data::Normalization,
) -> std::borrow::Cow<'a, [f32]> {
    match channels {
        1 => std::borrow::Cow::Borrowed(pixels),
        _ => std::borrow::Cow::Owned(normalization.undo(pixels)),
    }
}

/// The review samples of `review` as images, captioned, drawn into `path`.
pub fn draw_review_grid_from(path: &std::path::Path, review: &Review) -> Result<()> {
    let rows = review_rows(review.predictions);
    let images: std::collections::HashMap<&str, &[f32]> = review
        .images
        .samples
        .iter()
        .map(|s| (s.sample_id.as_str(), &s.image[..]))
        .collect();
    let (classes, set) = (review.classes, review.images);
    let cells: Vec<plots::GridCell> = rows
        .iter()
        .filter_map(|(p, _)| {
            images
                .get(p.sample_id.as_str())
                .map(|pixels| plots::GridCell {
                    pixels: grid_pixels(pixels, set.channels, review.normalization),
                    size: set.image_size,
                    channels: set.channels,
                    caption: vec![
                        format!("actual: {}", classes[p.actual]),
                        format!("predicted: {} ({:.2})", classes[p.predicted], p.confidence),
                        short_id(&p.sample_id),
                    ],
                })
        })
        .collect();
    let title = match rows.first() {
        Some((_, reason)) if *reason == "wrong prediction" => {
            format!("{}: wrong {} predictions", review.model, review.part)
        }
        _ => format!(
            "{}: lowest-confidence correct {} predictions",
            review.model, review.part
        ),
    };
    plots::draw_image_grid(path, &title, &cells)
}

/// One model's confusion counts on the test part: as the device computed them, else from its
/// predictions.
fn confusion_of(report: &Report, run: &ModelRun) -> Vec<Vec<usize>> {
    run.test
        .confusion
        .clone()
        .unwrap_or_else(|| confusion_counts(&run.test.predictions, report.classes.len()))
}

/// The confusion matrix of one model's test predictions, drawn into `path`.
pub fn draw_confusion_of(path: &std::path::Path, report: &Report, run: &ModelRun) -> Result<()> {
    let counts = confusion_of(report, run);
    plots::draw_confusion(
        path,
        &format!(
            "Confusion matrix: {} on the test set",
            run.spec.display_name()
        ),
        &report.classes,
        &counts,
    )
}

/// A sample id short enough for a caption: its last 21 characters after "...".
pub fn short_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 24 {
        id.to_string()
    } else {
        format!(
            "...{}",
            chars[chars.len() - 21..].iter().collect::<String>()
        )
    }
}

/// The "Top failure patterns" of the pack's README, computed from the best model's test
/// predictions and confusion matrix.
pub fn failure_patterns(predictions: &[Prediction], classes: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    let counts = confusion_counts(predictions, classes.len());
    let errors: Vec<&Prediction> = predictions
        .iter()
        .filter(|p| p.actual != p.predicted)
        .collect();
    if errors.is_empty() {
        let mut least: Vec<&Prediction> = predictions.iter().collect();
        least.sort_by(|a, b| a.confidence.total_cmp(&b.confidence));
        lines.push(format!(
            "No test sample was misclassified ({} of {} correct).",
            predictions.len(),
            predictions.len()
        ));
        if let Some(first) = least.first() {
            let mut by_class = vec![0usize; classes.len()];
            for p in least.iter().take(10) {
                by_class[p.actual] += 1;
            }
            let (class, n) = by_class
                .iter()
                .enumerate()
                .max_by_key(|(_, n)| **n)
                .map(|(c, n)| (c, *n))
                .unwrap_or((0, 0));
            lines.push(format!(
                "The least confident correct answer is {} at {:.2}; {n} of the 10 least confident are {}: the model is least sure about that class, so a harder test set would likely fail there first.",
                first.sample_id, first.confidence, classes[class]
            ));
        }
        return lines;
    }
    let mut pairs: Vec<(usize, usize, usize)> = Vec::new();
    for (a, row) in counts.iter().enumerate() {
        for (p, &n) in row.iter().enumerate() {
            if a != p && n > 0 {
                pairs.push((n, a, p));
            }
        }
    }
    pairs.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    lines.push(format!(
        "{} of {} test samples are misclassified.",
        errors.len(),
        predictions.len()
    ));
    for (n, actual, predicted) in pairs.iter().take(3) {
        let total: usize = counts[*actual].iter().sum();
        let wrong: Vec<&&Prediction> = errors
            .iter()
            .filter(|p| p.actual == *actual && p.predicted == *predicted)
            .collect();
        let mean = wrong.iter().map(|p| p.confidence as f64).sum::<f64>() / wrong.len() as f64;
        lines.push(format!(
            "{} taken for {}: {n} time(s), {:.0}% of that class's test samples, mean confidence of the wrong answer {:.2}.",
            classes[*actual],
            classes[*predicted],
            100.0 * *n as f64 / total.max(1) as f64,
            mean
        ));
    }
    let confident = errors.iter().filter(|p| p.confidence >= 0.9).count();
    let unsure = errors.iter().filter(|p| p.confidence < 0.6).count();
    lines.push(format!(
        "{confident} wrong answer(s) have confidence of 0.9 or more (confidently wrong: check those labels and images first); {unsure} are below 0.6 (ambiguous images near the decision boundary)."
    ));
    lines
}

fn tuple(shape: &[usize]) -> String {
    if shape.len() == 1 {
        format!("({},)", shape[0])
    } else {
        format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// reports/shape_trace.md: the real shapes of one batch through both models.
pub fn shape_trace_md(report: &Report) -> String {
    let s = &report.shapes;
    let mut out = String::from("# Shape Trace\n\n");
    let _ = writeln!(
        out,
        "- One image batch: `{}` means batch, channel, height, width.",
        tuple(&s.images)
    );
    let _ = writeln!(
        out,
        "- One label batch: `{}` means one class id per image.",
        tuple(&s.labels)
    );
    let _ = writeln!(
        out,
        "- Model output should be `(batch, {})`, one logit per class.",
        report.classes.len()
    );
    for (kind, shape) in &s.logits {
        let _ = writeln!(out, "- {} logits: `{}`.", kind.display_name(), tuple(shape));
    }
    // The models this run trained, in the order it trained them.
    for kind in report.models.iter().map(|m| m.spec) {
        let _ = writeln!(out, "\n## {} layer by layer\n", kind.display_name());
        let mut rows = vec![vec!["input".to_string(), format!("`{}`", tuple(&s.images))]];
        for (k, layer, shape) in &s.layers {
            if *k == kind {
                rows.push(vec![layer.clone(), format!("`{}`", tuple(shape))]);
            }
        }
        out += &markdown_table(&["layer", "output shape"], &rows);
    }
    let _ = writeln!(out, "\n## Batch size\n");
    let _ = writeln!(
        out,
        "The trace uses the requested batch size ({}).",
        report.config.settings.batch_size
    );
    for run in &report.models {
        let _ = writeln!(
            out,
            "- {}: trained with batch {} (requested {}).",
            run.spec.display_name(),
            run.trained.final_batch,
            run.trained.requested_batch
        );
    }
    out
}

/// reports/debug_checklist.md: the workshop's failure modes in terms of this tool.
pub fn debug_checklist_md(report: &Report) -> String {
    let c = &report.config;
    let batches: Vec<String> = report
        .models
        .iter()
        .map(|r| {
            format!(
                "{} trained at batch {} (requested {})",
                r.spec.display_name(),
                r.trained.final_batch,
                r.trained.requested_batch
            )
        })
        .collect();
    let mut out = String::from("# Debug Checklist\n\n");
    let items = [
        format!(
            "**Shape mismatch** (`Expected 4D input`, wrong logits shape): read `reports/shape_trace.md` first; images must be `(batch, {channels}, {s}, {s})` and labels `(batch,)`. `--image-size` below {min} is refused because the stripe recipe and the CNN's pooling need room.",
            s = c.settings.image_size,
            channels = report.color.channels,
            min = crate::data::MIN_IMAGE_SIZE
        ),
        format!(
            "**Loss not falling**: compare the first and last `train_loss` per model in `outputs/training_log.csv` and look at `curves/loss_curve.png`. Lower the learning rate first (`--lr-baseline`, now {}; `--lr-cnn`, now {}), then check labels: `outputs/confusion_matrix.csv` shows whether one class swallows the others. Try overfitting a tiny set: `--overfit-batches 1` trains each model on one batch and says whether its loss falls near zero.",
            c.settings.lr_baseline, c.settings.lr_cnn
        ),
        "**Training improves but validation does not (overfitting)**: compare `train_acc` with `val_acc` and `train_loss` with `val_loss` per epoch in `outputs/training_log.csv` and `curves/accuracy_curve.png`. The best epoch is restored (`best_epoch` in `outputs/model_comparison.csv`); more data (`--samples-per-class`) or fewer epochs help.".to_string(),
        "**Divergence** (a gradient norm that is NaN, infinite or above 1e6, or a loss that is not finite; for example with `--lr-cnn 1e6`): training of that model stops at the step, its `status` in `outputs/model_comparison.csv` says where, the best epoch before it is kept, the other model still trains, and trainer exits with code 3. Lower the learning rate (by 10x at a time) and rerun.".to_string(),
        format!(
            "**Memory pressure** (CPU RAM or GPU memory exhausted): trainer halves the batch on its own and records every halving in `outputs/memory_events.csv` ({} events in this run). This run: {}. Lower `--batch-size` or `--image-size` yourself to skip the halving, or set `--memory-limit` to keep headroom.",
            report.memory_events.len(),
            batches.join("; ")
        ),
        format!(
            "**Results change between runs (non-determinism)**: data, split, initial parameters and shuffling all derive from `--seed` (now {}); two runs with the same seed on the same backend give byte-identical `training_log.csv`, `model_comparison.csv`, `confusion_matrix.csv`, `error_samples.csv` and `metrics_summary.json`. Across backends, float rounding differs slightly: `trainer parity` measures by how much.",
            c.settings.seed
        ),
        "**A backend does not start**: `--backend wgpu` needs a Vulkan, Metal or DX12 driver (`apt-get install mesa-vulkan-drivers` gives a software one); `--backend cpu` always works.".to_string(),
    ];
    for item in items {
        let _ = writeln!(out, "- {item}");
    }
    if let Some(verdicts) = report.overfit_verdicts() {
        let _ = writeln!(
            out,
            "\n## Overfit check (`--overfit-batches {}`)\n\nEach model trained on the first {} training samples only; a model that can learn anything drives its training loss below {:.4} there ({} above the lowest its label smoothing allows).\n",
            c.settings.overfit_batches.unwrap_or(0),
            report.split_sizes[0],
            report.overfit_threshold(),
            crate::config::OVERFIT_LOSS
        );
        for v in verdicts {
            let _ = writeln!(
                out,
                "- {}: **{}**, training loss {:.4} after {} steps",
                v.model,
                if v.passed { "passed" } else { "failed" },
                v.final_loss,
                v.steps
            );
        }
    }
    out
}

/// The pack's README.md, section by section.
pub fn readme_md(report: &Report) -> String {
    let mut out = String::from("# Deep learning workshop evidence pack\n\n");
    if let Some(stopped) = &report.stopped {
        let _ = writeln!(
            out,
            "**Incomplete: {stopped}.** The pack holds each model's best epoch before the interrupt; `trainer --resume {}` continues the run.\n",
            report.config.out.display()
        );
    }
    readme_command_and_device(&mut out, report);
    readme_results(&mut out, report);
    readme_comparison(&mut out, report);
    readme_failures(&mut out, report);
    readme_training(&mut out, report);
    readme_memory(&mut out, report);
    readme_files_limits_next(&mut out, report);
    out
}

/// The command that made the pack, and the backend and device it ran on.
fn readme_command_and_device(out: &mut String, report: &Report) {
    let c = &report.config;
    let _ = writeln!(
        out,
        "Produced by `trainer` {} with:\n",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(out, "```bash\n{}\n```\n", c.command);
    let _ = writeln!(out, "## Backend and device\n");
    let _ = writeln!(out, "- {}", report.device.summary());
    if let Some(note) = &report.choice_note {
        let _ = writeln!(out, "- {note}");
    }
    let _ = writeln!(
        out,
        "- Whole run: {:.2} s wall; peak host memory {}. Per-epoch timing: `outputs/epoch_timing.csv`; everything about the run: `outputs/run_info.json`.\n",
        report.wall_seconds,
        report
            .peak_rss_bytes
            .map(format_bytes)
            .unwrap_or_else(|| "unknown".into())
    );
}

/// The best model, why it was chosen, and the data it was trained on.
fn readme_results(out: &mut String, report: &Report) {
    let c = &report.config;
    let best = report.best();
    let _ = writeln!(out, "## Results\n");
    if let Some(verdicts) = report.overfit_verdicts() {
        let each: Vec<String> = verdicts
            .iter()
            .map(|v| {
                let verdict = if v.passed { "passed" } else { "failed" };
                format!("{} {verdict} (train loss {:.4})", v.model, v.final_loss)
            })
            .collect();
        let _ = writeln!(
            out,
            "- **This run is the overfit check** (`--overfit-batches`): each model trained on the first {} training samples only, so the figures below are not a model to keep. {}.",
            report.split_sizes[0],
            each.join("; ")
        );
    }
    let _ = writeln!(
        out,
        "- Best model: {}, chosen by {} (`--select-by {}`).",
        best.spec.display_name(),
        crate::train::select::reason(c.settings.select_by, c.settings.monitor),
        c.settings.select_by.as_str()
    );
    if let Some(note) = choice_note(report) {
        let _ = writeln!(out, "- {note}");
    }
    let _ = writeln!(out, "- Test accuracy: {}", py_float(best.test.accuracy));
    let source = match &c.settings.data {
        Some(folder) => format!(
            "image folder `{}` ({} entr{} skipped{}; every file is listed with its part and checksum in `checkpoints/best_model.json`)",
            folder.display(),
            report.skipped.len(),
            if report.skipped.len() == 1 {
                "y"
            } else {
                "ies"
            },
            if report.skipped.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    report
                        .skipped
                        .iter()
                        .take(5)
                        .map(|(f, why)| format!("{f} ({why})"))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        ),
        None => format!("stripe images, {} per class", c.settings.samples_per_class),
    };
    let split = match &report.data_folder {
        Some(folder) if folder.pre_split => {
            format!("the folder's own splits, seed {}", c.settings.seed)
        }
        _ => format!(
            "split {:?} within each class, seed {}",
            c.settings.split, c.settings.seed
        ),
    };
    let _ = writeln!(
        out,
        "- Data: {source}; {} train / {} val / {} test samples ({split}); classes {}.",
        report.split_sizes[0],
        report.split_sizes[1],
        report.split_sizes[2],
        report.classes.join(", ")
    );
    readme_folder(out, report);
    let _ = writeln!(
        out,
        "- Preprocessing: {}.",
        crate::model::checkpoint::preprocessing(&c.settings.data_config(), &report.normalization)
    );
    let _ = writeln!(
        out,
        "- Augmentation: {}. Settings of this run: `outputs/config.json` (`trainer --config outputs/config.json` repeats it).\n",
        match c.settings.augment {
            augment if augment.is_none() => "none".to_string(),
            augment => format!(
                "`{augment}`: {} on the training part, seeded by the run's seed",
                augment.describe()
            ),
        }
    );
}

/// An image folder's layout, where each part came from and its size, what was decoded, and
/// how many files were left out or merged.
fn readme_folder(out: &mut String, report: &Report) {
    let Some(folder) = &report.data_folder else {
        return;
    };
    let _ = writeln!(out, "- Layout: {}.", folder.layout);
    for origin in &folder.origins {
        let _ = writeln!(
            out,
            "  - {}: {} images from {}.",
            origin.part.as_str(),
            origin.images,
            origin.from
        );
    }
    let _ = writeln!(
        out,
        "- Decoded: {}. Files left out or merged (copies, unreadable files): {}, each a row of `outputs/data_issues.csv`.",
        folder.decoded,
        report.data_issues.len()
    );
}

/// Every model, ordered by the rule that chose the best.
fn readme_comparison(out: &mut String, report: &Report) {
    let c = &report.config;
    let _ = writeln!(out, "## Model comparison\n");
    let rows: Vec<Vec<String>> = report
        .ranking
        .iter()
        .map(|&i| {
            let r = &report.models[i];
            vec![
                r.spec.display_name().to_string(),
                epochs_trained(r).to_string(),
                r.lr.to_string(),
                r.trained.final_batch.to_string(),
                r.trained.best_epoch.to_string(),
                py_float(r.trained.best_val_acc),
                py_float(r.test.loss),
                py_float(r.test.accuracy),
                status(r),
            ]
        })
        .collect();
    *out += &markdown_table(
        &[
            "model",
            "epochs",
            "lr",
            "batch",
            "best epoch",
            match c.settings.monitor {
                Monitor::ValAcc => "best val acc",
                Monitor::ValLoss => "val acc at best val loss",
            },
            "test loss",
            "test accuracy",
            "status",
        ],
        &rows,
    );
    let _ = writeln!(
        out,
        "\n{}The best epoch of each model (by {}) was restored before testing. The table is ordered by the rule that chose the best model: {}.\n",
        if report.models.len() > 1 {
            "The baseline sees pixels one by one and cannot use local patterns; the CNN's small kernels can. "
        } else {
            ""
        },
        c.settings.monitor.as_str(),
        crate::train::select::reason(c.settings.select_by, c.settings.monitor)
    );
    if let Some(o) = report.test_overlap.filter(|o| o.seen > 0) {
        let _ = writeln!(
            out,
            "**The test accuracy overstates:** {} of the {} test images were training or validation images of the checkpoint this run started from (`--allow-test-overlap`), so the model had seen them.\n",
            o.seen, o.test
        );
    }
}

/// What the README adds about the choice: that no model finished an epoch, or that the first
/// two tied on the monitored figure and what decided.
fn choice_note(report: &Report) -> Option<String> {
    let best = report.best();
    if best.trained.best_epoch == 0 {
        return Some(
            "No model finished an epoch (each diverged in its first): the reported model keeps its initial parameters, and its validation figures were never measured.".into(),
        );
    }
    let settings = &report.config.settings;
    let second = report.models.get(*report.ranking.get(1)?)?;
    if settings.select_by != Selection::Val || second.trained.best_epoch == 0 {
        return None;
    }
    let (a, b) = (&best.trained, &second.trained);
    let (acc, loss) = (
        (round4(a.best_val_acc), round4(b.best_val_acc)),
        (round4(a.best_val_loss), round4(b.best_val_loss)),
    );
    let (tied, figure, other, values) = match settings.monitor {
        Monitor::ValAcc => (
            acc.0 == acc.1,
            "validation accuracy",
            "lower validation loss",
            loss,
        ),
        Monitor::ValLoss => (
            loss.0 == loss.1,
            "validation loss",
            "higher validation accuracy",
            acc,
        ),
    };
    if !tied {
        return None;
    }
    let tie_value = match settings.monitor {
        Monitor::ValAcc => acc.0,
        Monitor::ValLoss => loss.0,
    };
    let decided = if values.0 == values.1 {
        "the other figure tied too, so the training order decided".to_string()
    } else {
        format!(
            "the {other} decided ({:?} against {:?})",
            values.0, values.1
        )
    };
    Some(format!(
        "{} and {} tied on {figure} ({tie_value:?}); {decided}.",
        best.spec.display_name(),
        second.spec.display_name()
    ))
}

/// The best model's top failure patterns on the test part.
fn readme_failures(out: &mut String, report: &Report) {
    let best = report.best();
    let _ = writeln!(out, "## Top failure patterns\n");
    for line in failure_patterns(&best.test.predictions, &report.classes) {
        let _ = writeln!(out, "- {line}");
    }
    let _ = writeln!(
        out,
        "\nThe review samples are in `outputs/error_samples.csv` and, as pictures, in `curves/review_grid.png`.\n"
    );
    let _ = match report.label_issues.len() {
        0 => writeln!(
            out,
            "Possible label issues: none; the kept model agrees with every training and validation label (`outputs/label_issues.csv` has only its header, `curves/top_losses.png` says so).\n"
        ),
        n => writeln!(
            out,
            "Possible label issues: {n} training or validation image(s) the kept model puts in another class than their label (at most {}), highest loss first in `outputs/label_issues.csv` (part, label, predicted class and its probability, loss); the first {} are pictured in `curves/top_losses.png`. A high-loss image is mislabelled, ambiguous, or a kind the model has not learnt: look at it before trusting its label.\n",
            crate::config::LABEL_ISSUES,
            crate::config::TOP_LOSS_PICTURES
        ),
    };
}

/// Which epoch each model kept, and why its training ended.
fn readme_training(out: &mut String, report: &Report) {
    let _ = writeln!(out, "## Training\n");
    let recipe = report.config.settings.recipe();
    let _ = writeln!(
        out,
        "Recipe: {}; gradients clipped to a global L2 norm of {}.\n",
        recipe.describe(
            (crate::config::ADAM_BETA_1, crate::config::ADAM_BETA_2),
            crate::config::ADAM_EPSILON
        ),
        crate::config::MAX_GRAD_NORM
    );
    for run in &report.models {
        let why = match (&run.trained.divergence, &run.trained.stopped_early) {
            (Some(d), _) => format!(
                "diverged at epoch {} step {} ({}); training stopped there",
                d.epoch, d.step, d.what
            ),
            (None, Some(why)) => format!("stopped early: {why}"),
            (None, None) if run.trained.interrupted.is_some() => format!(
                "stopped after {} of {} epochs by an interrupt",
                epochs_trained(run),
                run.epochs
            ),
            (None, None) => format!("trained all {} epochs", run.epochs),
        };
        let kept = match run.trained.best_epoch {
            0 => "no epoch finished, so its initial parameters are kept and its validation figures were never measured".to_string(),
            e => format!(
                "epoch {e} kept (best {})",
                report.config.settings.monitor.as_str()
            ),
        };
        let _ = writeln!(out, "- {}: {kept}; {why}.", run.spec.display_name());
    }
    let _ = writeln!(out);
}

/// Every change of batch size.
fn readme_memory(out: &mut String, report: &Report) {
    let c = &report.config;
    let _ = writeln!(out, "## Memory\n");
    if report.memory_events.is_empty() {
        let _ = writeln!(
            out,
            "No batch size change was needed (preflight {}).\n",
            if c.memory_preflight { "on" } else { "off" }
        );
    } else {
        let _ = writeln!(
            out,
            "The batch size was halved {} time(s); each change is a row of `outputs/memory_events.csv`:\n",
            report.memory_events.len()
        );
        for e in &report.memory_events {
            let _ = writeln!(
                out,
                "- {} ({}, epoch {}, step {}): {} -> {} because {}",
                e.model, e.phase, e.epoch, e.step, e.from_batch, e.to_batch, e.reason
            );
        }
        let _ = writeln!(out);
    }
}

/// "Using the model elsewhere": PyTorch, onnxruntime, TensorBoard.
fn readme_elsewhere(out: &mut String, report: &Report) {
    let facts = best_facts(report);
    let pack = report.config.out.display().to_string();
    let _ = writeln!(out, "## Using the model elsewhere\n");
    let _ = writeln!(
        out,
        "{}\nThe curves of every model, and the confusion matrix and review grid, open in TensorBoard: `tensorboard --logdir {pack}/{}`.\n",
        export::snippets::markdown(&facts, &format!("{pack}/checkpoints")),
        super::board::FOLDER
    );
}

/// The evidence files, the limitations and the next steps.
fn readme_files_limits_next(out: &mut String, report: &Report) {
    let c = &report.config;
    let _ = writeln!(out, "## Evidence files\n");
    for file in FILES.iter().filter(|f| **f != "README.md") {
        let _ = writeln!(out, "- {file}");
    }
    let _ = writeln!(
        out,
        "- checkpoints/last.bin, checkpoints/last.json (the run's state after its last epoch: weights, optimizer, schedule, shuffling, best epoch; `trainer --resume` goes on from it, `--init-from checkpoints/best_model.json` fine-tunes from the best model)"
    );
    for run in &report.models {
        let _ = writeln!(
            out,
            "- {}/{}/ (TensorBoard run of the {})",
            super::board::FOLDER,
            run.spec.slug(),
            run.spec.display_name()
        );
    }
    let _ = writeln!(
        out,
        "\nThe checkpoint is burn's burnpack format (`checkpoints/best_model.bpk`), described by `checkpoints/best_model.json` (model, classes, image size, data recipe, checksum). Reload it with:\n\n```bash\ntrainer evaluate --checkpoint {}/checkpoints/best_model.json\n```\n",
        c.out.display()
    );
    readme_elsewhere(out, report);
    let _ = writeln!(out, "## Limitations\n");
    let _ = writeln!(
        out,
        "- {}\n- The test set has {} samples, so one sample moves test accuracy by {}.\n- Float results differ slightly between backends (see `trainer parity`); byte-identical reruns hold on one backend and machine.\n",
        match (&c.settings.data, report.color.channels) {
            (None, _) =>
                "The data are synthetic stripes: a clean, easy task; accuracy here says little about real images.",
            (Some(_), 1) =>
                "Each image is one grayscale channel at the run's --image-size: colour and finer detail are lost; the test part comes from the same folder, so it says nothing about images collected elsewhere.",
            (Some(_), _) =>
                "Each image is three colour channels at the run's --image-size: finer detail is lost; the test part comes from the same folder, so it says nothing about images collected elsewhere.",
        },
        report.split_sizes[2],
        crate::console::significant(1.0 / report.split_sizes[2].max(1) as f64)
    );
    let _ = writeln!(out, "## Next steps\n");
    let _ = writeln!(
        out,
        "- Change one variable at a time (`--batch-size`, `--lr-cnn` or `--epochs-cnn`), rerun into a new `--out`, and compare the two `training_log.csv` files and loss curves.\n- Review the samples in `outputs/error_samples.csv` before trusting the score.{}",
        match c.settings.data {
            None => "\n- Move to a real image folder once the baseline is understood.",
            Some(_) =>
                "\n- Look at the skipped entries above and at the review grid: a mislabelled or duplicated image in the folder shows there first.",
        }
    );
    out.push_str(&super::advice::markdown(report));
}

/// A UTC timestamp (`2026-11-26T20:56:05Z`) from Unix seconds.
pub fn utc_timestamp(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_look_like_pythons() {
        assert_eq!(py_float(1.0), "1.0");
        assert_eq!(py_float(0.928_571_4), "0.9286");
        assert_eq!(py_float(0.07), "0.07");
        assert_eq!(py_float(0.0), "0.0");
    }

    #[test]
    fn timestamps_are_utc() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(1_795_726_565), "2026-11-26T20:56:05Z");
    }

    #[test]
    fn review_rows_prefer_errors() {
        let p = |id: &str, a, b, c| Prediction {
            sample_id: id.into(),
            actual: a,
            predicted: b,
            confidence: c,
        };
        let preds = vec![p("a", 0, 0, 0.9), p("b", 1, 2, 0.6), p("c", 2, 2, 0.4)];
        let rows = review_rows(&preds);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].1, "wrong prediction");
        let rows = review_rows(&[p("a", 0, 0, 0.9), p("c", 2, 2, 0.4)]);
        assert_eq!(rows[0].0.sample_id, "c");
        assert_eq!(rows[0].1, "lowest-confidence correct prediction");
        // Only the first 10 wrong predictions, in test order.
        let wrong: Vec<Prediction> = (0..15).map(|i| p(&i.to_string(), 0, 1, 0.5)).collect();
        let rows = review_rows(&wrong);
        assert_eq!(rows.len(), 10);
        assert_eq!(rows[9].0.sample_id, "9");
    }
}
