//! The comparison written out: `reports/experiment_notes.md` (what changed, the curves side
//! by side, confusion matrices, timing, the suggested next step) and the loss overlay.

use std::fmt::Write as _;

use crate::compare::decide::decide;
use crate::compare::read::{Epoch, Pack};
use crate::compare::{Difference, best_of, in_b, pair_name};
use crate::pack::plots::{LineChart, Series};

/// One chart per model of run A: its train and validation loss in A (solid) and B (dashed).
pub fn overlay_charts(a: &Pack, b: &Pack) -> Vec<LineChart> {
    let mut charts = Vec::new();
    for (model, curve_a) in &a.curves {
        let model_b = in_b(b, model);
        let mut chart = LineChart::by_epoch(
            &format!(
                "{}: run A (solid) vs run B (dashed)",
                pair_name(model, &model_b)
            ),
            "loss",
        );
        let curve_b = b.curves.iter().find(|(m, _)| *m == model_b).map(|(_, c)| c);
        for (run, curve, dashed) in [("A", Some(curve_a), false), ("B", curve_b, true)] {
            let Some(curve) = curve else { continue };
            for (what, colour, pick) in [
                (
                    "train_loss",
                    0,
                    (|e: &Epoch| e.train_loss) as fn(&Epoch) -> f64,
                ),
                ("val_loss", 1, |e: &Epoch| e.val_loss),
            ] {
                chart.series.push(Series {
                    label: format!("{run} {what}"),
                    points: curve
                        .iter()
                        .enumerate()
                        .map(|(i, e)| ((i + 1) as f64, pick(e)))
                        .collect(),
                    dashed,
                    colour,
                });
            }
        }
        charts.push(chart);
    }
    charts
}

/// The notes of comparing `a` with `b`, and the suggested next step.
pub fn notes(a: &Pack, b: &Pack, differences: &[Difference]) -> (String, String) {
    let mut out = String::from("# Experiment Notes\n\n");
    let _ = writeln!(out, "- Run A: `{}`", a.path.display());
    let _ = writeln!(out, "- Run B: `{}`\n", b.path.display());
    let _ = writeln!(out, "## What changed\n");
    match differences.len() {
        0 => {
            let _ = writeln!(
                out,
                "No setting differs: any difference below is noise of the machine (timing) or of the backend (float rounding).\n"
            );
        }
        n => {
            for d in differences {
                let _ = writeln!(out, "- `{}`: {} -> {}", d.key, d.a, d.b);
            }
            if n > 1 {
                let _ = writeln!(
                    out,
                    "\n**Warning: {n} settings changed.** The workshop's rule is one variable at a time: with several changes, no difference below can be attributed to one of them. Rerun with only one of them changed."
                );
            }
            let _ = writeln!(out);
        }
    }

    out += &training_section(a, b);
    let _ = writeln!(out, "\n## Confusion matrices (best model of each run)\n");
    let _ = writeln!(out, "- A ({}): {}", a.best_model, flatten(&a.confusion));
    let _ = writeln!(out, "- B ({}): {}", b.best_model, flatten(&b.confusion));
    if a.confusion != b.confusion {
        let _ = writeln!(out, "- The matrices differ.");
    } else {
        let _ = writeln!(out, "- The matrices are the same.");
    }

    let _ = writeln!(out, "\n## Timing\n");
    for ta in &a.timing {
        let model_b = in_b(b, &ta.model);
        if let Some(tb) = b.timing.iter().find(|t| t.model == model_b) {
            let _ = writeln!(
                out,
                "- {}: {:.3} s training at {:.0} samples/s (A) vs {:.3} s at {:.0} samples/s (B)",
                pair_name(&ta.model, &model_b),
                ta.seconds,
                ta.samples_per_sec,
                tb.seconds,
                tb.samples_per_sec
            );
        }
    }

    let decision = decide(a, b, differences);
    let _ = writeln!(out, "\n## Suggested next step\n");
    let _ = writeln!(out, "{}.\n", decision.suggestion);
    let _ = writeln!(out, "Evidence: {}.", decision.evidence.join("; "));
    (out, decision.suggestion)
}

