//! `trainer evaluate` and `trainer predict`: flags in, [`crate::inference`] called, results
//! printed (and the evaluation pack written).

use std::path::Path;

use crate::cli::{EvaluateArgs, PredictArgs};
use crate::config::EVALUATION_OUT;
use crate::console::{Console, aside, say};
use crate::error::{Result, TrainerError};
use crate::inference::folder::{self, Scored};
use crate::inference::predict::{self, FileOutcome};
use crate::inference::recorded::{self, Target};
use crate::inference::{self, Loaded, inputs};
use crate::pack::evaluation::{self, EvaluationPack};
use crate::pack::{self, OutputLock, PackKind, Staging};
use crate::report::round4;

/// `trainer evaluate`: the checkpoint's recorded test set scored again (a failed verdict when
/// it differs from what the checkpoint recorded), or a labelled folder scored (`--data`).
pub fn evaluate(args: EvaluateArgs) -> Result<()> {
    evaluate_run(args).map_err(|e| {
        without_pack(
            e,
            "stopped before finishing; nothing was written (an earlier evaluation folder, if any, is untouched)",
        )
    })
}

/// [`evaluate`], its interruption said by the caller.
fn evaluate_run(args: EvaluateArgs) -> Result<()> {
    let console = Console::new(args.quiet);
    let out = args.out.clone();
    if let Some(out) = &out {
        pack::check_target(out, PackKind::Evaluation)?;
    }
    let mut loaded = inference::load(&args.checkpoint, args.backend)?;
    let target = recorded::target(&loaded.meta, args.data.as_deref())?;
    let (origin, set, conversions, seen) = match &target {
        Target::Recorded { moved } => {
            let set = recorded::test_set(&mut loaded, moved.as_deref())?;
            let origin = "the test set the checkpoint records".to_string();
            (origin, set, None, 0)
        }
        Target::Folder(dir) => {
            let out = out.clone().unwrap_or_else(|| EVALUATION_OUT.into());
            pack::check_target(&out, PackKind::Evaluation)?;
            pack::check_outside(&out, dir)?;
            let read = folder::labelled_set(&loaded.meta, dir, &console)?;
            let line = read
                .conversions
                .line(loaded.meta.image_size, loaded.meta.channels);
            if let Some(line) = &line {
                console.warn(line);
            }
            if read.left_out > 0 {
                console.warn(&format!(
                    "{} image file(s) outside the class folders of '{}' left out",
                    read.left_out,
                    read.folder.display()
                ));
            }
            if read.seen_in_training > 0 {
                console.warn(&format!(
                    "{} of {} images are byte-identical to the checkpoint's training/validation images: the accuracy overstates",
                    read.seen_in_training,
                    read.dataset.samples.len()
                ));
            }
            (read.origin, read.dataset, line, read.seen_in_training)
        }
    };
    if let Some(line) = inference::engine_line(&loaded, args.batch_size as usize) {
        console.info(&line);
    }
    let scored = folder::score(&loaded, &set, args.batch_size as usize, &console)?;
    console.info(&loaded.opened.info.summary());
    console.result(&format!("model: {}", loaded.meta.model_name));
    console.info(&format!("evaluated: {origin}"));
    let pack_out = match &target {
        Target::Folder(_) => Some(out.unwrap_or_else(|| EVALUATION_OUT.into())),
        Target::Recorded { .. } => out,
    };
    if let Some(out) = &pack_out {
        let pack = EvaluationPack {
            checkpoint: &args.checkpoint,
            meta: &loaded.meta,
            origin: &origin,
            set: &set,
            scored: &scored,
            conversions: conversions.as_deref(),
            seen_in_training: seen,
            command: crate::cmd::command_line(),
        };
        write_pack(out, &pack, &console)?;
    }
    match target {
        Target::Recorded { .. } => print_recorded(&loaded, &scored, &console),
        Target::Folder(_) => {
            print_folder(&scored, &console);
            Ok(())
        }
    }
}

/// Writes the evaluation pack into `out` (staged, then swapped in) and names its files.
fn write_pack(out: &Path, pack: &EvaluationPack, console: &Console) -> Result<()> {
    let _lock = OutputLock::acquire(out)?;
    let staging = Staging::begin(out, PackKind::Evaluation)?;
    evaluation::write(&staging, pack)?;
    if crate::interrupt::requested() {
        return Err(TrainerError::Interrupted);
    }
    let kept = staging.commit()?;
    if let Some(note) = pack::kept_note(&kept) {
        console.info(&note);
    }
    for file in evaluation::FILES {
        console.result(&out.join(file).display().to_string());
    }
    Ok(())
}

