//! The CPU backend's fused kernels: whether they run (`--no-cpu-kernels`,
//! `TRAINER_CPU_KERNELS=off`) and which vector instructions they use. The kernels themselves
//! are the CNN family's fused operation in [`super::cpu_cnn`]; this module holds what they
//! share: the switch, and the instruction set picked at run time (AVX-512, AVX2 or portable,
//! which the tests can force to check that every one gives the same bits).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use burn::prelude::*;

/// Whether tensors on `device` go through the fused operation: a burn-flex device (with or
/// without autodiff), with the kernels not turned off.
pub fn available(device: &Device) -> bool {
    enabled()
        && matches!(
            device.clone().inner().as_dispatch(),
            burn::backend::DispatchDevice::Flex(_)
        )
}

/// Whether the kernels are turned on: `TRAINER_CPU_KERNELS=off` turns them off for the
/// process, [`set_enabled`] at run time.
pub fn enabled() -> bool {
    static FROM_ENV: OnceLock<bool> = OnceLock::new();
    let from_env =
        *FROM_ENV.get_or_init(|| std::env::var("TRAINER_CPU_KERNELS").as_deref() != Ok("off"));
    from_env && !TURNED_OFF.load(Ordering::Relaxed)
}

/// Turns the kernels on or off (`--no-cpu-kernels`; `cargo bench` measures both).
pub fn set_enabled(on: bool) {
    TURNED_OFF.store(!on, Ordering::Relaxed);
}

static TURNED_OFF: AtomicBool = AtomicBool::new(false);

/// Which vector instructions the kernels use on this machine, for run_info and the README.
pub fn instruction_set() -> &'static str {
    InstructionSet::detect().name()
}

/// The instruction sets this CPU can run the kernels with, widest first.
pub fn supported_instruction_sets() -> Vec<&'static str> {
    InstructionSet::ALL
        .into_iter()
        .filter(|set| set.supported())
        .map(InstructionSet::name)
        .collect()
}

/// Forces the kernels onto one instruction set (`avx512`, `avx2` or `portable`), or back to
/// the widest this CPU has (`None`): the tests check that every variant gives the same bits.
/// Also read once from `TRAINER_CPU_ISA`. A set this CPU lacks is refused.
pub fn force_instruction_set(name: Option<&str>) -> Result<(), String> {
    let code = match name {
        None => 0,
        Some(name) => {
            let set = InstructionSet::ALL
                .into_iter()
                .find(|s| s.name() == name)
                .ok_or_else(|| {
                    format!("unknown instruction set '{name}' (avx512, avx2, portable)")
                })?;
            if !set.supported() {
                return Err(format!("this CPU cannot run the kernels with {name}"));
            }
            set as u8 + 1
        }
    };
    FORCED.store(code, Ordering::Relaxed);
    Ok(())
}

/// 0: the widest supported; otherwise an [`InstructionSet`] as `set as u8 + 1`.
static FORCED: AtomicU8 = AtomicU8::new(0);

/// The vector instructions the kernels are compiled for.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum InstructionSet {
    Avx512 = 0,
    Avx2 = 1,
    Portable = 2,
}

impl InstructionSet {
    const ALL: [InstructionSet; 3] = [
        InstructionSet::Avx512,
        InstructionSet::Avx2,
        InstructionSet::Portable,
    ];

    fn name(self) -> &'static str {
        match self {
            InstructionSet::Avx512 => "avx512",
            InstructionSet::Avx2 => "avx2",
            InstructionSet::Portable => "portable",
        }
    }

    /// Whether this CPU has the instructions.
    fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                InstructionSet::Avx512 => std::is_x86_feature_detected!("avx512f"),
                InstructionSet::Avx2 => std::is_x86_feature_detected!("avx2"),
                InstructionSet::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == InstructionSet::Portable
        }
    }

    /// The forced set (see [`force_instruction_set`]), else the widest this CPU has.
    pub(crate) fn detect() -> InstructionSet {
        static FROM_ENV: OnceLock<()> = OnceLock::new();
        FROM_ENV.get_or_init(|| {
            if let Ok(name) = std::env::var("TRAINER_CPU_ISA") {
                // An unusable value keeps the widest set; the tests set it only to real ones.
                let _ = force_instruction_set(Some(&name));
            }
        });
        match FORCED.load(Ordering::Relaxed) {
            0 => InstructionSet::ALL
                .into_iter()
                .find(|s| s.supported())
                .unwrap_or(InstructionSet::Portable),
            code => InstructionSet::ALL[(code - 1) as usize],
        }
    }
}
