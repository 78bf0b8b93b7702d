//! `TRAINER_CAP_MEMORY_AT=STEP:MIB`, the hook that makes memory really run out in the middle
//! of an epoch: before step STEP of each model's first epoch, the device's cached memory is
//! released and the process's address space is capped (`RLIMIT_AS`, as `prlimit --as` does) at what it
//! maps then plus MIB MiB. On lavapipe, whose device memory is the process's own, the next
//! step's buffers then fail to allocate inside the driver, as they do on a GPU another
//! process has filled: wgpu's genuine "Out of Memory", not an injected one (compare
//! `TRAINER_FAIL_ALLOC_ABOVE`, which fails steps before they run). Linux only, and on wgpu
//! only: the CPU backends' own threads and buffers would fail instead. Each model's cap ends
//! with its training ([`lift`]), so the next model is capped at its own STEP.

use burn::tensor::Device;

use crate::error::{Result, TrainerError};

/// The hook's environment variable.
pub const CAP_MEMORY_AT_ENV: &str = "TRAINER_CAP_MEMORY_AT";

/// When and how tight the cap is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AddressCap {
    /// 1-based step of each model's first epoch before which the cap is set.
    pub step: usize,
    /// MiB allowed above what the process maps at that moment.
    pub extra_mib: u64,
}

impl AddressCap {
    /// The hook from the environment, if set; a malformed value is bad input.
    pub fn from_env() -> Result<Option<AddressCap>> {
        let Ok(text) = std::env::var(CAP_MEMORY_AT_ENV) else {
            return Ok(None);
        };
        let bad = || {
            TrainerError::bad_input(format!(
                "{CAP_MEMORY_AT_ENV} must be STEP:MIB (two whole numbers from 1), got '{text}'"
            ))
        };
        let (step, mib) = text.trim().split_once(':').ok_or_else(bad)?;
        let step: usize = step.trim().parse().map_err(|_| bad())?;
        let extra_mib: u64 = mib.trim().parse().map_err(|_| bad())?;
        if step == 0 || extra_mib == 0 || !cfg!(target_os = "linux") {
            return Err(bad());
        }
        Ok(Some(AddressCap { step, extra_mib }))
    }

    /// Releases `device`'s cached memory and sets the cap; returns the limit in bytes.
    pub fn apply(&self, device: &Device) -> Result<u64> {
        device.memory_cleanup();
        let _ = device.sync();
        let mapped = mapped_bytes().ok_or_else(|| {
            TrainerError::bad_input(format!(
                "{CAP_MEMORY_AT_ENV}: cannot read /proc/self/status"
            ))
        })?;
        let limit = mapped + (self.extra_mib << 20);
        set_limit(limit)?;
        Ok(limit)
    }
}

/// The address-space limit the process had before the first cap (to lift it again).
static BEFORE: std::sync::Mutex<Option<u64>> = std::sync::Mutex::new(None);

/// Lifts the cap: the limit goes back to what it was before the first one. Each model's cap
/// is its own, set at its own step.
pub fn lift() {
    let before = BEFORE.lock().map(|b| *b).unwrap_or(None);
    if let Some(bytes) = before {
        let _ = set_limit(bytes);
    }
}

/// What the process maps now (`VmSize`), in bytes.
fn mapped_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmSize:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(target_os = "linux")]
fn set_limit(bytes: u64) -> Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    let ok = unsafe {
        libc::getrlimit(libc::RLIMIT_AS, &mut limit) == 0 && {
            if let Ok(mut before) = BEFORE.lock() {
                before.get_or_insert(limit.rlim_cur);
            }
            limit.rlim_cur = bytes.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_AS, &limit) == 0
        }
    };
    if ok {
        Ok(())
    } else {
        Err(TrainerError::bad_input(format!(
            "{CAP_MEMORY_AT_ENV}: setrlimit failed: {}",
            std::io::Error::last_os_error()
        )))
    }
}

#[cfg(not(target_os = "linux"))]
fn set_limit(_: u64) -> Result<()> {
    Err(TrainerError::bad_input(format!(
        "{CAP_MEMORY_AT_ENV} works on Linux only"
    )))
}
