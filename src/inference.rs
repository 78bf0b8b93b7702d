//! Inference from a checkpoint alone: `trainer evaluate` rebuilds the model and the test set
//! the checkpoint describes and measures the test accuracy again.

use std::path::Path;

use crate::backend::{self, BackendChoice, DeviceInfo};
use crate::checkpoint::{self, CheckpointMeta};
use crate::data;
use crate::error::Result;
use crate::memory::MemoryPolicy;
use crate::train::{self, Context, Evaluation, Progress};

/// What `trainer evaluate` found.
#[derive(Debug)]
pub struct CheckpointEvaluation {
    pub meta: CheckpointMeta,
    pub device: DeviceInfo,
    pub test: Evaluation,
}

/// Loads the checkpoint at `path`, regenerates its test set and evaluates it.
pub fn evaluate_checkpoint(
    path: &Path,
    choice: BackendChoice,
    batch_size: usize,
    progress: &dyn Progress,
) -> Result<CheckpointEvaluation> {
    let opened = backend::open(choice)?;
    let (net, meta) = checkpoint::load(path, &opened.device)?;
    let splits = data::load_splits(&meta.data)?;
    let mut memory = MemoryPolicy::new(None, true)?;
    let ctx = Context {
        device: &opened.device,
        device_info: &opened.info,
        progress,
    };
    let test = train::evaluate(
        &net,
        &splits.test,
        meta.classes.len(),
        batch_size,
        &mut memory,
        &ctx,
    )?;
    Ok(CheckpointEvaluation {
        meta,
        device: opened.info,
        test,
    })
}

/// The prediction for one image file.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FilePrediction {
    pub file: String,
    pub class: String,
    pub confidence: f32,
    /// Probability of each class, in the checkpoint's class order.
    pub probabilities: Vec<(String, f32)>,
}

/// Classifies image files with the model of a checkpoint, preprocessing them as the
/// checkpoint says (grayscale, resize, normalization): nothing else is needed.
pub fn predict_files(
    checkpoint_path: &Path,
    files: &[std::path::PathBuf],
    choice: BackendChoice,
) -> Result<(CheckpointMeta, DeviceInfo, Vec<FilePrediction>)> {
    use burn::prelude::*;
    use burn::tensor::activation::softmax;

    if files.is_empty() {
        return Err(crate::TrainerError::bad_input(
            "predict needs at least one image file",
        ));
    }
    let opened = backend::open(choice)?;
    let device = opened.device.clone();
    let (net, meta) = checkpoint::load(checkpoint_path, &device)?;
    let size = meta.image_size;
    let mut predictions = Vec::new();
    for chunk in files.chunks(256) {
        let mut pixels = Vec::with_capacity(chunk.len() * size * size);
        for file in chunk {
            let mut image = crate::folder::read_luminance(file, size).map_err(|e| {
                crate::TrainerError::bad_input(format!(
                    "cannot read image '{}': {e}",
                    file.display()
                ))
            })?;
            meta.normalization.apply(&mut image);
            pixels.extend(image);
        }
        let images = Tensor::<4>::from_data(
            TensorData::new(pixels, [chunk.len(), 1, size, size]),
            &device,
        );
        let probabilities = softmax(net.forward(images), 1)
            .try_into_data()
            .map_err(|e| crate::TrainerError::Device {
                backend: opened.info.backend.as_str().to_string(),
                reason: crate::error::root_cause(&e.to_string()),
            })?
            .try_to_vec_as::<f32>()
            .map_err(|e| crate::TrainerError::bad_input(format!("{e:?}")))?;
        let classes = meta.classes.len();
        for (file, row) in chunk.iter().zip(probabilities.chunks(classes)) {
            let (best, confidence) =
                row.iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |acc, (i, p)| {
                        if *p > acc.1 { (i, *p) } else { acc }
                    });
            predictions.push(FilePrediction {
                file: file.display().to_string(),
                class: meta.classes[best].clone(),
                confidence,
                probabilities: meta
                    .classes
                    .iter()
                    .cloned()
                    .zip(row.iter().copied())
                    .collect(),
            });
        }
    }
    Ok((meta, opened.info, predictions))
}
