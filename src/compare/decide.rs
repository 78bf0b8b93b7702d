//! What to do next after a comparison: keep the change, roll it back, or split it, decided
//! on the validation set only.

use crate::compare::read::Pack;
use crate::compare::{Difference, best_of, in_b, pair_name};

/// What to do next, and the validation figures it rests on.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub suggestion: String,
    pub evidence: Vec<String>,
}

/// The suggestion from two runs, without I/O: it rests on the validation set only (the test
/// set is not for choosing). A model's best validation accuracy decides when it moved by more
/// than half a validation sample; otherwise its last validation loss, when it moved by 10%.
/// A model that diverged in B and not in A counts twice against B.
pub fn decide(a: &Pack, b: &Pack, differences: &[Difference]) -> Decision {
    let models: Vec<String> = a.curves.iter().map(|(m, _)| m.clone()).collect();

    let one_sample = 1.0 / a.val_samples;
    let mut better = 0;
    let mut worse = 0;
    let mut evidence = Vec::new();
    let last_val_loss = |p: &Pack, model: &str| {
        p.curves
            .iter()
            .find(|(m, _)| m == model)
            .and_then(|(_, c)| c.last().map(|e| e.val_loss))
    };
    for model in &models {
        let model_b = in_b(b, model);
        if let (Some(ba), Some(bb)) = (best_of(a, model), best_of(b, &model_b)) {
            let delta = bb.best_val_acc - ba.best_val_acc;
            let model = pair_name(model, &model_b);
            evidence.push(format!(
                "{model} best val acc {:.4} -> {:.4}",
                ba.best_val_acc, bb.best_val_acc
            ));
            if delta > one_sample / 2.0 {
                better += 1;
            } else if delta < -one_sample / 2.0 {
                worse += 1;
            } else if let (Some(la), Some(lb)) =
                (last_val_loss(a, &ba.model), last_val_loss(b, &model_b))
            {
                // Same accuracy: the validation loss at the end decides, if it moved by 10%.
                evidence.push(format!("{model} last val loss {la:.4} -> {lb:.4}"));
                if lb < la * 0.9 {
                    better += 1;
                } else if lb > la * 1.1 {
                    worse += 1;
                }
            }
            if bb.status.starts_with("diverged") && !ba.status.starts_with("diverged") {
                worse += 2;
                evidence.push(format!("{model} diverged in B"));
            }
        }
    }
    let changed = differences
        .first()
        .map(|d| format!("`{}` = {}", d.key, d.b))
        .unwrap_or_else(|| "the change".to_string());
    // Only a number has a value a step further; an on/off setting or a word has none.
    let numeric = differences
        .first()
        .is_some_and(|d| d.a.parse::<f64>().is_ok() && d.b.parse::<f64>().is_ok());
    let (further, other) = match numeric {
        true => (
            ", then try a value a step further in the same direction",
            ", or try a value further away",
        ),
        false => ("", ""),
    };
    let suggestion = if differences.len() > 1 {
        "split the change: rerun from A changing one setting only, then compare again".to_string()
    } else if differences.is_empty() {
        "nothing to decide: change one setting and rerun".to_string()
    } else if better > worse {
        format!("keep {changed}{further}")
    } else if worse > better {
        format!("roll back {changed}: validation got worse")
    } else {
        format!(
            "no measurable effect on validation (within one validation sample, {one_sample:.4}): keep whichever of the two is simpler or faster{other}"
        )
    };
    Decision {
        suggestion,
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::compare::read::tests::pack;

    fn lr_changed() -> Vec<Difference> {
        vec![Difference {
            key: "lr_cnn".into(),
            a: "0.006".into(),
            b: "0.01".into(),
        }]
    }

    #[test]
    fn higher_validation_accuracy_keeps_the_change() {
        let d = decide(
            &pack(0.90, 0.3, "ok"),
            &pack(0.95, 0.3, "ok"),
            &lr_changed(),
        );
        assert!(
            d.suggestion.starts_with("keep `lr_cnn` = 0.01"),
            "{}",
            d.suggestion
        );
        assert_eq!(d.evidence, ["Tiny CNN best val acc 0.9000 -> 0.9500"]);
    }

    #[test]
    fn lower_accuracy_or_divergence_rolls_back() {
        let d = decide(
            &pack(0.95, 0.3, "ok"),
            &pack(0.90, 0.3, "ok"),
            &lr_changed(),
        );
        assert!(
            d.suggestion.starts_with("roll back `lr_cnn` = 0.01"),
            "{}",
            d.suggestion
        );
        let d = decide(
            &pack(0.90, 0.3, "ok"),
            &pack(0.95, 0.3, "diverged at epoch 3 step 2"),
            &lr_changed(),
        );
        assert!(d.suggestion.starts_with("roll back"), "{}", d.suggestion);
        assert!(d.evidence.contains(&"Tiny CNN diverged in B".to_string()));
    }

    #[test]
    fn within_half_a_sample_the_validation_loss_decides() {
        // 0.004 is less than half of one sample in 84 (0.0119).
        let d = decide(
            &pack(0.950, 0.30, "ok"),
            &pack(0.954, 0.20, "ok"),
            &lr_changed(),
        );
        assert!(d.suggestion.starts_with("keep"), "{}", d.suggestion);
        let d = decide(
            &pack(0.950, 0.30, "ok"),
            &pack(0.950, 0.29, "ok"),
            &lr_changed(),
        );
        assert!(
            d.suggestion.starts_with("no measurable effect"),
            "{}",
            d.suggestion
        );
    }

    /// An on/off setting (or a word) has no value a step further: the suggestion keeps or
    /// rolls it back without one.
    #[test]
    fn an_on_off_setting_is_kept_without_a_step_further() {
        let batch_norm = [Difference {
            key: "batch_norm".into(),
            a: "false".into(),
            b: "true".into(),
        }];
        let judged = |a: f64, b: f64, change: &[Difference]| {
            decide(&pack(a, 0.3, "ok"), &pack(b, 0.3, "ok"), change).suggestion
        };
        assert_eq!(judged(0.90, 0.95, &batch_norm), "keep `batch_norm` = true");
        let same = judged(0.95, 0.95, &batch_norm);
        assert!(
            same.starts_with("no measurable effect")
                && same.ends_with("keep whichever of the two is simpler or faster"),
            "{same}"
        );
        assert!(
            judged(0.90, 0.95, &lr_changed()).ends_with("a step further in the same direction")
        );
    }

    #[test]
    fn several_or_no_changes_are_not_judged() {
        let two = [lr_changed(), lr_changed()].concat();
        let d = decide(&pack(0.9, 0.3, "ok"), &pack(0.99, 0.1, "ok"), &two);
        assert!(
            d.suggestion.starts_with("split the change"),
            "{}",
            d.suggestion
        );
        let d = decide(&pack(0.9, 0.3, "ok"), &pack(0.99, 0.1, "ok"), &[]);
        assert!(
            d.suggestion.starts_with("nothing to decide"),
            "{}",
            d.suggestion
        );
    }
}
