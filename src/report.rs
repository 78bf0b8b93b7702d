//! What a workshop run is given and what it found: the settings, every model's training and
//! test results, the shapes and the device. The workshop run fills it; the pack's writers
//! read it.

use std::path::PathBuf;

use crate::config::Settings;
use crate::data;
use crate::device::DeviceInfo;
use crate::memory::MemoryEvent;
use crate::model::{ModelKind, ModelSpec};
use crate::train::{Evaluation, Trained};

/// Everything a workshop run is given.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunConfig {
    /// The hyperparameters and data (also written to outputs/config.json).
    pub settings: Settings,
    pub out: PathBuf,
    pub memory_limit_bytes: Option<u64>,
    pub memory_preflight: bool,
    pub quiet: bool,
    /// The command line, as the pack's README repeats it.
    pub command: String,
    /// Go on from the run state `out` holds (`--resume`).
    pub resume: bool,
    /// Start from this checkpoint's weights (`--init-from`), training only the head with
    /// `freeze_features`.
    pub init_from: Option<PathBuf>,
    pub freeze_features: bool,
    /// Train even when the `init_from` checkpoint trained or validated on some of the run's
    /// test images (`--allow-test-overlap`); the pack says how many.
    pub allow_test_overlap: bool,
}

/// One model's training and test results.
#[derive(Debug)]
pub struct ModelRun {
    /// Which model, on how many channels, of which widths.
    pub spec: ModelSpec,
    pub epochs: usize,
    pub lr: f64,
    pub trained: Trained,
    pub test: Evaluation,
}

/// The shapes seen on the way through the models.
#[derive(Clone, Debug, Default)]
pub struct ShapeTrace {
    pub images: Vec<usize>,
    pub labels: Vec<usize>,
    pub logits: Vec<(ModelSpec, Vec<usize>)>,
    pub layers: Vec<(ModelSpec, String, Vec<usize>)>,
}

/// Everything the evidence pack is written from.
#[derive(Debug)]
pub struct Report {
    pub config: RunConfig,
    pub device: DeviceInfo,
    pub choice_note: Option<String>,
    pub classes: Vec<String>,
    pub split_sizes: [usize; 3],
    /// The test part, for the review grid.
    pub test_set: data::ImageDataset,
    pub normalization: data::Normalization,
    /// Files of an image folder that were skipped, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Every file of an image folder with its part (none for stripes).
    pub manifest: Option<data::DataManifest>,
    /// The channels the images were read with, and why.
    pub color: data::folder::ColorChoice,
    /// Every file of an image folder left out or merged (outputs/data_issues.csv).
    pub data_issues: Vec<data::issues::DataIssue>,
    /// An image folder's layout, where each part came from, what was decoded.
    pub data_folder: Option<data::load::FolderSummary>,
    pub models: Vec<ModelRun>,
    /// Indices into `models`, best first (test accuracy, then best val accuracy).
    pub ranking: Vec<usize>,
    pub shapes: ShapeTrace,
    /// The training and validation images the best model most confidently puts in another
    /// class than their label, highest loss first.
    pub label_issues: Vec<crate::train::label_issues::LabelIssue>,
    pub memory_events: Vec<MemoryEvent>,
    pub started_unix: u64,
    pub wall_seconds: f64,
    pub peak_rss_bytes: Option<u64>,
    /// Device memory held by burn's allocator after each model (wgpu reports it).
    pub peak_device_bytes: Option<u64>,
    /// Whether the WGSL kernels of shaders/ were used.
    pub gpu_kernels: bool,
    /// The instruction set of the fused CNN operation on the CPU backend, if it was used.
    pub cpu_kernels: Option<&'static str>,
    /// Set when an interrupt stopped the run: "stopped at epoch 4 of 10 (CNN)".
    pub stopped: Option<String>,
    /// The checkpoint the run started from (`--init-from`).
    pub init_from: Option<crate::model::checkpoint::InitFrom>,
    /// How many test images the `init_from` checkpoint trained or validated on.
    pub test_overlap: Option<crate::model::init_from::TestOverlap>,
}

/// What `--overfit-batches` found for one model.
#[derive(Clone, Debug)]
pub struct OverfitVerdict {
    pub model: String,
    /// Steps trained on the few batches.
    pub steps: usize,
    /// Training loss of the last epoch.
    pub final_loss: f64,
    pub diverged: bool,
    pub passed: bool,
}

impl Report {
    /// Each model's overfit verdict, when the run was `--overfit-batches`.
    pub fn overfit_verdicts(&self) -> Option<Vec<OverfitVerdict>> {
        self.config.settings.overfit_batches?;
        Some(
            self.models
                .iter()
                .map(|m| {
                    let final_loss = m.trained.history.last().map_or(f64::NAN, |e| e.train_loss);
                    OverfitVerdict {
                        model: m.spec.display_name(),
                        steps: m.trained.step_losses.len(),
                        final_loss,
                        diverged: m.trained.divergence.is_some(),
                        passed: final_loss < self.overfit_threshold()
                            && m.trained.divergence.is_none(),
                    }
                })
                .collect(),
        )
    }

    /// The training loss the overfit check asks for on this run's classes and smoothing.
    pub fn overfit_threshold(&self) -> f64 {
        crate::config::overfit_threshold(self.config.settings.label_smoothing, self.classes.len())
    }

    /// The first model that failed the overfit check, as one line; none when every model
    /// passed or the run was not a check.
    pub fn overfit_failure(&self) -> Option<String> {
        let failed = self.overfit_verdicts()?.into_iter().find(|v| !v.passed)?;
        Some(format!(
            "overfit check failed: {} ended at train loss {:.4} after {} steps (needs < {:.4}){}; lower or raise the learning rate, check the labels (reports/debug_checklist.md)",
            failed.model,
            failed.final_loss,
            failed.steps,
            self.overfit_threshold(),
            if failed.diverged {
                ", and diverged"
            } else {
                ""
            }
        ))
    }

    /// Whether a model's training diverged.
    pub fn diverged(&self) -> bool {
        self.models.iter().any(|m| m.trained.divergence.is_some())
    }

    /// The model chosen as best.
    pub fn best(&self) -> &ModelRun {
        &self.models[self.ranking[0]]
    }

    /// The run of one model, when it was trained.
    pub fn model(&self, kind: ModelKind) -> Option<&ModelRun> {
        self.models.iter().find(|m| m.spec.kind == kind)
    }
}

/// Rounds to 4 decimals, as the evidence files do (the same rounding decides ties when the
/// best model is chosen).
pub use crate::train::select::round4;
