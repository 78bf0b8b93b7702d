//! Comparing two evidence packs: the workshop's one-variable-at-a-time discipline. [`read`]
//! reads a pack, [`differences`] names every setting that differs, [`decide`] suggests what
//! to do next and [`notes`] writes `RUN_B/reports/experiment_notes.md` and
//! `RUN_B/reports/experiment_loss_overlay.png`; [`compare()`] does it all.

pub mod decide;
pub mod notes;
pub mod read;

pub use decide::Decision;

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainerError};
use crate::model::ModelSpec;
use crate::pack::plots;
use crate::pack::{OutputLock, write_atomic};
use read::{ModelResult, Pack, read_pack};

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

/// Compares two packs and writes the experiment notes into `run_b`.
pub fn compare(run_a: &Path, run_b: &Path) -> Result<Comparison> {
    let a = read_pack(run_a)?;
    let b = read_pack(run_b)?;
    let differences = differences(&a, &b);

    let _lock = OutputLock::acquire(run_b)?;
    let (notes, suggestion) = notes::notes(&a, &b, &differences);
    let reports = run_b.join("reports");
    fs::create_dir_all(&reports).map_err(|e| TrainerError::io("creating folder", &reports, e))?;
    let notes_path = reports.join("experiment_notes.md");
    write_atomic(&notes_path, notes.as_bytes())?;
    let overlay = reports.join("experiment_loss_overlay.png");
    let temporary = reports.join(".experiment_loss_overlay.partial.png");
    plots::draw_stacked(&temporary, &notes::overlay_charts(&a, &b))?;
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

/// The name in run B of run A's `model`: the same name, or B's CNN when both runs trained a
/// CNN of different widths (`--cnn-widths` changed, "Tiny CNN" -> "CNN 12-24").
pub fn in_b(b: &Pack, model: &str) -> String {
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
pub fn pair_name(model: &str, model_b: &str) -> String {
    if model == model_b {
        model.to_string()
    } else {
        format!("{model} -> {model_b}")
    }
}

pub fn best_of<'a>(pack: &'a Pack, model: &str) -> Option<&'a ModelResult> {
    pack.comparison.iter().find(|c| c.model == model)
}

/// Every setting whose value differs between the two packs, in key order; a key only one of
/// them has counts ("(not set)" on the other side).
pub fn differences(a: &Pack, b: &Pack) -> Vec<Difference> {
    let mut keys: Vec<&String> = a.settings.keys().chain(b.settings.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.settings.get(*k) != b.settings.get(*k))
        .map(|k| Difference {
            key: k.clone(),
            a: shown_setting(k, a),
            b: shown_setting(k, b),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use read::tests::pack;
    use serde_json::json;

    fn with(settings: serde_json::Value, channels: Option<u64>) -> Pack {
        let mut p = pack(0.9, 0.3, "ok");
        p.settings = settings.as_object().cloned().unwrap_or_default();
        p.channels = channels;
        p
    }

    #[test]
    fn every_setting_that_differs_is_named_in_key_order() {
        let a = with(
            json!({"lr_cnn": 0.006, "seed": 42, "color": "auto"}),
            Some(3),
        );
        let b = with(
            json!({"seed": 7, "lr_cnn": 0.006, "color": "auto", "augment": true}),
            Some(1),
        );
        let found = differences(&a, &b);
        let shown: Vec<(&str, &str, &str)> = found
            .iter()
            .map(|d| (d.key.as_str(), d.a.as_str(), d.b.as_str()))
            .collect();
        // color is the same setting ("auto") on both sides: not a difference, whatever it chose.
        assert_eq!(
            shown,
            [("augment", "(not set)", "true"), ("seed", "42", "7")]
        );
        assert!(differences(&a, &a).is_empty());
        let c = with(json!({"color": "rgb"}), Some(3));
        assert_eq!(differences(&a, &c)[0].a, "auto (rgb)");
    }

    #[test]
    fn a_cnn_of_other_widths_is_the_counterpart_in_run_b() {
        let mut b = pack(0.9, 0.3, "ok");
        b.curves[0].0 = "CNN 12-24".into();
        assert_eq!(in_b(&b, "Tiny CNN"), "CNN 12-24");
        assert_eq!(pair_name("Tiny CNN", "CNN 12-24"), "Tiny CNN -> CNN 12-24");
        assert_eq!(in_b(&b, "Flatten baseline"), "Flatten baseline");
        assert_eq!(
            pair_name("Flatten baseline", "Flatten baseline"),
            "Flatten baseline"
        );
    }
}
