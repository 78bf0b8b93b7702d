//! Backend parity: train both models on each backend from the same initial parameters and the
//! same batch order, then compare step losses, final parameters, test logits, predictions,
//! accuracies and timing, and give a verdict.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::cli::ParityArgs;
use crate::cmd::command_line;
use crate::config::Settings;
use crate::console::Console;
use crate::data;
use crate::device::{self, BackendChoice, BackendName, DeviceInfo};
use crate::error::{Result, TrainerError};
use crate::memory::MemoryPolicy;
use crate::model::{self, ModelKind, ModelSpec};
use crate::pack::plots::{self, LineChart, Series};
use crate::pack::{self, OutputLock, Staging};
use crate::train::{self, Context, TrainSettings};

/// What must hold for a verdict of parity.
#[derive(Clone, Debug, Serialize)]
pub struct Tolerances {
    /// Largest relative difference of a first-epoch step loss.
    pub loss_rtol: f64,
    /// Largest absolute difference of a test logit.
    pub logits_atol: f64,
    /// Smallest share of test samples whose predictions agree.
    pub min_agreement: f64,
}

/// Everything a parity run is given.
#[derive(Clone, Debug)]
pub struct ParityConfig {
    pub backends: Vec<BackendName>,
    pub out: PathBuf,
    /// Data and hyperparameters (its backend is not used: `backends` are).
    pub settings: Settings,
    pub tolerances: Tolerances,
    /// Test hook: add this much to the first parameter on this backend.
    pub perturb: Option<(BackendName, f32)>,
    pub command: String,
}

/// One model trained on one backend.
struct Side {
    step_losses: Vec<f32>,
    steps_per_epoch: usize,
    params: Vec<(String, Vec<usize>, Vec<f32>)>,
    logits: Vec<f32>,
    predictions: Vec<(String, usize)>,
    best_val_acc: f64,
    best_epoch: usize,
    test_accuracy: f64,
    train_seconds: f64,
    train_samples: usize,
    /// What ran the model's steps ([`crate::train::engine::Engine::name`]).
    engine: &'static str,
}

/// The comparison of one model between the reference backend and another.
#[derive(Clone, Debug, Serialize)]
pub struct ModelComparison {
    pub model: String,
    pub reference: String,
    pub other: String,
    pub steps: usize,
    pub loss_max_abs_diff: f64,
    pub loss_max_rel_diff: f64,
    pub first_epoch_loss_max_rel_diff: f64,
    /// 1-based (epoch, step within epoch) where the step losses first part by more than the
    /// tolerance, if they do.
    pub first_divergent_step: Option<(usize, usize)>,
    pub param_max_abs_diff: Vec<(String, f64)>,
    pub logits_max_abs_diff: f64,
    pub prediction_agreement: f64,
    pub disagreeing_samples: Vec<String>,
    pub best_val_acc: (f64, f64),
    pub best_epoch: (usize, usize),
    pub test_accuracy: (f64, f64),
    pub train_samples_per_sec: (f64, f64),
    /// What ran the steps on each side: the wgpu kernels, the fused CPU op or burn's layers.
    pub engines: (String, String),
    pub passed: bool,
    /// Why not, in one line.
    pub failure: Option<String>,
}

/// A backend's part in the run.
#[derive(Clone, Debug, Serialize)]
pub struct BackendSummary {
    pub backend: String,
    pub device: DeviceInfo,
    pub wall_seconds: f64,
}

/// The whole parity report (parity/parity_report.json).
#[derive(Clone, Debug, Serialize)]
pub struct ParityReport {
    pub passed: bool,
    pub verdict: String,
    pub command: String,
    pub tolerances: Tolerances,
    pub backends: Vec<BackendSummary>,
    /// The images' channels and why (`--color`).
    pub color: data::folder::ColorChoice,
    pub comparisons: Vec<ModelComparison>,
    /// Step losses per backend and model, for the overlay.
    #[serde(skip)]
    losses: Vec<(String, ModelSpec, Vec<f32>)>,
}

