//! Memory policy: fit the batch to the memory there is, and halve it when a step does not fit.
//!
//! Two mechanisms, both recorded as [`MemoryEvent`]s:
//! - preflight: before a model trains (and before evaluation), estimate the peak bytes of one
//!   step and halve the batch until the estimate fits the budget;
//! - reactive: when a step fails to allocate on the device (burn reports it on the next
//!   `try_` read), the training loop drops that attempt, halves the batch and redoes the same
//!   samples (see the training loop).

use serde::Serialize;

use crate::device::address_cap::AddressCap;
use crate::device::{BackendName, DeviceInfo};
use crate::error::{Result, TrainerError};
use crate::model::{ModelKind, ModelSpec};

/// Environment variable of the fault-injection hook: every step or evaluation batch larger
/// than this many samples fails as if the device could not allocate it, on any backend.
pub const FAIL_ALLOC_ABOVE_ENV: &str = "TRAINER_FAIL_ALLOC_ABOVE";

/// Environment variable of the hook for any other device error: every training step larger
/// than this many samples fails with an error that is not an allocation failure.
pub const FAIL_DEVICE_ABOVE_ENV: &str = "TRAINER_FAIL_DEVICE_ABOVE";

/// One change of batch size.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MemoryEvent {
    pub model: String,
    /// preflight, train or eval.
    pub phase: &'static str,
    pub epoch: usize,
    pub step: usize,
    pub from_batch: usize,
    pub to_batch: usize,
    pub reason: String,
    pub requested_bytes: Option<u64>,
    pub budget_bytes: Option<u64>,
}

/// What the policy may use and what it has done.
#[derive(Clone, Debug, Default)]
pub struct MemoryPolicy {
    /// `--memory-limit`, in bytes.
    pub limit_bytes: Option<u64>,
    /// Off with `--no-memory-preflight`.
    pub preflight: bool,
    /// The fault-injection hook ([`FAIL_ALLOC_ABOVE_ENV`]).
    pub fail_above: Option<usize>,
    /// The other fault-injection hook ([`FAIL_DEVICE_ABOVE_ENV`]).
    pub fail_device_above: Option<usize>,
    /// The hook that caps the address space mid-epoch ([`AddressCap`]).
    pub cap: Option<AddressCap>,
    pub events: Vec<MemoryEvent>,
}

impl MemoryPolicy {
    /// A policy with the user's limit and the test hook read from the environment.
    pub fn new(limit_bytes: Option<u64>, preflight: bool) -> Result<MemoryPolicy> {
        let hook = |name: &str| match std::env::var(name) {
            Ok(value) => value.trim().parse::<usize>().map(Some).map_err(|_| {
                TrainerError::bad_input(format!("{name} must be a whole number, got '{value}'"))
            }),
            Err(_) => Ok(None),
        };
        Ok(MemoryPolicy {
            limit_bytes,
            preflight,
            fail_above: hook(FAIL_ALLOC_ABOVE_ENV)?,
            fail_device_above: hook(FAIL_DEVICE_ABOVE_ENV)?,
            cap: AddressCap::from_env()?,
            events: Vec::new(),
        })
    }

    /// The injected allocation failure for a batch of `batch` samples, if the hook is set.
    pub fn injected_failure(&self, batch: usize) -> Option<String> {
        match self.fail_above {
            Some(limit) if batch > limit => Some(format!(
                "can't allocate buffer (injected by {FAIL_ALLOC_ABOVE_ENV}={limit} for a batch of {batch})"
            )),
            _ => None,
        }
    }

    /// The injected device error (not an allocation failure) for a training step of `batch`
    /// samples, if that hook is set.
    pub fn injected_device_error(&self, batch: usize) -> Option<String> {
        self.fail_device_above
            .filter(|limit| batch > *limit)
            .map(|limit| format!("device lost (injected by {FAIL_DEVICE_ABOVE_ENV}={limit})"))
    }

