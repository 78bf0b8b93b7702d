//! A checkpoint scored on any labelled folder: class subfolders whose names are the
//! checkpoint's classes (a pre-split folder's test/ when there is one), every image read at
//! the checkpoint's size and channels and normalized as in training; accuracy, per-class
//! precision, recall and F1, and the confusion matrix.

use std::path::{Path, PathBuf};

use super::inputs::{self, Conversions};
use super::{Loaded, Pass, run_pass};
use crate::console::Progress;
use crate::data::{self, ImageDataset, Sample};
use crate::error::{Result, TrainerError};
use crate::model::checkpoint::CheckpointMeta;
use crate::train::Evaluation;
use crate::train::metrics::{self, ClassMetrics};

/// The images of a labelled folder, read for a checkpoint.
#[derive(Debug)]
pub struct LabelledSet {
    /// The folder whose class subfolders were read.
    pub folder: PathBuf,
    /// Where it came from, in words ("the test/ part of the pre-split folder 'x'").
    pub origin: String,
    pub dataset: ImageDataset,
    pub conversions: Conversions,
    /// Image files outside every class subfolder, left out.
    pub left_out: usize,
    /// Images byte-identical to one the checkpoint trained or validated on (its manifest's
    /// checksums): they make the accuracy overstate.
    pub seen_in_training: usize,
}

/// A scored set: the evaluation, its confusion counts and each class's scores.
#[derive(Debug)]
pub struct Scored {
    pub evaluation: Evaluation,
    pub confusion: Vec<Vec<usize>>,
    pub per_class: Vec<ClassMetrics>,
}

/// The folder of `data` to score: its test/ when it is split already, else all of it.
pub fn scored_folder(data: &Path) -> Result<(PathBuf, String)> {
    Ok(match data::layout::detect(data)? {
        data::layout::Layout::PreSplit { test, .. } => {
            let origin = format!(
                "the test part ('{}') of the pre-split folder '{}'",
                test.display(),
                data.display()
            );
            (test, origin)
        }
        data::layout::Layout::Flat { root } => {
            let origin = format!("every image of '{}'", root.display());
            (root, origin)
        }
    })
}

/// Refuses a folder whose classes are not the checkpoint's, naming both lists; a folder of
/// only some of them is told why (the scores cover every class) and pointed to `predict`.
pub fn check_classes(folder: &Path, found: &[String], checkpoint: &[String]) -> Result<()> {
    let mut expected = checkpoint.to_vec();
    expected.sort();
    if found == expected.as_slice() {
        return Ok(());
    }
    if found.is_empty() {
        return Err(TrainerError::bad_input(format!(
            "'{}' has no class folders: evaluate needs the images sorted into a folder per class, named as the checkpoint's ({}); `trainer predict` classifies unlabelled images",
            folder.display(),
            checkpoint.join(", ")
        )));
    }
    let missing: Vec<&str> = expected
        .iter()
        .filter(|c| !found.contains(c))
        .map(|c| c.as_str())
        .collect();
    if found.iter().all(|c| expected.contains(c)) {
        return Err(TrainerError::bad_input(format!(
            "'{}' has {} of the checkpoint's {} classes (none of {}): evaluate scores every class (per-class scores, macro F1, the confusion matrix), so it needs them all; `trainer predict` gives the accuracy of a folder of some of them",
            folder.display(),
            found.len(),
            expected.len(),
            missing.join(", ")
        )));
    }
    Err(TrainerError::bad_input(format!(
        "the classes of '{}' ({}) are not the checkpoint's ({}); name the class folders as the checkpoint does",
        folder.display(),
        found.join(", "),
        checkpoint.join(", ")
    )))
}

