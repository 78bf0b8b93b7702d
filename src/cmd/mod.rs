//! The commands, one module each: what `main.rs` calls with the parsed command line
//! ([`crate::cli`]). Each turns its flags into a configuration, runs it and prints the result.

pub mod bench;
pub mod compare;
pub mod devices;
pub mod export;
pub mod inference;
pub mod lr_find;
pub mod parity;
pub mod sweep;
pub mod workshop;

/// Quotes a word for a POSIX shell (`'...'`, a `'` inside as `'\''`).
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The command line as typed, quoted where needed (recorded in the run's files).
pub fn command_line() -> String {
    std::env::args()
        .enumerate()
        .map(|(i, a)| {
            let a = if i == 0 { "trainer".to_string() } else { a };
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                shell_quote(&a)
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