/// `trainer parity`: the backends, tolerances and the hidden `--perturb-init` hook from the
/// flags, the run, and its verdict.
pub fn main(args: ParityArgs) -> Result<()> {
    let console = Console::new(args.quiet);
    let backends = args
        .backends
        .iter()
        .map(|b| BackendName::parse(b))
        .collect::<Result<Vec<_>>>()?;
    let perturb = match &args.perturb_init {
        None => None,
        Some(spec) => {
            let (backend, epsilon) = spec
                .split_once('=')
                .ok_or_else(|| TrainerError::bad_input("--perturb-init takes BACKEND=EPSILON"))?;
            let epsilon: f32 = epsilon
                .parse()
                .map_err(|_| TrainerError::bad_input("--perturb-init: EPSILON must be a number"))?;
            Some((BackendName::parse(backend)?, epsilon))
        }
    };
    let config = ParityConfig {
        backends,
        out: args.out,
        settings: args.train.settings(BackendChoice::Cpu),
        tolerances: Tolerances {
            loss_rtol: args.loss_rtol,
            logits_atol: args.logits_atol,
            min_agreement: args.min_agreement,
        },
        perturb,
        command: command_line(),
    };
    let out = config.out.clone();
    let report = run(config, &console)?;
    console.result(&report.verdict);
    console.result(&out.join("parity/parity_report.md").display().to_string());
    Ok(())
}

/// Runs parity. The report is written either way; a failed verdict is then returned as
/// [`TrainerError::VerdictFailed`] (exit code 1).
pub fn run(config: ParityConfig, console: &Console) -> Result<ParityReport> {
    if config.backends.len() < 2 {
        return Err(TrainerError::bad_input(
            "--backends needs at least two backends, e.g. cpu,wgpu",
        ));
    }
    validate(&config)?;
    pack::check_target(&config.out, pack::PackKind::Parity)?;
    if let Some(folder) = &config.settings.data {
        pack::check_outside(&config.out, folder)?;
    }
    let _lock = OutputLock::acquire(&config.out)?;
    let settings = &config.settings;
    let splits = crate::cmd::load_data(settings, console, "parity: ")?;
    // Open every backend first: one that cannot start fails the command before any work.
    let opened = config
        .backends
        .iter()
        .map(|&name| device::open_named(name))
        .collect::<Result<Vec<_>>>()?;

    let mut sides: Vec<Vec<(ModelSpec, Side)>> = Vec::new();
    let mut summaries = Vec::new();
    for (name, open) in config.backends.iter().zip(&opened) {
        console.info(&format!("parity: training on {}", open.info.summary()));
        let started = Instant::now();
        let ctx = Context {
            device: &open.device,
            device_info: &open.info,
            progress: console,
        };
        let mut memory = MemoryPolicy::new(None, true)?;
        let mut per_model = Vec::new();
        for &kind in &settings.models {
            per_model.push(train_side(
                &config,
                &splits,
                kind,
                *name,
                &mut memory,
                &ctx,
            )?);
        }
        summaries.push(BackendSummary {
            backend: name.as_str().to_string(),
            device: open.info.clone(),
            wall_seconds: started.elapsed().as_secs_f64(),
        });
        sides.push(per_model);
    }

    let mut comparisons = Vec::new();
    for (i, other) in sides.iter().enumerate().skip(1) {
        for ((kind, reference), (_, side)) in sides[0].iter().zip(other) {
            comparisons.push(compare(
                *kind,
                config.backends[0],
                config.backends[i],
                reference,
                side,
                &config.tolerances,
            ));
        }
    }
    let passed = comparisons.iter().all(|c| c.passed);
    let verdict = verdict(&config.backends, &comparisons);
    let losses = config
        .backends
        .iter()
        .zip(&sides)
        .flat_map(|(name, per_model)| {
            per_model
                .iter()
                .map(|(kind, side)| (name.as_str().to_string(), *kind, side.step_losses.clone()))
        })
        .collect();
    let report = ParityReport {
        passed,
        verdict,
        command: config.command.clone(),
        tolerances: config.tolerances.clone(),
        backends: summaries,
        color: splits.color.clone(),
        comparisons,
        losses,
    };
    write(&config, &report)?;
    if !report.passed {
        return Err(TrainerError::VerdictFailed(format!(
            "parity {}",
            report.verdict
        )));
    }
    Ok(report)
}

/// "PASS: cpu and wgpu agree within the tolerances", or "FAIL: " and the first failure.
fn verdict(backends: &[BackendName], comparisons: &[ModelComparison]) -> String {
    match comparisons.iter().find_map(|c| c.failure.clone()) {
        None => format!("PASS: {} agree within the tolerances", names(backends)),
        Some(first) => format!("FAIL: {first}"),
    }
}