/// Reads the labelled folder `data` for the checkpoint `meta`: unreadable images stop it
/// (exit 2, the count and the first ten named) before anything is written.
pub fn labelled_set(
    meta: &CheckpointMeta,
    data: &Path,
    progress: &dyn Progress,
) -> Result<LabelledSet> {
    let (folder, origin) = scored_folder(data)?;
    check_classes(&folder, &data::layout::class_names(&folder)?, &meta.classes)?;
    let found = inputs::gather(std::slice::from_ref(&folder))?;
    let left_out = found.iter().filter(|i| i.folder_class.is_none()).count();
    let seen: std::collections::HashSet<&str> = meta
        .data_manifest
        .iter()
        .flat_map(|m| m.trained_checksums())
        .collect();
    let mut seen_in_training = 0;
    let mut conversions = Conversions::default();
    let (mut samples, mut unreadable) = (Vec::new(), Vec::new());
    progress.start("reading", found.len() as u64);
    for input in found {
        progress.advance(1, "");
        let Some(label) = input
            .folder_class
            .as_ref()
            .and_then(|c| meta.classes.iter().position(|k| k == c))
        else {
            continue;
        };
        let read = std::fs::read(&input.path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                if seen.contains(crate::checksum::checksum(&bytes).as_str()) {
                    seen_in_training += 1;
                }
                inputs::read_bytes(&bytes, meta.image_size, meta.channels, &mut conversions)
            });
        match read {
            Ok(mut image) => {
                meta.normalization.apply(&mut image);
                let id = input
                    .path
                    .strip_prefix(&folder)
                    .unwrap_or(input.path.as_path());
                samples.push(Sample {
                    image: image.into(),
                    label,
                    sample_id: id.to_string_lossy().replace('\\', "/"),
                    recipe: None,
                });
            }
            Err(why) => unreadable.push(format!("{} ({why})", input.path.display())),
        }
    }
    progress.finish();
    refuse_unreadable(&unreadable)?;
    if samples.is_empty() {
        return Err(TrainerError::bad_input(format!(
            "no image files in the class folders of '{}'",
            folder.display()
        )));
    }
    let dataset = ImageDataset {
        samples,
        image_size: meta.image_size,
        channels: meta.channels,
    };
    Ok(LabelledSet {
        folder,
        origin,
        dataset,
        conversions,
        left_out,
        seen_in_training,
    })
}

fn refuse_unreadable(unreadable: &[String]) -> Result<()> {
    if unreadable.is_empty() {
        return Ok(());
    }
    Err(TrainerError::bad_input(format!(
        "{} image(s) cannot be read, so nothing was scored: {}{}",
        unreadable.len(),
        unreadable[..unreadable.len().min(10)].join(", "),
        if unreadable.len() > 10 { ", ..." } else { "" }
    )))
}

/// Scores the loaded model on `dataset`: predictions, confusion counts, per-class scores.
pub fn score(
    loaded: &Loaded,
    dataset: &ImageDataset,
    batch_size: usize,
    progress: &dyn Progress,
) -> Result<Scored> {
    let pass = Pass {
        batch_size,
        keep_logits: false,
        progress,
    };
    let evaluation = run_pass(loaded, dataset, pass)?;
    let classes = &loaded.meta.classes;
    let confusion = metrics::confusion_counts(&evaluation.predictions, classes.len());
    let per_class = metrics::per_class(classes, &confusion);
    Ok(Scored {
        evaluation,
        confusion,
        per_class,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_classes_are_refused_naming_both_lists() {
        let mine = ["cat".to_string(), "dog".to_string()];
        assert!(check_classes(Path::new("d"), &mine, &["dog".into(), "cat".into()]).is_ok());
        let err = check_classes(Path::new("d"), &["cat".into(), "cow".into()], &mine)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("(cat, cow)") && err.contains("(cat, dog)"),
            "{err}"
        );
        // Some of the classes: said why, and where to go instead.
        let err = check_classes(Path::new("d"), &["cat".into()], &mine)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("'d' has 1 of the checkpoint's 2 classes (none of dog)")
                && err.contains("`trainer predict` gives the accuracy"),
            "{err}"
        );
        // Loose images, no class folders at all: said so, not "0 of the classes".
        let err = check_classes(Path::new("d"), &[], &mine)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("'d' has no class folders")
                && err.contains("(cat, dog)")
                && err.contains("`trainer predict` classifies unlabelled images"),
            "{err}"
        );
    }
}
