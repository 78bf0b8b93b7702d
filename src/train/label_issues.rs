//! Label-issue evidence: the training and validation images that the kept model most
//! confidently puts in another class than their label (fastai's "top losses"), found by
//! evaluating the kept model once on both parts after training.

use super::{Context, Evaluation, Trained, metrics, test_kept};
use crate::config::LABEL_ISSUES;
use crate::data::{ImageDataset, Part};
use crate::error::Result;
use crate::memory::MemoryPolicy;

/// One image whose label the kept model disagrees with.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelIssue {
    pub sample_id: String,
    pub part: Part,
    pub label: usize,
    pub predicted: usize,
    /// The model's probability of `predicted`.
    pub probability: f32,
    /// Cross-entropy of the label: -ln p(label).
    pub loss: f64,
    /// The image as the model saw it (normalized), for the picture grid.
    pub image: Vec<f32>,
}

/// The part's name as the evidence writes it.
pub fn part_name(part: Part) -> &'static str {
    match part {
        Part::Train => "train",
        Part::Val => "val",
        Part::Test => "test",
    }
}

/// Evaluates the kept model of `trained` on `train` and `val` and returns its
/// [`LABEL_ISSUES`] most confident disagreements with the labels, highest loss first.
pub fn find(
    trained: &Trained,
    parts: [(Part, &ImageDataset); 2],
    classes: usize,
    memory: &mut MemoryPolicy,
    ctx: &Context,
) -> Result<Vec<LabelIssue>> {
    let mut issues = Vec::new();
    for (part, dataset) in parts {
        if dataset.samples.is_empty() {
            continue;
        }
        let evaluation = test_kept(trained, dataset, classes, true, memory, ctx)?;
        issues.extend(disagreements(part, &evaluation, dataset, classes));
    }
    Ok(top_losses(issues, LABEL_ISSUES))
}

/// Every sample of `dataset` the evaluation predicts in another class than its label.
pub fn disagreements(
    part: Part,
    evaluation: &Evaluation,
    dataset: &ImageDataset,
    classes: usize,
) -> Vec<LabelIssue> {
    evaluation
        .predictions
        .iter()
        .zip(evaluation.logits.chunks(classes.max(1)))
        .zip(&dataset.samples)
        .filter(|((p, _), _)| p.actual != p.predicted)
        .map(|((p, logits), sample)| {
            let probabilities = metrics::softmax(logits);
            let of_label = probabilities.get(p.actual).copied().unwrap_or(0.0);
            LabelIssue {
                sample_id: p.sample_id.clone(),
                part,
                label: p.actual,
                predicted: p.predicted,
                probability: probabilities.get(p.predicted).copied().unwrap_or(0.0),
                loss: -(of_label.max(f32::MIN_POSITIVE) as f64).ln(),
                image: sample.image.to_vec(),
            }
        })
        .collect()
}

/// The `limit` issues of highest loss, highest first (ties: train before val, then by id, so
/// reruns list them in the same order).
pub fn top_losses(mut issues: Vec<LabelIssue>, limit: usize) -> Vec<LabelIssue> {
    issues.sort_by(|a, b| {
        b.loss
            .total_cmp(&a.loss)
            .then_with(|| part_name(a.part).cmp(part_name(b.part)))
            .then_with(|| a.sample_id.cmp(&b.sample_id))
    });
    issues.truncate(limit);
    issues
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Prediction;

    fn sample(id: &str, label: usize) -> crate::data::Sample {
        crate::data::Sample {
            image: vec![0.5; 4].into(),
            label,
            sample_id: id.to_string(),
            recipe: None,
        }
    }

    #[test]
    fn only_disagreements_are_kept_highest_loss_first() {
        let dataset = ImageDataset {
            samples: vec![sample("a", 0), sample("b", 1), sample("c", 0)],
            image_size: 2,
            channels: 1,
        };
        let prediction = |id: &str, actual, predicted| Prediction {
            sample_id: id.to_string(),
            actual,
            predicted,
            confidence: 0.0,
        };
        let evaluation = Evaluation {
            loss: 0.0,
            accuracy: 0.0,
            predictions: vec![
                prediction("a", 0, 1),
                prediction("b", 1, 1),
                prediction("c", 0, 1),
            ],
            // a: mildly wrong; b: right; c: confidently wrong.
            logits: vec![0.0, 1.0, 0.0, 5.0, 0.0, 4.0],
            confusion: None,
            batch_size: 3,
        };
        let found = disagreements(Part::Val, &evaluation, &dataset, 2);
        assert_eq!(found.len(), 2);
        let ranked = top_losses(found, 50);
        assert_eq!(ranked[0].sample_id, "c");
        assert!(ranked[0].loss > ranked[1].loss);
        assert!(ranked[0].probability > 0.98 && ranked[0].probability <= 1.0);
        assert!((ranked[0].loss - (1.0 + (-4.0f64).exp()).ln() - 4.0).abs() < 1e-4);
        assert_eq!(top_losses(ranked, 1).len(), 1);
    }
}
