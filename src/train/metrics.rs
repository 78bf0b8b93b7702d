//! Scores computed from an evaluation: per-class precision, recall and F1 from a confusion
//! matrix, and class probabilities from logits.

/// One class's scores on an evaluated set.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassMetrics {
    pub class: String,
    /// Of the samples predicted as this class, the share that are (0 when none is).
    pub precision: f64,
    /// Of the samples of this class, the share predicted as it (0 when there are none).
    pub recall: f64,
    /// The harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
    /// Samples of this class.
    pub support: usize,
}

/// Each class's precision, recall and F1 from `counts[actual][predicted]` (scikit-learn's
/// definitions, with 0 where a ratio has no samples).
pub fn per_class(classes: &[String], counts: &[Vec<usize>]) -> Vec<ClassMetrics> {
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    classes
        .iter()
        .enumerate()
        .map(|(i, class)| {
            let hit = counts
                .get(i)
                .and_then(|row| row.get(i))
                .copied()
                .unwrap_or(0);
            let support: usize = counts.get(i).map_or(0, |row| row.iter().sum());
            let predicted: usize = counts.iter().filter_map(|row| row.get(i)).sum();
            let (precision, recall) = (ratio(hit, predicted), ratio(hit, support));
            let f1 = match precision + recall {
                s if s > 0.0 => 2.0 * precision * recall / s,
                _ => 0.0,
            };
            ClassMetrics {
                class: class.clone(),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect()
}

/// Counts[actual][predicted].
pub fn confusion_counts(predictions: &[super::Prediction], classes: usize) -> Vec<Vec<usize>> {
    let mut counts = vec![vec![0; classes]; classes];
    for p in predictions {
        counts[p.actual][p.predicted] += 1;
    }
    counts
}

/// The softmax of one sample's logits.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - top).exp()).collect();
    let total: f32 = exp.iter().sum();
    exp.iter().map(|e| e / total).collect()
}

/// The `k` most probable classes of `probabilities`, most probable first (ties: the lower
/// class index first), as (class index, probability).
pub fn top_k(probabilities: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = probabilities.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_class_scores_follow_the_confusion_matrix() {
        let classes = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        // a: 3 right, 1 taken for b; b: 2 right; c: never seen, never predicted.
        let counts = vec![vec![3, 1, 0], vec![0, 2, 0], vec![0, 0, 0]];
        let m = per_class(&classes, &counts);
        assert_eq!((m[0].precision, m[0].recall, m[0].support), (1.0, 0.75, 4));
        assert!((m[0].f1 - 2.0 * 0.75 / 1.75).abs() < 1e-12);
        assert!((m[1].precision - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m[1].recall, 1.0);
        assert_eq!((m[2].precision, m[2].recall, m[2].f1), (0.0, 0.0, 0.0));
    }

    #[test]
    fn probabilities_sum_to_one_and_top_k_is_ordered() {
        let p = softmax(&[1.0, 3.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let top = top_k(&p, 3);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 3, 2]);
        assert_eq!(top_k(&p[..2], 3).len(), 2);
    }
}