    /// Halves `batch` until one step's estimate fits the budget. Records one event per
    /// halving; an error when not even one sample fits.
    pub fn preflight(
        &mut self,
        model: &str,
        training: bool,
        batch: usize,
        footprint: &Footprint,
        device: &DeviceInfo,
    ) -> Result<usize> {
        if !self.preflight {
            return Ok(batch);
        }
        let budget = self.budget(device);
        let buffer_limit = device.max_storage_buffer_binding_bytes;
        let mut size = batch;
        loop {
            let total = footprint.step_bytes(size, training);
            let largest = footprint.largest_buffer_bytes(size);
            let too_big_total = budget.is_some_and(|b| total > b);
            let too_big_buffer = buffer_limit.is_some_and(|b| largest > b);
            if !too_big_total && !too_big_buffer {
                return Ok(size);
            }
            let what = if training {
                "training step"
            } else {
                "evaluation batch"
            };
            let (reason, requested, limit) = if too_big_buffer {
                (
                    format!("{what}: largest buffer exceeds the device's storage-buffer limit"),
                    largest,
                    buffer_limit,
                )
            } else {
                (
                    format!("{what}: estimated memory exceeds the budget"),
                    total,
                    budget,
                )
            };
            if size == 1 {
                let narrower = if ModelSpec::is_cnn_name(model) {
                    ", narrow --cnn-widths"
                } else {
                    ""
                };
                return Err(TrainerError::OutOfMemory(format!(
                    "{model}: even a batch of 1 needs about {} and the budget is {} ({reason}); lower --image-size{narrower} or raise --memory-limit",
                    format_bytes(requested),
                    limit.map(format_bytes).unwrap_or_else(|| "unknown".into())
                )));
            }
            self.events.push(MemoryEvent {
                model: model.to_string(),
                phase: "preflight",
                epoch: 0,
                step: 0,
                from_batch: size,
                to_batch: size / 2,
                reason,
                requested_bytes: Some(requested),
                budget_bytes: limit,
            });
            size /= 2;
        }
    }

    /// The smallest of `--memory-limit` and what the device offers (for the CPU backends the
    /// memory available to this process; for wgpu the device memory is not reported, so only
    /// the limit and the per-buffer check apply).
    pub fn budget(&self, device: &DeviceInfo) -> Option<u64> {
        let offered = match device.backend {
            BackendName::Wgpu => None,
            _ => host_memory_available(),
        };
        match (self.limit_bytes, offered) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Whether an error message from the device is an allocation failure (as opposed to any other
/// error, which is reported as it is and not retried).
pub fn is_allocation_failure(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("can't allocate")
        || m.contains("cannot allocate")
        || m.contains("out of device memory")
        || m.contains("out-of-memory")
        || m.contains("out of memory")
        || m.contains("outofmemory")
}

/// The memory one training step of a model needs, as a function of the batch size.
#[derive(Clone, Debug)]
pub struct Footprint {
    /// Parameters (f32 values).
    pub params: u64,
    /// Floats kept per sample for backward (activations), forward pass.
    pub activations_per_sample: u64,
    /// Floats of the largest single activation buffer, per sample.
    pub largest_per_sample: u64,
    /// Floats of one input sample.
    pub input_per_sample: u64,
    /// Floats of one workgroup slot of the wgpu kernels, counted for at most `slot_cap`
    /// samples of a batch: its scratch, and its gradient row when training; 0 for the layers.
    pub slot_scratch: u64,
    pub slot_gradient: u64,
    pub slot_cap: u64,
}

impl Footprint {
    /// The footprint of burn's layers for a model of `spec` on images of `image_size`
    /// squared with `classes` classes.
    pub fn of(spec: ModelSpec, image_size: usize, classes: usize) -> Footprint {
        let s = image_size as u64;
        let c = classes as u64;
        let inputs = spec.channels as u64 * s * s;
        let params = crate::model::flat::len(spec, image_size * image_size, classes) as u64;
        let layers = |activations, largest| Footprint {
            params,
            activations_per_sample: activations,
            largest_per_sample: largest,
            input_per_sample: inputs,
            slot_scratch: 0,
            slot_gradient: 0,
            slot_cap: 0,
        };
        match spec.kind {
            ModelKind::Baseline => layers(inputs + 2 * c, inputs),
            ModelKind::Cnn => {
                // Each block: conv (+ batch norm) + relu; between blocks a max-pool (+
                // indices); then the global pool and the logits.
                let widths = spec.widths.get();
                let per_block = if spec.batch_norm { 3 } else { 2 };
                let (mut side, mut activations, mut largest) = (s, 0, 0);
                for (i, &w) in widths.iter().enumerate() {
                    let w = w as u64;
                    if i > 0 {
                        side /= 2;
                        activations += 2 * widths[i - 1] as u64 * side * side;
                    }
                    activations += per_block * w * side * side;
                    largest = largest.max(w * side * side);
                }
                // The head: its features (pooled or flattened), the hidden layer and its ReLU.
                let head = spec.head.features(&spec.widths, image_size) as u64
                    + 2 * spec.head.hidden as u64;
                layers(activations + head + 2 * c, largest)
            }
        }
    }

    /// The footprint of the wgpu kernels: the state (parameters, two moments, and the next
    /// state), each sample's image, logits and statistics, and per workgroup slot (at most
    /// `slot_cap`) its scratch and, when training, its gradient row.
    pub fn kernels(
        params: u64,
        input_per_sample: u64,
        classes: u64,
        scratch_per_slot: u64,
        slot_cap: u64,
    ) -> Footprint {
        Footprint {
            params: 2 * params,
            activations_per_sample: classes + 2,
            largest_per_sample: input_per_sample,
            input_per_sample,
            slot_scratch: scratch_per_slot,
            slot_gradient: params,
            slot_cap,
        }
    }

    /// Peak bytes of one step: parameters, gradients and Adam's two moments, plus the input
    /// and the activations (kept for backward and matched by their gradients) times the batch.
    /// Evaluation keeps no gradients and no optimizer state.
    pub fn step_bytes(&self, batch: usize, training: bool) -> u64 {
        let b = batch as u64;
        let per_sample = if training {
            self.input_per_sample + 2 * self.activations_per_sample
        } else {
            self.input_per_sample + self.activations_per_sample
        };
        let fixed = if training {
            4 * self.params
        } else {
            self.params
        };
        let slots = b.min(self.slot_cap);
        let per_slot = if training {
            self.slot_scratch + self.slot_gradient
        } else {
            self.slot_scratch
        };
        4 * (fixed + b * per_sample + slots * per_slot)
    }

    /// Bytes of the largest single buffer of one step.
    pub fn largest_buffer_bytes(&self, batch: usize) -> u64 {
        let slots = batch.min(self.slot_cap as usize) as u64;
        let per_slot = self.slot_scratch.max(self.slot_gradient);
        (4 * batch as u64 * self.largest_per_sample).max(4 * slots * per_slot)
    }
}

/// Memory this process may still use: the cgroup limit minus usage when there is one, else
/// MemAvailable from /proc/meminfo.
pub fn host_memory_available() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|max| {
            let used = std::fs::read_to_string("/sys/fs/cgroup/memory.current")
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0);
            max.saturating_sub(used)
        });
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
                .map(|kb| kb * 1024)
        });
    match (cgroup, meminfo) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Peak resident memory of this process so far (VmHWM), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
}

