//! `trainer compare RUN_A RUN_B`: the workshop's one-variable-at-a-time discipline as a
//! command. Reads two evidence packs, names every setting that differs (and warns when more
//! than one does), compares curves, accuracies, confusion matrices and timing, and writes
//! RUN_B/reports/experiment_notes.md and RUN_B/reports/experiment_loss_overlay.png.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::cli::CompareArgs;
use crate::console::{say, warn};
use crate::error::{Result, TrainerError};
use crate::model::ModelSpec;
use crate::pack::plots::{self, LineChart, Series};
use crate::pack::{MARKER, OutputLock, write_atomic};

/// One epoch of a training log.
#[derive(Clone, Debug)]
struct Epoch {
    train_loss: f64,
    val_loss: f64,
}

/// One row of a pack's model_comparison.csv.
#[derive(Clone, Debug)]
struct ModelResult {
    model: String,
    best_val_acc: f64,
    test_loss: f64,
    test_accuracy: f64,
    /// "ok", or "diverged at ..." as the pack wrote it.
    status: String,
}

/// A model's training time over all epochs.
#[derive(Clone, Debug)]
struct Timing {
    model: String,
    seconds: f64,
    samples_per_sec: f64,
}

/// What is read from a pack.
#[derive(Debug)]
struct Pack {
    path: PathBuf,
    settings: serde_json::Map<String, serde_json::Value>,
    /// model -> epochs
    curves: Vec<(String, Vec<Epoch>)>,
    comparison: Vec<ModelResult>,
    best_model: String,
    confusion: Vec<Vec<String>>,
    timing: Vec<Timing>,
    val_samples: f64,
    /// The channels the images were read with (run_info.json; older packs do not say).
    channels: Option<u64>,
}

/// A setting that differs between the two runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Difference {
    pub key: String,
    /// The value in run A, as text.
    pub a: String,
    /// The value in run B, as text.
    pub b: String,
}

/// The outcome of a comparison.
#[derive(Debug)]
pub struct Comparison {
    pub differences: Vec<Difference>,
    pub notes_path: PathBuf,
    pub suggestion: String,
}

