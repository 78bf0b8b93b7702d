//! `trainer lr-find`: the learning-rate range test ([`crate::train::lr_range`]) on the
//! workshop's data or a folder, written as `lr_find.csv`, `lr_find.png` and a README, and
//! ended by the flag to use (`--lr-cnn 0.0042`).

use std::fmt::Write as _;

use crate::cli::LrFindArgs;
use crate::config::Settings;
use crate::console::Console;
use crate::device;
use crate::error::{Result, TrainerError};
use crate::model::ModelKind;
use crate::pack::evidence::csv_text;
use crate::pack::plots::{self, LineChart, Series};
use crate::pack::{self, OutputLock, PackKind, Staging};
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

/// A rate as a flag's value: two significant digits, no exponent (0.0042, 0.35, 1.5).
pub fn flag_value(lr: f64) -> String {
    let digits = (1 - lr.log10().floor() as i32).max(0) as usize;
    format!("{lr:.digits$}")
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

/// The recipe flags the run was given, to repeat after the rate (the rate is for them).
fn recipe_flags(settings: &Settings) -> String {
    let d = Settings::default();
    let mut flags = String::new();
    if settings.optimizer != d.optimizer {
        let _ = write!(flags, " --optimizer {}", settings.optimizer.as_str());
    }
    if settings.weight_decay != d.weight_decay {
        let _ = write!(flags, " --weight-decay {}", settings.weight_decay);
    }
    if settings.momentum != d.momentum {
        let _ = write!(flags, " --momentum {}", settings.momentum);
    }
    if settings.nesterov {
        flags.push_str(" --nesterov");
    }
    if settings.label_smoothing != d.label_smoothing {
        let _ = write!(flags, " --label-smoothing {}", settings.label_smoothing);
    }
    flags
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
    let splits = crate::cmd::load_data(&settings, &console, "lr-find: ")?;
    let net = crate::cmd::init_net(&settings, args.model, &splits, &opened.device)?;
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
    let kept = write(&args, &spec.display_name(), &found)?;
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

/// lr_find.csv (step, lr, loss, smoothed_loss), lr_find.png, README.md.
fn write(args: &LrFindArgs, model: &str, found: &LrFound) -> Result<Vec<String>> {
    let staging = Staging::begin(&args.out, PackKind::LrFind)?;
    let mut rows = vec![
        ["step", "lr", "loss", "smoothed_loss"]
            .map(String::from)
            .to_vec(),
    ];
    for p in &found.points {
        rows.push(vec![
            p.step.to_string(),
            format!("{:?}", p.lr),
            format!("{:?}", p.loss),
            format!("{:?}", p.smoothed),
        ]);
    }
    staging.write("lr_find.csv", csv_text(rows)?)?;
    plots::draw_line_chart(&staging.path("lr_find.png")?, &chart(model, found))?;
    let mut readme = format!(
        "# Learning-rate range test: {model}\n\nCommand: `{}`\n\n",
        crate::cmd::command_line()
    );
    let _ = writeln!(
        readme,
        "{} steps, one batch each, the rate rising exponentially from {:e} to {:e}; the loss is smoothed (exponential average {}, debiased) and the test stops when it exceeds {}x its lowest. `lr_find.csv` has every step; `lr_find.png` plots them against log10(lr).\n",
        found.points.len(),
        args.start_lr,
        args.end_lr,
        train::lr_range::SMOOTHING,
        train::lr_range::DIVERGED_FACTOR
    );
    match found.suggestion {
        Some((lr, step)) => {
            let _ = writeln!(
                readme,
                "Suggested rate: {lr:.3e} (step {step}), where the loss (a centred moving average) falls fastest against log10(lr) (fastai's steepest point). A common alternative is a tenth of the rate at the lowest loss."
            );
        }
        None => {
            let _ = writeln!(readme, "Too few steps before divergence to suggest a rate.");
        }
    }
    if let Some(why) = &found.stopped {
        let _ = writeln!(readme, "\nStopped: {why}.");
    }
    staging.write("README.md", readme)?;
    staging.commit()
}

/// The loss and the smoothed loss against log10(lr), the suggestion marked.
fn chart(model: &str, found: &LrFound) -> LineChart {
    let mut chart = LineChart::new(
        &format!("Learning-rate range test: {model}"),
        "log10(learning rate)",
        "training loss",
    );
    // The divergence's last steps would set the axis and flatten the curve that matters:
    // losses above twice the first smoothed one are left out of the plot (not the CSV).
    let ceiling = found
        .points
        .first()
        .map_or(f64::INFINITY, |p| 2.0 * p.smoothed);
    let at = |f: fn(&train::lr_range::LrPoint) -> f64| {
        found
            .points
            .iter()
            .filter(|p| f(p).is_finite() && f(p) <= ceiling)
            .map(|p| (p.lr.log10(), f(p)))
            .collect::<Vec<_>>()
    };
    chart.series.push(Series {
        label: "loss".into(),
        points: at(|p| p.loss),
        dashed: true,
        colour: 0,
    });
    chart.series.push(Series {
        label: "smoothed loss".into(),
        points: at(|p| p.smoothed),
        dashed: false,
        colour: 1,
    });
    if let Some((lr, step)) = found.suggestion
        && let Some(p) = found.points.get(step - 1)
    {
        chart
            .marks
            .push(((lr.log10(), p.smoothed), format!("suggested {lr:.2e}")));
    }
    chart
}

#[cfg(test)]
mod tests {
    #[test]
    fn flag_values_have_two_significant_digits() {
        assert_eq!(super::flag_value(0.004213), "0.0042");
        assert_eq!(super::flag_value(0.0421), "0.042");
        assert_eq!(super::flag_value(1.53), "1.5");
        assert_eq!(super::flag_value(0.35), "0.35");
    }
}
