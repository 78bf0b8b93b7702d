//! The train/val/test split, the same for stripe images and image folders: stratified by
//! class, so every class lands in every part in proportion, and seeded.

use serde::{Deserialize, Serialize};

use crate::rng;

/// How a data set was split. Checkpoints record it so that `evaluate` rebuilds the test part
/// that the model was tested on, also for packs written before the split was stratified.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitRule {
    /// Each class split on its own by a seeded permutation, then the classes mixed within
    /// each part: what every run does now.
    #[default]
    Stratified,
    /// One seeded permutation of all stripe images (packs written before the stratified
    /// split; a class could miss the test part entirely).
    Permutation,
}

impl SplitRule {
    /// Whether this is the rule of checkpoints that predate the field (they did not name it).
    pub fn is_legacy(&self) -> bool {
        *self == SplitRule::Permutation
    }

    /// The rule a checkpoint without the field was split by.
    pub fn legacy() -> SplitRule {
        SplitRule::Permutation
    }
}

/// Which part of the split a sample is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Train,
    Val,
    Test,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Train, Part::Val, Part::Test];

    /// "train", "val" or "test".
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Val => "val",
            Part::Test => "test",
        }
    }

    fn index(self) -> usize {
        match self {
            Part::Train => 0,
            Part::Val => 1,
            Part::Test => 2,
        }
    }
}

/// Splits `total` items by `shares`: val and test are rounded, train takes the rest. From 3
/// items on, every part gets at least one whatever the shares: a rounded val or test share
/// that would leave a part empty (0.1,0.45,0.45 of 10 rounds to 5 + 5, no training item) is
/// moved to the nearest count that does not. Where the rounding leaves every part an item,
/// the counts are the rounding's, as they always were (so older checkpoints' splits rebuild).
pub fn split_counts(total: usize, shares: [f64; 3]) -> [usize; 3] {
    let val = (total as f64 * shares[1]).round() as usize;
    let test = (total as f64 * shares[2]).round() as usize;
    // A part with a share gets at least one item (a part without one, as the test part of a
    // pre-split folder's train/, stays empty); train keeps at least one.
    let (min_val, min_test) = (usize::from(shares[1] > 0.0), usize::from(shares[2] > 0.0));
    if total < 1 + min_val + min_test {
        let val = val.min(total);
        let test = test.min(total - val);
        return [total - val - test, val, test];
    }
    let val = val.clamp(min_val, total - 1 - min_test);
    let test = test.clamp(min_test, total - 1 - val);
    [total - val - test, val, test]
}

/// The sizes of the parts when each of `per_class` (items of each class) is split on its own.
pub fn stratified_counts(per_class: &[usize], shares: [f64; 3]) -> [usize; 3] {
    per_class.iter().fold([0; 3], |mut sum, &n| {
        for (s, c) in sum.iter_mut().zip(split_counts(n, shares)) {
            *s += c;
        }
        sum
    })
}

/// The smallest number of items a class needs so that each part of `split` gets one.
pub fn minimum_per_class(split: [f64; 3]) -> usize {
    (3..10_000)
        .find(|&n| split_counts(n, split).iter().all(|&c| c >= 1))
        .unwrap_or(10_000)
}