/// "Training and validation": each model of A beside its counterpart in B, and the gap
/// between validation and training loss at the last epoch.
fn training_section(a: &Pack, b: &Pack) -> String {
    let mut out = String::from("## Training and validation\n\n");
    let models: Vec<String> = a.curves.iter().map(|(m, _)| m.clone()).collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for model in &models {
        let model_b = in_b(b, model);
        for (run, pack, model) in [("A", a, model), ("B", b, &model_b)] {
            let curve = pack.curves.iter().find(|(m, _)| m == model).map(|(_, c)| c);
            let mut row = vec![model.clone(), run.to_string()];
            match (curve, best_of(pack, model)) {
                (Some(c), Some(r)) if !c.is_empty() => row.extend([
                    c.len().to_string(),
                    format!("{:.4}", c[0].train_loss),
                    format!("{:.4}", c[c.len() - 1].train_loss),
                    format!("{:.4}", c[c.len() - 1].val_loss),
                    format!("{:.4}", r.best_val_acc),
                    format!("{:.4}", r.test_loss),
                    format!("{:.4}", r.test_accuracy),
                    r.status.clone(),
                ]),
                _ => row.extend(
                    std::iter::once("not trained".to_string())
                        .chain(std::iter::repeat_n(String::new(), 7)),
                ),
            }
            rows.push(row);
        }
    }
    out += &crate::pack::evidence::markdown_table(
        &[
            "model",
            "run",
            "epochs",
            "first train loss",
            "last train loss",
            "last val loss",
            "best val acc",
            "test loss",
            "test accuracy",
            "status",
        ],
        &rows,
    );
    let gaps: Vec<String> = models
        .iter()
        .filter_map(|model| {
            let model_b = in_b(b, model);
            let gap = |p: &Pack, model: &str| {
                p.curves
                    .iter()
                    .find(|(m, _)| m == model)
                    .and_then(|(_, c)| c.last().map(|e| e.val_loss - e.train_loss))
            };
            match (gap(a, model), gap(b, &model_b)) {
                (Some(ga), Some(gb)) => Some(format!(
                    "{}: val loss minus train loss at the last epoch {ga:.4} (A) vs {gb:.4} (B){}",
                    pair_name(model, &model_b),
                    if gb > ga + 0.05 {
                        ", a wider gap in B: watch for overfitting"
                    } else {
                        ""
                    }
                )),
                _ => None,
            }
        })
        .collect();
    let _ = writeln!(out);
    for gap in gaps {
        let _ = writeln!(out, "- {gap}");
    }

    out
}

fn flatten(matrix: &[Vec<String>]) -> String {
    matrix
        .iter()
        .skip(1)
        .map(|row| format!("{} {}", row[0], row[1..].join("/")))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::read::tests::pack;

    fn changed(key: &str) -> Difference {
        Difference {
            key: key.into(),
            a: "1".into(),
            b: "2".into(),
        }
    }

    #[test]
    fn the_notes_say_what_changed_and_warn_when_several_did() {
        let (a, b) = (pack(0.90, 0.3, "ok"), pack(0.95, 0.2, "ok"));
        let (text, suggestion) = notes(&a, &b, &[changed("lr_cnn")]);
        assert!(text.contains("- `lr_cnn`: 1 -> 2\n"), "{text}");
        assert!(!text.contains("**Warning"), "{text}");
        assert!(
            text.contains("| Tiny CNN | B | 1 | 0.5000 | 0.5000 | 0.2000 | 0.9500 |"),
            "{text}"
        );
        assert!(text.contains("- The matrices are the same."), "{text}");
        assert!(text.contains(&format!("{suggestion}.\n")), "{text}");
        let (text, suggestion) = notes(&a, &b, &[changed("lr_cnn"), changed("seed")]);
        assert!(text.contains("**Warning: 2 settings changed.**"), "{text}");
        assert!(suggestion.starts_with("split the change"), "{suggestion}");
        let (text, _) = notes(&a, &b, &[]);
        assert!(text.contains("No setting differs"), "{text}");
    }
}
