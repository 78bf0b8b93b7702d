//! What the curves suggest: whether a model's training and validation curves show overfitting
//! or underfitting, and which flags to try next (the head, the widths, dropout, augmentation,
//! epochs), leaving out what the run already used. The pack's README lists them under its
//! next steps.

use std::fmt::Write;

use crate::config::Settings;
use crate::data::Augment;
use crate::model::{HeadKind, ModelKind, ModelSpec};
use crate::train::EpochStats;

/// Overfitting: the last validation loss at least this far (relative) above its lowest while
/// the training loss went on falling ...
pub const VAL_LOSS_RISE: f64 = 0.10;
/// ... or training accuracy at least this far above validation accuracy.
pub const ACCURACY_GAP: f64 = 0.10;
/// Underfitting: training accuracy below this at the last epoch ...
pub const LOW_TRAIN_ACCURACY: f64 = 0.85;
/// ... still rising when its last epoch gained at least this much.
pub const STILL_RISING: f64 = 0.01;
/// The dropout suggested first, and the one after it.
pub const DROPOUT_STEPS: [f64; 2] = [0.25, 0.5];
/// The hidden layer suggested for a head without one.
pub const SUGGESTED_HIDDEN: usize = 128;
/// Epochs without improvement suggested for early stopping.
pub const SUGGESTED_PATIENCE: usize = 3;

/// How a model's curves look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Validation got worse while training got better, or lags far behind it.
    Overfitting,
    /// Training accuracy itself is low.
    Underfitting,
    /// Neither.
    Healthy,
    /// Fewer than two epochs: nothing to read.
    TooShort,
}

/// A model's curves, read: the fit, why (figures from the curves), and whether training
/// accuracy was still rising at the end.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub fit: Fit,
    pub why: String,
    pub still_rising: bool,
    /// The epoch (from 1) of the lowest validation loss.
    pub best_val_loss_epoch: usize,
}

/// What a model trained with that the suggestions depend on.
#[derive(Clone, Debug, PartialEq)]
pub struct Setup {
    pub kind: ModelKind,
    pub head: HeadKind,
    pub hidden: usize,
    pub dropout: f64,
    pub widths: Vec<usize>,
    pub augment: Augment,
    pub epochs: usize,
    pub patience: Option<usize>,
    /// An image folder (photos: flips suit them), not the stripe images.
    pub folder: bool,
}

impl Setup {
    /// The setup of model `spec` of a run with `settings`, trained for `epochs`.
    pub fn of(spec: &ModelSpec, settings: &Settings, epochs: usize) -> Setup {
        Setup {
            kind: spec.kind,
            head: spec.head.kind,
            hidden: spec.head.hidden,
            dropout: spec.head.dropout(),
            widths: spec.widths.get().to_vec(),
            augment: settings.augment,
            epochs,
            patience: settings.patience,
            folder: settings.data.is_some(),
        }
    }

    /// The flag of this model's epochs.
    fn epochs_flag(&self) -> &'static str {
        match self.kind {
            ModelKind::Baseline => "--epochs-baseline",
            ModelKind::Cnn => "--epochs-cnn",
        }
    }
}

/// One suggestion: the flags to add, and what they do.
#[derive(Clone, Debug, PartialEq)]
pub struct Suggestion {
    pub flags: String,
    pub why: String,
}

fn suggestion(flags: String, why: &str) -> Suggestion {
    Suggestion {
        flags,
        why: why.to_string(),
    }
}

