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
    /// What differs between the two backends' runs (its figures sit at the top level of
    /// the report's JSON).
    #[serde(flatten)]
    pub diff: Differences,
    /// Each backend against itself from a start one unit in the last place away, the larger
    /// of the two: how far this training carries a rounding, the allowance the verdict grants.
    pub sensitivity: Sensitivity,
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

/// How far each backend's own training moves from a start nudged by one unit in the last
/// place of every parameter (a rounding's size), the larger of the two backends' for each
/// figure: the same figures as the comparison's.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sensitivity {
    pub first_epoch_loss_max_rel_diff: f64,
    pub param_max_abs_diff: Vec<(String, f64)>,
    pub logits_max_abs_diff: f64,
    pub prediction_agreement: f64,
}

/// What differs between two sides of one model.
#[derive(Clone, Debug, Serialize)]
pub struct Differences {
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
}

fn rel_diff(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-12)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max)
}

/// The differences of `other` from `reference`; the first step whose losses part by more
/// than `loss_rtol`.
fn differences(reference: &Side, other: &Side, loss_rtol: f64) -> Differences {
    let pairs = || {
        reference
            .step_losses
            .iter()
            .zip(&other.step_losses)
            .map(|(a, b)| (*a as f64, *b as f64))
    };
    let per_epoch = reference.steps_per_epoch.max(1);
    let disagreeing_samples: Vec<String> = reference
        .predictions
        .iter()
        .zip(&other.predictions)
        .filter(|(a, b)| a.1 != b.1)
        .map(|(a, _)| a.0.clone())
        .collect();
    let total = reference.predictions.len().max(1);
    Differences {
        steps: reference.step_losses.len().min(other.step_losses.len()),
        loss_max_abs_diff: pairs().map(|(a, b)| (a - b).abs()).fold(0.0, f64::max),
        loss_max_rel_diff: pairs().map(|(a, b)| rel_diff(a, b)).fold(0.0, f64::max),
        first_epoch_loss_max_rel_diff: pairs()
            .take(per_epoch)
            .map(|(a, b)| rel_diff(a, b))
            .fold(0.0, f64::max),
        first_divergent_step: pairs()
            .position(|(a, b)| !(rel_diff(a, b) <= loss_rtol))
            .map(|i| (i / per_epoch + 1, i % per_epoch + 1)),
        param_max_abs_diff: reference
            .params
            .iter()
            .zip(&other.params)
            .map(|((path, _, a), (_, _, b))| (path.clone(), max_abs_diff(a, b)))
            .collect(),
        logits_max_abs_diff: max_abs_diff(&reference.logits, &other.logits),
        prediction_agreement: 1.0 - disagreeing_samples.len() as f64 / total as f64,
        disagreeing_samples,
    }
}

/// The two backends of a comparison and the model's shape.
pub struct Pair {
    pub kind: ModelSpec,
    pub reference: BackendName,
    pub other: BackendName,
}

/// Each backend's side from the nudged start.
pub struct Nudged<'a> {
    pub reference: &'a Side,
    pub other: &'a Side,
}

/// The larger of each figure of two backends' own differences.
fn larger(a: Differences, b: Differences) -> Sensitivity {
    Sensitivity {
        first_epoch_loss_max_rel_diff: a
            .first_epoch_loss_max_rel_diff
            .max(b.first_epoch_loss_max_rel_diff),
        param_max_abs_diff: a
            .param_max_abs_diff
            .into_iter()
            .zip(b.param_max_abs_diff)
            .map(|((path, x), (_, y))| (path, x.max(y)))
            .collect(),
        logits_max_abs_diff: a.logits_max_abs_diff.max(b.logits_max_abs_diff),
        prediction_agreement: a.prediction_agreement.min(b.prediction_agreement),
    }
}

