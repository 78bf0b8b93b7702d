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

pub use crate::setup::{init_net, load_data};
pub use crate::shell::shell_quote;

/// Environment variables that change what a run does, put before the command when set.
const RUN_ENVIRONMENT: [&str; 4] = [
    crate::memory::FAIL_ALLOC_ABOVE_ENV,
    crate::memory::FAIL_DEVICE_ABOVE_ENV,
    crate::device::address_cap::CAP_MEMORY_AT_ENV,
    "TRAINER_DEVICE",
];

/// The command line as typed, quoted where needed, after the variables of
/// [`RUN_ENVIRONMENT`] that are set (recorded in the run's files, so that it reruns the same).
pub fn command_line() -> String {
    let environment = RUN_ENVIRONMENT.iter().filter_map(|name| {
        std::env::var(name)
            .ok()
            .map(|value| format!("{name}={}", crate::shell::quoted(value)))
    });
    let words = std::env::args().enumerate().map(|(i, a)| {
        if i == 0 {
            "trainer".to_string()
        } else {
            crate::shell::quoted(a)
        }
    });
    environment.chain(words).collect::<Vec<_>>().join(" ")
}
