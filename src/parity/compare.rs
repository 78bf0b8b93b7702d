//! The comparison of one model between the reference backend and another, and why it
//! fails, if it does.

use serde::Serialize;

use crate::device::BackendName;
use crate::model::ModelSpec;
use crate::parity::Tolerances;
use crate::parity::side::Side;

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

fn rel_diff(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

/// The figures of `reference` and `other` side by side, and the verdict on them.
pub fn compare(
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
/// final parameters, test logits, predictions; none when it passes.
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
    } else if let Some((path, diff)) = c
        .param_max_abs_diff
        .iter()
        .find(|(_, diff)| !(*diff <= tolerances.param_atol))
    {
        Some(format!(
            "{pair}: final parameters differ by up to {diff:.2e} in `{path}` (> {:.0e})",
            tolerances.param_atol
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelKind;

    /// A side of two epochs of two steps, one parameter tensor, two test samples.
    fn side() -> Side {
        Side {
            step_losses: vec![1.0, 0.8, 0.6, 0.5],
            steps_per_epoch: 2,
            params: vec![("w".into(), vec![2], vec![0.5, -0.25])],
            logits: vec![0.1, 0.9, 0.8, 0.2],
            predictions: vec![("a".into(), 1), ("b".into(), 0)],
            best_val_acc: 1.0,
            best_epoch: 2,
            test_accuracy: 1.0,
            train_seconds: 1.0,
            train_samples: 100,
            engine: "layers",
        }
    }

    fn tolerances() -> Tolerances {
        Tolerances {
            loss_rtol: 1e-4,
            logits_atol: 1e-3,
            param_atol: 1e-3,
            min_agreement: 0.99,
        }
    }

    fn verdict_on(other: &Side) -> ModelComparison {
        let spec = ModelSpec::from(ModelKind::Cnn);
        compare(
            spec,
            BackendName::Cpu,
            BackendName::Wgpu,
            &side(),
            other,
            &tolerances(),
        )
    }

    #[test]
    fn identical_sides_pass() {
        let c = verdict_on(&side());
        assert!(c.passed && c.failure.is_none(), "{c:?}");
        assert_eq!(c.first_divergent_step, None);
        assert_eq!(c.prediction_agreement, 1.0);
    }

    #[test]
    fn each_difference_beyond_its_tolerance_fails_and_says_so() {
        let mut other = side();
        other.step_losses[3] = 0.6;
        let c = verdict_on(&other);
        // A later epoch is reported, not judged.
        assert!(c.passed, "{c:?}");
        assert_eq!(c.first_divergent_step, Some((2, 2)));
        other.step_losses[1] = 0.81;
        let failure = verdict_on(&other).failure.unwrap();
        assert!(failure.contains("part at epoch 1 step 2"), "{failure}");

        let mut other = side();
        other.step_losses.pop();
        let failure = verdict_on(&other).failure.unwrap();
        assert!(
            failure.contains("different numbers of steps (4 vs 3)"),
            "{failure}"
        );

        // The final parameters, with everything else the same.
        let mut other = side();
        other.params[0].2[1] += 0.01;
        let c = verdict_on(&other);
        assert!(!c.passed, "{c:?}");
        let failure = c.failure.unwrap();
        assert!(
            failure.contains("final parameters differ by up to 1.00e-2 in `w`"),
            "{failure}"
        );

        let mut other = side();
        other.logits[2] += 0.01;
        let failure = verdict_on(&other).failure.unwrap();
        assert!(
            failure.contains("test logits differ by up to 1.00e-2"),
            "{failure}"
        );

        let mut other = side();
        other.predictions[1].1 = 1;
        let c = verdict_on(&other);
        assert_eq!(c.disagreeing_samples, ["b"]);
        assert!(c.failure.unwrap().contains("agree on 50.0%"));
    }
}