/// Resets the peak resident memory (VmHWM) of this process, where Linux allows it, so that
/// the next [`peak_rss_bytes`] covers only what follows.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Parses sizes such as `512MiB`, `2GiB`, `100MB`, `1048576`.
pub fn parse_bytes(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (examples: 512MiB, 2GiB, 1000000)"))?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{text}' (use B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    let bytes = value * factor;
    if !(bytes >= 1.0 && bytes.is_finite()) {
        return Err(format!("'{text}' must be at least one byte"));
    }
    Ok(bytes as u64)
}

/// Formats bytes as a readable size.
pub fn format_bytes(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    const MIB: f64 = 1024.0 * KIB;
    let b = bytes as f64;
    if b >= 1024.0 * MIB {
        format!("{:.2} GiB", b / (1024.0 * MIB))
    } else if b >= MIB {
        format!("{:.1} MiB", b / MIB)
    } else if b >= KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_shown_in_a_unit_that_fits() {
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(900), "900 bytes");
        assert_eq!(format_bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(format_bytes(5 << 30), "5.00 GiB");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_bytes("2GiB"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("5XB").is_err());
    }

    #[test]
    fn allocation_failures_are_recognised() {
        assert!(is_allocation_failure(
            "can't allocate buffer of size: 268435456"
        ));
        assert!(is_allocation_failure(
            "An out-of-memory error happened during launch"
        ));
        assert!(!is_allocation_failure(
            "A compilation error happened during launch"
        ));
    }

    #[test]
    fn cnn_footprint_grows_with_the_batch() {
        let f = Footprint::of(ModelSpec::from(ModelKind::Cnn), 64, 3);
        assert!(f.step_bytes(64, true) > f.step_bytes(32, true));
        // The 2048-batch conv1 output at 64x64 is the 256 MiB buffer lavapipe refuses.
        assert_eq!(f.largest_buffer_bytes(2048), 256 * 1024 * 1024);
    }
}
