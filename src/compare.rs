//! `trainer compare RUN_A RUN_B`: the workshop's one-variable-at-a-time discipline as a
//! command. Reads two evidence packs, names every setting that differs (and warns when more
//! than one does), compares curves, accuracies, confusion matrices and timing, and writes
//! RUN_B/reports/experiment_notes.md and RUN_B/reports/experiment_loss_overlay.png.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainerError};
use crate::pack::{MARKER, OutputLock, write_atomic};
use crate::plots::{self, LineChart, Series};

/// One epoch of a training log.
#[derive(Clone, Debug)]
struct Epoch {
    train_loss: f64,
    val_loss: f64,
}

/// What is read from a pack.
#[derive(Debug)]
struct Pack {
    path: PathBuf,
    settings: serde_json::Map<String, serde_json::Value>,
    /// model -> epochs
    curves: Vec<(String, Vec<Epoch>)>,
    /// model -> (best_val_acc, test_loss, test_accuracy, status)
    comparison: Vec<(String, f64, f64, f64, String)>,
    best_model: String,
    confusion: Vec<Vec<String>>,
    /// model -> (train seconds, samples per second)
    timing: Vec<(String, f64, f64)>,
    val_samples: f64,
}

/// The outcome of a comparison.
#[derive(Debug)]
pub struct Comparison {
    /// Settings that differ: (key, value in A, value in B).
    pub differences: Vec<(String, String, String)>,
    pub notes_path: PathBuf,
    pub suggestion: String,
}

fn bad(path: &Path, what: impl std::fmt::Display) -> TrainerError {
    TrainerError::bad_input(format!(
        "'{}' is not a readable evidence pack: {what}",
        path.display()
    ))
}

fn read_csv(pack: &Path, relative: &str) -> Result<Vec<csv::StringRecord>> {
    let path = pack.join(relative);
    let mut reader =
        csv::Reader::from_path(&path).map_err(|e| bad(pack, format!("{relative}: {e}")))?;
    let header = reader
        .headers()
        .map_err(|e| bad(pack, format!("{relative}: {e}")))?
        .clone();
    let mut rows = vec![header];
    for row in reader.records() {
        rows.push(row.map_err(|e| bad(pack, format!("{relative}: {e}")))?);
    }
    Ok(rows)
}

fn column(header: &csv::StringRecord, name: &str, pack: &Path, file: &str) -> Result<usize> {
    header
        .iter()
        .position(|h| h == name)
        .ok_or_else(|| bad(pack, format!("{file} has no column '{name}'")))
}

fn number(text: &str, pack: &Path, file: &str) -> Result<f64> {
    text.parse::<f64>()
        .map_err(|_| bad(pack, format!("{file}: '{text}' is not a number")))
}

fn read_pack(path: &Path) -> Result<Pack> {
    if !path.join(MARKER).is_file() {
        return Err(bad(path, "it has no .trainer-run marker"));
    }
    let text = fs::read_to_string(path.join("outputs/config.json"))
        .map_err(|e| bad(path, format!("outputs/config.json: {e}")))?;
    let settings = match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => return Err(bad(path, "outputs/config.json is not a settings table")),
    };

    let log = read_csv(path, "outputs/training_log.csv")?;
    let f = "outputs/training_log.csv";
    let (m, tl, vl) = (
        column(&log[0], "model", path, f)?,
        column(&log[0], "train_loss", path, f)?,
        column(&log[0], "val_loss", path, f)?,
    );
    let mut curves: Vec<(String, Vec<Epoch>)> = Vec::new();
    for row in &log[1..] {
        let epoch = Epoch {
            train_loss: number(&row[tl], path, f)?,
            val_loss: number(&row[vl], path, f)?,
        };
        match curves.iter_mut().find(|(name, _)| name == &row[m]) {
            Some((_, epochs)) => epochs.push(epoch),
            None => curves.push((row[m].to_string(), vec![epoch])),
        }
    }

    let table = read_csv(path, "outputs/model_comparison.csv")?;
    let f = "outputs/model_comparison.csv";
    let (m, bv, tl, ta) = (
        column(&table[0], "model", path, f)?,
        column(&table[0], "best_val_acc", path, f)?,
        column(&table[0], "test_loss", path, f)?,
        column(&table[0], "test_accuracy", path, f)?,
    );
    let status = table[0].iter().position(|h| h == "status");
    let mut comparison = Vec::new();
    for row in &table[1..] {
        comparison.push((
            row[m].to_string(),
            number(&row[bv], path, f)?,
            number(&row[tl], path, f)?,
            number(&row[ta], path, f)?,
            status
                .map(|i| row[i].to_string())
                .unwrap_or_else(|| "ok".into()),
        ));
    }
    let best_model = comparison
        .first()
        .map(|c| c.0.clone())
        .ok_or_else(|| bad(path, "outputs/model_comparison.csv has no model"))?;

    let confusion = read_csv(path, "outputs/confusion_matrix.csv")?
        .iter()
        .map(|r| r.iter().map(str::to_string).collect())
        .collect();

    let timing_rows = read_csv(path, "outputs/epoch_timing.csv")?;
    let f = "outputs/epoch_timing.csv";
    let (m, ts, n) = (
        column(&timing_rows[0], "model", path, f)?,
        column(&timing_rows[0], "train_seconds", path, f)?,
        column(&timing_rows[0], "train_samples", path, f)?,
    );
    let mut timing: Vec<(String, f64, f64)> = Vec::new();
    for row in &timing_rows[1..] {
        let (seconds, samples) = (number(&row[ts], path, f)?, number(&row[n], path, f)?);
        match timing.iter_mut().find(|(name, _, _)| name == &row[m]) {
            Some(entry) => {
                entry.1 += seconds;
                entry.2 += samples;
            }
            None => timing.push((row[m].to_string(), seconds, samples)),
        }
    }
    for entry in &mut timing {
        entry.2 /= entry.1.max(1e-9);
    }

    let summary: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(path.join("outputs/metrics_summary.json"))
            .map_err(|e| bad(path, format!("outputs/metrics_summary.json: {e}")))?,
    )
    .map_err(|e| bad(path, format!("outputs/metrics_summary.json: {e}")))?;
    let val_samples = summary["val_samples"].as_f64().unwrap_or(1.0).max(1.0);

    Ok(Pack {
        path: path.to_path_buf(),
        settings,
        curves,
        comparison,
        best_model,
        confusion,
        timing,
        val_samples,
    })
}