/// Reads a model's per-epoch history.
pub fn read(history: &[EpochStats]) -> Reading {
    let Some((last, before)) = history.split_last().filter(|(_, b)| !b.is_empty()) else {
        return Reading {
            fit: Fit::TooShort,
            why: format!("{} epoch(s): too few to read the curves", history.len()),
            still_rising: false,
            best_val_loss_epoch: history.len(),
        };
    };
    let lowest = history
        .iter()
        .min_by(|a, b| a.val_loss.total_cmp(&b.val_loss))
        .unwrap_or(last);
    let gained = last.train_acc - before[before.len() - 1].train_acc;
    let still_rising = gained >= STILL_RISING;
    let rise = (last.val_loss - lowest.val_loss) / lowest.val_loss.max(1e-12);
    let gap = last.train_acc - last.val_acc;
    let (fit, why) = if lowest.epoch < last.epoch
        && rise >= VAL_LOSS_RISE
        && last.train_loss < lowest.train_loss
    {
        (
            Fit::Overfitting,
            format!(
                "validation loss rose {:.0}% above its lowest ({:.4} at epoch {}) to {:.4} at epoch {} while training loss fell from {:.4} to {:.4}",
                rise * 100.0,
                lowest.val_loss,
                lowest.epoch,
                last.val_loss,
                last.epoch,
                lowest.train_loss,
                last.train_loss
            ),
        )
    } else if gap >= ACCURACY_GAP {
        (
            Fit::Overfitting,
            format!(
                "training accuracy {:.3} is {:.3} above validation accuracy {:.3} at epoch {}",
                last.train_acc, gap, last.val_acc, last.epoch
            ),
        )
    } else if last.train_acc < LOW_TRAIN_ACCURACY {
        (
            Fit::Underfitting,
            format!(
                "training accuracy {:.3} (validation {:.3}) at epoch {} is below {LOW_TRAIN_ACCURACY}, {}",
                last.train_acc,
                last.val_acc,
                last.epoch,
                if still_rising {
                    format!("still rising ({gained:+.3} in the last epoch)")
                } else {
                    format!("and flat ({gained:+.3} in the last epoch)")
                }
            ),
        )
    } else {
        (
            Fit::Healthy,
            format!(
                "training accuracy {:.3}, validation {:.3} at epoch {}; validation loss {:.4}, its lowest {:.4} (epoch {})",
                last.train_acc,
                last.val_acc,
                last.epoch,
                last.val_loss,
                lowest.val_loss,
                lowest.epoch
            ),
        )
    };
    Reading {
        fit,
        why,
        still_rising,
        best_val_loss_epoch: lowest.epoch,
    }
}

/// The flags worth trying, in order, for what `reading` found on a model of `setup`: none
/// that the run already used.
pub fn suggest(reading: &Reading, setup: &Setup) -> Vec<Suggestion> {
    match reading.fit {
        Fit::Overfitting => against_overfitting(reading, setup),
        Fit::Underfitting => against_underfitting(reading, setup),
        Fit::Healthy if reading.still_rising => vec![more_epochs(setup)],
        Fit::Healthy | Fit::TooShort => Vec::new(),
    }
}

/// Twice the epochs.
fn more_epochs(setup: &Setup) -> Suggestion {
    suggestion(
        format!("{} {}", setup.epochs_flag(), 2 * setup.epochs.max(1)),
        "more epochs: training accuracy was still rising",
    )
}

/// More dropout, more augmentation, fewer epochs or early stopping.
fn against_overfitting(reading: &Reading, setup: &Setup) -> Vec<Suggestion> {
    let mut out = Vec::new();
    let cnn = setup.kind == ModelKind::Cnn;
    if let Some(p) = DROPOUT_STEPS
        .iter()
        .find(|p| setup.dropout < **p)
        .filter(|_| cnn)
    {
        out.push(suggestion(
            format!("--dropout {p}"),
            "dropout before the head's linear layers",
        ));
    }
    // Flips suit photos; a flipped stripe image runs the other way.
    let wanted = Augment {
        flip: setup.augment.flip || setup.folder,
        crop: setup.augment.crop.or(Some(crate::config::DEFAULT_CROP_PAD)),
        shift_noise: setup.augment.shift_noise,
    };
    if wanted != setup.augment {
        let why = match wanted.flip && !setup.augment.flip {
            true => {
                "more varied training images (without flip where a mirrored image is another class, as digits and letters are)"
            }
            false => "more varied training images",
        };
        out.push(suggestion(format!("--augment {wanted}"), why));
    }
    if reading.best_val_loss_epoch < setup.epochs {
        out.push(suggestion(
            format!("{} {}", setup.epochs_flag(), reading.best_val_loss_epoch),
            "fewer epochs: validation loss was lowest there",
        ));
    }
    if setup.patience.is_none() {
        out.push(suggestion(
            format!("--patience {SUGGESTED_PATIENCE}"),
            "early stopping once validation stops improving",
        ));
    }
    out
}

