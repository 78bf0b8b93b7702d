//! Backend parity: train both models on each backend from the same initial parameters and the
//! same batch order ([`side`]), then compare step losses, final parameters, test logits,
//! predictions, accuracies and timing ([`compare`]), give a verdict and write the report
//! ([`write`]).

pub mod compare;
pub mod side;
pub mod write;

pub use compare::ModelComparison;

use std::path::PathBuf;

use serde::Serialize;

use crate::config::Settings;
use crate::console::Console;
use crate::data;
use crate::device::{self, BackendName, DeviceInfo};
use crate::error::{Result, TrainerError};
use crate::model::ModelSpec;
use crate::pack::{self, OutputLock};

/// What must hold for a verdict of parity.
#[derive(Clone, Debug, Serialize)]
pub struct Tolerances {
    /// Largest relative difference of a first-epoch step loss.
    pub loss_rtol: f64,
    /// Largest absolute difference of a test logit.
    pub logits_atol: f64,
    /// Largest absolute difference of a parameter after the last step.
    pub param_atol: f64,
    /// Smallest share of test samples whose predictions agree.
    pub min_agreement: f64,
    /// How many times a backend's own difference from a nudged start (one unit in the last
    /// place of every parameter; the larger of the pair's) a figure may reach where that
    /// exceeds its tolerance; 0 judges by the tolerances alone.
    pub sensitivity_factor: f64,
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
    let splits = crate::setup::load_data(&config.settings, console, "parity: ")?;
    // Open every backend first: one that cannot start fails the command before any work.
    let opened = config
        .backends
        .iter()
        .map(|&name| device::open_named(name))
        .collect::<Result<Vec<_>>>()?;
    let side::Trained {
        sides,
        nudged,
        summaries,
    } = side::train_all(&config, &splits, &opened, console)?;
    let mut comparisons = Vec::new();
    for (i, other) in sides.iter().enumerate().skip(1) {
        for (m, ((kind, reference), (_, side))) in sides[0].iter().zip(other).enumerate() {
            let pair = compare::Pair {
                kind: *kind,
                reference: config.backends[0],
                other: config.backends[i],
            };
            let own = compare::Nudged {
                reference: &nudged[0][m],
                other: &nudged[i][m],
            };
            comparisons.push(compare::compare(
                pair,
                reference,
                side,
                own,
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
    write::write(&config, &report)?;
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

fn validate(config: &ParityConfig) -> Result<()> {
    config.settings.validate()?;
    if config.settings.overfit_batches.is_some() {
        return Err(TrainerError::bad_input(
            "--overfit-batches is a check of one run (trainer --overfit-batches N); parity compares backends and takes the full training part",
        ));
    }
    let t = &config.tolerances;
    if !(t.loss_rtol >= 0.0
        && t.logits_atol >= 0.0
        && t.param_atol >= 0.0
        && t.sensitivity_factor >= 0.0
        && (0.0..=1.0).contains(&t.min_agreement))
    {
        return Err(TrainerError::bad_input(
            "tolerances and --sensitivity-factor must be non-negative and --min-agreement between 0 and 1",
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
