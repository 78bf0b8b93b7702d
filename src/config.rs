//! Experiment settings: every hyperparameter of a run, from flags and an optional config file
//! (`--config FILE`, TOML or JSON). Flags given on the command line win over the file; the
//! effective settings are written into the pack (`outputs/config.json`), so
//! `trainer --config PACK/outputs/config.json` repeats a run from that file alone.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::DataConfig;
use crate::device::BackendChoice;
use crate::error::{Result, TrainerError};
use crate::model::ModelKind;
pub use crate::recipe::{Optimizer, Recipe, Schedule};

/// Gradients are clipped to this global L2 norm (the workshop's `max_norm=2.0`).
pub const MAX_GRAD_NORM: f32 = 2.0;

/// `--overfit-batches`: the steps each model trains on its few batches ...
pub const OVERFIT_STEPS: usize = 100;
/// ... and the training loss below which it counts as having overfit them: this much above
/// the lowest loss the run's label smoothing allows (see [`overfit_threshold`]).
pub const OVERFIT_LOSS: f64 = 0.05;

/// The training loss the overfit check asks for: [`OVERFIT_LOSS`] above the floor that label
/// smoothing puts under the training loss (0.05 without smoothing; with
/// `--label-smoothing 0.1` over 3 classes 0.2911 + 0.05), so a model that fits its batch
/// passes whatever the smoothing.
pub fn overfit_threshold(label_smoothing: f64, classes: usize) -> f64 {
    crate::recipe::smoothed_loss_floor(label_smoothing, classes) + OVERFIT_LOSS
}

/// Adam's epsilon (PyTorch's default; the workshop's optimizer).
pub const ADAM_EPSILON: f32 = 1e-8;

/// A pre-split folder without a val folder: the share of train drawn as validation
/// (`--val-fraction`).
pub const DEFAULT_VAL_FRACTION: f64 = crate::data::DEFAULT_VAL_FRACTION;

fn default_val_fraction() -> f64 {
    DEFAULT_VAL_FRACTION
}

/// `--augment crop` without a size pads by this many pixels.
pub const DEFAULT_CROP_PAD: usize = crate::data::augment::DEFAULT_CROP_PAD;

/// Adam's decay of the first moment (PyTorch's and burn's default).
pub const ADAM_BETA_1: f32 = 0.9;

/// Adam's decay of the second moment (PyTorch's and burn's default).
pub const ADAM_BETA_2: f32 = 0.999;
/// `--batch-norm`'s momentum and epsilon (PyTorch's defaults) are the model's:
/// [`crate::model::norm::BATCH_NORM_MOMENTUM`], [`crate::model::norm::BATCH_NORM_EPSILON`].

/// Label-issue evidence: the training and validation images listed in
/// `outputs/label_issues.csv` (highest loss first) ...
pub const LABEL_ISSUES: usize = 50;
/// ... and how many of them `curves/top_losses.png` shows as pictures.
pub const TOP_LOSS_PICTURES: usize = 16;

/// `trainer evaluate --data`: the output folder when `--out` is not given.
pub const EVALUATION_OUT: &str = "evaluation_run";

/// `trainer predict`: images decoded and classified at a time (memory stays bounded on big
/// folders) ...
pub const PREDICT_BATCH: usize = 256;
/// ... and the classes each prediction lists with their probabilities.
pub const PREDICT_TOP: usize = 3;

/// What decides the best epoch and early stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    /// Highest validation accuracy (the workshop's rule; the first best wins).
    #[value(name = "val_acc")]
    ValAcc,
    /// Lowest validation loss.
    #[value(name = "val_loss")]
    ValLoss,
}

impl Monitor {
    /// The name used in files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Monitor::ValAcc => "val_acc",
            Monitor::ValLoss => "val_loss",
        }
    }

    /// Whether `value` improves on `best`.
    pub fn improves(self, value: f64, best: f64) -> bool {
        match self {
            Monitor::ValAcc => value > best,
            Monitor::ValLoss => value < best,
        }
    }

    /// The value before any epoch.
    pub fn worst(self) -> f64 {
        match self {
            Monitor::ValAcc => f64::NEG_INFINITY,
            Monitor::ValLoss => f64::INFINITY,
        }
    }
}

pub use crate::data::Color;

fn default_cnn_widths() -> Vec<usize> {
    crate::model::spec::TINY_CNN_WIDTHS.to_vec()
}