/// The figures of `reference` and `other` side by side, and the verdict on them, with each
/// backend's run from the nudged start as the measure of how far this training carries a
/// rounding.
pub fn compare(
    pair: Pair,
    reference: &Side,
    other: &Side,
    nudged: Nudged,
    tolerances: &Tolerances,
) -> ModelComparison {
    let diff = differences(reference, other, tolerances.loss_rtol);
    let own = larger(
        differences(reference, nudged.reference, tolerances.loss_rtol),
        differences(other, nudged.other, tolerances.loss_rtol),
    );
    let rate = |s: &Side| s.train_samples as f64 / s.train_seconds.max(1e-9);
    let mut comparison = ModelComparison {
        model: pair.kind.display_name().to_string(),
        reference: pair.reference.as_str().to_string(),
        other: pair.other.as_str().to_string(),
        diff,
        sensitivity: own,
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

/// The most a figure may differ: its tolerance, or `factor` times what a backend's own
/// nudged run differs by, whichever is larger.
fn allowed(tolerance: f64, factor: f64, own: f64) -> f64 {
    tolerance.max(factor * own)
}

/// Why a comparison fails, in one line, checked in order: step counts, first-epoch losses,
/// final parameters, test logits, predictions; none when it passes. Each figure may reach
/// its tolerance or the sensitivity factor times the backends' own nudged difference.
fn failure(
    c: &ModelComparison,
    (reference_steps, other_steps): (usize, usize),
    t: &Tolerances,
) -> Option<String> {
    let pair = format!("{}: {} vs {}", c.model, c.reference, c.other);
    let (own, k) = (&c.sensitivity, t.sensitivity_factor);
    let beyond = |own: f64| match k * own > 0.0 {
        true => format!(" and {k}x the backends' own {own:.2e}"),
        false => String::new(),
    };
    let loss_allowed = allowed(t.loss_rtol, k, own.first_epoch_loss_max_rel_diff);
    let logits_allowed = allowed(t.logits_atol, k, own.logits_max_abs_diff);
    let own_disagreement = 1.0 - own.prediction_agreement;
    let disagreement_allowed = allowed(1.0 - t.min_agreement, k, own_disagreement);
    if reference_steps != other_steps {
        Some(format!(
            "{pair}: different numbers of steps ({reference_steps} vs {other_steps})"
        ))
    } else if !(c.diff.first_epoch_loss_max_rel_diff <= loss_allowed) {
        let (epoch, step) = c.diff.first_divergent_step.unwrap_or((1, 1));
        Some(format!(
            "{pair}: step losses part at epoch {epoch} step {step} (first-epoch max relative difference {:.2e} > {:.0e}{})",
            c.diff.first_epoch_loss_max_rel_diff,
            t.loss_rtol,
            beyond(own.first_epoch_loss_max_rel_diff)
        ))
    } else if let Some(((path, diff), own_diff)) = c
        .diff
        .param_max_abs_diff
        .iter()
        .zip(
            own.param_max_abs_diff
                .iter()
                .map(|p| p.1)
                .chain(std::iter::repeat(0.0)),
        )
        .find(|((_, diff), own_diff)| !(*diff <= allowed(t.param_atol, k, *own_diff)))
    {
        Some(format!(
            "{pair}: final parameters differ by up to {diff:.2e} in `{path}` (> {:.0e}{})",
            t.param_atol,
            beyond(own_diff)
        ))
    } else if !(c.diff.logits_max_abs_diff <= logits_allowed) {
        Some(format!(
            "{pair}: test logits differ by up to {:.2e} (> {:.0e}{})",
            c.diff.logits_max_abs_diff,
            t.logits_atol,
            beyond(own.logits_max_abs_diff)
        ))
    } else if !(1.0 - c.diff.prediction_agreement <= disagreement_allowed + 1e-12) {
        Some(format!(
            "{pair}: predictions agree on {:.1}% of test samples (< {:.1}%{})",
            c.diff.prediction_agreement * 100.0,
            t.min_agreement * 100.0,
            match k * own_disagreement > 0.0 {
                true => format!(
                    ", and disagree on more than {k}x the {:.1}% a backend disagrees with itself",
                    own_disagreement * 100.0
                ),
                false => String::new(),
            }
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
            sensitivity_factor: 10.0,
        }
    }

    fn verdict_on(other: &Side) -> ModelComparison {
        nudged_verdict_on(other, &side())
    }

    /// The verdict on `other` where the reference's own nudged run gave `nudged` (and the
    /// other backend's gave `other` itself).
    fn nudged_verdict_on(other: &Side, nudged: &Side) -> ModelComparison {
        let pair = Pair {
            kind: ModelSpec::from(ModelKind::Cnn),
            reference: BackendName::Cpu,
            other: BackendName::Wgpu,
        };
        let own = Nudged {
            reference: nudged,
            other,
        };
        compare(pair, &side(), other, own, &tolerances())
    }

    #[test]
    fn identical_sides_pass() {
        let c = verdict_on(&side());
        assert!(c.passed && c.failure.is_none(), "{c:?}");
        assert_eq!(c.diff.first_divergent_step, None);
        assert_eq!(c.diff.prediction_agreement, 1.0);
    }

    #[test]
    fn each_difference_beyond_its_tolerance_fails_and_says_so() {
        let mut other = side();
        other.step_losses[3] = 0.6;
        let c = verdict_on(&other);
        // A later epoch is reported, not judged.
        assert!(c.passed, "{c:?}");
        assert_eq!(c.diff.first_divergent_step, Some((2, 2)));
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
        assert_eq!(c.diff.disagreeing_samples, ["b"]);
        assert!(c.failure.unwrap().contains("agree on 50.0%"));
    }

    /// A training that carries a rounding far (the reference's own nudged run differs by
    /// 0.02 in a parameter) allows ten times that; past it, the verdict names both figures.
    #[test]
    fn a_backends_own_sensitivity_widens_the_tolerances() {
        let mut nudged = side();
        nudged.params[0].2[1] += 0.02;
        nudged.step_losses[1] = 0.8 * (1.0 + 1e-3);
        let mut other = side();
        other.params[0].2[1] += 0.1;
        other.step_losses[1] = 0.8 * (1.0 + 5e-3);
        let c = nudged_verdict_on(&other, &nudged);
        assert!(c.passed, "{c:?}");
        assert_eq!(c.sensitivity.param_max_abs_diff[0].0, "w");
        other.params[0].2[1] = -0.25 + 0.3;
        let failure = nudged_verdict_on(&other, &nudged).failure.unwrap();
        assert!(
            failure.contains(
                "differ by up to 3.00e-1 in `w` (> 1e-3 and 10x the backends' own 2.00e-2)"
            ),
            "{failure}"
        );
        other.step_losses[1] = 0.8 * 1.02;
        let failure = nudged_verdict_on(&other, &nudged).failure.unwrap();
        assert!(failure.contains("part at epoch 1 step 2"), "{failure}");
    }
}
