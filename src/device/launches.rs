//! Counting kernel launches with cubecl's launch observer: every kernel the wgpu backend
//! issues, on any thread, while a [`LaunchCount`] is open (the CPU backends launch none).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::cubecl::logging::{LaunchObservation, LaunchObserver};

#[derive(Default)]
struct Counter(AtomicUsize);

impl LaunchObserver for Counter {
    fn launched(&self, _kernel: &'static str) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts launches from [`LaunchCount::start`] to [`LaunchCount::finish`].
pub struct LaunchCount {
    counter: Arc<Counter>,
    _observation: LaunchObservation,
}

impl LaunchCount {
    /// Starts counting.
    pub fn start() -> LaunchCount {
        let counter = Arc::new(Counter::default());
        LaunchCount {
            _observation: LaunchObservation::new(counter.clone()),
            counter,
        }
    }

    /// Stops counting; the launches issued since the start.
    pub fn finish(self) -> usize {
        self.counter.0.load(Ordering::Relaxed)
    }
}
