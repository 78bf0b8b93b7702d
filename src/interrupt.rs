//! Interrupts: the first Ctrl-C (or SIGTERM) asks the run to stop at the next step; the
//! second exits at once. Whatever was being written is cleaned up first.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// Folders to remove if the process has to exit at once (staging folders, lock files).
static CLEANUP: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Installs the handler. Call once, from `main`.
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        REQUESTED.store(true, Ordering::SeqCst);
        if COUNT.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!(
                "trainer: interrupt received, stopping after the current step (press Ctrl-C again to exit at once)"
            );
        } else {
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