/// The recorded test set's result, and a failed verdict when it is not what was recorded.
fn print_recorded(loaded: &Loaded, scored: &Scored, console: &Console) -> Result<()> {
    let (test, meta) = (&scored.evaluation, &loaded.meta);
    console.result(&format!("test_samples: {}", test.predictions.len()));
    console.result(&format!("test_accuracy: {:.3}", test.accuracy));
    console.result(&format!(
        "recorded_test_accuracy: {:.3}",
        meta.test_accuracy
    ));
    print_class_scores(scored, console);
    if (round4(test.accuracy) - meta.test_accuracy).abs() > 1e-9 {
        return Err(TrainerError::VerdictFailed(format!(
            "the reloaded model scores {:.4}, the checkpoint recorded {:.4}",
            test.accuracy, meta.test_accuracy
        )));
    }
    Ok(())
}

/// A folder's result: samples, accuracy, macro F1, and each class's scores.
fn print_folder(scored: &Scored, console: &Console) {
    let evaluation = &scored.evaluation;
    console.result(&format!("samples: {}", evaluation.predictions.len()));
    console.result(&format!("accuracy: {:.3}", evaluation.accuracy));
    print_class_scores(scored, console);
}

/// The macro F1 and each class's precision, recall and F1 (the recorded test set's too).
fn print_class_scores(scored: &Scored, console: &Console) {
    console.result(&format!(
        "macro_f1: {:.3}",
        evaluation::macro_f1(&scored.per_class)
    ));
    for m in &scored.per_class {
        console.info(&format!(
            "  {}: precision {:.3}, recall {:.3}, F1 {:.3} ({} images)",
            m.class, m.precision, m.recall, m.f1, m.support
        ));
    }
}

/// `trainer predict`: one line per image (class and confidence) as its batch is done, or one
/// JSON array; `--csv` writes every prediction with its top classes. A file that cannot be
/// read gets its own error line (an `error` entry in JSON and in the CSV) and the others their
/// results, then the exit code says that some failed.
pub fn predict(args: PredictArgs) -> Result<()> {
    let console = Console::new(args.json);
    if let Some(csv) = &args.csv {
        predict::check_csv(csv, args.force)?;
    }
    predict_checked(args, &console)
        .map_err(|e| without_pack(e, "stopped before finishing; nothing was written"))
}

/// An interruption said without a training pack's words (`what`: what was and was not
/// written).
fn without_pack(error: TrainerError, what: &str) -> TrainerError {
    match error {
        TrainerError::Interrupted => TrainerError::InterruptedKept(what.to_string()),
        other => other,
    }
}

/// [`predict`] once its `--csv` is checked.
fn predict_checked(args: PredictArgs, console: &Console) -> Result<()> {
    let loaded = inference::load(&args.checkpoint, args.backend)?;
    let found = inputs::gather(&args.images)?;
    // On stderr: predict's stdout holds its results only (one line an image, or the JSON).
    if let Some(line) = inference::engine_line(&loaded, crate::config::PREDICT_BATCH) {
        aside(&line);
    }
    let mut outcomes = Vec::new();
    let mut rows = vec![evaluation::predictions_header()];
    let summary = predict::predict(&loaded, &found, console, |outcome| {
        rows.push(match &outcome {
            FileOutcome::Predicted(p) => evaluation::prediction_row(p),
            FileOutcome::Failed(e) => evaluation::failed_row(e),
        });
        match (&outcome, args.json) {
            (_, true) => outcomes.push(outcome),
            (FileOutcome::Predicted(p), false) => console.result(&format!(
                "{}: {} (confidence {})",
                p.file,
                p.class,
                evaluation::probability_text(p.confidence)
            )),
            (FileOutcome::Failed(e), false) => {
                console.error(&format!("cannot read image '{}': {}", e.file, e.error))
            }
        }
    })?;
    if args.json {
        let json = serde_json::to_string_pretty(&outcomes)
            .map_err(|e| TrainerError::Serialize(e.to_string()))?;
        say(&json);
    }
    let meta = &loaded.meta;
    if let Some(line) = summary.conversions.line(meta.image_size, meta.channels) {
        console.warn(&line);
    }
    if let Some(csv) = &args.csv {
        evaluation::write_csv(csv, rows)?;
    }
    if let Some(accuracy) = summary.accuracy() {
        let line = format!(
            "accuracy: {accuracy:.3} ({} of {} images in class folders)",
            summary.correct, summary.labelled
        );
        match args.json {
            true => eprintln!("{line}"),
            false => console.result(&line),
        }
    }
    match summary.failed {
        0 => Ok(()),
        n => Err(TrainerError::bad_input(format!(
            "{n} of {} image(s) could not be read{}",
            summary.files,
            match (args.json, n == summary.files) {
                (true, _) => " (their entries carry an \"error\")",
                (false, true) => " (named above)",
                (false, false) => " (named above); the others were classified",
            }
        ))),
    }
}
