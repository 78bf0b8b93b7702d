//! The console: result lines on stdout, a progress bar on stderr (only when stderr is a
//! terminal: a file or a pipe gets the lines and no redraws), the lines above the bar,
//! nothing but warnings and results with `--quiet`.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

/// Writes a line to stdout. A closed pipe (`trainer ... | head -1`) is not an error: the
/// run goes on and its files are written; the line just goes nowhere.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Writes an informational line to stderr, ignoring a closed stderr: for a command whose
/// stdout holds nothing but its results (`predict`).
pub fn aside(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Writes a warning line to stderr, ignoring a closed stderr.
pub fn warn(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "trainer: warning: {line}");
}

/// `x` with 3 significant digits: 0.00600, 6.00, 512, 28.1k, 1.23M.
pub fn significant(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    if x.abs() >= 1e6 {
        return format!("{}M", significant(x / 1e6));
    }
    if x.abs() >= 999.5 {
        return format!("{}k", significant(x / 1e3));
    }
    if x == 0.0 {
        return "0".to_string();
    }
    if x.abs() < 1e-4 {
        return format!("{x:.2e}");
    }
    let digits = x.abs().log10().floor() as i32;
    let decimals = (2 - digits).max(0) as usize;
    format!("{x:.decimals$}")
}

/// Seconds as `m:ss` or `h:mm:ss`.
pub fn clock(seconds: f64) -> String {
    let total = seconds.max(0.0).round() as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    match h {
        0 => format!("{m}:{s:02}"),
        _ => format!("{h}:{m:02}:{s:02}"),
    }
}

/// Something to show progress on; the console implements it with a progress bar.
pub trait Progress {
    fn start(&self, model: &str, total_samples: u64);
    fn advance(&self, samples: u64, message: &str);
    /// Work already counted is done again (an epoch redone after an out-of-memory).
    fn rewind(&self, _samples: u64) {}
    fn note(&self, line: &str);
    /// A model finished an epoch (`line` says which and how it went).
    fn epoch(&self, _line: &str) {}
    fn finish(&self);
}

/// A [`Progress`] that shows nothing.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64, _: &str) {}
    fn note(&self, _: &str) {}
    fn finish(&self) {}
}

/// Prints for the user.
pub struct Console {
    quiet: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Console {
    /// A console; `quiet` hides notes and the progress bar.
    pub fn new(quiet: bool) -> Console {
        Console {
            quiet,
            bar: Mutex::new(None),
        }
    }

    /// Whether notes and progress are hidden.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// A result line: always printed.
    pub fn result(&self, line: &str) {
        self.with_bar_suspended(|| say(line));
    }

    /// An informational line: printed unless quiet.
    pub fn info(&self, line: &str) {
        if !self.quiet {
            self.with_bar_suspended(|| say(line));
        }
    }

    /// A warning on stderr: always printed.
    pub fn warn(&self, line: &str) {
        self.with_bar_suspended(|| warn(line));
    }

    /// An error line on stderr (`trainer: error: ...`) for one item of many, when the run
    /// goes on with the others: always printed.
    pub fn error(&self, line: &str) {
        self.with_bar_suspended(|| {
            use std::io::Write;
            let _ = writeln!(std::io::stderr().lock(), "trainer: error: {line}");
        });
    }

    fn with_bar_suspended(&self, f: impl FnOnce()) {
        let bar = self.bar.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }
}

impl Progress for Console {
    fn start(&self, model: &str, total_samples: u64) {
        if self.quiet || !std::io::stderr().is_terminal() {
            return;
        }
        let bar = ProgressBar::new(total_samples);
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>16} [{bar:30}] {human_pos}/{human_len} samples {rate} samples/s {msg}",
        ) {
            let rate = |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}", significant(state.per_sec()));
            };
            bar.set_style(style.with_key("rate", rate).progress_chars("=> "));
        }
        bar.set_prefix(model.to_string());
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn advance(&self, samples: u64, message: &str) {
        if let Ok(slot) = self.bar.lock()
            && let Some(bar) = slot.as_ref()
        {
            bar.inc(samples);
            bar.set_message(message.to_string());
        }
    }

    fn rewind(&self, samples: u64) {
        if let Ok(slot) = self.bar.lock()
            && let Some(bar) = slot.as_ref()
        {
            bar.set_position(bar.position().saturating_sub(samples));
        }
    }

    fn note(&self, line: &str) {
        self.info(line);
    }

    fn epoch(&self, line: &str) {
        // Above the progress bar on a terminal (the bar is redrawn below it), one line an
        // epoch in a file or a pipe (where there is no bar); not with --quiet.
        self.info(line);
    }

    fn finish(&self) {
        if let Ok(mut slot) = self.bar.lock()
            && let Some(bar) = slot.take()
        {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_significant_digits() {
        assert_eq!(significant(28080.1222), "28.1k");
        assert_eq!(significant(1234.5), "1.23k");
        assert_eq!(significant(512.4), "512");
        assert_eq!(significant(51.24), "51.2");
        assert_eq!(significant(0.006), "0.00600");
        assert_eq!(significant(2_500_000.0), "2.50M");
        assert_eq!(significant(0.0), "0");
    }

    #[test]
    fn clocks() {
        assert_eq!(clock(42.4), "0:42");
        assert_eq!(clock(3725.0), "1:02:05");
    }
}
