//! Choosing a run's best model among those it trained: on validation by default, so that the
//! test part, measured after the choice, stays an unbiased estimate of the chosen model.

use crate::config::{Monitor, Selection};

/// What the choice reads of one trained model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// Validation accuracy and loss of the model's kept epoch.
    pub val_acc: f64,
    pub val_loss: f64,
    /// Test accuracy, which only [`Selection::Test`] reads (none before testing).
    pub test_acc: Option<f64>,
    /// Whether an epoch finished (a model that diverged in its first epoch kept none: its
    /// validation figures were never measured, so it ranks after every model that has them).
    pub kept_epoch: bool,
}

/// Rounds to 4 decimals, as the evidence files show the figures: models equal there tie.
pub fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The models' indices, best first, by `rule`: [`Selection::Val`] ranks by the `monitor`
/// figure of each kept epoch, ties by the other validation figure; [`Selection::Test`] by
/// test accuracy, then validation accuracy (the workshop script's sort). Remaining ties keep
/// the training order. A model without a finished epoch ranks after those with one.
pub fn rank(candidates: &[Candidate], rule: Selection, monitor: Monitor) -> Vec<usize> {
    // A key to sort ascending: a kept epoch first, higher accuracies, lower losses.
    let key = |c: &Candidate| -> (u8, f64, f64) {
        let (acc, loss) = (-round4(c.val_acc), round4(c.val_loss));
        let none = u8::from(!c.kept_epoch);
        match (rule, monitor) {
            (Selection::Val, Monitor::ValAcc) => (none, acc, loss),
            (Selection::Val, Monitor::ValLoss) => (none, loss, acc),
            (Selection::Test, _) => (none, -round4(c.test_acc.unwrap_or(0.0)), acc),
        }
    };
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        key(&candidates[a])
            .partial_cmp(&key(&candidates[b]))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    order
}

/// Why the first model of `ranking` was chosen, in words, for the pack's README.
pub fn reason(rule: Selection, monitor: Monitor) -> &'static str {
    match (rule, monitor) {
        (Selection::Val, Monitor::ValAcc) => {
            "the highest validation accuracy of each model's kept epoch (ties: the lower validation loss); the test part was measured after choosing, so its accuracy is an unbiased estimate"
        }
        (Selection::Val, Monitor::ValLoss) => {
            "the lowest validation loss of each model's kept epoch (ties: the higher validation accuracy); the test part was measured after choosing, so its accuracy is an unbiased estimate"
        }
        (Selection::Test, _) => {
            "the highest test accuracy, then validation accuracy (--select-by test, the workshop script's rule): the choice looked at the test part, so its accuracy overstates how the model does on new data"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(val_acc: f64, val_loss: f64, test_acc: f64) -> Candidate {
        Candidate {
            val_acc,
            val_loss,
            test_acc: Some(test_acc),
            kept_epoch: true,
        }
    }

    #[test]
    fn a_model_without_a_finished_epoch_ranks_last() {
        let mut diverged = c(0.0, f64::INFINITY, 0.9);
        diverged.kept_epoch = false;
        let models = [diverged, c(0.1, 5.0, 0.1)];
        for rule in [Selection::Val, Selection::Test] {
            assert_eq!(rank(&models, rule, Monitor::ValLoss), [1, 0]);
        }
    }

    #[test]
    fn validation_chooses_even_when_test_disagrees() {
        // The case: validation 0.667 against 0.500, test the other way round.
        let models = [c(0.5, 1.0, 0.9), c(0.667, 1.1, 0.6)];
        assert_eq!(rank(&models, Selection::Val, Monitor::ValAcc), [1, 0]);
        assert_eq!(rank(&models, Selection::Test, Monitor::ValAcc), [0, 1]);
    }

    #[test]
    fn ties_go_to_the_other_validation_figure_then_the_training_order() {
        let models = [c(0.9, 0.30, 0.0), c(0.9, 0.20, 0.0), c(0.9, 0.20, 1.0)];
        assert_eq!(rank(&models, Selection::Val, Monitor::ValAcc), [1, 2, 0]);
        let models = [c(0.8, 0.2, 0.0), c(0.9, 0.2, 0.0)];
        assert_eq!(rank(&models, Selection::Val, Monitor::ValLoss), [1, 0]);
    }

    #[test]
    fn validation_never_reads_the_test_accuracy() {
        let mut models = [c(0.7, 0.5, 0.1), c(0.6, 0.4, 0.9)];
        let before = rank(&models, Selection::Val, Monitor::ValAcc);
        models.iter_mut().for_each(|m| m.test_acc = None);
        assert_eq!(rank(&models, Selection::Val, Monitor::ValAcc), before);
        assert_eq!(rank(&models, Selection::Val, Monitor::ValLoss), [1, 0]);
    }
}
