//! Interrupts: the first Ctrl-C (or SIGTERM) asks the run to stop at the next step; the
//! second exits at once. Whatever was being written is cleaned up first. The exit code says
//! which: 130 for Ctrl-C (SIGINT), 143 for SIGTERM (as a scheduler sends it).
//!
//! Child processes (a local sweep's tasks) run in their own process group, so a terminal's
//! Ctrl-C reaches only this process, which passes each interrupt on to them: the first asks
//! them to stop after their step, the second makes them exit at once too, and this process
//! waits for them before it exits, so none is left behind.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// Set while a run writes what it finished (see [`Finishing`]): an interrupt then no longer
/// stops it (only a second one, which exits at once).
static FINISHING: AtomicBool = AtomicBool::new(false);
/// Set when the interrupt was a SIGTERM.
static TERMINATED: AtomicBool = AtomicBool::new(false);
/// Folders to remove if the process has to exit at once (staging folders, lock files).
static CLEANUP: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Child processes the interrupts are passed on to.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Installs the handler. Call once, from `main`.
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        REQUESTED.store(true, Ordering::SeqCst);
        signal_children();
        if COUNT.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!("trainer: {}", first_message());
        } else {
            wait_for_children(std::time::Duration::from_secs(5));
            remove_registered();
            eprintln!("trainer: second interrupt, exiting now");
            std::process::exit(exit_code());
        }
    });
    on_sigterm();
}

/// What the first interrupt says: what it stops, and how to exit at once (a second Ctrl-C,
/// or a second signal after a SIGTERM).
fn first_message() -> String {
    let (received, again) = if TERMINATED.load(Ordering::SeqCst) {
        ("signal received (SIGTERM)", "a second signal exits at once")
    } else {
        ("interrupt received", "press Ctrl-C again to exit at once")
    };
    if FINISHING.load(Ordering::SeqCst) {
        format!("{received}; training is over, so the results are written first; {again}")
    } else {
        format!("{received}, stopping at the next step or batch; {again}")
    }
}

