//! The pack of `trainer evaluate --data DIR`: a checkpoint scored on a labelled folder, in
//! the workshop pack's formats (its CSV writer, confusion matrix and review grid), and the
//! CSV of `trainer predict --csv`.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::Staging;
use super::evidence::{self, Review, csv_text, markdown_table, py_float};
use super::plots;
use crate::data::ImageDataset;
use crate::error::{Result, TrainerError};
use crate::inference::folder::Scored;
use crate::inference::predict::{FileError, FilePrediction};
use crate::model::checkpoint::CheckpointMeta;
use crate::report::round4;
use crate::train::metrics::ClassMetrics;

/// The files of an evaluation pack, in the order its README lists them.
pub const FILES: [&str; 7] = [
    "README.md",
    "outputs/per_class_metrics.csv",
    "outputs/confusion_matrix.csv",
    "outputs/error_samples.csv",
    "outputs/metrics_summary.json",
    "curves/confusion_matrix.png",
    "curves/review_grid.png",
];

/// What an evaluation pack is written from.
pub struct EvaluationPack<'a> {
    pub checkpoint: &'a Path,
    pub meta: &'a CheckpointMeta,
    /// Which images were scored, in words.
    pub origin: &'a str,
    pub set: &'a ImageDataset,
    pub scored: &'a Scored,
    /// The line saying what was resized or converted, if anything was.
    pub conversions: Option<&'a str>,
    /// How many of the images are byte-identical to the checkpoint's training/validation
    /// images (the accuracy overstates when above 0).
    pub seen_in_training: usize,
    /// The command line, as the README repeats it.
    pub command: String,
}

/// Writes the evaluation pack into `staging`.
pub fn write(staging: &Staging, pack: &EvaluationPack) -> Result<()> {
    let classes = &pack.meta.classes;
    let predictions = &pack.scored.evaluation.predictions;
    staging.write(
        "outputs/per_class_metrics.csv",
        per_class_metrics_csv(&pack.scored.per_class)?,
    )?;
    staging.write(
        "outputs/confusion_matrix.csv",
        evidence::confusion_csv(classes, &pack.scored.confusion)?,
    )?;
    staging.write(
        "outputs/error_samples.csv",
        evidence::error_samples_csv(&evidence::review_rows(predictions), classes)?,
    )?;
    staging.write("outputs/metrics_summary.json", summary_json(pack)?)?;
    plots::draw_confusion(
        &staging.path("curves/confusion_matrix.png")?,
        &format!(
            "Confusion matrix: {} on the evaluated images",
            pack.meta.model_name
        ),
        classes,
        &pack.scored.confusion,
    )?;
    let review = Review {
        model: pack.meta.model_name.clone(),
        part: "evaluated",
        predictions,
        images: pack.set,
        normalization: &pack.meta.normalization,
        classes,
    };
    evidence::draw_review_grid_from(&staging.path("curves/review_grid.png")?, &review)?;
    staging.write("README.md", readme_md(pack))
}

/// outputs/per_class_metrics.csv: class, precision, recall, f1, support.
pub fn per_class_metrics_csv(per_class: &[ClassMetrics]) -> Result<String> {
    let mut rows = vec![
        ["class", "precision", "recall", "f1", "support"]
            .map(String::from)
            .to_vec(),
    ];
    for m in per_class {
        rows.push(vec![
            m.class.clone(),
            py_float(m.precision),
            py_float(m.recall),
            py_float(m.f1),
            m.support.to_string(),
        ]);
    }
    csv_text(rows)
}

/// The mean of the classes' F1 (each class counts the same).
pub fn macro_f1(per_class: &[ClassMetrics]) -> f64 {
    per_class.iter().map(|m| m.f1).sum::<f64>() / per_class.len().max(1) as f64
}

#[derive(Serialize)]
struct Summary<'a> {
    model: &'a str,
    checkpoint: String,
    evaluated: &'a str,
    samples: usize,
    accuracy: f64,
    loss: f64,
    macro_f1: f64,
    /// Images the model trained or was selected on: the accuracy overstates when above 0.
    seen_in_training: usize,
    classes: &'a [String],
}

