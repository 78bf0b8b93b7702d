//! `trainer` with no subcommand: the settings from the flags, `--config` and `--resume`, the
//! workshop run ([`crate::workshop::run`]), and its console summary.

use std::process::ExitCode;

use clap::ArgMatches;

use crate::cli::RunArgs;
use crate::cmd::command_line;
use crate::config;
use crate::console::Console;
use crate::error::{EXIT_DIVERGED, Result, TrainerError};
use crate::interrupt;
use crate::model::ModelKind;
use crate::pack;
use crate::report::{Report, RunConfig, round4};
use crate::workshop::{resumed_settings, run};

/// `trainer` with no subcommand: the settings from the flags and `--config` (a flag given on
/// the command line, as `matches` tells, wins over the file), the run, and its summary.
/// `--resume` takes the stopped run's own settings.
pub fn main(args: RunArgs, matches: &ArgMatches) -> Result<ExitCode> {
    let console = Console::new(args.quiet);
    let flags = args.train.settings(args.backend);
    let file = match &args.config {
        None => None,
        Some(path) => Some(config::ConfigFile::read(path)?),
    };
    // A switch counts as given either way (`--augment` or `--no-augment`).
    let on_command_line = |key: &str| crate::cli::given_on_command_line(matches, key);
    let mut settings = config::merge(&flags, file.as_ref(), on_command_line)?;
    let mut out = args.out;
    if let Some(dir) = &args.resume {
        let explicit = |key: &str| {
            on_command_line(key) || file.as_ref().is_some_and(|f| f.values.contains_key(key))
        };
        let Some(theirs) = resumed_settings(dir, &out, &settings, explicit, &console)? else {
            return Ok(ExitCode::SUCCESS);
        };
        settings = theirs;
        out = dir.clone();
    }
    let config = RunConfig {
        settings,
        out,
        memory_limit_bytes: args.memory_limit,
        memory_preflight: !args.no_memory_preflight,
        quiet: args.quiet,
        command: command_line(),
        resume: args.resume.is_some(),
        init_from: args.init_from,
        freeze_features: args.freeze_features,
        allow_test_overlap: args.allow_test_overlap,
    };
    let report = run(config, &console)?;
    for line in console_summary(&report) {
        console.result(&line);
    }
    console.result(&format!("pack files in {}:", report.config.out.display()));
    for line in pack::listing(&report.config.out) {
        console.result(&line);
    }
    if let Some(stopped) = &report.stopped {
        console.result(&format!(
            "incomplete: {stopped}; `trainer --resume {}` continues the run",
            report.config.out.display()
        ));
    }
    print_verdicts(&report, &console);
    // A failed check is the run's verdict (exit 1), before a divergence's exit 3.
    if let Some(failure) = report.overfit_failure() {
        return Err(TrainerError::VerdictFailed(failure));
    }
    if report.stopped.is_some() {
        return Ok(ExitCode::from(interrupt::exit_code() as u8));
    }
    if report.diverged() {
        return Ok(ExitCode::from(EXIT_DIVERGED));
    }
    Ok(ExitCode::SUCCESS)
}

/// The overfit check's verdicts, when it ran.
fn print_verdicts(report: &Report, console: &Console) {
    if let Some(verdicts) = report.overfit_verdicts() {
        for v in &verdicts {
            console.result(&format!(
                "overfit_check: {}: {} (train loss {:.4} after {} steps{})",
                v.model,
                if v.passed { "passed" } else { "FAILED" },
                v.final_loss,
                v.steps,
                if v.diverged { ", diverged" } else { "" }
            ));
        }
    }
}

/// The seed's console summary: STEP 1/2/3 with the same keys, then the evidence paths.
pub fn console_summary(report: &Report) -> Vec<String> {
    let acc = |kind: ModelKind| {
        report
            .model(kind)
            .map(|m| match m.trained.best_epoch {
                0 => "n/a (no epoch finished)".to_string(),
                _ => format!("{:.3}", round4(m.trained.best_val_acc)),
            })
            .unwrap_or_else(|| "n/a".into())
    };
    let out = &report.config.out;
    let path = |rel: &str| out.join(rel).display().to_string();
    vec![
        "STEP 1: data prepared".to_string(),
        format!("train_samples: {}", report.split_sizes[0]),
        format!("val_samples: {}", report.split_sizes[1]),
        format!("test_samples: {}", report.split_sizes[2]),
        format!("classes: {}", report.classes.len()),
        "STEP 2: model comparison".to_string(),
        format!("baseline_val_acc: {}", acc(ModelKind::Baseline)),
        format!("cnn_val_acc: {}", acc(ModelKind::Cnn)),
        format!("best_model: {}", report.best().spec.display_name()),
        format!("test_accuracy: {:.3}", round4(report.best().test.accuracy)),
        "STEP 3: evidence files".to_string(),
        path("README.md"),
        path("outputs/training_log.csv"),
        path("outputs/model_comparison.csv"),
        path("curves/loss_curve.png"),
        path("reports/shape_trace.md"),
    ]
}