/// Splits items given by class (`by_class[label]`, in a fixed order): each class by its own
/// seeded permutation into the shares of `split`, then the classes mixed within each part by
/// another seeded permutation. Returns the train, val and test parts.
pub fn stratified<T: Clone>(by_class: &[Vec<T>], split: [f64; 3], seed: u64) -> [Vec<T>; 3] {
    let mut parts: [Vec<T>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for (label, items) in by_class.iter().enumerate() {
        let order = rng::permutation(
            items.len(),
            rng::key(seed, rng::stream::SPLIT, label as u32 + 1),
        );
        let [train, val, _] = split_counts(items.len(), split);
        for (position, &index) in order.iter().enumerate() {
            let part = if position < train {
                Part::Train
            } else if position < train + val {
                Part::Val
            } else {
                Part::Test
            };
            parts[part.index()].push(items[index].clone());
        }
    }
    // Mix the classes within each part (the training loader reshuffles every epoch anyway).
    for (i, part) in parts.iter_mut().enumerate() {
        let order = rng::permutation(
            part.len(),
            rng::key(seed, rng::stream::SPLIT, 1000 + i as u32),
        );
        *part = order.into_iter().map(|j| part[j].clone()).collect();
    }
    parts
}

/// The split of packs written before the stratified one: one seeded permutation of all
/// items, cut at the sizes `split_counts(all.len(), split)`.
pub fn permutation<T: Clone>(all: &[T], split: [f64; 3], seed: u64) -> [Vec<T>; 3] {
    let order = rng::permutation(all.len(), rng::key(seed, rng::stream::SPLIT, 0));
    let [train, val, _] = split_counts(all.len(), split);
    let pick = |range: std::ops::Range<usize>| -> Vec<T> {
        order[range].iter().map(|&i| all[i].clone()).collect()
    };
    [
        pick(0..train),
        pick(train..train + val),
        pick(train + val..all.len()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_split_needs_three_items_per_class() {
        assert_eq!(minimum_per_class([0.6, 0.2, 0.2]), 3);
        assert_eq!(minimum_per_class([0.8, 0.1, 0.1]), 3);
    }

    /// The README's "every class appears in train, val and test" for any --split: from the
    /// minimum on, every class size gives every part an item (before, 0.1,0.45,0.45 gave a
    /// class of 10 no training image, and 0.2,0.4,0.4 a class of 4).
    #[test]
    fn every_part_gets_an_item_for_any_split_and_class_size() {
        let steps: Vec<f64> = (1..100).map(|i| i as f64 / 100.0).collect();
        for &val in &steps {
            for &test in &steps {
                let train = 1.0 - val - test;
                if train <= 0.0 {
                    continue;
                }
                let shares = [train, val, test];
                let minimum = minimum_per_class(shares);
                for n in minimum..300 {
                    let counts = split_counts(n, shares);
                    assert_eq!(counts.iter().sum::<usize>(), n, "{shares:?} of {n}");
                    assert!(
                        counts.iter().all(|&c| c >= 1),
                        "{shares:?} of {n} gives {counts:?}"
                    );
                }
            }
        }
        assert_eq!(split_counts(10, [0.1, 0.45, 0.45]), [1, 5, 4]);
        assert_eq!(split_counts(4, [0.2, 0.4, 0.4]), [1, 2, 1]);
    }

    /// Where the rounding gave every part an item, the counts did not change (older
    /// checkpoints rebuild their split from them).
    #[test]
    fn the_rounding_is_kept_where_it_left_no_part_empty() {
        assert_eq!(split_counts(140, [0.6, 0.2, 0.2]), [84, 28, 28]);
        assert_eq!(split_counts(37, [0.6, 0.2, 0.2]), [23, 7, 7]);
        assert_eq!(split_counts(420, [0.7, 0.15, 0.15]), [294, 63, 63]);
    }

    #[test]
    fn every_class_is_in_every_part_in_proportion() {
        let by_class: Vec<Vec<(usize, usize)>> =
            (0..3).map(|c| (0..5).map(|i| (c, i)).collect()).collect();
        for seed in 0..20 {
            let parts = stratified(&by_class, [0.6, 0.2, 0.2], seed);
            for (part, expected) in parts.iter().zip([3, 1, 1]) {
                for class in 0..3 {
                    let n = part.iter().filter(|(c, _)| *c == class).count();
                    assert_eq!(n, expected, "seed {seed}");
                }
            }
        }
    }

    #[test]
    fn a_part_without_a_share_stays_empty() {
        // A pre-split folder's train/ is cut into train and validation only.
        for total in 2..50 {
            let [train, val, test] = split_counts(total, [0.8, 0.2, 0.0]);
            assert_eq!(test, 0, "{total}");
            assert!(val >= 1 && train >= 1, "{total}");
        }
        assert_eq!(split_counts(10, [0.8, 0.2, 0.0]), [8, 2, 0]);
    }

    #[test]
    fn the_counts_are_the_sum_of_each_class_split() {
        assert_eq!(stratified_counts(&[140; 3], [0.6, 0.2, 0.2]), [252, 84, 84]);
        assert_eq!(stratified_counts(&[5, 7], [0.6, 0.2, 0.2]), [8, 2, 2]);
    }
}
