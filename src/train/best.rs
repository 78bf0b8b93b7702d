//! The best epoch so far and early stopping: a pure tracker, tested without a device.

use super::EpochStats;
use super::checkpointer::BestState;
use crate::config::Monitor;

/// Keeps the model of the best epoch by the monitor (the first best wins) and says when
/// training should stop early.
pub struct BestTracker<M> {
    monitor: Monitor,
    patience: Option<usize>,
    epochs: usize,
    score: f64,
    /// Validation accuracy of the best epoch (0 before any).
    pub val_acc: f64,
    /// Validation loss of the best epoch (infinite before any).
    pub val_loss: f64,
    /// The best epoch, 1-based; 0 before any.
    pub epoch: usize,
    /// The best epoch's model (the starting model before any epoch).
    pub model: M,
}

impl<M> BestTracker<M> {
    /// A tracker for a run of `epochs` epochs, holding `start` until an epoch improves.
    pub fn new(monitor: Monitor, patience: Option<usize>, epochs: usize, start: M) -> Self {
        BestTracker {
            monitor,
            patience,
            epochs,
            score: monitor.worst(),
            val_acc: 0.0,
            val_loss: f64::INFINITY,
            epoch: 0,
            model: start,
        }
    }

    /// A tracker that goes on from a stopped run's best epoch (`model` is its model).
    pub fn restored(
        monitor: Monitor,
        patience: Option<usize>,
        epochs: usize,
        saved: &BestState,
        model: M,
    ) -> Self {
        BestTracker {
            score: saved.score,
            val_acc: saved.val_acc,
            val_loss: saved.val_loss,
            epoch: saved.epoch,
            ..BestTracker::new(monitor, patience, epochs, model)
        }
    }

    /// The epochs the run was asked for.
    pub fn epochs(&self) -> usize {
        self.epochs
    }

    /// What the run's state keeps of it (besides the model).
    pub fn state(&self) -> BestState {
        BestState {
            epoch: self.epoch,
            score: self.score,
            val_acc: self.val_acc,
            val_loss: self.val_loss,
        }
    }

    /// Records an epoch and its model; returns why training stops early, when it does.
    pub fn observe(&mut self, stats: &EpochStats, model: M) -> Option<String> {
        let score = match self.monitor {
            Monitor::ValAcc => stats.val_acc,
            Monitor::ValLoss => stats.val_loss,
        };
        if self.monitor.improves(score, self.score) {
            self.score = score;
            self.val_acc = stats.val_acc;
            self.val_loss = stats.val_loss;
            self.epoch = stats.epoch;
            self.model = model;
        }
        let patience = self.patience?;
        (stats.epoch - self.epoch >= patience && stats.epoch < self.epochs).then(|| {
            format!(
                "{} did not improve for {patience} epoch(s) after epoch {}; stopped after epoch {} of {}",
                self.monitor.as_str(),
                self.epoch,
                stats.epoch,
                self.epochs
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(epoch: usize, val_acc: f64, val_loss: f64) -> EpochStats {
        EpochStats {
            epoch,
            train_loss: 0.0,
            train_acc: 0.0,
            val_loss,
            val_acc,
            batch_size: 32,
            train_seconds: 0.0,
            val_seconds: 0.0,
            train_samples: 0,
            lr: 0.0,
        }
    }

    #[test]
    fn the_first_best_accuracy_wins() {
        let mut best = BestTracker::new(Monitor::ValAcc, None, 4, "start");
        assert_eq!(best.observe(&epoch(1, 0.5, 1.0), "e1"), None);
        assert_eq!(best.observe(&epoch(2, 0.9, 0.8), "e2"), None);
        assert_eq!(best.observe(&epoch(3, 0.9, 0.1), "e3"), None);
        assert_eq!(best.observe(&epoch(4, 0.7, 0.9), "e4"), None);
        assert_eq!((best.model, best.epoch, best.val_acc), ("e2", 2, 0.9));
        assert_eq!(best.val_loss, 0.8, "the kept epoch's loss, not the lowest");
    }

    #[test]
    fn val_loss_picks_the_lowest_loss() {
        let mut best = BestTracker::new(Monitor::ValLoss, None, 3, "start");
        best.observe(&epoch(1, 0.9, 0.5), "e1");
        best.observe(&epoch(2, 0.8, 0.2), "e2");
        best.observe(&epoch(3, 1.0, 0.3), "e3");
        assert_eq!((best.model, best.epoch, best.val_acc), ("e2", 2, 0.8));
    }

    #[test]
    fn patience_stops_after_that_many_epochs_without_improvement() {
        let mut best = BestTracker::new(Monitor::ValAcc, Some(2), 10, "start");
        assert_eq!(best.observe(&epoch(1, 0.8, 1.0), "e1"), None);
        assert_eq!(best.observe(&epoch(2, 0.7, 1.0), "e2"), None);
        let stop = best.observe(&epoch(3, 0.8, 1.0), "e3").unwrap();
        assert_eq!(
            stop,
            "val_acc did not improve for 2 epoch(s) after epoch 1; stopped after epoch 3 of 10"
        );
        assert_eq!(best.model, "e1");
    }

    #[test]
    fn no_early_stop_on_the_last_epoch_and_nothing_before_any_epoch() {
        let best = BestTracker::new(Monitor::ValAcc, Some(1), 2, "start");
        assert_eq!((best.model, best.epoch), ("start", 0));
        let mut best = best;
        best.observe(&epoch(1, 0.9, 1.0), "e1");
        assert_eq!(best.observe(&epoch(2, 0.5, 1.0), "e2"), None);
    }
}
