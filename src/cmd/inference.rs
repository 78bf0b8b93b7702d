//! Inference from a checkpoint alone: `trainer evaluate` rebuilds the model and the test set
//! the checkpoint describes and measures the test accuracy again.

use std::path::Path;

use crate::cli::{EvaluateArgs, PredictArgs};
use crate::console::{Console, Progress, Silent, say};
use crate::data;
use crate::device::{self, BackendChoice, DeviceInfo};
use crate::error::{Result, TrainerError};
use crate::memory::MemoryPolicy;
use crate::model::checkpoint::{self, CheckpointMeta};
use crate::report::round4;
use crate::train::engine::Engine;
use crate::train::{self, Context, Evaluation};

/// `trainer evaluate`: the checkpoint's test accuracy measured again, and a failed verdict
/// when it differs from the one the checkpoint recorded.
pub fn evaluate(args: EvaluateArgs) -> Result<()> {
    let console = Console::new(args.quiet);
    let result = evaluate_checkpoint(
        &args.checkpoint,
        args.data.as_deref(),
        args.backend,
        args.batch_size as usize,
        &console,
    )?;
    console.info(&result.device.summary());
    console.result(&format!("model: {}", result.meta.model_name));
    console.result(&format!("test_samples: {}", result.test.predictions.len()));
    console.result(&format!("test_accuracy: {:.3}", result.test.accuracy));
    console.result(&format!(
        "recorded_test_accuracy: {:.3}",
        result.meta.test_accuracy
    ));
    if (round4(result.test.accuracy) - result.meta.test_accuracy).abs() > 1e-9 {
        return Err(TrainerError::VerdictFailed(format!(
            "the reloaded model scores {:.4}, the checkpoint recorded {:.4}",
            result.test.accuracy, result.meta.test_accuracy
        )));
    }
    Ok(())
}

