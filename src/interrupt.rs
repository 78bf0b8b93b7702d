//! Interrupts: the first Ctrl-C (or SIGTERM) asks the run to stop at the next step; the
//! second exits at once. Whatever was being written is cleaned up first.
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
            eprintln!(
                "trainer: interrupt received, stopping at the next step or batch (press Ctrl-C again to exit at once)"
            );
        } else {
            wait_for_children(std::time::Duration::from_secs(5));
            remove_registered();
            eprintln!("trainer: second interrupt, exiting now");
            std::process::exit(130);
        }
    });
}

/// Whether the user asked the run to stop.
pub fn requested() -> bool {
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