/// More epochs while still rising, a bigger head and wider blocks, less regularization.
fn against_underfitting(reading: &Reading, setup: &Setup) -> Vec<Suggestion> {
    let mut out = Vec::new();
    if reading.still_rising {
        out.push(more_epochs(setup));
    }
    if setup.kind == ModelKind::Cnn {
        match (setup.head, setup.hidden) {
            (HeadKind::Gap, _) => out.push(suggestion(
                format!("--head flatten --hidden {SUGGESTED_HIDDEN}"),
                "a classifier head that sees where features are, with a hidden layer",
            )),
            (HeadKind::Flatten, 0) => out.push(suggestion(
                format!("--hidden {SUGGESTED_HIDDEN}"),
                "a hidden layer in the head",
            )),
            _ => {}
        }
        let wider: Vec<usize> = setup.widths.iter().map(|w| (2 * w).min(128)).collect();
        if wider != setup.widths {
            let list: Vec<String> = wider.iter().map(usize::to_string).collect();
            out.push(suggestion(
                format!("--cnn-widths {}", list.join(",")),
                "wider blocks",
            ));
        }
        if setup.dropout > 0.0 {
            out.push(suggestion("--dropout 0".into(), "no dropout"));
        }
    }
    if !setup.augment.is_none() {
        out.push(suggestion(
            "--no-augment".into(),
            "the training images as they are",
        ));
    }
    out
}

/// The README's "From the curves" part: for each model, what its curves show and the flags to
/// try, one at a time. Empty for the overfit check (its runs are not models to keep).
pub fn markdown(report: &crate::report::Report) -> String {
    let settings = &report.config.settings;
    if settings.overfit_batches.is_some() {
        return String::new();
    }
    let mut out = String::from("\n### From the curves\n\n");
    for run in &report.models {
        let reading = read(&run.trained.history);
        let setup = Setup::of(&run.spec, settings, run.epochs);
        let _ = writeln!(
            out,
            "{}",
            model_line(&run.spec.display_name(), &reading, &setup)
        );
    }
    out
}

