//! The parity report: `parity/parity_report.json`, `parity/parity_report.md` (verdict on
//! top) and `parity/loss_overlay.png`, staged and swapped in as every pack is.

use std::fmt::Write as _;

use crate::error::{Result, TrainerError};
use crate::model::ModelKind;
use crate::pack::Staging;
use crate::pack::plots::{self, LineChart, Series};
use crate::parity::{ModelComparison, ParityConfig, ParityReport};

/// Writes the report into `config.out`.
pub fn write(config: &ParityConfig, report: &ParityReport) -> Result<()> {
    let staging = Staging::begin(&config.out, crate::pack::PackKind::Parity)?;
    let json =
        serde_json::to_string_pretty(report).map_err(|e| TrainerError::Serialize(e.to_string()))?;
    staging.write("parity/parity_report.json", json)?;
    staging.write("parity/parity_report.md", markdown(report))?;
    plots::draw_stacked(&staging.path("parity/loss_overlay.png")?, &overlay(report))?;
    // A user's files at the pack's top are carried over (pack::OWNED).
    staging.commit().map(|_kept| ())
}

fn overlay(report: &ParityReport) -> Vec<LineChart> {
    let mut losses = LineChart::new("Step losses per backend", "training step", "loss");
    let mut diffs = LineChart::new(
        "Step loss difference to the reference backend",
        "training step",
        "|loss - reference loss|",
    );
    // Steps are whole numbers: ticks on whole steps only.
    losses.integer_x = true;
    diffs.integer_x = true;
    let reference = report
        .backends
        .first()
        .map(|b| b.backend.clone())
        .unwrap_or_default();
    for (backend, kind, values) in &report.losses {
        let colour = if kind.kind == ModelKind::Baseline {
            0
        } else {
            1
        };
        losses.series.push(Series {
            label: format!("{} on {backend}", kind.display_name()),
            points: values
                .iter()
                .enumerate()
                .map(|(s, l)| ((s + 1) as f64, *l as f64))
                .collect(),
            dashed: *backend != reference,
            colour,
        });
        if *backend != reference
            && let Some((_, _, base)) = report
                .losses
                .iter()
                .find(|(b, k, _)| *b == reference && k == kind)
        {
            diffs.series.push(Series {
                label: format!("{}: {backend} - {reference}", kind.display_name()),
                points: values
                    .iter()
                    .zip(base)
                    .enumerate()
                    .map(|(s, (a, b))| ((s + 1) as f64, (*a as f64 - *b as f64).abs()))
                    .collect(),
                dashed: false,
                colour,
            });
        }
    }
    vec![losses, diffs]
}

fn markdown(report: &ParityReport) -> String {
    let mut out = String::from("# Backend parity report\n\n");
    let _ = writeln!(out, "**{}**\n", report.verdict);
    let _ = writeln!(out, "```bash\n{}\n```\n", report.command);
    let t = &report.tolerances;
    let _ = writeln!(
        out,
        "Tolerances: first-epoch step losses within {:.0e} relative, final parameters within {:.0e} absolute, test logits within {:.0e} absolute, predictions agree on at least {:.0}% of the test set; or, where larger, {}x what either backend differs from itself when every starting parameter is one unit in the last place away (the \"own\" columns, the larger of the two backends': how far this training carries a rounding). \"First step over the fixed tolerance\" names where the step losses first part by more than the fixed relative tolerance, which a passing row may show where the allowance covers it.\n",
        t.loss_rtol,
        t.param_atol,
        t.logits_atol,
        t.min_agreement * 100.0,
        t.sensitivity_factor
    );
    let rows: Vec<Vec<String>> = report.comparisons.iter().map(comparison_row).collect();
    out += &crate::pack::evidence::markdown_table(
        &[
            "model",
            "backends",
            "verdict",
            "first-epoch loss rel. diff",
            "all steps rel. diff",
            "first step over the fixed tolerance",
            "own first-epoch loss rel. diff",
            "max param diff",
            "own max param diff",
            "max test logit diff",
            "own max test logit diff",
            "prediction agreement",
            "own prediction agreement",
            "best val acc",
            "best epoch",
            "test acc",
            "train samples/s",
            "engine",
        ],
        &rows,
    );
    let _ = writeln!(out, "\nImages: {}.", report.color.describe());
    let _ = writeln!(out, "\n## Backends\n");
    for b in &report.backends {
        let _ = writeln!(
            out,
            "- {} ({:.2} s for both models): {}",
            b.backend,
            b.wall_seconds,
            b.device.summary()
        );
    }
    let _ = writeln!(
        out,
        "\n## Parameters after the last step (max absolute difference)\n"
    );
    for c in &report.comparisons {
        let _ = writeln!(out, "- {} ({} vs {}):", c.model, c.reference, c.other);
        for (path, diff) in &c.diff.param_max_abs_diff {
            let _ = writeln!(out, "  - `{path}`: {diff:.2e}");
        }
    }
    let _ = writeln!(
        out,
        "\n## How to read this\n\nBoth backends start from the same parameters (drawn on the host from the seed) and see the same batches in the same order, so any difference comes from float arithmetic. It is tiny at first and can grow as training goes on; the verdict rests on the first epoch's step losses, the final parameters, the test logits and the test predictions. `loss_overlay.png` draws the step losses of each backend over each other, and their difference below."
    );
    out
}

/// One comparison's row of the report's table.
fn comparison_row(c: &ModelComparison) -> Vec<String> {
    let param = largest(&c.diff.param_max_abs_diff);
    let own = &c.sensitivity;
    let own_param = largest(&own.param_max_abs_diff);
    vec![
        c.model.clone(),
        format!("{} vs {}", c.reference, c.other),
        if c.passed { "pass" } else { "FAIL" }.to_string(),
        format!("{:.2e}", c.diff.first_epoch_loss_max_rel_diff),
        format!("{:.2e}", c.diff.loss_max_rel_diff),
        c.diff
            .first_divergent_step
            .map(|(e, s)| format!("epoch {e} step {s}"))
            .unwrap_or_else(|| "none".into()),
        format!("{:.2e}", own.first_epoch_loss_max_rel_diff),
        format!("{param:.2e}"),
        format!("{own_param:.2e}"),
        format!("{:.2e}", c.diff.logits_max_abs_diff),
        format!("{:.2e}", own.logits_max_abs_diff),
        format!("{:.1}%", c.diff.prediction_agreement * 100.0),
        format!("{:.1}%", own.prediction_agreement * 100.0),
        format!("{:.4} / {:.4}", c.best_val_acc.0, c.best_val_acc.1),
        format!("{} / {}", c.best_epoch.0, c.best_epoch.1),
        format!("{:.4} / {:.4}", c.test_accuracy.0, c.test_accuracy.1),
        format!(
            "{:.0} / {:.0}",
            c.train_samples_per_sec.0, c.train_samples_per_sec.1
        ),
        format!("{} / {}", c.engines.0, c.engines.1),
    ]
}

/// The largest of a comparison's per-tensor figures.
fn largest(per_tensor: &[(String, f64)]) -> f64 {
    per_tensor.iter().map(|p| p.1).fold(0.0, f64::max)
}
