//! The command line, and nothing else: parses it ([`trainer::cli`]), hands each command to its
//! module in `cmd/`, and turns the result into the exit code and at most one error line.

use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches};
use std::sync::atomic::{AtomicBool, Ordering};
use trainer::cli::{Cli, Command};
use trainer::cmd;

use trainer::error::{EXIT_INTERNAL, Result, first_line};

/// mimalloc keeps freed blocks for reuse: the training step allocates and frees the same
/// large buffers every step, which glibc's malloc returns to the kernel and faults back in.
/// Not on macOS (the system allocator there; mimalloc's C would need Apple's compiler to
/// cross-check the crate, see Cargo.toml).
#[cfg(not(target_os = "macos"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc returns memory unused for 10 ms to the kernel (its default); a training step takes
/// longer than that, so the next step faulted the same buffers back in, zeroed (24,000 page
/// faults and about 8% of the CPU time in 100 steps of the 32,64 flatten-h128 bench at batch
/// 64). Freed memory is kept for reuse instead: the footprint stays at its peak.
#[cfg(not(target_os = "macos"))]
fn keep_freed_memory() {
    unsafe extern "C" {
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    /// `mi_option_purge_delay` in mimalloc's `mi_option_t` (v2 and v3); -1 is never.
    const PURGE_DELAY: std::ffi::c_int = 15;
    // SAFETY: defined by mimalloc, the global allocator above; options may change any time.
    unsafe { mi_option_set(PURGE_DELAY, -1) };
}

fn main() -> ExitCode {
    #[cfg(not(target_os = "macos"))]
    keep_freed_memory();
    install_panic_hook();
    // A panic anywhere (a bug) has printed its one line from the hook; it ends the run with
    // the documented code instead of Rust's 101.
    std::panic::catch_unwind(run).unwrap_or_else(|payload| unwound(payload.as_ref()))
}

/// The exit of a run that a panic ended. One that cubecl's device thread handed on (which
/// Rust's hook does not see again) gets its line here: a device error wgpu reported is a
/// failed run (exit 1), as is anything after an out-of-memory the device did not get over;
/// the rest are bugs.
fn unwound(payload: &(dyn std::any::Any + Send)) -> ExitCode {
    use trainer::device::faults;
    let device_error = payload.is::<faults::CountedFault>();
    if device_error || faults::last_out_of_memory().is_some() {
        let reason = match (faults::pending(), faults::last_out_of_memory()) {
            (_, Some(oom)) => format!(
                "the wgpu device ran out of memory and did not recover ({}); try a smaller --batch-size",
                oom.reason()
            ),
            (Some(fault), None) => format!("the wgpu device failed: {}", fault.reason()),
            (None, None) => "the wgpu device failed".to_string(),
        };
        eprintln!("trainer: error: {reason}");
        return ExitCode::from(1);
    }
    if !PRINTED.swap(true, Ordering::SeqCst) {
        eprintln!(
            "trainer: internal error: {} (this is a bug)",
            first_line(&panic_message(payload))
        );
    }
    ExitCode::from(EXIT_INTERNAL)
}

/// A panic payload's text.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

fn run() -> ExitCode {
    inject_panic();
    trainer::device::prepare_environment();
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return command_line_error(&e),
    };
    if cli.no_gpu_kernels {
        trainer::device::gpu_kernels::disable();
    }
    if cli.no_cpu_kernels {
        trainer::device::cpu_kernels::set_enabled(false);
    }
    if let Err(e) = trainer::device::choose_adapter(cli.device) {
        // `trainer devices` still lists the adapters a bad index should name; `export` uses
        // no device.
        if !matches!(
            cli.command,
            Some(Command::Devices) | Some(Command::Export(_))
        ) {
            eprintln!("trainer: error: {e}");
            return ExitCode::from(e.exit_code() as u8);
        }
        eprintln!("trainer: warning: {e}");
    }
    trainer::interrupt::install();
    match dispatch(cli, &matches) {
        Ok(code) => {
            if trainer::interrupt::received() {
                // The Ctrl-C came after the last point it could stop at: what was asked
                // finished, and its results stand.
                eprintln!(
                    "trainer: the interrupt came as the command finished: its results are complete"
                );
            }
            code
        }
        Err(e) => {
            eprintln!("trainer: error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// A command line clap refused: help and version as asked (exit 0); a command group without
/// its subcommand lists its subcommands (exit 2); anything else is clap's whole message in
/// one line (what is missing or wrong, the allowed values, its suggestion), exit 2.
fn command_line_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            eprint!("{}", e.render());
            ExitCode::from(2)
        }
        _ => {
            eprintln!("trainer: error: {}", clap_message(&e.render().to_string()));
            ExitCode::from(2)
        }
    }
}

/// clap's message in one line: every line before its usage, joined.
fn clap_message(text: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if line.is_empty() {
            continue;
        }
        let line = line.trim_start_matches("error: ");
        match parts.last_mut() {
            // A list that continues the line before ("[possible values: ...]", the names of
            // missing arguments) joins it with a space; a tip becomes its own clause.
            Some(last) if !line.starts_with("tip:") => {
                let sep = if last.ends_with(':') || line.starts_with('[') {
                    " "
                } else {
                    ", "
                };
                last.push_str(sep);
                last.push_str(line);
            }
            _ => parts.push(line.to_string()),
        }
    }
    parts.join("; ")
}