/// One model's line: its fit, why, and the flags to try.
pub fn model_line(name: &str, reading: &Reading, setup: &Setup) -> String {
    let fit = match reading.fit {
        Fit::Overfitting => "overfitting",
        Fit::Underfitting => "underfitting",
        Fit::Healthy => "neither over- nor underfitting",
        Fit::TooShort => "too short to tell",
    };
    let suggestions = suggest(reading, setup);
    let tries = if suggestions.is_empty() {
        match reading.fit {
            Fit::Overfitting | Fit::Underfitting => {
                " The usual remedies are in use already; more or cleaner data is the next lever."
                    .to_string()
            }
            _ => String::new(),
        }
    } else {
        let list: Vec<String> = suggestions
            .iter()
            .map(|s| format!("`{}` ({})", s.flags, s.why))
            .collect();
        format!(" Try, one at a time: {}.", list.join("; "))
    };
    format!("- **{name}: {fit}**: {}.{tries}", reading.why)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A history from (train_loss, train_acc, val_loss, val_acc) per epoch.
    fn history(epochs: &[(f64, f64, f64, f64)]) -> Vec<EpochStats> {
        epochs
            .iter()
            .enumerate()
            .map(
                |(i, &(train_loss, train_acc, val_loss, val_acc))| EpochStats {
                    epoch: i + 1,
                    train_loss,
                    train_acc,
                    val_loss,
                    val_acc,
                    batch_size: 32,
                    train_seconds: 1.0,
                    val_seconds: 0.1,
                    train_samples: 100,
                    lr: 0.001,
                },
            )
            .collect()
    }

    /// The workshop's CNN (gap head, no hidden layer, no dropout) on an image folder.
    fn setup() -> Setup {
        Setup {
            kind: ModelKind::Cnn,
            head: HeadKind::Gap,
            hidden: 0,
            dropout: 0.0,
            widths: vec![32, 64],
            augment: Augment::NONE,
            epochs: 5,
            patience: None,
            folder: true,
        }
    }

    fn flags(suggestions: &[Suggestion]) -> Vec<&str> {
        suggestions.iter().map(|s| s.flags.as_str()).collect()
    }

    #[test]
    fn a_rising_validation_loss_under_a_falling_training_loss_is_overfitting() {
        let curves = history(&[
            (1.0, 0.60, 0.90, 0.65),
            (0.6, 0.78, 0.70, 0.75),
            (0.4, 0.85, 0.72, 0.77),
            (0.3, 0.88, 0.80, 0.78),
            (0.2, 0.91, 0.85, 0.79),
        ]);
        let reading = read(&curves);
        assert_eq!(reading.fit, Fit::Overfitting);
        assert!(reading.why.contains("rose 21%"), "{}", reading.why);
        assert_eq!(reading.best_val_loss_epoch, 2);
        assert_eq!(
            flags(&suggest(&reading, &setup())),
            [
                "--dropout 0.25",
                "--augment flip,crop",
                "--epochs-cnn 2",
                "--patience 3"
            ]
        );
        let flip = suggest(&reading, &setup());
        assert!(
            flip[1]
                .why
                .contains("without flip where a mirrored image is another class")
        );
    }

    #[test]
    fn a_wide_accuracy_gap_is_overfitting_and_what_the_run_used_is_not_suggested_again() {
        let curves = history(&[(0.5, 0.90, 0.60, 0.82), (0.3, 0.97, 0.58, 0.84)]);
        let reading = read(&curves);
        assert_eq!(reading.fit, Fit::Overfitting);
        assert!(reading.why.contains("0.130 above"), "{}", reading.why);
        let used = Setup {
            head: HeadKind::Flatten,
            hidden: 128,
            dropout: 0.25,
            augment: "flip,crop".parse().unwrap(),
            epochs: 2,
            patience: Some(2),
            ..setup()
        };
        assert_eq!(flags(&suggest(&reading, &used)), ["--dropout 0.5"]);
        let all = Setup {
            dropout: 0.5,
            ..used
        };
        assert!(suggest(&reading, &all).is_empty());
        assert!(model_line("CNN", &reading, &all).contains("in use already"));
        // On the stripe images the augmentation suggested has no flip, and keeps shifts.
        let stripes = Setup {
            folder: false,
            augment: Augment::SHIFT_NOISE,
            ..setup()
        };
        assert!(flags(&suggest(&reading, &stripes)).contains(&"--augment crop,shift-noise"));
    }

    #[test]
    fn low_training_accuracy_still_rising_asks_for_epochs_a_head_and_width() {
        let curves = history(&[
            (1.5, 0.50, 1.4, 0.52),
            (1.1, 0.62, 1.1, 0.63),
            (0.9, 0.70, 0.95, 0.69),
        ]);
        let reading = read(&curves);
        assert_eq!(reading.fit, Fit::Underfitting);
        assert!(reading.still_rising);
        assert!(
            reading.why.contains("still rising (+0.080"),
            "{}",
            reading.why
        );
        assert_eq!(
            flags(&suggest(&reading, &setup())),
            [
                "--epochs-cnn 10",
                "--head flatten --hidden 128",
                "--cnn-widths 64,128"
            ]
        );
    }

    #[test]
    fn both_low_and_flat_asks_for_capacity_and_less_regularization() {
        let curves = history(&[(1.0, 0.70, 1.0, 0.69), (0.98, 0.705, 0.99, 0.70)]);
        let reading = read(&curves);
        assert_eq!(reading.fit, Fit::Underfitting);
        assert!(!reading.still_rising);
        let regularized = Setup {
            head: HeadKind::Flatten,
            dropout: 0.5,
            widths: vec![128, 128],
            augment: "flip".parse().unwrap(),
            ..setup()
        };
        assert_eq!(
            flags(&suggest(&reading, &regularized)),
            ["--hidden 128", "--dropout 0", "--no-augment"]
        );
        // The baseline has no head or widths to grow.
        let baseline = Setup {
            kind: ModelKind::Baseline,
            ..setup()
        };
        assert!(suggest(&reading, &baseline).is_empty());
    }

    #[test]
    fn healthy_and_short_curves_suggest_nothing_but_epochs_while_rising() {
        let good = history(&[(0.3, 0.93, 0.31, 0.92), (0.2, 0.95, 0.25, 0.94)]);
        let reading = read(&good);
        assert_eq!(reading.fit, Fit::Healthy);
        assert_eq!(flags(&suggest(&reading, &setup())), ["--epochs-cnn 10"]);
        let flat = history(&[(0.2, 0.95, 0.25, 0.94), (0.2, 0.953, 0.25, 0.94)]);
        assert!(suggest(&read(&flat), &setup()).is_empty());
        let one = read(&history(&[(0.3, 0.9, 0.3, 0.9)]));
        assert_eq!(one.fit, Fit::TooShort);
        assert!(suggest(&one, &setup()).is_empty());
        assert_eq!(read(&[]).fit, Fit::TooShort);
        let line = model_line("CNN", &one, &setup());
        assert!(line.starts_with("- **CNN: too short to tell**"), "{line}");
    }
}