/// What to do next, and the validation figures it rests on.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub suggestion: String,
    pub evidence: Vec<String>,
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
    let curves = read_curves(path)?;
    let comparison = read_comparison(path)?;
    let best_model = comparison
        .first()
        .map(|c| c.model.clone())
        .ok_or_else(|| bad(path, "outputs/model_comparison.csv has no model"))?;
    let confusion = read_csv(path, "outputs/confusion_matrix.csv")?
        .iter()
        .map(|r| r.iter().map(str::to_string).collect())
        .collect();
    let timing = read_timing(path)?;
    let summary: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(path.join("outputs/metrics_summary.json"))
            .map_err(|e| bad(path, format!("outputs/metrics_summary.json: {e}")))?,
    )
    .map_err(|e| bad(path, format!("outputs/metrics_summary.json: {e}")))?;
    let val_samples = summary["val_samples"].as_f64().unwrap_or(1.0).max(1.0);
    let channels = fs::read_to_string(path.join("outputs/run_info.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|info| info["color"]["channels"].as_u64());

    Ok(Pack {
        path: path.to_path_buf(),
        settings,
        curves,
        comparison,
        best_model,
        confusion,
        timing,
        val_samples,
        channels,
    })
}

/// Each model's epochs (train and validation loss) from outputs/training_log.csv.
fn read_curves(path: &Path) -> Result<Vec<(String, Vec<Epoch>)>> {
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

    Ok(curves)
}

/// outputs/model_comparison.csv, in its order (best first). Under `--monitor val_loss` the
/// validation accuracy column is `val_acc_at_best_val_loss`.
fn read_comparison(path: &Path) -> Result<Vec<ModelResult>> {
    let table = read_csv(path, "outputs/model_comparison.csv")?;
    let f = "outputs/model_comparison.csv";
    let (m, bv, tl, ta) = (
        column(&table[0], "model", path, f)?,
        column(&table[0], "best_val_acc", path, f)
            .or_else(|_| column(&table[0], "val_acc_at_best_val_loss", path, f))?,
        column(&table[0], "test_loss", path, f)?,
        column(&table[0], "test_accuracy", path, f)?,
    );
    let status = table[0].iter().position(|h| h == "status");
    let mut comparison = Vec::new();
    for row in &table[1..] {
        comparison.push(ModelResult {
            model: row[m].to_string(),
            best_val_acc: number(&row[bv], path, f)?,
            test_loss: number(&row[tl], path, f)?,
            test_accuracy: number(&row[ta], path, f)?,
            status: status
                .map(|i| row[i].to_string())
                .unwrap_or_else(|| "ok".into()),
        });
    }
    Ok(comparison)
}

/// Each model's training seconds and samples per second from outputs/epoch_timing.csv.
fn read_timing(path: &Path) -> Result<Vec<Timing>> {
    let timing_rows = read_csv(path, "outputs/epoch_timing.csv")?;
    let f = "outputs/epoch_timing.csv";
    let (m, ts, n) = (
        column(&timing_rows[0], "model", path, f)?,
        column(&timing_rows[0], "train_seconds", path, f)?,
        column(&timing_rows[0], "train_samples", path, f)?,
    );
    // Samples are summed into samples_per_sec first, then divided by the seconds.
    let mut timing: Vec<Timing> = Vec::new();
    for row in &timing_rows[1..] {
        let (seconds, samples) = (number(&row[ts], path, f)?, number(&row[n], path, f)?);
        match timing.iter_mut().find(|t| t.model == row[m]) {
            Some(entry) => {
                entry.seconds += seconds;
                entry.samples_per_sec += samples;
            }
            None => timing.push(Timing {
                model: row[m].to_string(),
                seconds,
                samples_per_sec: samples,
            }),
        }
    }
    for entry in &mut timing {
        entry.samples_per_sec /= entry.seconds.max(1e-9);
    }

    Ok(timing)
}

/// A setting of `pack` as text; `color = auto` with what it chose ("auto (rgb)").
fn shown_setting(key: &str, pack: &Pack) -> String {
    let text = show(pack.settings.get(key));
    match (key, pack.channels) {
        ("color", Some(channels)) if text == "auto" => {
            format!("auto ({})", if channels == 1 { "gray" } else { "rgb" })
        }
        _ => text,
    }
}

fn show(value: Option<&serde_json::Value>) -> String {
    match value {
        None => "(not set)".to_string(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// `trainer compare`: the comparison, what changed (a warning when more than one setting did)
/// and the suggested next step.
pub fn main(args: CompareArgs) -> Result<()> {
    let result = compare(&args.run_a, &args.run_b)?;
    if result.differences.is_empty() {
        say("changed: nothing");
    }
    for d in &result.differences {
        say(&format!("changed: {}: {} -> {}", d.key, d.a, d.b));
    }
    if result.differences.len() > 1 {
        warn(&format!(
            "{} settings changed; change one variable at a time to know what each does",
            result.differences.len()
        ));
    }
    say(&format!("next: {}", result.suggestion));
    say(&result.notes_path.display().to_string());
    Ok(())
}

/// Compares two packs and writes the experiment notes into `run_b`.
pub fn compare(run_a: &Path, run_b: &Path) -> Result<Comparison> {
    let a = read_pack(run_a)?;
    let b = read_pack(run_b)?;
    let mut keys: Vec<&String> = a.settings.keys().chain(b.settings.keys()).collect();
    keys.sort();
    keys.dedup();
    let differences: Vec<Difference> = keys
        .into_iter()
        .filter(|k| a.settings.get(*k) != b.settings.get(*k))
        .map(|k| Difference {
            key: k.clone(),
            a: shown_setting(k, &a),
            b: shown_setting(k, &b),
        })
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
    crate::pack::record_written(
        run_b,
        &[
            "reports/experiment_notes.md",
            "reports/experiment_loss_overlay.png",
        ],
    )?;
    Ok(Comparison {
        differences,
        notes_path,
        suggestion,
    })
}

fn overlay_charts(a: &Pack, b: &Pack) -> Vec<LineChart> {
    let mut charts = Vec::new();
    for (model, curve_a) in &a.curves {
        let model_b = in_b(b, model);
        let mut chart = LineChart::new(
            &format!(
                "{}: run A (solid) vs run B (dashed)",
                pair_name(model, &model_b)
            ),
            "epoch",
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

/// The name in run B of run A's `model`: the same name, or B's CNN when both runs trained a
/// CNN of different widths (`--cnn-widths` changed, "Tiny CNN" -> "CNN 12-24").
fn in_b(b: &Pack, model: &str) -> String {
    let cnn = |name: &str| ModelSpec::is_cnn_name(name);
    if b.curves.iter().any(|(m, _)| m == model) || !cnn(model) {
        return model.to_string();
    }
    b.curves
        .iter()
        .map(|(m, _)| m)
        .find(|m| cnn(m))
        .cloned()
        .unwrap_or_else(|| model.to_string())
}

/// "Tiny CNN", or "Tiny CNN -> CNN 12-24" when run B's counterpart has another name.
fn pair_name(model: &str, model_b: &str) -> String {
    if model == model_b {
        model.to_string()
    } else {
        format!("{model} -> {model_b}")
    }
}

fn best_of<'a>(pack: &'a Pack, model: &str) -> Option<&'a ModelResult> {
    pack.comparison.iter().find(|c| c.model == model)
}

fn notes(a: &Pack, b: &Pack, differences: &[Difference]) -> (String, String) {
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

/// The suggestion from two runs, without I/O: it rests on the validation set only (the test
/// set is not for choosing). A model's best validation accuracy decides when it moved by more
/// than half a validation sample; otherwise its last validation loss, when it moved by 10%.
/// A model that diverged in B and not in A counts twice against B.
fn decide(a: &Pack, b: &Pack, differences: &[Difference]) -> Decision {
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
    Decision {
        suggestion,
        evidence,
    }
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

    /// A pack of one model with its best validation accuracy, last validation loss and status.
    fn pack(best_val_acc: f64, last_val_loss: f64, status: &str) -> Pack {
        Pack {
            path: PathBuf::from("run"),
            settings: serde_json::Map::new(),
            curves: vec![(
                "Tiny CNN".into(),
                vec![Epoch {
                    train_loss: 0.5,
                    val_loss: last_val_loss,
                }],
            )],
            comparison: vec![ModelResult {
                model: "Tiny CNN".into(),
                best_val_acc,
                test_loss: 0.1,
                test_accuracy: 0.9,
                status: status.into(),
            }],
            best_model: "Tiny CNN".into(),
            confusion: Vec::new(),
            timing: Vec::new(),
            val_samples: 84.0,
            channels: None,
        }
    }

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
