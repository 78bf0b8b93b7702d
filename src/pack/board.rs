//! The pack's `tensorboard/` folder: one TensorBoard run per model (`tensorboard/baseline/`,
//! `tensorboard/cnn/`, ...), each one event file with the epoch's training and validation
//! loss and accuracy, training samples/s and learning rate (its last step's), and the model's confusion matrix and review
//! grid as images. `tensorboard --logdir PACK/tensorboard` shows one pack;
//! `tensorboard --logdir SWEEP/runs` compares a sweep's tasks.

use crate::error::{Result, TrainerError};
use crate::pack::Staging;
use crate::pack::evidence::{draw_confusion_of, draw_review_grid_of};
use crate::pack::tensorboard::{EventWriter, file_name, png_size};
use crate::report::{ModelRun, Report};

/// The folder inside the pack.
pub const FOLDER: &str = "tensorboard";

/// The scalar tags, one value per epoch (step = epoch).
pub const SCALARS: [&str; 6] = [
    "loss/train",
    "loss/validation",
    "accuracy/train",
    "accuracy/validation",
    "throughput/train_samples_per_sec",
    "learning_rate",
];

/// Writes every model's run.
pub fn write_runs(staging: &Staging, report: &Report) -> Result<()> {
    for run in &report.models {
        let events = run_events(report, run)?;
        let start = report.started_unix as f64;
        staging.write(
            &format!("{FOLDER}/{}/{}", run.spec.slug(), file_name(start)),
            events,
        )?;
    }
    Ok(())
}

/// One model's event file.
fn run_events(report: &Report, run: &ModelRun) -> Result<Vec<u8>> {
    let mut clock = report.started_unix as f64;
    let mut events = EventWriter::new(clock);
    for epoch in &run.trained.history {
        clock += epoch.train_seconds + epoch.val_seconds;
        events.at(clock);
        let step = epoch.epoch as i64;
        let throughput = epoch.train_samples as f64 / epoch.train_seconds.max(1e-9);
        let values = [
            epoch.train_loss,
            epoch.val_loss,
            epoch.train_acc,
            epoch.val_acc,
            throughput,
            epoch.lr,
        ];
        for (tag, value) in SCALARS.iter().zip(values) {
            events.scalar(tag, step, value);
        }
    }
    let last = run.trained.history.last().map_or(0, |e| e.epoch) as i64;
    for (tag, png) in [
        (
            "confusion_matrix",
            drawn(|p| draw_confusion_of(p, report, run))?,
        ),
        (
            "review_grid",
            drawn(|p| draw_review_grid_of(p, report, run))?,
        ),
    ] {
        if let Some((width, height, colorspace)) = png_size(&png) {
            events.image(tag, last, &png, width, height, colorspace);
        }
    }
    Ok(events.into_bytes())
}

/// A plot's PNG bytes: drawn into a scratch file (the plotting code writes files), read back,
/// removed.
fn drawn(draw: impl FnOnce(&std::path::Path) -> Result<()>) -> Result<Vec<u8>> {
    let path = std::env::temp_dir().join(format!(
        "trainer-board-{}-{:?}.png",
        std::process::id(),
        std::thread::current().id()
    ));
    let result = draw(&path)
        .and_then(|()| std::fs::read(&path).map_err(|e| TrainerError::io("reading", &path, e)));
    let _ = std::fs::remove_file(&path);
    result
}