/// SIGTERM is noted, then handled as Ctrl-C is (the handler above, raised as SIGINT), so
/// that the exit code can say which it was.
fn on_sigterm() {
    #[cfg(unix)]
    {
        extern "C" fn noted(_: libc::c_int) {
            TERMINATED.store(true, Ordering::SeqCst);
            // SAFETY: raise(3) is async-signal-safe.
            unsafe {
                libc::raise(libc::SIGINT);
            }
        }
        // SAFETY: installs a handler that only stores an atomic and raises a signal.
        unsafe {
            libc::signal(
                libc::SIGTERM,
                noted as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// The exit code of an interrupted run: 143 after a SIGTERM, 130 after Ctrl-C.
pub fn exit_code() -> i32 {
    if TERMINATED.load(Ordering::SeqCst) {
        143
    } else {
        130
    }
}

/// What stopped the run, in words.
pub fn signal_name() -> &'static str {
    if TERMINATED.load(Ordering::SeqCst) {
        "SIGTERM"
    } else {
        "Ctrl-C"
    }
}

/// The run stopped where the interrupt asked and goes on to keep what it finished (test the
/// kept epochs, write the pack): later steps no longer stop at the interrupt, and a second
/// one still exits at once.
pub fn acknowledge() {
    REQUESTED.store(false, Ordering::SeqCst);
}

/// While this lives, the run is past its training and writes what it finished (tests the
/// kept epochs, writes the pack): [`requested`] says no, so no step stops at an interrupt
/// that came before or comes now, and a second interrupt still exits at once.
pub struct Finishing(());

impl Finishing {
    pub fn begin() -> Finishing {
        FINISHING.store(true, Ordering::SeqCst);
        Finishing(())
    }
}

impl Drop for Finishing {
    fn drop(&mut self) {
        FINISHING.store(false, Ordering::SeqCst);
    }
}

/// For tests: `TRAINER_INTERRUPT_AT=MODEL:EPOCH` (MODEL a slug: baseline, cnn, cnn-16-32)
/// acts as a Ctrl-C that arrives as that model's epoch EPOCH starts.
pub const INTERRUPT_AT_ENV: &str = "TRAINER_INTERRUPT_AT";

/// Requests a stop when [`INTERRUPT_AT_ENV`] names this model's epoch.
pub fn inject(model_slug: &str, epoch: usize) {
    if std::env::var(INTERRUPT_AT_ENV).is_ok_and(|at| at == format!("{model_slug}:{epoch}")) {
        COUNT.fetch_add(1, Ordering::SeqCst);
        REQUESTED.store(true, Ordering::SeqCst);
    }
}

/// `TRAINER_INTERRUPT_AT=MODEL:EPOCH:val` acts as a Ctrl-C that arrives as the validation
/// of that model's epoch EPOCH starts.
pub fn inject_validation(model_slug: &str, epoch: usize) {
    let at = format!("{model_slug}:{epoch}:val");
    if std::env::var(INTERRUPT_AT_ENV).is_ok_and(|asked| asked == at) {
        COUNT.fetch_add(1, Ordering::SeqCst);
        REQUESTED.store(true, Ordering::SeqCst);
    }
}

/// Whether the user asked the run to stop (never while a run is [`Finishing`]).
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst) && !FINISHING.load(Ordering::SeqCst)
}

/// Whether an interrupt came and was not acknowledged, even while [`Finishing`].
pub fn received() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Registers a path to remove on an immediate exit.
pub fn register_cleanup(path: PathBuf) {
    if let Ok(mut paths) = CLEANUP.lock() {
        paths.push(path);
    }
}

/// Forgets a path registered with [`register_cleanup`].
pub fn unregister_cleanup(path: &std::path::Path) {
    if let Ok(mut paths) = CLEANUP.lock() {
        paths.retain(|p| p != path);
    }
}

/// Registers a child process to pass interrupts on to (until [`unregister_child`]).
pub fn register_child(pid: u32) {
    if let Ok(mut children) = CHILDREN.lock() {
        children.push(pid);
    }
    // An interrupt that came before the child was registered still reaches it.
    if requested() {
        send(pid, Signal::Interrupt);
    }
}

/// Forgets a child registered with [`register_child`] (it has exited).
pub fn unregister_child(pid: u32) {
    if let Ok(mut children) = CHILDREN.lock() {
        children.retain(|c| *c != pid);
    }
}

/// Waits for `child` to end, passing interrupts on to it meanwhile. It is forgotten before it
/// is reaped: until then its PID stays its own (a zombie's), so an interrupt passed on can
/// never reach another process that the PID was given to once it was free.
pub fn run_child(mut child: std::process::Child) -> std::io::Result<std::process::ExitStatus> {
    register_child(child.id());
    let exited = wait_exited(child.id());
    unregister_child(child.id());
    exited?;
    child.wait()
}

/// Waits until the child `pid` has exited, without reaping it.
#[cfg(unix)]
fn wait_exited(pid: u32) -> std::io::Result<()> {
    loop {
        // SAFETY: waitid(2) on a child of this process that nothing has reaped, writing into
        // a zeroed siginfo_t it owns; WNOWAIT leaves the child to be reaped by `Child::wait`.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let done = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if done == 0 {
            return Ok(());
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// No interrupts are passed on here ([`send`] does nothing): `Child::wait` does the waiting.
#[cfg(not(unix))]
fn wait_exited(_pid: u32) -> std::io::Result<()> {
    Ok(())
}

enum Signal {
    Interrupt,
    Kill,
}

fn send(pid: u32, signal: Signal) {
    #[cfg(unix)]
    {
        let signal = match signal {
            Signal::Interrupt => libc::SIGINT,
            Signal::Kill => libc::SIGKILL,
        };
        // SAFETY: kill(2) with a pid this process started and has not reaped.
        unsafe {
            libc::kill(pid as libc::pid_t, signal);
        }
    }
    // Windows has no signals to send: the console's Ctrl-C already reaches every child
    // that shares it, so an interrupt needs nothing more; a kill ends the child's process
    // tree with taskkill.
    #[cfg(windows)]
    if let Signal::Kill = signal {
        let _ = std::process::Command::new("taskkill")
            .args(["/PID", &pid.to_string(), "/T", "/F"])
            .output();
    }
    #[cfg(not(any(unix, windows)))]
    let _ = (pid, signal);
}

fn signal_children() {
    if let Ok(children) = CHILDREN.lock() {
        for &pid in children.iter() {
            send(pid, Signal::Interrupt);
        }
    }
}

/// Waits until every registered child has exited (their waiting threads unregister them),
/// at most `limit`; kills those left.
fn wait_for_children(limit: std::time::Duration) {
    let started = std::time::Instant::now();
    loop {
        let left: Vec<u32> = CHILDREN.lock().map(|c| c.clone()).unwrap_or_default();
        if left.is_empty() {
            return;
        }
        if started.elapsed() > limit {
            for pid in left {
                send(pid, Signal::Kill);
            }
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn remove_registered() {
    if let Ok(paths) = CLEANUP.lock() {
        for path in paths.iter() {
            if path.is_dir() {
                let _ = std::fs::remove_dir_all(path);
            } else {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};
    use std::sync::Arc;

    /// Whether `pid` is still a child of this process that nothing has reaped (running or a
    /// zombie): only then is its PID safe to signal.
    fn unreaped(pid: u32) -> bool {
        // SAFETY: as in `wait_exited`; WNOHANG returns at once.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let options = libc::WEXITED | libc::WNOWAIT | libc::WNOHANG;
        (unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, options) }) == 0
    }

    /// While children come and go through `run_child`, a watcher holding the registry's lock
    /// (as the forwarder does when it signals) checks that every PID in it is unreaped. Reaping
    /// before forgetting fails this: the waiting thread reaps, then blocks on the lock the
    /// watcher holds, and the watcher sees a reaped PID still registered.
    #[test]
    fn no_registered_child_is_ever_reaped() {
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut reaped = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(children) = CHILDREN.lock() {
                        // Hold the lock a while, as a forwarder signalling many children
                        // would, then look at what is registered.
                        std::thread::sleep(std::time::Duration::from_micros(200));
                        reaped.extend(children.iter().copied().filter(|&pid| !unreaped(pid)));
                    }
                    // Let the registering and waiting threads in.
                    std::thread::sleep(std::time::Duration::from_micros(50));
                }
                reaped
            })
        };
        for _ in 0..200 {
            let child = Command::new("true")
                .stdout(Stdio::null())
                .spawn()
                .expect("spawning true");
            let pid = child.id();
            let status = run_child(child).expect("waiting for true");
            assert!(status.success());
            assert!(
                !CHILDREN.lock().unwrap().contains(&pid),
                "{pid} still registered"
            );
        }
        stop.store(true, Ordering::SeqCst);
        let reaped = watcher.join().expect("the watcher thread");
        assert!(reaped.is_empty(), "reaped yet registered: {reaped:?}");
    }
}
