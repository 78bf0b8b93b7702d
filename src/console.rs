//! The console: result lines on stdout, a progress bar on stderr (only when stderr is a
//! terminal: a file or a pipe gets the lines and no redraws), the lines above the bar,
//! nothing but warnings and results with `--quiet`.

use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};

/// Writes a line to stdout. A closed pipe (`trainer ... | head -1`) is not an error: the
/// run goes on and its files are written; the line just goes nowhere.
pub fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// Writes a warning line to stderr, ignoring a closed stderr.
pub fn warn(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "trainer: warning: {line}");
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
            "{prefix:>16} [{bar:30}] {pos}/{len} samples {per_sec} {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
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