/// What chooses the run's best model among those trained (the one checkpointed and reported).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// The best kept epoch by --monitor on the validation part, ties by the other validation
    /// figure, then the training order; the test part is measured after choosing, for the
    /// report only.
    #[default]
    Val,
    /// Test accuracy, then validation accuracy: the workshop script's rule, to reproduce its
    /// table exactly (it chooses on the test part, so the test accuracy is no longer an
    /// unbiased estimate).
    Test,
}

impl Selection {
    /// The name used in files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Selection::Val => "val",
            Selection::Test => "test",
        }
    }
}

/// Every setting of a run that changes its results. The keys are the flags' names with
/// underscores (`batch_size` for `--batch-size`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub backend: BackendChoice,
    pub seed: u64,
    /// An image folder; none for the workshop's stripe images.
    pub data: Option<PathBuf>,
    pub samples_per_class: usize,
    pub image_size: usize,
    /// Shares of train, val and test.
    pub split: [f64; 3],
    /// Whether `--split` was given on the command line (whatever its value): a pre-split
    /// folder refuses it. Not a setting of the run (never written, never read).
    #[serde(skip)]
    pub split_given: bool,
    /// Whether `--val-fraction` was given on the command line (whatever its value): only a
    /// pre-split folder without a val folder takes it. Never written, never read.
    #[serde(skip)]
    pub val_fraction_given: bool,
    /// The config file's place of `split` and `val_fraction` when the file set them (see
    /// [`crate::data::DataConfig::file_places`]). Never written, never read.
    #[serde(skip)]
    pub file_places: Vec<(String, String)>,
    /// Which models to train, in order.
    pub models: Vec<ModelKind>,
    pub batch_size: usize,
    pub epochs_baseline: usize,
    pub epochs_cnn: usize,
    pub lr_baseline: f64,
    pub lr_cnn: f64,
    /// Label-preserving augmentation of the training part: `true` (shifts of one pixel,
    /// light noise), `false`, or a list (`"flip,crop"`).
    pub augment: crate::data::Augment,
    /// Stop a model after this many epochs without improvement of `monitor`.
    pub patience: Option<usize>,
    pub monitor: Monitor,
    /// What chooses the best model among those trained.
    #[serde(default)]
    pub select_by: Selection,
    /// How an image folder's images are read: auto, gray or rgb (stripes are gray).
    #[serde(default)]
    pub color: Color,
    /// The CNN's widths, one per block (the workshop's Tiny CNN is 8, 16).
    #[serde(default = "default_cnn_widths")]
    pub cnn_widths: Vec<usize>,
    /// The CNN's head: gap (global average pool, the workshop's) or flatten.
    #[serde(default)]
    pub head: crate::model::HeadKind,
    /// Units of the CNN head's hidden Linear + ReLU; 0 for none.
    #[serde(default)]
    pub hidden: usize,
    /// Dropout before each Linear of the CNN's head while training, in [0, 1).
    #[serde(default)]
    pub dropout: f64,
    /// BatchNorm after each convolution of the CNN, before its ReLU.
    #[serde(default)]
    pub batch_norm: bool,
    /// The workshop's "overfit a tiny batch" check: train each model on the first N batches
    /// of the training part for [`OVERFIT_STEPS`] steps and say whether its training loss
    /// fell below [`OVERFIT_LOSS`].
    #[serde(default)]
    pub overfit_batches: Option<usize>,
    /// The optimizer: adam (the workshop's), adamw or sgd.
    #[serde(default)]
    pub optimizer: Optimizer,
    /// AdamW's decoupled weight decay, or SGD's L2 term; 0 for none.
    #[serde(default)]
    pub weight_decay: f64,
    /// SGD's momentum, in [0, 1).
    #[serde(default)]
    pub momentum: f64,
    /// SGD's Nesterov momentum.
    #[serde(default)]
    pub nesterov: bool,
    /// How the learning rate moves over the run, per step.
    #[serde(default)]
    pub schedule: Schedule,
    /// Epochs of linear warm-up (one-cycle: of its rising phase).
    #[serde(default)]
    pub warmup_epochs: f64,
    /// Label smoothing of the training loss, as PyTorch's CrossEntropyLoss defines it.
    #[serde(default)]
    pub label_smoothing: f64,
    /// A pre-split folder (train/ and test/) without a val folder: the share of train drawn
    /// as validation, stratified and seeded.
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// An image folder: at most this many images of each class from each folder (a quick
    /// run on a big folder), drawn with the seed.
    #[serde(default)]
    pub max_per_class: Option<usize>,
    /// Refuse an image folder whose byte-identical copies carry different labels (by
    /// default they are left out and listed in outputs/data_issues.csv).
    #[serde(default)]
    pub strict_data: bool,
    /// Train on the readable images of a folder and list the others in
    /// outputs/data_issues.csv (by default an unreadable image stops the run).
    #[serde(default)]
    pub skip_bad_images: bool,
}

