//! The lr-find folder: `lr_find.csv` (every step), `lr_find.png` (the loss against
//! log10(lr), the suggestion marked) and a README, staged and swapped in as every pack is;
//! and the flag to use, as the command prints it. The range test itself is
//! [`crate::train::lr_range`].

use std::fmt::Write as _;
use std::path::Path;

use crate::config::Settings;
use crate::error::Result;
use crate::pack::evidence::csv_text;
use crate::pack::plots::{self, LineChart, Series};
use crate::pack::{PackKind, Staging};
use crate::train::lr_range::{self, LrFound, LrRange};

/// A rate as a flag's value: two significant digits, no exponent (0.0042, 0.35, 1.5).
pub fn flag_value(lr: f64) -> String {
    let digits = (1 - lr.log10().floor() as i32).max(0) as usize;
    format!("{lr:.digits$}")
}

/// The recipe flags the run was given, to repeat after the rate (the rate is for them).
pub fn recipe_flags(settings: &Settings) -> String {
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

/// Writes lr_find.csv (step, lr, loss, smoothed_loss), lr_find.png and README.md into `out`
/// (`command` is the command line, for the README); the user's files it kept, as
/// [`Staging::commit`] says.
pub fn write(
    out: &Path,
    range: &LrRange,
    model: &str,
    found: &LrFound,
    command: &str,
) -> Result<Vec<String>> {
    let staging = Staging::begin(out, PackKind::LrFind)?;
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
    let mut readme = format!("# Learning-rate range test: {model}\n\nCommand: `{command}`\n\n");
    let _ = writeln!(
        readme,
        "{} steps, one batch each, the rate rising exponentially from {:e} to {:e}; the loss is smoothed (exponential average {}, debiased) and the test stops when it exceeds {}x its lowest. `lr_find.csv` has every step; `lr_find.png` plots them against log10(lr).\n",
        found.points.len(),
        range.start,
        range.end,
        lr_range::SMOOTHING,
        lr_range::DIVERGED_FACTOR
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
    let at = |f: fn(&lr_range::LrPoint) -> f64| {
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

    #[test]
    fn the_flag_repeats_the_recipe_it_was_found_for() {
        let mut settings = super::Settings::default();
        assert_eq!(super::recipe_flags(&settings), "");
        settings.nesterov = true;
        settings.label_smoothing = 0.1;
        assert_eq!(
            super::recipe_flags(&settings),
            " --nesterov --label-smoothing 0.1"
        );
    }
}
