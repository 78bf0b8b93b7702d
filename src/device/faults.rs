//! Errors the wgpu device reports on its own thread, counted so that training can tell a
//! real out-of-memory inside its work from any other failure.
//!
//! wgpu reports an allocation it cannot make (a buffer, on a full GPU or a capped process)
//! through the device's uncaptured-error handler, on the thread that asked for it: cubecl's
//! device thread, long after the step that needed the buffer was queued. cubecl's handler
//! panics there; its channel catches the panic, and what the failed operation should have
//! made never exists, so a later read fails with "couldn't find resource for that handle", or
//! a result that read fine was computed from a buffer that was never written. This handler
//! does the same (the failed operation still stops), but first counts the error and keeps
//! its text: a count that moved during an epoch or an evaluation means its results cannot
//! be trusted, whatever its reads returned, and an out-of-memory among them means a smaller
//! batch may fit (see `train::learner`).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::tensor::wgpu::wgpu;

/// Errors reported so far in this process.
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// The first error since the last [`clear`] (what [`since`] names).
static FIRST: Mutex<Option<Fault>> = Mutex::new(None);
/// The last out-of-memory of the process, never cleared (for the message of a run it ended).
static LAST_OUT_OF_MEMORY: Mutex<Option<Fault>> = Mutex::new(None);

/// An error the device reported.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// wgpu's text ("Out of Memory", "Validation Error ...").
    pub message: String,
    /// Whether wgpu called it an out-of-memory.
    pub out_of_memory: bool,
}

impl Fault {
    /// How a halving or an error names it: "wgpu reported: Out of Memory".
    pub fn reason(&self) -> String {
        format!("wgpu reported: {}", self.message)
    }
}

/// The panic payload of a counted device error, so that the panic hook tells it from a bug.
#[derive(Debug)]
pub struct CountedFault;

/// A point to compare later counts against.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mark(usize);

/// The count now.
pub fn mark() -> Mark {
    Mark(COUNT.load(Ordering::SeqCst))
}

/// The first device error reported after `mark`, if any. Call after a read from the device
/// (a sync), which waits for the work that could have failed.
pub fn since(mark: Mark) -> Option<Fault> {
    if COUNT.load(Ordering::SeqCst) == mark.0 {
        return None;
    }
    let first = FIRST.lock().unwrap_or_else(|e| e.into_inner());
    Some(first.clone().unwrap_or(Fault {
        message: "the wgpu device reported an error".to_string(),
        out_of_memory: false,
    }))
}

/// Forgets the kept error text (after a recovery), so that the next fault is the one named.
pub fn clear() {
    *FIRST.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// The last out-of-memory the device reported in this process, if any.
pub fn last_out_of_memory() -> Option<Fault> {
    LAST_OUT_OF_MEMORY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// The first device error not yet cleared, if any.
pub fn pending() -> Option<Fault> {
    FIRST.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Replaces cubecl's uncaptured-error handler of `device` with one that counts the error
/// before stopping the failed operation as cubecl's does.
pub fn watch(device: &wgpu::Device) {
    device.on_uncaptured_error(Arc::new(|error: wgpu::Error| {
        let fault = Fault {
            out_of_memory: matches!(error, wgpu::Error::OutOfMemory { .. }),
            message: crate::error::root_cause(&error.to_string()),
        };
        if fault.out_of_memory {
            *LAST_OUT_OF_MEMORY.lock().unwrap_or_else(|e| e.into_inner()) = Some(fault.clone());
        }
        {
            let mut first = FIRST.lock().unwrap_or_else(|e| e.into_inner());
            if first.is_none() {
                *first = Some(fault);
            }
        }
        COUNT.fetch_add(1, Ordering::SeqCst);
        // As cubecl's handler does: the failed call must not return (a buffer wgpu could not
        // allocate would otherwise join cubecl's memory pool as an invalid page).
        std::panic::panic_any(CountedFault);
    }));
}

/// Counts a fault as the handler does, without a device (tests of the recovery's bookkeeping).
#[cfg(test)]
fn record(fault: Fault) {
    *FIRST.lock().unwrap_or_else(|e| e.into_inner()) = Some(fault);
    COUNT.fetch_add(1, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_sees_only_later_faults() {
        let before = mark();
        assert_eq!(since(before), None);
        record(Fault {
            message: "Out of Memory".into(),
            out_of_memory: true,
        });
        let seen = since(before).expect("counted");
        assert!(seen.out_of_memory);
        assert_eq!(since(mark()), None);
        clear();
    }
}