fn dispatch(cli: Cli, matches: &ArgMatches) -> Result<ExitCode> {
    let done = match cli.command {
        None => return cmd::workshop::main(cli.run, matches),
        Some(Command::Evaluate(args)) => cmd::inference::evaluate(args),
        Some(Command::Predict(args)) => cmd::inference::predict(args),
        Some(Command::Compare(args)) => cmd::compare::main(args),
        Some(Command::Devices) => cmd::devices::main(),
        Some(Command::Export(args)) => cmd::export::main(args),
        Some(Command::Parity(args)) => cmd::parity::main(args),
        Some(Command::Bench(args)) => cmd::bench::main(args),
        Some(Command::LrFind(args)) => cmd::lr_find::main(args),
        Some(Command::Sweep(command)) => cmd::sweep::main(command),
    };
    done.map(|()| ExitCode::SUCCESS)
}

/// For the tests of the panic hook: `TRAINER_INJECT_PANIC=main` panics on the main thread,
/// `thread` on a worker thread whose panic reaches the main thread (as rayon's do).
fn inject_panic() {
    match std::env::var("TRAINER_INJECT_PANIC").as_deref() {
        Ok("main") => panic!("injected panic (TRAINER_INJECT_PANIC=main)"),
        Ok("thread") => {
            let worker = std::thread::Builder::new()
                .name("worker".into())
                .spawn(|| panic!("injected panic (TRAINER_INJECT_PANIC=thread)"));
            if let Ok(Err(payload)) = worker.map(|w| w.join()) {
                std::panic::resume_unwind(payload);
            }
        }
        _ => {}
    }
}

/// A panic is a bug, on any thread: its details (message, place, thread, backtrace) are
/// appended to `trainer-panic-<pid>.txt` in the temporary folder, and one line says what
/// failed and where the details are. cubecl's device threads (named `DS...`) catch their
/// panics and report them as errors, so theirs are only written to the file; the device
/// errors that [`trainer::device::faults`] counts are not bugs and are not written at all.
/// `RUST_BACKTRACE` set keeps Rust's own report.
/// Whether a panic's line has been printed (one line, for the first).
static PRINTED: AtomicBool = AtomicBool::new(false);

fn install_panic_hook() {
    let rust_report = std::panic::take_hook();
    let keep_rust_report = std::env::var_os("RUST_BACKTRACE").is_some();
    std::panic::set_hook(Box::new(move |info| {
        // A device error the training counts and recovers from (out of memory), not a bug.
        if info.payload().is::<trainer::device::faults::CountedFault>() {
            return;
        }
        if keep_rust_report {
            return rust_report(info);
        }
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let message = panic_message(info.payload());
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_else(|| "an unknown place".into());
        let file = std::env::temp_dir().join(format!("trainer-panic-{}.txt", std::process::id()));
        let details = format!(
            "trainer {} panicked on thread '{thread}' at {place}: {message}\n{}\n",
            env!("CARGO_PKG_VERSION"),
            std::backtrace::Backtrace::force_capture()
        );
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, details.as_bytes()))
            .is_ok();
        if thread.starts_with("DS") || PRINTED.swap(true, Ordering::SeqCst) {
            return;
        }
        let whereto = if written {
            format!("details in {}", file.display())
        } else {
            "set RUST_BACKTRACE=1 for details".to_string()
        };
        eprintln!(
            "trainer: internal error on thread '{thread}': {} at {place} (this is a bug; {whereto})",
            first_line(&message)
        );
    }));
}
