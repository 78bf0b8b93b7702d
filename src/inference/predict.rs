//! `trainer predict`'s work: images classified in batches of [`PREDICT_BATCH`] (memory stays
//! bounded on a big folder), each outcome handed on as soon as its batch is done, with the
//! accuracy when the images lie in folders named by the checkpoint's classes.

use super::inputs::{self, Conversions, Input};
use super::{Loaded, Pass, run_pass};
use crate::config::{PREDICT_BATCH, PREDICT_TOP};
use crate::console::{Progress, Silent};
use crate::data::{ImageDataset, Sample};
use crate::error::{Result, TrainerError};
use crate::train::metrics;

/// The prediction for one image file.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FilePrediction {
    pub file: String,
    pub class: String,
    pub confidence: f32,
    /// Probability of each class, in the checkpoint's class order.
    pub probabilities: Vec<(String, f32)>,
    /// The model's raw outputs, in the checkpoint's class order (what the ONNX export and
    /// the PyTorch Sequential give for the same image).
    pub logits: Vec<f32>,
    /// The class folder the image lies in, when it is one of the checkpoint's classes.
    #[serde(skip)]
    pub label: Option<String>,
}

impl FilePrediction {
    /// The [`PREDICT_TOP`] most probable classes, most probable first.
    pub fn top(&self) -> Vec<(String, f32)> {
        let probabilities: Vec<f32> = self.probabilities.iter().map(|p| p.1).collect();
        metrics::top_k(&probabilities, PREDICT_TOP)
            .into_iter()
            .map(|(i, p)| (self.probabilities[i].0.clone(), p))
            .collect()
    }
}

/// An image file `predict` could not read, and why.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FileError {
    pub file: String,
    pub error: String,
}

/// What `predict` made of one file: its prediction, or why it could not be read.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(untagged)]
pub enum FileOutcome {
    Predicted(FilePrediction),
    Failed(FileError),
}

/// What a whole `predict` found, besides each file's outcome.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub files: usize,
    pub failed: usize,
    /// Predicted images that lie in a folder named by one of the checkpoint's classes ...
    pub labelled: usize,
    /// ... and of them, the ones predicted as that class.
    pub correct: usize,
    /// Whether every image found in a given folder lies in such a class folder.
    pub folders_labelled: bool,
    pub conversions: Conversions,
}

impl Summary {
    /// The accuracy on the labelled images, when the folders given are labelled by class.
    pub fn accuracy(&self) -> Option<f64> {
        (self.folders_labelled && self.labelled > 0)
            .then(|| self.correct as f64 / self.labelled as f64)
    }
}

/// Classifies every input in batches; `emit` gets each outcome, in input order, as soon as
/// its batch is done; `progress` counts the images.
pub fn predict(
    loaded: &Loaded,
    files: &[Input],
    progress: &dyn Progress,
    mut emit: impl FnMut(FileOutcome),
) -> Result<Summary> {
    if files.is_empty() {
        return Err(TrainerError::bad_input(
            "predict found no image files (PNG, JPEG, BMP) in what it was given",
        ));
    }
    let classes = &loaded.meta.classes;
    let mut summary = Summary {
        files: files.len(),
        folders_labelled: files.iter().any(|i| i.folder_class.is_some()),
        ..Summary::default()
    };
    progress.start("predict", files.len() as u64);
    for batch in files.chunks(PREDICT_BATCH) {
        for outcome in predict_batch(loaded, batch, &mut summary.conversions)? {
            match &outcome {
                FileOutcome::Failed(_) => summary.failed += 1,
                FileOutcome::Predicted(p) => {
                    if let Some(label) = &p.label {
                        summary.labelled += 1;
                        summary.correct += usize::from(*label == p.class);
                    }
                }
            }
            emit(outcome);
        }
        progress.advance(batch.len() as u64, "");
    }
    progress.finish();
    summary.folders_labelled &= files
        .iter()
        .filter(|i| i.folder_class.is_some())
        .all(|i| i.folder_class.as_ref().is_some_and(|c| classes.contains(c)));
    Ok(summary)
}

