//! The commands, one module each: what `main.rs` calls after parsing the command line.

pub mod bench;
pub mod compare;
pub mod inference;
pub mod parity;
pub mod sweep;
pub mod workshop;

/// Quotes a word for a POSIX shell (`'...'`, a `'` inside as `'\''`).
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}