/// The workshop's settings: what `trainer` runs with no flags (the flags' defaults) and what a
/// sweep's TOML leaves out. The one place these defaults are written.
impl Default for Settings {
    fn default() -> Settings {
        let recipe = Recipe::default();
        Settings {
            backend: BackendChoice::Auto,
            seed: 42,
            data: None,
            samples_per_class: 140,
            image_size: 16,
            split: [0.6, 0.2, 0.2],
            split_given: false,
            val_fraction_given: false,
            file_places: Vec::new(),
            models: vec![ModelKind::Baseline, ModelKind::Cnn],
            batch_size: 32,
            epochs_baseline: 4,
            epochs_cnn: 10,
            lr_baseline: 0.01,
            lr_cnn: 0.006,
            augment: crate::data::Augment::NONE,
            patience: None,
            monitor: Monitor::ValAcc,
            select_by: Selection::Val,
            color: Color::Auto,
            cnn_widths: default_cnn_widths(),
            head: crate::model::HeadKind::Gap,
            hidden: 0,
            dropout: 0.0,
            batch_norm: false,
            overfit_batches: None,
            // The recipe's defaults are written once, in recipe.rs.
            optimizer: recipe.optimizer,
            weight_decay: recipe.weight_decay,
            momentum: recipe.momentum,
            nesterov: recipe.nesterov,
            schedule: recipe.schedule,
            warmup_epochs: recipe.warmup_epochs,
            label_smoothing: recipe.label_smoothing,
            val_fraction: DEFAULT_VAL_FRACTION,
            max_per_class: None,
            strict_data: false,
            skip_bad_images: false,
        }
    }
}

impl Settings {
    /// The data set these settings describe.
    pub fn data_config(&self) -> DataConfig {
        DataConfig {
            seed: self.seed,
            samples_per_class: self.samples_per_class,
            image_size: self.image_size,
            split: self.split,
            split_given: self.split_given,
            val_fraction_given: self.val_fraction_given,
            file_places: self.file_places.clone(),
            folder: self.data.clone(),
            // The stripes are gray whatever --color says (rgb is refused for them).
            color: if self.data.is_some() {
                self.color
            } else {
                Color::Gray
            },
            split_rule: crate::data::SplitRule::Stratified,
            val_fraction: self.val_fraction,
            max_per_class: self.max_per_class,
            strict_data: self.strict_data,
            skip_bad_images: self.skip_bad_images,
        }
    }

    /// The shape of model `kind` on images of `channels` channels; widths that are not a
    /// shape of the family are refused (exit 2), never replaced by the Tiny CNN's.
    pub fn spec(&self, kind: ModelKind, channels: usize) -> Result<crate::model::ModelSpec> {
        Ok(crate::model::ModelSpec {
            kind,
            channels,
            widths: crate::model::CnnWidths::new(&self.cnn_widths)
                .map_err(TrainerError::bad_input)?,
            head: self.model_head().map_err(TrainerError::bad_input)?,
            batch_norm: self.batch_norm,
        })
    }

    /// The CNN's head these settings give, or one line saying what is wrong.
    pub fn model_head(&self) -> std::result::Result<crate::model::Head, String> {
        crate::model::Head::new(self.head, self.hidden, self.dropout)
    }

    /// Epochs and learning rate of one model.
    pub fn schedule(&self, kind: ModelKind) -> (usize, f64) {
        let (epochs, lr) = match kind {
            ModelKind::Baseline => (self.epochs_baseline, self.lr_baseline),
            ModelKind::Cnn => (self.epochs_cnn, self.lr_cnn),
        };
        match self.overfit_batches {
            // An epoch is the N batches: the step budget decides the epochs.
            Some(batches) => (OVERFIT_STEPS.div_ceil(batches.max(1)), lr),
            None => (epochs, lr),
        }
    }