fn show(value: Option<&serde_json::Value>) -> String {
    match value {
        None => "(not set)".to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// Compares two packs and writes the experiment notes into `run_b`.
pub fn compare(run_a: &Path, run_b: &Path) -> Result<Comparison> {
    let a = read_pack(run_a)?;
    let b = read_pack(run_b)?;
    let mut keys: Vec<&String> = a.settings.keys().chain(b.settings.keys()).collect();
    keys.sort();
    keys.dedup();
    let differences: Vec<(String, String, String)> = keys
        .into_iter()
        .filter(|k| a.settings.get(*k) != b.settings.get(*k))
        .map(|k| (k.clone(), show(a.settings.get(k)), show(b.settings.get(k))))
        .collect();

    let _lock = OutputLock::acquire(run_b)?;
    let (notes, suggestion) = notes(&a, &b, &differences);
    let reports = run_b.join("reports");
    fs::create_dir_all(&reports).map_err(|e| TrainerError::io("creating folder", &reports, e))?;
    let notes_path = reports.join("experiment_notes.md");
    write_atomic(&notes_path, notes.as_bytes())?;
    let overlay = reports.join("experiment_loss_overlay.png");
    let temporary = reports.join(".experiment_loss_overlay.partial.png");
    plots::draw_stacked(&temporary, &overlay_charts(&a, &b))?;
    fs::rename(&temporary, &overlay).map_err(|e| TrainerError::io("writing", &overlay, e))?;
    Ok(Comparison {
        differences,
        notes_path,
        suggestion,
    })
}

fn overlay_charts(a: &Pack, b: &Pack) -> Vec<LineChart> {
    let mut charts = Vec::new();
    for (model, curve_a) in &a.curves {
        let mut chart = LineChart::new(
            &format!("{model}: run A (solid) vs run B (dashed)"),
            "epoch",
            "loss",
        );
        let curve_b = b.curves.iter().find(|(m, _)| m == model).map(|(_, c)| c);
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

fn best_of(pack: &Pack, model: &str) -> Option<(f64, f64, f64, String)> {
    pack.comparison
        .iter()
        .find(|c| c.0 == model)
        .map(|c| (c.1, c.2, c.3, c.4.clone()))
}

fn notes(a: &Pack, b: &Pack, differences: &[(String, String, String)]) -> (String, String) {
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
            for (key, va, vb) in differences {
                let _ = writeln!(out, "- `{key}`: {va} -> {vb}");
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

    let _ = writeln!(out, "## Training and validation\n");
    let _ = writeln!(
        out,
        "| model | run | epochs | first train loss | last train loss | last val loss | best val acc | test loss | test accuracy | status |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let models: Vec<String> = a.curves.iter().map(|(m, _)| m.clone()).collect();
    for model in &models {
        for (run, pack) in [("A", a), ("B", b)] {
            let curve = pack.curves.iter().find(|(m, _)| m == model).map(|(_, c)| c);
            let best = best_of(pack, model);
            match (curve, best) {
                (Some(c), Some((bv, tl, ta, status))) if !c.is_empty() => {
                    let _ = writeln!(
                        out,
                        "| {model} | {run} | {} | {:.4} | {:.4} | {:.4} | {bv:.4} | {tl:.4} | {ta:.4} | {status} |",
                        c.len(),
                        c[0].train_loss,
                        c[c.len() - 1].train_loss,
                        c[c.len() - 1].val_loss,
                    );
                }
                _ => {
                    let _ = writeln!(out, "| {model} | {run} | not trained | | | | | | | |");
                }
            }
        }
    }
    let gaps: Vec<String> = models
        .iter()
        .filter_map(|model| {
            let gap = |p: &Pack| {
                p.curves.iter().find(|(m, _)| m == model).and_then(|(_, c)| {
                    c.last().map(|e| e.val_loss - e.train_loss)
                })
            };
            match (gap(a), gap(b)) {
                (Some(ga), Some(gb)) => Some(format!(
                    "{model}: val loss minus train loss at the last epoch {ga:.4} (A) vs {gb:.4} (B){}",
                    if gb > ga + 0.05 { ", a wider gap in B: watch for overfitting" } else { "" }
                )),
                _ => None,
            }
        })
        .collect();
    let _ = writeln!(out);
    for gap in gaps {
        let _ = writeln!(out, "- {gap}");
    }

    let _ = writeln!(out, "\n## Confusion matrices (best model of each run)\n");
    let _ = writeln!(out, "- A ({}): {}", a.best_model, flatten(&a.confusion));
    let _ = writeln!(out, "- B ({}): {}", b.best_model, flatten(&b.confusion));
    if a.confusion != b.confusion {
        let _ = writeln!(out, "- The matrices differ.");
    } else {
        let _ = writeln!(out, "- The matrices are the same.");
    }

    let _ = writeln!(out, "\n## Timing\n");
    for (model, seconds, rate) in &a.timing {
        if let Some((_, sb, rb)) = b.timing.iter().find(|(m, _, _)| m == model) {
            let _ = writeln!(
                out,
                "- {model}: {seconds:.3} s training at {rate:.0} samples/s (A) vs {sb:.3} s at {rb:.0} samples/s (B)"
            );
        }
    }

    // The suggestion rests on the validation set (the test set is not for choosing).
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
        if let (Some(ba), Some(bb)) = (best_of(a, model), best_of(b, model)) {
            let delta = bb.0 - ba.0;
            evidence.push(format!("{model} best val acc {:.4} -> {:.4}", ba.0, bb.0));
            if delta > one_sample / 2.0 {
                better += 1;
            } else if delta < -one_sample / 2.0 {
                worse += 1;
            } else if let (Some(la), Some(lb)) = (last_val_loss(a, model), last_val_loss(b, model))
            {
                // Same accuracy: the validation loss at the end decides, if it moved by 10%.
                evidence.push(format!("{model} last val loss {la:.4} -> {lb:.4}"));
                if lb < la * 0.9 {
                    better += 1;
                } else if lb > la * 1.1 {
                    worse += 1;
                }
            }
            if bb.3.starts_with("diverged") && !ba.3.starts_with("diverged") {
                worse += 2;
                evidence.push(format!("{model} diverged in B"));
            }
        }
    }
    let changed = differences
        .first()
        .map(|d| format!("`{}` = {}", d.0, d.2))
        .unwrap_or_else(|| "the change".to_string());
    let suggestion = if differences.len() > 1 {
        "split the change: rerun from A changing one setting only, then compare again".to_string()
    } else if differences.is_empty() {
        "nothing to decide: change one setting and rerun".to_string()
    } else if better > worse {
        format!("keep {changed}, then try a value a step further in the same direction")
    } else if worse > better {
        format!("roll back {changed}: validation got worse")
    } else {
        format!(
            "no measurable effect on validation (within one validation sample, {one_sample:.4}): keep whichever of the two is simpler or faster, or try a value further away"
        )
    };
    let _ = writeln!(out, "\n## Suggested next step\n");
    let _ = writeln!(out, "{suggestion}.\n");
    let _ = writeln!(out, "Evidence: {}.", evidence.join("; "));
    (out, suggestion)
}

fn flatten(matrix: &[Vec<String>]) -> String {
    matrix
        .iter()
        .skip(1)
        .map(|row| format!("{} {}", row[0], row[1..].join("/")))
        .collect::<Vec<_>>()
        .join("; ")
}
