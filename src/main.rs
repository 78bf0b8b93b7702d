//! The command line, and nothing else: parses it ([`trainer::cli`]), hands each command to its
//! module in `cmd/`, and turns the result into the exit code and at most one error line.

use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches};
use trainer::cli::{Cli, Command};
use trainer::cmd;
use trainer::error::{Result, first_line};

/// mimalloc keeps freed blocks for reuse: the training step allocates and frees the same
/// large buffers every step, which glibc's malloc returns to the kernel and faults back in.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    install_panic_hook();
    trainer::device::prepare_environment();
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            eprintln!(
                "trainer: error: {}",
                first_line(&text).trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    if cli.no_gpu_kernels {
        trainer::device::gpu_kernels::disable();
    }
    if cli.no_cpu_kernels {
        trainer::device::cpu_kernels::set_enabled(false);
    }
    trainer::interrupt::install();
    match dispatch(cli, &matches) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("trainer: error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn dispatch(cli: Cli, matches: &ArgMatches) -> Result<ExitCode> {
    let done = match cli.command {
        None => return cmd::workshop::main(cli.run, matches),
        Some(Command::Evaluate(args)) => cmd::inference::evaluate(args),
        Some(Command::Predict(args)) => cmd::inference::predict(args),
        Some(Command::Compare(args)) => cmd::compare::main(args),
        Some(Command::Devices) => cmd::devices::main(),
        Some(Command::Parity(args)) => cmd::parity::main(args),
        Some(Command::Bench(args)) => cmd::bench::main(args),
        Some(Command::Sweep(command)) => cmd::sweep::main(command),
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// A panic is a bug: one line, unless RUST_BACKTRACE asks for more. Panics on burn's worker
/// threads are left unprinted: burn catches some of them (an autotune candidate that cannot
/// launch), and one that is not caught reaches the main thread as an error.
fn install_panic_hook() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        if std::thread::current().name() != Some("main") {
            return;
        }
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        eprintln!(
            "trainer: internal error: {} (this is a bug; set RUST_BACKTRACE=1 for details)",
            first_line(&message)
        );
    }));
}