/// Trains and tests one model on one backend from the shared start (perturbed on the
/// backend the test hook names), and keeps what the comparison needs.
fn train_side(
    config: &ParityConfig,
    splits: &data::Splits,
    kind: ModelKind,
    name: BackendName,
    memory: &mut MemoryPolicy,
    ctx: &Context,
) -> Result<(ModelSpec, Side)> {
    let settings = &config.settings;
    let (epochs, lr) = settings.schedule(kind);
    // The shape the workshop run would train: the data's channels, --cnn-widths.
    let mut net = crate::cmd::init_net(settings, kind, splits, ctx.device)?;
    let spec = settings.spec(kind, splits.train.channels)?;
    if let Some((target, epsilon)) = config.perturb
        && target == name
    {
        net = model::perturb_first_parameter(net, epsilon);
    }
    let train_settings = TrainSettings::new(settings, epochs, lr);
    let (trained, test) = train::train_and_test(net, splits, &train_settings, true, memory, ctx)?;
    let params = model::parameters(&trained.last).map_err(|reason| TrainerError::Device {
        backend: name.as_str().to_string(),
        reason,
    })?;
    let side = Side {
        steps_per_epoch: splits.train.len().div_ceil(trained.final_batch),
        step_losses: trained.step_losses,
        params,
        logits: test.logits,
        predictions: test
            .predictions
            .iter()
            .map(|p| (p.sample_id.clone(), p.predicted))
            .collect(),
        best_val_acc: trained.best_val_acc,
        best_epoch: trained.best_epoch,
        test_accuracy: test.accuracy,
        train_seconds: trained.history.iter().map(|e| e.train_seconds).sum(),
        train_samples: trained.history.iter().map(|e| e.train_samples).sum(),
        engine: trained.engine.engine.name(),
    };
    Ok((spec, side))
}

fn validate(config: &ParityConfig) -> Result<()> {
    config.settings.validate()?;
    if config.settings.overfit_batches.is_some() {
        return Err(TrainerError::bad_input(
            "--overfit-batches is a check of one run (trainer --overfit-batches N); parity compares backends and takes the full training part",
        ));
    }
    let t = &config.tolerances;
    if !(t.loss_rtol >= 0.0 && t.logits_atol >= 0.0 && (0.0..=1.0).contains(&t.min_agreement)) {
        return Err(TrainerError::bad_input(
            "tolerances must be non-negative and --min-agreement between 0 and 1",
        ));
    }
    let mut seen = Vec::new();
    for b in &config.backends {
        if seen.contains(b) {
            return Err(TrainerError::bad_input(format!(
                "--backends names {} twice",
                b.as_str()
            )));
        }
        seen.push(*b);
    }
    Ok(())
}

fn names(backends: &[BackendName]) -> String {
    backends
        .iter()
        .map(|b| b.as_str())
        .collect::<Vec<_>>()
        .join(" and ")
}