    /// The training samples `--overfit-batches` keeps (the first N batches of a training
    /// part of `train_len`), or none without the flag.
    pub fn overfit_samples(&self, train_len: usize) -> Option<usize> {
        self.overfit_batches
            .map(|batches| (batches * self.batch_size).min(train_len))
    }

    /// The optimizer, schedule and smoothing of these settings.
    pub fn recipe(&self) -> Recipe {
        Recipe {
            optimizer: self.optimizer,
            weight_decay: self.weight_decay,
            momentum: self.momentum,
            nesterov: self.nesterov,
            schedule: self.schedule,
            warmup_epochs: self.warmup_epochs,
            label_smoothing: self.label_smoothing,
        }
    }

    /// The recipe's values: one line naming the first that is out of range.
    fn validate_recipe(&self) -> Result<()> {
        let bad = |m: String| Err(TrainerError::bad_input(m));
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "--weight-decay must be a finite number of at least 0, got {}",
                self.weight_decay
            ));
        }
        if self.weight_decay > 0.0 && self.optimizer == Optimizer::Adam {
            return bad(
                "--weight-decay needs --optimizer adamw (decoupled decay) or sgd (an L2 term); Adam keeps the workshop's recipe".into(),
            );
        }
        // In [0, 1) as the kernels see it too (f32: 0.99999999 is 1.0 there).
        if !(0.0..1.0).contains(&self.momentum) || self.momentum as f32 >= 1.0 {
            return bad(format!(
                "--momentum must be in [0, 1), got {}",
                self.momentum
            ));
        }
        if self.momentum > 0.0 && self.optimizer != Optimizer::Sgd {
            return bad(format!(
                "--momentum is SGD's: add --optimizer sgd (--optimizer {} has its own moments)",
                self.optimizer.as_str()
            ));
        }
        if self.nesterov && (self.optimizer != Optimizer::Sgd || self.momentum == 0.0) {
            return bad("--nesterov needs --optimizer sgd and a --momentum above 0".into());
        }
        if !(0.0..1.0).contains(&self.label_smoothing) || self.label_smoothing as f32 >= 1.0 {
            return bad(format!(
                "--label-smoothing must be in [0, 1), got {}",
                self.label_smoothing
            ));
        }
        if !(self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0) {
            return bad(format!(
                "--warmup-epochs must be a finite number of at least 0, got {}",
                self.warmup_epochs
            ));
        }
        for kind in [ModelKind::Baseline, ModelKind::Cnn] {
            let epochs = self.schedule(kind).0 as f64;
            if self.models.contains(&kind)
                && self.warmup_epochs >= epochs
                && self.warmup_epochs > 0.0
            {
                return bad(format!(
                    "--warmup-epochs {} is not shorter than the {} run of {} epoch(s)",
                    self.warmup_epochs,
                    kind.slug(),
                    epochs
                ));
            }
        }
        Ok(())
    }

    /// Checks every value before any work starts.
    pub fn validate(&self) -> Result<()> {
        self.data_config().validate()?;
        self.validate_recipe()?;
        if self.batch_size == 0 {
            return Err(TrainerError::bad_input("--batch-size must be at least 1"));
        }
        // Only the models this run trains: `--models cnn --epochs-baseline 0` is fine.
        let trains = |kind: ModelKind| self.models.contains(&kind);
        for (flag, lr) in [
            ("--lr-baseline", self.lr_baseline),
            ("--lr-cnn", self.lr_cnn),
        ]
        .into_iter()
        .zip([ModelKind::Baseline, ModelKind::Cnn])
        .filter(|(_, kind)| trains(*kind))
        .map(|(check, _)| check)
        {
            if !(lr.is_finite() && lr > 0.0) {
                return Err(TrainerError::bad_input(format!(
                    "{flag} must be a positive finite number, got {lr}"
                )));
            }
        }
        for (flag, epochs) in [
            ("--epochs-baseline", self.epochs_baseline),
            ("--epochs-cnn", self.epochs_cnn),
        ]
        .into_iter()
        .zip([ModelKind::Baseline, ModelKind::Cnn])
        .filter(|(_, kind)| trains(*kind))
        .map(|(check, _)| check)
        {
            if !(1..=10_000).contains(&epochs) {
                return Err(TrainerError::bad_input(format!(
                    "{flag} must be between 1 and 10000, got {epochs}"
                )));
            }
        }
        if self.models.is_empty() {
            return Err(TrainerError::bad_input(
                "--models must name at least one model",
            ));
        }
        if let Some((i, twice)) = self
            .models
            .iter()
            .enumerate()
            .find(|(i, m)| self.models[..*i].contains(m))
        {
            return Err(TrainerError::bad_input(format!(
                "--models names {} twice (at positions {} and {}); name each model once",
                twice.slug(),
                self.models.iter().position(|m| m == twice).unwrap_or(0) + 1,
                i + 1
            )));
        }
        if self.patience == Some(0) {
            return Err(TrainerError::bad_input("--patience must be at least 1"));
        }
        if self.overfit_batches == Some(0) {
            return Err(TrainerError::bad_input(
                "--overfit-batches must be at least 1",
            ));
        }
        let widths =
            crate::model::CnnWidths::new(&self.cnn_widths).map_err(TrainerError::bad_input)?;
        let head = self.model_head().map_err(TrainerError::bad_input)?;
        if self.models.contains(&ModelKind::Cnn) {
            widths
                .check_image_size(self.image_size)
                .map_err(TrainerError::bad_input)?;
            head.check(&widths, self.image_size)
                .map_err(TrainerError::bad_input)?;
            if self.batch_norm
                && self.batch_size == 1
                && crate::model::Head::last_side(&widths, self.image_size) == 1
            {
                return Err(TrainerError::bad_input(format!(
                    "--batch-norm with --batch-size 1: the last block's 1x1 map at --image-size {} leaves one value per channel, whose batch statistics normalize it to 0; use a batch of at least 2",
                    self.image_size
                )));
            }
        }
        self.augment
            .check(self.image_size)
            .map_err(TrainerError::bad_input)?;
        self.validate_folder_flags()?;
        if self.data.is_none() && self.color == Color::Rgb {
            return Err(TrainerError::bad_input(
                "--color rgb needs an image folder (--data): the stripe images are grayscale",
            ));
        }
        Ok(())
    }

    /// The image folder's flags: `--samples-per-class` is the stripes' (a folder takes
    /// `--max-per-class`), and the folder's own flags need a folder.
    fn validate_folder_flags(&self) -> Result<()> {
        let defaults = Settings::default();
        if self.data.is_some() && self.samples_per_class != defaults.samples_per_class {
            return Err(TrainerError::bad_input(format!(
                "--samples-per-class {} applies to the stripe images only; with --data use --max-per-class {} to take at most that many images of each class",
                self.samples_per_class, self.samples_per_class
            )));
        }
        if self.max_per_class == Some(0) {
            return Err(TrainerError::bad_input(
                "--max-per-class must be at least 1",
            ));
        }
        if !(self.val_fraction.is_finite() && self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            return Err(TrainerError::bad_input(format!(
                "--val-fraction must be between 0 and 1 (exclusive), got {}",
                self.val_fraction
            )));
        }
        if self.data.is_none() {
            for (given, flag) in [
                (self.max_per_class.is_some(), "--max-per-class"),
                (self.strict_data, "--strict-data"),
                (self.skip_bad_images, "--skip-bad-images"),
                (
                    self.val_fraction_given || self.val_fraction != defaults.val_fraction,
                    "--val-fraction",
                ),
            ] {
                if given {
                    return Err(TrainerError::bad_input(format!(
                        "{flag} applies to an image folder (--data); the stripe images have none"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Settings that are right only for some data, one line each for a note: `--augment
    /// flip` on an image folder (a mirrored digit or letter is no longer its class; the
    /// stripe images get [`Self::without_effect`]'s warning instead).
    pub fn cautions(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.data.is_some() && self.augment.flip {
            notes.push(
                "--augment flip trains on mirrored images: right where a mirrored image is still its class (most photos), wrong where it is not (digits, letters, left/right classes)"
                    .to_string(),
            );
        }
        notes
    }

    /// Settings given that change nothing in this run: `cnn_widths` when no CNN is trained,
    /// `color` on the stripe images. One line each, for a warning.
    pub fn without_effect(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.models.contains(&ModelKind::Cnn) && self.cnn_widths != default_cnn_widths() {
            notes.push("--cnn-widths has no effect: --models does not train the CNN".to_string());
        }
        if !self.models.contains(&ModelKind::Cnn) && self.batch_norm {
            notes.push("--batch-norm has no effect: --models does not train the CNN".to_string());
        }
        if !self.models.contains(&ModelKind::Cnn)
            && !self.model_head().unwrap_or_default().is_gap_only()
        {
            notes.push(
                "--head, --hidden and --dropout have no effect: --models does not train the CNN"
                    .to_string(),
            );
        }
        if self.data.is_none() && self.augment.flip {
            notes.push(
                "--augment flip on the stripe images: a flipped diagonal stripe runs the other way, which no stripe class does (flips suit photos)"
                    .to_string(),
            );
        }
        if self.data.is_none() && self.color == Color::Gray {
            notes.push("--color gray has no effect: the stripe images are gray".to_string());
        }
        if self.overfit_batches.is_some() {
            if self.patience.is_some() {
                notes.push(
                    "--patience has no effect with --overfit-batches: the check trains its whole step budget"
                        .to_string(),
                );
            }
            if !self.augment.is_none() {
                notes.push(
                    "--augment with --overfit-batches: the batch changes every step, so the check is harder than the workshop's (fixed images)"
                        .to_string(),
                );
            }
        }

        notes
    }

    /// The settings as the pack records them (outputs/config.json).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| TrainerError::Serialize(e.to_string()))
    }
}

/// A config file as read: its settings as a JSON object, and its text, for messages that
/// name the line of a key.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub values: serde_json::Map<String, serde_json::Value>,
    text: String,
    json: bool,
}

/// The list a key that takes one was probably meant to be: `"8,16"` -> `key = [8, 16]`,
/// `"cnn"` -> `key = ["cnn"]`; an example for anything else.
fn list_hint(key: &str, value: &serde_json::Value) -> String {
    let serde_json::Value::String(text) = value else {
        return format!(" (a list, such as {key} = [...])");
    };
    let items: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match item.parse::<f64>() {
            Ok(_) => item.to_string(),
            Err(_) => format!("\"{item}\""),
        })
        .collect();
    format!(" (a list: {key} = [{}])", items.join(", "))
}

impl ConfigFile {
    /// Reads a config file: JSON when its extension is `json` (any case), TOML otherwise.
    /// A syntax error names the line, the column and what was expected.
    pub fn read(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            TrainerError::bad_input(format!("cannot read --config '{}': {e}", path.display()))
        })?;
        let json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let bad = |what: String| {
            TrainerError::bad_input(format!(
                "--config '{}' is not valid: {what}",
                path.display()
            ))
        };
        let value: serde_json::Value = if json {
            serde_json::from_str(&text).map_err(|e| {
                bad(format!(
                    "line {}, column {}: {}",
                    e.line(),
                    e.column(),
                    json_reason(&e)
                ))
            })?
        } else {
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| bad(toml_reason(&e, &text)))?;
            // JSON has no nan or inf: say so, rather than a later "null" the file never had.
            if let Some(key) = table.iter().find_map(|(k, v)| not_finite(k, v)) {
                return Err(bad(format!(
                    "'{key}' is nan or inf: every number must be finite"
                )));
            }
            serde_json::to_value(table).map_err(|e| bad(e.to_string()))?
        };
        match value {
            serde_json::Value::Object(values) => Ok(ConfigFile {
                path: path.to_path_buf(),
                values,
                text,
                json,
            }),
            _ => Err(bad("expected a table of settings".into())),
        }
    }

    /// The 1-based line where `key` is set, when it can be found.
    pub fn line_of(&self, key: &str) -> Option<usize> {
        self.text
            .lines()
            .position(|line| {
                let line = line.trim_start();
                if self.json {
                    line.contains(&format!("\"{key}\""))
                } else {
                    line.strip_prefix(key)
                        .is_some_and(|rest| rest.trim_start().starts_with('='))
                }
            })
            .map(|i| i + 1)
    }

    /// "--config 'FILE' line N" for `key` (without the line when it cannot be found).
    pub fn place(&self, key: &str) -> String {
        match self.line_of(key) {
            Some(line) => format!("--config '{}' line {line}", self.path.display()),
            None => format!("--config '{}'", self.path.display()),
        }
    }

    /// Checks every key of the file on its own against the settings: known, and of a value
    /// that key takes. A bad value is an error even when a flag overrides the key.
    pub fn check_keys(&self, defaults: &Settings) -> Result<()> {
        let serde_json::Value::Object(base) =
            serde_json::to_value(defaults).map_err(|e| TrainerError::Serialize(e.to_string()))?
        else {
            return Err(TrainerError::Serialize("settings are not a table".into()));
        };
        for (key, value) in &self.values {
            if !base.contains_key(key) {
                let known: Vec<&str> = base.keys().map(String::as_str).collect();
                return Err(TrainerError::bad_input(format!(
                    "{}: unknown setting '{key}' (known: {})",
                    self.place(key),
                    known.join(", ")
                )));
            }
            let mut one = base.clone();
            one.insert(key.clone(), value.clone());
            if let Err(e) = serde_json::from_value::<Settings>(serde_json::Value::Object(one)) {
                let message = crate::error::first_line(&e.to_string());
                let hint = if message.contains("expected a sequence") {
                    list_hint(key, value)
                } else {
                    String::new()
                };
                return Err(TrainerError::bad_input(format!(
                    "{}: '{key}' = {value}: {message}{hint}",
                    self.place(key),
                )));
            }
        }
        Ok(())
    }
}

impl ConfigFile {
    /// Checks the file's settings as a run would (ranges, duplicates), on their own: a bad
    /// value is named with its file and line even when a flag overrides it.
    pub fn check_values(&self) -> Result<()> {
        self.settings_over(&Settings::default(), &|_| false)
            .map(|_| ())
    }

    /// The settings `base` with this file's keys over it (except those `explicit` says the
    /// command line gave), checked together: a file's `weight_decay` with `--optimizer adamw`
    /// on the command line is fine. A problem names the file's line when a key of the file
    /// caused it.
    fn settings_over(&self, base: &Settings, explicit: &dyn Fn(&str) -> bool) -> Result<Settings> {
        let serde_json::Value::Object(mut merged) =
            serde_json::to_value(base).map_err(|e| TrainerError::Serialize(e.to_string()))?
        else {
            return Err(TrainerError::Serialize("settings are not a table".into()));
        };
        for (key, value) in &self.values {
            if !explicit(key) {
                merged.insert(key.clone(), value.clone());
            }
        }
        if !explicit("weight_decay") && !self.values.contains_key("weight_decay") {
            fill_weight_decay(&mut merged);
        }
        let settings: Settings = serde_json::from_value(serde_json::Value::Object(merged))
            .map_err(|e| {
                TrainerError::bad_input(format!(
                    "--config '{}': {}",
                    self.path.display(),
                    crate::error::first_line(&e.to_string())
                ))
            })?;
        settings.validate().map_err(|e| {
            // The check names the flag (`--epochs-cnn`); the file sets its key.
            let message = e.to_string();
            let key = self
                .values
                .keys()
                .filter(|k| !explicit(k))
                .find(|k| message.contains(&format!("--{}", k.replace('_', "-"))))
                .cloned();
            match key {
                Some(key) => TrainerError::bad_input(format!(
                    "{}: '{key}' = {}: {message}",
                    self.place(&key),
                    self.values[&key]
                )),
                None => TrainerError::bad_input(format!(
                    "--config '{}': {message}",
                    self.path.display()
                )),
            }
        })?;
        Ok(settings)
    }
}

/// Sets `weight_decay` of settings (as JSON) whose decay nobody gave to their optimizer's
/// default (`optimizer = "adamw"` alone decays by PyTorch's 0.01, as `--optimizer adamw`
/// does). A sweep calls it for tasks of a file without `weight_decay`.
pub fn fill_weight_decay(values: &mut serde_json::Map<String, serde_json::Value>) {
    let optimizer = values
        .get("optimizer")
        .and_then(|v| serde_json::from_value::<Optimizer>(v.clone()).ok())
        .unwrap_or_default();
    values.insert(
        "weight_decay".into(),
        serde_json::json!(optimizer.default_weight_decay()),
    );
}

/// The key (`key` or `key[i]`) of a float that is nan or inf, anywhere in `value`.
fn not_finite(key: &str, value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::Float(f) if !f.is_finite() => Some(key.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| not_finite(&format!("{key}[{i}]"), v)),
        _ => None,
    }
}

