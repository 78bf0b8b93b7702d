//! Reading an evidence pack for a comparison: its settings, each model's loss curves, the
//! model comparison, the confusion matrix of its best model and its training times. A file
//! that is missing or malformed is one line naming the pack and the file.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainerError};
use crate::pack::MARKER;

/// One epoch of a training log.
#[derive(Clone, Debug)]
pub struct Epoch {
    pub train_loss: f64,
    pub val_loss: f64,
}

/// One row of a pack's model_comparison.csv.
#[derive(Clone, Debug)]
pub struct ModelResult {
    pub model: String,
    pub best_val_acc: f64,
    pub test_loss: f64,
    pub test_accuracy: f64,
    /// "ok", or "diverged at ..." as the pack wrote it.
    pub status: String,
}

/// A model's training time over all epochs.
#[derive(Clone, Debug)]
pub struct Timing {
    pub model: String,
    pub seconds: f64,
    pub samples_per_sec: f64,
}

/// What is read from a pack.
#[derive(Debug)]
pub struct Pack {
    pub path: PathBuf,
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// model -> epochs
    pub curves: Vec<(String, Vec<Epoch>)>,
    pub comparison: Vec<ModelResult>,
    pub best_model: String,
    pub confusion: Vec<Vec<String>>,
    pub timing: Vec<Timing>,
    pub val_samples: f64,
    /// The channels the images were read with (run_info.json; older packs do not say).
    pub channels: Option<u64>,
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

pub fn read_pack(path: &Path) -> Result<Pack> {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A pack of one model with its best validation accuracy, last validation loss and status.
    pub(crate) fn pack(best_val_acc: f64, last_val_loss: f64, status: &str) -> Pack {
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
}