fn rel_diff(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

fn compare(
    kind: ModelSpec,
    reference_name: BackendName,
    other_name: BackendName,
    reference: &Side,
    other: &Side,
    tolerances: &Tolerances,
) -> ModelComparison {
    let steps = reference.step_losses.len().min(other.step_losses.len());
    let pairs = || {
        reference
            .step_losses
            .iter()
            .zip(&other.step_losses)
            .map(|(a, b)| (*a as f64, *b as f64))
    };
    let loss_max_abs_diff = pairs().map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    let loss_max_rel_diff = pairs().map(|(a, b)| rel_diff(a, b)).fold(0.0, f64::max);
    let per_epoch = reference.steps_per_epoch.max(1);
    let first_epoch_loss_max_rel_diff = pairs()
        .take(per_epoch)
        .map(|(a, b)| rel_diff(a, b))
        .fold(0.0, f64::max);
    let first_divergent_step = pairs()
        .position(|(a, b)| !(rel_diff(a, b) <= tolerances.loss_rtol))
        .map(|i| (i / per_epoch + 1, i % per_epoch + 1));
    let param_max_abs_diff = reference
        .params
        .iter()
        .zip(&other.params)
        .map(|((path, _, a), (_, _, b))| {
            let diff = a
                .iter()
                .zip(b)
                .map(|(x, y)| (*x as f64 - *y as f64).abs())
                .fold(0.0, f64::max);
            (path.clone(), diff)
        })
        .collect();
    let logits_max_abs_diff = reference
        .logits
        .iter()
        .zip(&other.logits)
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .fold(0.0, f64::max);
    let disagreeing_samples: Vec<String> = reference
        .predictions
        .iter()
        .zip(&other.predictions)
        .filter(|(a, b)| a.1 != b.1)
        .map(|(a, _)| a.0.clone())
        .collect();
    let total = reference.predictions.len().max(1);
    let prediction_agreement = 1.0 - disagreeing_samples.len() as f64 / total as f64;
    let rate = |s: &Side| s.train_samples as f64 / s.train_seconds.max(1e-9);

    let mut comparison = ModelComparison {
        model: kind.display_name().to_string(),
        reference: reference_name.as_str().to_string(),
        other: other_name.as_str().to_string(),
        steps,
        loss_max_abs_diff,
        loss_max_rel_diff,
        first_epoch_loss_max_rel_diff,
        first_divergent_step,
        param_max_abs_diff,
        logits_max_abs_diff,
        prediction_agreement,
        disagreeing_samples,
        best_val_acc: (reference.best_val_acc, other.best_val_acc),
        best_epoch: (reference.best_epoch, other.best_epoch),
        test_accuracy: (reference.test_accuracy, other.test_accuracy),
        train_samples_per_sec: (rate(reference), rate(other)),
        engines: (reference.engine.to_string(), other.engine.to_string()),
        passed: false,
        failure: None,
    };
    let step_counts = (reference.step_losses.len(), other.step_losses.len());
    comparison.failure = failure(&comparison, step_counts, tolerances);
    comparison.passed = comparison.failure.is_none();
    comparison
}

/// Why a comparison fails, in one line, checked in order: step counts, first-epoch losses,
/// test logits, predictions; none when it passes.
fn failure(
    c: &ModelComparison,
    (reference_steps, other_steps): (usize, usize),
    tolerances: &Tolerances,
) -> Option<String> {
    let pair = format!("{}: {} vs {}", c.model, c.reference, c.other);
    if reference_steps != other_steps {
        Some(format!(
            "{pair}: different numbers of steps ({reference_steps} vs {other_steps})"
        ))
    } else if !(c.first_epoch_loss_max_rel_diff <= tolerances.loss_rtol) {
        let (epoch, step) = c.first_divergent_step.unwrap_or((1, 1));
        Some(format!(
            "{pair}: step losses part at epoch {epoch} step {step} (first-epoch max relative difference {:.2e} > {:.0e})",
            c.first_epoch_loss_max_rel_diff, tolerances.loss_rtol
        ))
    } else if !(c.logits_max_abs_diff <= tolerances.logits_atol) {
        Some(format!(
            "{pair}: test logits differ by up to {:.2e} (> {:.0e})",
            c.logits_max_abs_diff, tolerances.logits_atol
        ))
    } else if c.prediction_agreement < tolerances.min_agreement {
        Some(format!(
            "{pair}: predictions agree on {:.1}% of test samples (< {:.1}%)",
            c.prediction_agreement * 100.0,
            tolerances.min_agreement * 100.0
        ))
    } else {
        None
    }
}

fn write(config: &ParityConfig, report: &ParityReport) -> Result<()> {
    let staging = Staging::begin(&config.out, crate::pack::PackKind::Parity)?;
    let json =
        serde_json::to_string_pretty(report).map_err(|e| TrainerError::Serialize(e.to_string()))?;
    staging.write("parity/parity_report.json", json)?;
    staging.write("parity/parity_report.md", markdown(report))?;
    plots::draw_stacked(&staging.path("parity/loss_overlay.png")?, &overlay(report))?;
    // A user's files at the pack's top are carried over (pack::OWNED).
    staging.commit().map(|_kept| ())
}

fn overlay(report: &ParityReport) -> Vec<LineChart> {
    let mut losses = LineChart::new("Step losses per backend", "training step", "loss");
    let mut diffs = LineChart::new(
        "Step loss difference to the reference backend",
        "training step",
        "|loss - reference loss|",
    );
    let reference = report
        .backends
        .first()
        .map(|b| b.backend.clone())
        .unwrap_or_default();
    for (backend, kind, values) in &report.losses {
        let colour = if kind.kind == ModelKind::Baseline {
            0
        } else {
            1
        };
        losses.series.push(Series {
            label: format!("{} on {backend}", kind.display_name()),
            points: values
                .iter()
                .enumerate()
                .map(|(s, l)| ((s + 1) as f64, *l as f64))
                .collect(),
            dashed: *backend != reference,
            colour,
        });
        if *backend != reference
            && let Some((_, _, base)) = report
                .losses
                .iter()
                .find(|(b, k, _)| *b == reference && k == kind)
        {
            diffs.series.push(Series {
                label: format!("{}: {backend} - {reference}", kind.display_name()),
                points: values
                    .iter()
                    .zip(base)
                    .enumerate()
                    .map(|(s, (a, b))| ((s + 1) as f64, (*a as f64 - *b as f64).abs()))
                    .collect(),
                dashed: false,
                colour,
            });
        }
    }
    vec![losses, diffs]
}

fn markdown(report: &ParityReport) -> String {
    let mut out = String::from("# Backend parity report\n\n");
    let _ = writeln!(out, "**{}**\n", report.verdict);
    let _ = writeln!(out, "```bash\n{}\n```\n", report.command);
    let t = &report.tolerances;
    let _ = writeln!(
        out,
        "Tolerances: first-epoch step losses within {:.0e} relative, test logits within {:.0e} absolute, predictions agree on at least {:.0}% of the test set.\n",
        t.loss_rtol,
        t.logits_atol,
        t.min_agreement * 100.0
    );
    let rows: Vec<Vec<String>> = report
        .comparisons
        .iter()
        .map(|c| {
            let param = c.param_max_abs_diff.iter().map(|p| p.1).fold(0.0, f64::max);
            vec![
                c.model.clone(),
                format!("{} vs {}", c.reference, c.other),
                if c.passed { "pass" } else { "FAIL" }.to_string(),
                format!("{:.2e}", c.first_epoch_loss_max_rel_diff),
                format!("{:.2e}", c.loss_max_rel_diff),
                c.first_divergent_step
                    .map(|(e, s)| format!("epoch {e} step {s}"))
                    .unwrap_or_else(|| "none".into()),
                format!("{param:.2e}"),
                format!("{:.2e}", c.logits_max_abs_diff),
                format!("{:.1}%", c.prediction_agreement * 100.0),
                format!("{:.4} / {:.4}", c.best_val_acc.0, c.best_val_acc.1),
                format!("{} / {}", c.best_epoch.0, c.best_epoch.1),
                format!("{:.4} / {:.4}", c.test_accuracy.0, c.test_accuracy.1),
                format!(
                    "{:.0} / {:.0}",
                    c.train_samples_per_sec.0, c.train_samples_per_sec.1
                ),
                format!("{} / {}", c.engines.0, c.engines.1),
            ]
        })
        .collect();
    out += &crate::pack::evidence::markdown_table(
        &[
            "model",
            "backends",
            "verdict",
            "first-epoch loss rel. diff",
            "all steps rel. diff",
            "first step over tolerance",
            "max param diff",
            "max test logit diff",
            "prediction agreement",
            "best val acc",
            "best epoch",
            "test acc",
            "train samples/s",
            "engine",
        ],
        &rows,
    );
    let _ = writeln!(out, "\nImages: {}.", report.color.describe());
    let _ = writeln!(out, "\n## Backends\n");
    for b in &report.backends {
        let _ = writeln!(
            out,
            "- {} ({:.2} s for both models): {}",
            b.backend,
            b.wall_seconds,
            b.device.summary()
        );
    }
    let _ = writeln!(
        out,
        "\n## Parameters after the last step (max absolute difference)\n"
    );
    for c in &report.comparisons {
        let _ = writeln!(out, "- {} ({} vs {}):", c.model, c.reference, c.other);
        for (path, diff) in &c.param_max_abs_diff {
            let _ = writeln!(out, "  - `{path}`: {diff:.2e}");
        }
    }
    let _ = writeln!(
        out,
        "\n## How to read this\n\nBoth backends start from the same parameters (drawn on the host from the seed) and see the same batches in the same order, so any difference comes from float arithmetic. It is tiny at first and can grow as training goes on; the verdict rests on the first epoch's step losses, the test logits and the test predictions. `loss_overlay.png` draws the step losses of each backend over each other, and their difference below."
    );
    out
}
