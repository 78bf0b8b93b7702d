//! The training loop's logger, as burn-train's: one line per epoch and model, as Keras and
//! Lightning print it (epoch i/N, training and validation loss and accuracy, learning rate,
//! the epoch's seconds and samples/s, the time left for the run, the best epoch marked), and
//! the progress bar's start and end. The console decides where the lines go.

use super::{Context, EpochStats};
use crate::console::{clock, significant};

/// Formats and prints one model's epochs; knows how many epochs the run has after this model
/// so that the time left covers them too.
#[derive(Clone, Debug, Default)]
pub struct EpochLogger {
    /// Epochs of the models the run trains after this one.
    pub later_epochs: usize,
    /// Seconds of the epochs this process trained (a resumed run times its own).
    seconds: f64,
    timed: usize,
}

impl EpochLogger {
    /// A logger for a model followed by `later_epochs` epochs of other models.
    pub fn new(later_epochs: usize) -> EpochLogger {
        EpochLogger {
            later_epochs,
            ..EpochLogger::default()
        }
    }

    /// The progress bar of a model's training: `epochs` epochs of `samples`, from `first`.
    pub fn start(&self, model: &str, epochs: usize, first: usize, samples: usize, ctx: &Context) {
        let left = (epochs + 1).saturating_sub(first.max(1));
        if left > 0 {
            ctx.progress.start(model, (left * samples) as u64);
        }
    }

    /// Prints an epoch's line; `best` says whether it is the best epoch so far.
    pub fn epoch(
        &mut self,
        model: &str,
        epochs: usize,
        stats: &EpochStats,
        best: bool,
        ctx: &Context,
    ) {
        let seconds = stats.train_seconds + stats.val_seconds;
        self.seconds += seconds;
        self.timed += 1;
        let mean = self.seconds / self.timed as f64;
        let left = (epochs.saturating_sub(stats.epoch) + self.later_epochs) as f64 * mean;
        ctx.progress.epoch(&line(model, epochs, stats, left, best));
    }

    /// The end of a model's training: the progress bar goes.
    pub fn finish(&self, ctx: &Context) {
        ctx.progress.finish();
    }
}

/// The epoch's line, e.g. `CNN epoch 3/10: train loss 0.4123 acc 0.8810 | val loss 0.3912
/// acc 0.9048 | lr 0.006 | 2.31 s, 1.09k samples/s | 0:16 left | best`.
pub fn line(model: &str, epochs: usize, s: &EpochStats, left_seconds: f64, best: bool) -> String {
    let rate = s.train_samples as f64 / s.train_seconds.max(1e-9);
    format!(
        "{model} epoch {}/{epochs}: train loss {:.4} acc {:.4} | val loss {:.4} acc {:.4} | lr {} | {} s, {} samples/s | {} left{}",
        s.epoch,
        s.train_loss,
        s.train_acc,
        s.val_loss,
        s.val_acc,
        significant(s.lr),
        significant(s.train_seconds + s.val_seconds),
        significant(rate),
        clock(left_seconds),
        if best { " | best" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_everything_and_marks_the_best() {
        let stats = EpochStats {
            epoch: 3,
            train_loss: 0.41234,
            train_acc: 0.881,
            val_loss: 0.39121,
            val_acc: 0.9048,
            batch_size: 32,
            train_seconds: 2.0,
            val_seconds: 0.31,
            train_samples: 2180,
            lr: 0.006,
        };
        let text = line("CNN", 10, &stats, 16.2, true);
        assert_eq!(
            text,
            "CNN epoch 3/10: train loss 0.4123 acc 0.8810 | val loss 0.3912 acc 0.9048 | lr 0.00600 | 2.31 s, 1.09k samples/s | 0:16 left | best"
        );
    }
}
