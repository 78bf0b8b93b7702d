//! The label-issue evidence of a workshop pack: `outputs/label_issues.csv` (the training and
//! validation images the kept model most confidently puts in another class, highest loss
//! first) and `curves/top_losses.png` (the first of them as pictures).

use std::path::Path;

use super::evidence::{csv_text, grid_pixels, py_float, short_id};
use super::plots::{self, GridCell};
use crate::config::TOP_LOSS_PICTURES;
use crate::data::Normalization;
use crate::error::Result;
use crate::train::label_issues::{LabelIssue, part_name};

/// outputs/label_issues.csv: sample_id, part, label, predicted, probability (of predicted),
/// loss (cross-entropy of the label), highest loss first.
pub fn label_issues_csv(issues: &[LabelIssue], classes: &[String]) -> Result<String> {
    let header = [
        "sample_id",
        "part",
        "label",
        "predicted",
        "probability",
        "loss",
    ];
    let mut rows = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    for issue in issues {
        rows.push(vec![
            issue.sample_id.clone(),
            part_name(issue.part).to_string(),
            classes[issue.label].clone(),
            classes[issue.predicted].clone(),
            py_float(issue.probability as f64),
            py_float(issue.loss),
        ]);
    }
    csv_text(rows)
}

/// How the pictures of label issues are drawn: the images' size and channels and the
/// normalization to undo for colour.
pub struct Pictures<'a> {
    pub size: usize,
    pub channels: usize,
    pub normalization: &'a Normalization,
}

/// curves/top_losses.png: the first [`TOP_LOSS_PICTURES`] issues as pictures, each captioned
/// with its label, the predicted class and its probability, its part and loss, and its id.
pub fn draw_top_losses(
    path: &Path,
    issues: &[LabelIssue],
    classes: &[String],
    pictures: &Pictures,
) -> Result<()> {
    let cells: Vec<GridCell> = issues
        .iter()
        .take(TOP_LOSS_PICTURES)
        .map(|issue| GridCell {
            pixels: grid_pixels(&issue.image, pictures.channels, pictures.normalization),
            size: pictures.size,
            channels: pictures.channels,
            caption: vec![
                format!("label: {}", classes[issue.label]),
                format!(
                    "predicted: {} ({:.2})",
                    classes[issue.predicted], issue.probability
                ),
                format!("{}, loss {:.2}", part_name(issue.part), issue.loss),
                short_id(&issue.sample_id),
            ],
        })
        .collect();
    let title = if cells.is_empty() {
        "Top losses: the kept model agrees with every training and validation label".to_string()
    } else {
        format!(
            "Top losses: {} training/validation image(s) the kept model puts in another class",
            cells.len()
        )
    };
    plots::draw_image_grid(path, &title, &cells)
}
