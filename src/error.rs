//! One error type for the whole library. Each variant prints as one line for the user, and
//! knows which exit code it maps to (see the README's exit-code table).

use std::path::{Path, PathBuf};

/// Exit code of a workshop run whose pack was written but in which a model diverged (not an
/// error: the pack is the evidence). The others are [`TrainerError::exit_code`]'s.
pub const EXIT_DIVERGED: u8 = 3;

/// Exit code of an internal error (a panic: a bug), on any thread (EX_SOFTWARE of sysexits).
pub const EXIT_INTERNAL: u8 = 70;

/// Every way a `trainer` command can fail.
#[derive(Debug, thiserror::Error)]
pub enum TrainerError {
    /// A flag, a config value or an argument is not acceptable.
    #[error("{0}")]
    BadInput(String),

    /// The requested backend could not start (no adapter, driver error).
    #[error("backend '{backend}' cannot start: {reason}. {hint}")]
    BackendUnavailable {
        backend: String,
        reason: String,
        hint: String,
    },

    /// The output folder exists and is not an earlier trainer run.
    #[error(
        "refusing to replace '{0}': it exists and is not a trainer run (no .trainer-run marker); choose another --out or move it away"
    )]
    ForeignOutput(PathBuf),

    /// Reading or writing a file failed.
    #[error("{action} '{path}': {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// A checkpoint is missing, truncated, corrupted or of the wrong kind.
    #[error("checkpoint '{path}' is not usable: {reason}")]
    Checkpoint { path: PathBuf, reason: String },

    /// Even a batch of one sample does not fit in memory.
    #[error("{0}")]
    OutOfMemory(String),

    /// The device reported an error that is not a memory shortage.
    #[error("the {backend} device failed: {reason}")]
    Device { backend: String, reason: String },

    /// The user interrupted the run (Ctrl-C or SIGTERM).
    #[error(
        "interrupted: stopped before finishing; nothing half-written is left, and an earlier pack (if any) is untouched"
    )]
    Interrupted,

    /// The user interrupted a command that kept what it had finished (a bench's measured
    /// rows, a sweep's finished tasks): what was kept, in words.
    #[error("interrupted: {0}")]
    InterruptedKept(String),

    /// Turning results into JSON or another format failed (a failed run, not bad input).
    #[error("serializing: {0}")]
    Serialize(String),

    /// A verdict (parity) did not hold.
    #[error("{0}")]
    VerdictFailed(String),
}

impl TrainerError {
    /// The process exit code for this error: 2 for bad input or a backend that cannot start,
    /// 130 for an interrupt (143 for SIGTERM), 1 for everything else (a run or a verdict that failed).
    pub fn exit_code(&self) -> i32 {
        match self {
            TrainerError::BadInput(_)
            | TrainerError::BackendUnavailable { .. }
            | TrainerError::ForeignOutput(_)
            | TrainerError::Checkpoint { .. } => 2,
            TrainerError::Interrupted | TrainerError::InterruptedKept(_) => {
                crate::interrupt::exit_code()
            }
            _ => 1,
        }
    }

    /// Shorthand for a [`TrainerError::BadInput`].
    pub fn bad_input(message: impl Into<String>) -> Self {
        TrainerError::BadInput(message.into())
    }

    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        TrainerError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The library's result type.
pub type Result<T> = std::result::Result<T, TrainerError>;

/// Flattens a multi-line message (burn's errors carry backtraces) into its first line.
pub fn first_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("unknown error")
        .to_string()
}

/// The most specific line of a chained error message such as burn's
/// "An error happened during execution / Caused by: ... / Caused by: can't allocate buffer":
/// the last line that follows a "Caused by:" header, else the first line.
pub fn root_cause(message: &str) -> String {
    let mut cause: Option<String> = None;
    let mut after_header = false;
    let mut detail_open = false;
    for line in message.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        if line.starts_with("Caused by:") {
            after_header = true;
            detail_open = false;
            let rest = line.trim_start_matches("Caused by:").trim();
            if !rest.is_empty() {
                cause = Some(rest.to_string());
                after_header = false;
            }
            continue;
        }
        if line.starts_with("No backtrace")
            || line.starts_with("Asked at")
            || line.starts_with("Backtrace")
            || line.starts_with("stack backtrace")
        {
            after_header = false;
            detail_open = false;
            continue;
        }
        if after_header {
            cause = Some(line.to_string());
            after_header = false;
            detail_open = true;
        } else if detail_open {
            // The cause's detail (a shader compiler's "parsing error: ..." under wgpu's
            // "In Device::create_shader_module"), not its source excerpt.
            if !line.starts_with(['┌', '│', '^', '=']) {
                if let Some(c) = cause.as_mut() {
                    c.push_str(": ");
                    c.push_str(line);
                }
            }
            detail_open = false;
        }
    }
    cause.unwrap_or_else(|| first_line(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_cause_keeps_a_shader_errors_detail() {
        let message = "An error happened during execution\nCaused by:\n  A launch error happened\nCaused by:\n  WGSL compilation failed for kernel `main`: Validation Error\n\nCaused by:\n  In Device::create_shader_module, label = 'main'\n    \nShader 'main' parsing error: name `target` is a reserved keyword\n   \u{250c}\u{2500} wgsl:72:9\n   \u{2502}\n\n\nBacktrace:\nNo backtrace available";
        assert_eq!(
            root_cause(message),
            "In Device::create_shader_module, label = 'main': Shader 'main' parsing error: name `target` is a reserved keyword"
        );
    }

    #[test]
    fn root_cause_finds_the_deepest_reason() {
        let message = "An error happened during execution\nCaused by:\n  Several failures at once\nCaused by:\n  The bytes were never written\n  skipped `ElemwiseFuse`\nCaused by:\n  An IO error happened\nCaused by:\n  can't allocate buffer of size: 165150720\nNo backtrace available\nAsked at:\nNo backtrace available";
        assert_eq!(
            root_cause(message),
            "can't allocate buffer of size: 165150720"
        );
        assert_eq!(root_cause("plain failure"), "plain failure");
    }
}