/// `trainer predict`: one line per image (class and confidence), or one JSON array; a file
/// that cannot be read gets its own error line (an `error` entry in JSON) and the others
/// their results, then the exit code says that some failed.
pub fn predict(args: PredictArgs) -> Result<()> {
    let (_, _, outcomes) = predict_files(&args.checkpoint, &args.images, args.backend)?;
    let failed: Vec<&FileError> = outcomes
        .iter()
        .filter_map(|o| match o {
            FileOutcome::Failed(e) => Some(e),
            FileOutcome::Predicted(_) => None,
        })
        .collect();
    if args.json {
        let json = serde_json::to_string_pretty(&outcomes)
            .map_err(|e| TrainerError::Serialize(e.to_string()))?;
        say(&json);
    } else {
        for outcome in &outcomes {
            match outcome {
                FileOutcome::Predicted(p) => say(&format!(
                    "{}: {} (confidence {:.4})",
                    p.file, p.class, p.confidence
                )),
                FileOutcome::Failed(e) => {
                    eprintln!(
                        "trainer: error: cannot read image '{}': {}",
                        e.file, e.error
                    )
                }
            }
        }
    }
    match failed.len() {
        0 => Ok(()),
        n => Err(TrainerError::bad_input(format!(
            "{n} of {} image(s) could not be read{}",
            outcomes.len(),
            match (args.json, n == outcomes.len()) {
                (true, _) => " (their entries carry an \"error\")",
                (false, true) => " (named above)",
                (false, false) => " (named above); the others were classified",
            }
        ))),
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

/// What `trainer evaluate` found.
#[derive(Debug)]
pub struct CheckpointEvaluation {
    pub meta: CheckpointMeta,
    pub device: DeviceInfo,
    pub test: Evaluation,
}

/// Loads the checkpoint at `path`, rebuilds its test set (from the image folder `data` when
/// it has moved) and evaluates it.
pub fn evaluate_checkpoint(
    path: &Path,
    data: Option<&Path>,
    choice: BackendChoice,
    batch_size: usize,
    progress: &dyn Progress,
) -> Result<CheckpointEvaluation> {
    let opened = device::open(choice)?;
    let (net, mut meta) = checkpoint::load(path, &opened.device)?;
    match (&meta.data.folder, data) {
        (None, Some(_)) => {
            return Err(TrainerError::bad_input(
                "--data is for a checkpoint trained on an image folder; this one was trained on the stripe images, which evaluate generates again",
            ));
        }
        (Some(_), Some(moved)) if !moved.is_dir() => {
            return Err(TrainerError::bad_input(format!(
                "--data '{}' is not a folder",
                moved.display()
            )));
        }
        (Some(_), Some(moved)) => meta.data.folder = Some(moved.to_path_buf()),
        (Some(folder), None) if !folder.is_dir() => {
            return Err(TrainerError::bad_input(format!(
                "the checkpoint was trained on the image folder '{}', which is gone; if it moved, give its new place with --data (predict classifies single images)",
                folder.display()
            )));
        }
        _ => {}
    }
    let test_set = recorded_test_set(&meta)?;
    let on_test = Pass {
        batch_size,
        keep_logits: false,
        progress,
    };
    let test = run_pass(&net, &test_set, meta.classes.len(), &opened, on_test)?;
    Ok(CheckpointEvaluation {
        meta,
        device: opened.info,
        test,
    })
}

/// The test part the checkpoint's model was tested on: the recorded files of an image folder
/// (a folder that changed since is refused, naming the files), or the stripe images its data
/// settings regenerate.
fn recorded_test_set(meta: &CheckpointMeta) -> Result<data::ImageDataset> {
    match (&meta.data.folder, &meta.data_manifest) {
        (Some(folder), Some(manifest)) => {
            if !manifest.is_consistent() {
                return Err(TrainerError::bad_input(
                    "the checkpoint's list of data files does not match its digest (edited or corrupted)",
                ));
            }
            data::folder::recorded_test_set(
                folder,
                manifest,
                &meta.classes,
                meta.image_size,
                &meta.normalization,
            )
        }
        // Written before checkpoints listed the files: the folder is split again as then.
        _ => Ok(data::load_splits(&meta.data)?.test),
    }
}

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
}

/// Classifies image files with the model of a checkpoint, preprocessing them as the
/// checkpoint says (grayscale, resize, normalization): nothing else is needed. Runs through
/// the same protected evaluation as training, so a batch that does not fit is halved.
pub fn predict_files(
    checkpoint_path: &Path,
    files: &[std::path::PathBuf],
    choice: BackendChoice,
) -> Result<(CheckpointMeta, DeviceInfo, Vec<FileOutcome>)> {
    if files.is_empty() {
        return Err(crate::TrainerError::bad_input(
            "predict needs at least one image file",
        ));
    }
    let opened = device::open(choice)?;
    let (net, meta) = checkpoint::load(checkpoint_path, &opened.device)?;
    let mut samples = Vec::with_capacity(files.len());
    let mut read: Vec<std::result::Result<(), FileError>> = Vec::with_capacity(files.len());
    for file in files {
        match crate::data::image_file::read_image(file, meta.image_size, meta.channels) {
            Ok(mut image) => {
                meta.normalization.apply(&mut image);
                samples.push(data::Sample {
                    image: image.into(),
                    label: 0, // unknown: the loss of this evaluation means nothing
                    sample_id: file.display().to_string(),
                    recipe: None,
                });
                read.push(Ok(()));
            }
            Err(error) => read.push(Err(FileError {
                file: file.display().to_string(),
                error,
            })),
        }
    }
    let mut predictions = classify(&net, &meta, samples, &opened)?.into_iter();
    let outcomes = read
        .into_iter()
        .map(|r| match r {
            Ok(()) => predictions
                .next()
                .map(FileOutcome::Predicted)
                .ok_or_else(|| TrainerError::Serialize("a prediction is missing".into())),
            Err(e) => Ok(FileOutcome::Failed(e)),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((meta, opened.info, outcomes))
}

/// How one evaluation pass of a checkpoint runs.
struct Pass<'a> {
    batch_size: usize,
    keep_logits: bool,
    progress: &'a dyn Progress,
}

/// Evaluates `net` on `dataset` on the opened device, with the engine chosen for it and the
/// same memory protection as training.
fn run_pass(
    net: &crate::model::Net,
    dataset: &data::ImageDataset,
    classes: usize,
    opened: &device::OpenBackend,
    pass: Pass,
) -> Result<Evaluation> {
    let mut memory = MemoryPolicy::new(None, true)?;
    let ctx = Context {
        device: &opened.device,
        device_info: &opened.info,
        progress: pass.progress,
    };
    let engine = Engine::choose(
        &opened.device,
        net.spec(dataset.channels),
        classes,
        dataset.image_size,
    );
    let settings = train::EvalSettings {
        classes,
        engine: &engine,
        batch_size: pass.batch_size,
        keep_logits: pass.keep_logits,
    };
    train::evaluate(net, dataset, &settings, &mut memory, &ctx)
}

/// The predictions for `samples` (in order), through the same protected evaluation as
/// training.
fn classify(
    net: &crate::model::Net,
    meta: &CheckpointMeta,
    samples: Vec<data::Sample>,
    opened: &device::OpenBackend,
) -> Result<Vec<FilePrediction>> {
    if samples.is_empty() {
        return Ok(Vec::new());
    }
    let images = data::ImageDataset {
        samples,
        image_size: meta.image_size,
        channels: meta.channels,
    };
    let classes = meta.classes.len();
    let pass = Pass {
        batch_size: 256,
        keep_logits: true,
        progress: &Silent,
    };
    let evaluation = run_pass(net, &images, classes, &opened, pass)?;
    let predictions = evaluation
        .predictions
        .iter()
        .zip(evaluation.logits.chunks(classes))
        .map(|(p, logits)| {
            let top = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f32> = logits.iter().map(|l| (l - top).exp()).collect();
            let total: f32 = exp.iter().sum();
            FilePrediction {
                file: p.sample_id.clone(),
                class: meta.classes[p.predicted].clone(),
                confidence: p.confidence,
                probabilities: meta
                    .classes
                    .iter()
                    .cloned()
                    .zip(exp.iter().map(|e| e / total))
                    .collect(),
                logits: logits.to_vec(),
            }
        })
        .collect();
    Ok(predictions)
}