fn summary_json(pack: &EvaluationPack) -> Result<String> {
    let evaluation = &pack.scored.evaluation;
    let summary = Summary {
        model: &pack.meta.model_name,
        checkpoint: pack.checkpoint.display().to_string(),
        evaluated: pack.origin,
        samples: evaluation.predictions.len(),
        accuracy: round4(evaluation.accuracy),
        loss: round4(evaluation.loss),
        macro_f1: round4(macro_f1(&pack.scored.per_class)),
        seen_in_training: pack.seen_in_training,
        classes: &pack.meta.classes,
    };
    serde_json::to_string_pretty(&summary).map_err(|e| TrainerError::Serialize(e.to_string()))
}

fn readme_md(pack: &EvaluationPack) -> String {
    let evaluation = &pack.scored.evaluation;
    let mut out = format!(
        "# Evaluation of {} on {}\n\nCommand: `{}`\n\nCheckpoint: `{}`\n\n",
        pack.meta.model_name,
        pack.origin,
        pack.command,
        pack.checkpoint.display()
    );
    let _ = writeln!(
        out,
        "{} images, accuracy {:.4}, loss {:.4}, macro F1 {:.4}.\n",
        evaluation.predictions.len(),
        evaluation.accuracy,
        evaluation.loss,
        macro_f1(&pack.scored.per_class)
    );
    if let Some(line) = pack.conversions {
        let _ = writeln!(out, "Preprocessing: {line}.\n");
    }
    if pack.seen_in_training > 0 {
        let _ = writeln!(
            out,
            "**The accuracy overstates:** {} of the {} images are byte-identical to the checkpoint's training/validation images, so the model had seen them.\n",
            pack.seen_in_training,
            evaluation.predictions.len()
        );
    }
    let rows: Vec<Vec<String>> = pack
        .scored
        .per_class
        .iter()
        .map(|m| {
            vec![
                m.class.clone(),
                format!("{:.4}", m.precision),
                format!("{:.4}", m.recall),
                format!("{:.4}", m.f1),
                m.support.to_string(),
            ]
        })
        .collect();
    out += &markdown_table(&["class", "precision", "recall", "F1", "images"], &rows);
    out += "\n## Files\n\n";
    for file in FILES.iter().filter(|f| **f != "README.md") {
        let _ = writeln!(out, "- `{file}`");
    }
    out
}

/// The header of `trainer predict --csv`: path, predicted, confidence, then each of the top
/// classes and its probability, then why the file could not be read (empty when it was).
pub fn predictions_header() -> Vec<String> {
    let mut header = vec!["path".to_string(), "predicted".into(), "confidence".into()];
    for i in 1..=crate::config::PREDICT_TOP {
        header.push(format!("top{i}"));
        header.push(format!("top{i}_probability"));
    }
    header.push("error".into());
    header
}

/// A probability as `trainer predict` writes it, on the console and in its CSV alike: rounded
/// down to 4 decimals (the listed probabilities never add up to more than 1), in the pack
/// CSVs' Python float format (`1.0`, `0.9286`).
pub fn probability_text(p: f32) -> String {
    py_float((p as f64 * 1e4).floor() / 1e4)
}

/// One row of `trainer predict --csv`.
pub fn prediction_row(p: &FilePrediction) -> Vec<String> {
    let down = probability_text;
    let mut row = vec![p.file.clone(), p.class.clone(), down(p.confidence)];
    for (class, probability) in p.top() {
        row.push(class);
        row.push(down(probability));
    }
    row.resize(predictions_header().len(), String::new());
    row
}

/// The row of `trainer predict --csv` for a file that could not be read: its path and why,
/// under `error`, the other columns empty (so a CSV reader sees every file given).
pub fn failed_row(e: &FileError) -> Vec<String> {
    let mut row = vec![e.file.clone()];
    row.resize(predictions_header().len() - 1, String::new());
    row.push(e.error.clone());
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_file_gets_a_csv_row_with_its_reason() {
        let header = predictions_header();
        assert_eq!(header.last().map(String::as_str), Some("error"));
        let row = failed_row(&FileError {
            file: "broken.png".into(),
            error: "unexpected end of file".into(),
        });
        assert_eq!(row.len(), header.len());
        assert_eq!(row[0], "broken.png");
        assert_eq!(row[header.len() - 1], "unexpected end of file");
        assert!(
            row[1..header.len() - 1].iter().all(String::is_empty),
            "{row:?}"
        );
    }
}

/// Writes `rows` (header first) to `path` as the project's CSV, whole or not at all.
pub fn write_csv(path: &Path, rows: Vec<Vec<String>>) -> Result<()> {
    super::write_atomic(path, csv_text(rows)?)
}
