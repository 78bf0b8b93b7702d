//! `trainer lr-find`: the learning-rate range test ([`crate::train::lr_range`]) on the
//! workshop's data or a folder, written as `lr_find.csv`, `lr_find.png` and a README, and
//! ended by the flag to use (`--lr-cnn 0.0042`).

use crate::cli::LrFindArgs;
use crate::config::Settings;
use crate::console::Console;
use crate::device;
use crate::error::{Result, TrainerError};
use crate::lr_find::{self, flag_value, recipe_flags};
use crate::model::ModelKind;
use crate::pack::{self, OutputLock, PackKind};
use crate::train::lr_range::{LrFound, LrRange};
use crate::train::{self, Context, TrainSettings};

/// The range test's flags, checked: one line for the first that is wrong.
fn check_range(args: &LrFindArgs) -> Result<LrRange> {
    let (start, end) = (args.start_lr, args.end_lr);
    if !(start.is_finite() && start > 0.0 && end.is_finite() && end > start) {
        return Err(TrainerError::bad_input(format!(
            "--start-lr and --end-lr must be positive finite numbers with --start-lr below --end-lr, got {start} and {end}"
        )));
    }
    if !(10..=100_000).contains(&args.steps) {
        return Err(TrainerError::bad_input(format!(
            "--steps must be between 10 and 100000, got {}",
            args.steps
        )));
    }
    Ok(LrRange {
        start,
        end,
        steps: args.steps,
    })
}

/// The workshop flags that mean nothing to the test, reset to their defaults: one warning
/// each for those given.
fn ignored(settings: &mut Settings, model: ModelKind) -> Vec<String> {
    let defaults = Settings::default();
    let mut notes = Vec::new();
    let mut warn_if = |given: bool, what: &str| {
        if given {
            notes.push(format!("lr-find ignores {what}"));
        }
    };
    warn_if(
        settings.models != defaults.models,
        "--models (it tests --model)",
    );
    warn_if(
        settings.epochs_baseline != defaults.epochs_baseline
            || settings.epochs_cnn != defaults.epochs_cnn,
        "--epochs-baseline/--epochs-cnn (it runs --steps)",
    );
    warn_if(
        settings.lr_baseline != defaults.lr_baseline || settings.lr_cnn != defaults.lr_cnn,
        "--lr-baseline/--lr-cnn (it sweeps --start-lr to --end-lr)",
    );
    warn_if(
        settings.schedule != defaults.schedule || settings.warmup_epochs != defaults.warmup_epochs,
        "--schedule/--warmup-epochs (the range is its schedule)",
    );
    warn_if(
        settings.patience.is_some() || settings.overfit_batches.is_some(),
        "--patience/--overfit-batches",
    );
    settings.models = vec![model];
    settings.epochs_baseline = defaults.epochs_baseline;
    settings.epochs_cnn = defaults.epochs_cnn;
    settings.schedule = defaults.schedule;
    settings.warmup_epochs = defaults.warmup_epochs;
    settings.patience = None;
    settings.overfit_batches = None;
    notes
}

/// Runs the test and writes its folder; the last line printed is the flag to use.
pub fn main(args: LrFindArgs) -> Result<()> {
    let console = Console::new(args.quiet);
    let range = check_range(&args)?;
    let mut settings: Settings = args.train.settings(args.backend);
    for note in ignored(&mut settings, args.model) {
        console.warn(&note);
    }
    if let Some(folder) = &settings.data {
        settings.data = Some(
            std::path::absolute(folder).map_err(|e| TrainerError::io("resolving", folder, e))?,
        );
    }
    settings.validate()?;
    pack::check_target(&args.out, PackKind::LrFind)?;
    if let Some(folder) = &settings.data {
        pack::check_outside(&args.out, folder)?;
    }
    let _lock = OutputLock::acquire(&args.out)?;
    let opened = device::open(settings.backend)?;
    console.info(&opened.info.summary());
    let splits = crate::setup::load_data(&settings, &console, "lr-find: ")?;
    let net = crate::setup::init_net(&settings, args.model, &splits, &opened.device)?;
    let spec = settings.spec(args.model, splits.train.channels)?;
    let ctx = Context {
        device: &opened.device,
        device_info: &opened.info,
        progress: &console,
    };
    let train_settings = TrainSettings::new(&settings, 1, range.start);
    let found = train::find_lr(
        net,
        &splits.train,
        splits.classes.len(),
        &train_settings,
        &range,
        &ctx,
    )?;
    let kept = lr_find::write(
        &args.out,
        &range,
        &spec.display_name(),
        &found,
        &crate::cmd::command_line(),
    )?;
    if let Some(note) = pack::kept_note(&kept) {
        console.info(&note);
    }
    report(&args, &console, &found, &recipe_flags(&settings))
}

/// The console: what ran, where it stopped, the suggestion, and last the flag.
fn report(args: &LrFindArgs, console: &Console, found: &LrFound, recipe: &str) -> Result<()> {
    let lowest = found
        .points
        .iter()
        .min_by(|a, b| a.smoothed.total_cmp(&b.smoothed));
    console.result(&format!(
        "lr-find: {} steps from {:.1e}{}",
        found.points.len(),
        args.start_lr,
        match &found.stopped {
            Some(why) => format!("; stopped: {why}"),
            None => format!(" to {:.1e}", args.end_lr),
        }
    ));
    if let Some(p) = lowest {
        console.result(&format!(
            "lowest smoothed loss: {:.4} at lr {:.2e}",
            p.smoothed, p.lr
        ));
    }
    console.result(&format!("written: {}", args.out.display()));
    let Some((lr, step)) = found.suggestion else {
        return Err(TrainerError::VerdictFailed(format!(
            "too few steps ({}) before the loss diverged to suggest a rate: lower --start-lr or raise --steps",
            found.points.len()
        )));
    };
    console.result(&format!(
        "suggested (steepest descent of the loss, step {step}): {lr:.3e}"
    ));
    let flag = match args.model {
        ModelKind::Cnn => "--lr-cnn",
        ModelKind::Baseline => "--lr-baseline",
    };
    console.result(&format!("{flag} {}{recipe}", flag_value(lr)));
    Ok(())
}