/// A TOML syntax error in one line: where, what was expected, and the line itself.
fn toml_reason(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim().replace('\n', "; ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            let source = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line}, column {column}: {message} (`{source}`)")
        }
        None => message,
    }
}

/// A JSON syntax error without serde_json's trailing position (the caller names it).
fn json_reason(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The effective settings: those of the file, overridden by every flag given on the command
/// line (`explicit(key)`); flags not given keep the file's value, else their default. Every
/// key of the file is checked first, flags or not.
pub fn merge(
    flags: &Settings,
    file: Option<&ConfigFile>,
    explicit: impl Fn(&str) -> bool,
) -> Result<Settings> {
    let mut merged = match file {
        None => flags.clone(),
        Some(file) => {
            file.check_keys(&Settings::default())?;
            // Every value of the file is checked, even one a flag overrides, against the
            // flags' values of the keys it leaves out (a file's weight_decay with --optimizer
            // adamw is fine); then the flags given win.
            file.settings_over(flags, &|_| false)?;
            file.settings_over(flags, &explicit)?
        }
    };
    // A pre-split folder refuses a --split given on the command line whatever its value; a
    // file's split only when it is not the default (a pack's outputs/config.json records
    // the default for a pre-split folder, and repeats the run). --val-fraction alike,
    // wherever nothing is drawn from train/.
    merged.split_given = explicit("split");
    merged.val_fraction_given = explicit("val_fraction");
    merged.file_places = match file {
        Some(file) => ["split", "val_fraction"]
            .into_iter()
            .filter(|key| file.values.contains_key(*key) && !explicit(key))
            .map(|key| (key.to_string(), file.place(key)))
            .collect(),
        None => Vec::new(),
    };
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Widths that are no shape of the family (a width of 0, five blocks, 1000 channels) are
    /// an error, not the Tiny CNN in their place: a caller that did not validate first would
    /// have trained and recorded another model than the one asked for.
    #[test]
    fn bad_widths_are_refused_not_replaced_by_the_tiny_cnns() {
        for widths in [vec![0], vec![8, 16, 32, 64, 128], vec![1000], vec![]] {
            let settings = Settings {
                cnn_widths: widths.clone(),
                ..Settings::default()
            };
            let spec = settings.spec(ModelKind::Cnn, 1);
            assert!(spec.is_err(), "{widths:?} gave {spec:?}");
        }
        let spec = Settings::default().spec(ModelKind::Cnn, 3).unwrap();
        assert_eq!(spec.widths, crate::model::CnnWidths::tiny());
        assert_eq!(spec.channels, 3);
    }

    /// A file's `optimizer = "adamw"` without `weight_decay` decays by PyTorch's 0.01, as
    /// `--optimizer adamw` does; a decay the file gives is kept.
    #[test]
    fn a_files_adamw_without_a_decay_gets_pytorchs_default() {
        let file = |text: &str| {
            let path = std::env::temp_dir().join(format!(
                "trainer-config-test-{}-{}.toml",
                std::process::id(),
                text.len()
            ));
            std::fs::write(&path, text).unwrap();
            let file = ConfigFile::read(&path).unwrap();
            let _ = std::fs::remove_file(&path);
            file
        };
        let merged = |text: &str| merge(&Settings::default(), Some(&file(text)), |_| false);
        assert_eq!(
            merged("optimizer = \"adamw\"\n").unwrap().weight_decay,
            0.01
        );
        let given = merged("optimizer = \"adamw\"\nweight_decay = 0.0\n").unwrap();
        assert_eq!(given.weight_decay, 0.0);
        assert_eq!(merged("optimizer = \"sgd\"\n").unwrap().weight_decay, 0.0);
    }

    /// The defaults are the workshop's (README, "Commands"): seed 42, 140 images a class of
    /// 16x16, a 0.6/0.2/0.2 split, batch 32, the baseline 4 epochs at 0.01, the Tiny CNN 10 at
    /// 0.006, Adam, gradients clipped to a global norm of 2.0.
    #[test]
    fn the_defaults_are_the_workshops() {
        let d = Settings::default();
        assert_eq!((d.seed, d.samples_per_class, d.image_size), (42, 140, 16));
        assert_eq!(d.split, [0.6, 0.2, 0.2]);
        assert_eq!(d.batch_size, 32);
        assert_eq!((d.epochs_baseline, d.lr_baseline), (4, 0.01));
        assert_eq!((d.epochs_cnn, d.lr_cnn), (10, 0.006));
        assert_eq!(d.optimizer, crate::recipe::Optimizer::Adam);
        assert_eq!(d.cnn_widths, [8, 16]);
        assert_eq!(MAX_GRAD_NORM, 2.0);
    }
}