/// One batch: each file read at the checkpoint's size and mode, the readable ones classified
/// together.
fn predict_batch(
    loaded: &Loaded,
    batch: &[Input],
    conversions: &mut Conversions,
) -> Result<Vec<FileOutcome>> {
    let meta = &loaded.meta;
    let mut samples = Vec::with_capacity(batch.len());
    let mut read = Vec::with_capacity(batch.len());
    for input in batch {
        let file = input.path.display().to_string();
        match inputs::read(&input.path, meta.image_size, meta.channels, conversions) {
            Ok(mut image) => {
                meta.normalization.apply(&mut image);
                samples.push(Sample {
                    image: image.into(),
                    label: 0, // unknown: the loss of this evaluation means nothing
                    sample_id: file,
                    recipe: None,
                });
                read.push(Ok(input));
            }
            Err(error) => read.push(Err(FileError { file, error })),
        }
    }
    let mut predictions = classify(loaded, samples)?.into_iter();
    read.into_iter()
        .map(|r| match r {
            Ok(input) => predictions
                .next()
                .map(|mut p| {
                    p.label = input
                        .folder_class
                        .clone()
                        .filter(|c| meta.classes.contains(c));
                    FileOutcome::Predicted(p)
                })
                .ok_or_else(|| TrainerError::Serialize("a prediction is missing".into())),
            Err(e) => Ok(FileOutcome::Failed(e)),
        })
        .collect()
}

/// The predictions for `samples` (in order), through the same protected evaluation as
/// training.
fn classify(loaded: &Loaded, samples: Vec<Sample>) -> Result<Vec<FilePrediction>> {
    if samples.is_empty() {
        return Ok(Vec::new());
    }
    let meta = &loaded.meta;
    let images = ImageDataset {
        samples,
        image_size: meta.image_size,
        channels: meta.channels,
    };
    let classes = meta.classes.len();
    let pass = Pass {
        batch_size: PREDICT_BATCH,
        keep_logits: true,
        progress: &Silent,
    };
    let evaluation = run_pass(loaded, &images, pass)?;
    Ok(evaluation
        .predictions
        .iter()
        .zip(evaluation.logits.chunks(classes))
        .map(|(p, logits)| FilePrediction {
            file: p.sample_id.clone(),
            class: meta.classes[p.predicted].clone(),
            confidence: p.confidence,
            probabilities: meta
                .classes
                .iter()
                .cloned()
                .zip(metrics::softmax(logits))
                .collect(),
            logits: logits.to_vec(),
            label: None,
        })
        .collect())
}

/// `--csv` names a file that can be written, checked before any work: not a folder, under no
/// file, and not an existing file unless `--force`; its folder is made when missing (as
/// `trainer export` and a run's `--out` do).
pub fn check_csv(csv: &std::path::Path, force: bool) -> crate::error::Result<()> {
    let under_a_file = csv
        .ancestors()
        .skip(1)
        .any(|a| !a.as_os_str().is_empty() && a.exists() && !a.is_dir());
    let why = if csv.is_dir() {
        "is a folder; give a file name"
    } else if under_a_file {
        "is under a file, not a folder"
    } else if csv.exists() && !force {
        "exists; pass --force to replace it, or give another name"
    } else {
        if let Some(parent) = csv.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| crate::error::TrainerError::io("creating", parent, e))?;
        }
        return Ok(());
    };
    Err(crate::error::TrainerError::bad_input(format!(
        "--csv '{}' {why}",
        csv.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_only_for_folders_labelled_by_class() {
        let mut s = Summary {
            files: 4,
            labelled: 4,
            correct: 3,
            folders_labelled: true,
            ..Summary::default()
        };
        assert_eq!(s.accuracy(), Some(0.75));
        s.folders_labelled = false;
        assert_eq!(s.accuracy(), None);
    }

    #[test]
    fn the_top_classes_come_most_probable_first() {
        let p = FilePrediction {
            file: "x".into(),
            class: "b".into(),
            confidence: 0.6,
            probabilities: vec![
                ("a".into(), 0.1),
                ("b".into(), 0.6),
                ("c".into(), 0.2),
                ("d".into(), 0.1),
            ],
            logits: vec![],
            label: None,
        };
        let top = p.top();
        assert_eq!(
            top.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
            ["b", "c", "a"]
        );
    }
}
