//! Backends: choosing a burn [`Device`] from `--backend`, and describing it for the evidence.
//!
//! This is the only place where the backends differ. Everything else runs on the `Device`
//! this module returns.

pub mod address_cap;
pub mod cpu_cnn;
pub mod cpu_kernels;
mod cpu_winograd;
pub mod faults;
pub mod gpu_head;
pub mod gpu_kernels;
pub mod gpu_train;
pub mod kernel_cache;
pub mod launches;

use std::sync::OnceLock;

use burn::tensor::wgpu::{WgpuBackend, wgpu};
use burn::tensor::{Device, DeviceKind};
use serde::Serialize;

use crate::error::{Result, TrainerError};

/// What the user asked for with `--backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// wgpu on a hardware GPU adapter when there is one, else cpu.
    Auto,
    /// burn's wgpu backend on the best adapter (Vulkan, Metal or DX12).
    Wgpu,
    /// burn-flex, burn's pure-Rust CPU backend.
    Cpu,
    /// burn-ndarray (deprecated upstream; kept for comparison).
    Ndarray,
}

/// A backend that runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendName {
    Wgpu,
    Cpu,
    Ndarray,
}

impl BackendName {
    /// The name used on the command line and in the evidence.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendName::Wgpu => "wgpu",
            BackendName::Cpu => "cpu",
            BackendName::Ndarray => "ndarray",
        }
    }

    /// Parses a backend name as `--backends` lists them.
    pub fn parse(name: &str) -> Result<BackendName> {
        match name.trim() {
            "wgpu" => Ok(BackendName::Wgpu),
            "cpu" => Ok(BackendName::Cpu),
            "ndarray" => Ok(BackendName::Ndarray),
            other => Err(TrainerError::bad_input(format!(
                "unknown backend '{other}': expected one of wgpu, cpu, ndarray"
            ))),
        }
    }
}

/// The device a run used, as the evidence records it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct DeviceInfo {
    /// wgpu, cpu or ndarray.
    pub backend: BackendName,
    /// The burn crate that runs the tensors.
    pub implementation: String,
    /// Adapter name (wgpu) or processor model (cpu, ndarray).
    pub device_name: String,
    /// wgpu only: PCI vendor id as hex, device type, driver, graphics API.
    pub vendor: Option<String>,
    pub device_type: Option<String>,
    pub driver: Option<String>,
    pub graphics_api: Option<String>,
    /// wgpu only: the largest storage buffer one binding may hold, in bytes.
    pub max_storage_buffer_binding_bytes: Option<u64>,
    /// wgpu only: the largest buffer the adapter allows, in bytes.
    pub max_buffer_bytes: Option<u64>,
    /// cpu, ndarray: the threads the backend may use.
    pub threads: Option<usize>,
    /// Whether the adapter is a software rasterizer (llvmpipe/lavapipe).
    pub software: bool,
    /// wgpu only: where tuned and compiled kernels are kept, and whether that was warm.
    #[serde(default)]
    pub kernel_cache: Option<kernel_cache::KernelCache>,
    /// wgpu only: the adapter's index in `trainer devices`, and whether `--device` (or
    /// `TRAINER_DEVICE`) picked it.
    #[serde(default)]
    pub adapter_index: Option<usize>,
    #[serde(default)]
    pub adapter_chosen_by_flag: bool,
    /// wgpu only: the fewest lanes a subgroup has on the adapter, when the device offers
    /// subgroup operations (the CNN family's kernel needs 8; absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subgroup_lanes: Option<u32>,
}

impl DeviceInfo {
    /// The device's name, with the adapter's index on wgpu ("NVIDIA H100 (wgpu adapter 1)"),
    /// so that two identical GPUs are told apart (a sweep's state and leaderboard).
    pub fn label(&self) -> String {
        match self.adapter_index {
            Some(index) => format!("{} (wgpu adapter {index})", self.device_name),
            None => self.device_name.clone(),
        }
    }

    /// One line for the console: backend and device.
    pub fn summary(&self) -> String {
        match self.backend {
            BackendName::Wgpu => format!(
                "backend: wgpu | device: {} ({}, {}, driver {})",
                self.device_name,
                self.device_type.as_deref().unwrap_or("?"),
                self.graphics_api.as_deref().unwrap_or("?"),
                self.driver.as_deref().unwrap_or("?")
            ),
            _ => format!(
                "backend: {} ({}) | device: {} | threads: {}",
                self.backend.as_str(),
                self.implementation,
                self.device_name,
                self.threads.unwrap_or(1)
            ),
        }
    }
}

/// A started backend: the device to run on and what it is.
#[derive(Clone, Debug)]
pub struct OpenBackend {
    pub device: Device,
    pub info: DeviceInfo,
    /// For `auto`: the line that says what was chosen and why.
    pub choice_note: Option<String>,
}

/// Starts the backend the user chose. A backend that cannot start is a
/// [`TrainerError::BackendUnavailable`] (exit code 2), never a panic.
pub fn open(choice: BackendChoice) -> Result<OpenBackend> {
    match choice {
        BackendChoice::Cpu => Ok(open_cpu(BackendName::Cpu)),
        BackendChoice::Ndarray => Ok(open_cpu(BackendName::Ndarray)),
        BackendChoice::Wgpu => open_wgpu(),
        BackendChoice::Auto if chosen_adapter().is_some() => {
            let mut open = open_wgpu()?;
            open.choice_note = Some(format!(
                "auto: chose wgpu, adapter {} picked by --device",
                chosen_adapter().unwrap_or(0)
            ));
            Ok(open)
        }
        BackendChoice::Auto => {
            let adapters = wgpu_adapters();
            match adapters.iter().map(|a| &a.info).find(|a| !is_software(a)) {
                Some(adapter) => {
                    let mut open = open_wgpu()?;
                    open.choice_note = Some(format!(
                        "auto: chose wgpu, hardware adapter '{}' ({:?}) found",
                        adapter.name, adapter.device_type
                    ));
                    Ok(open)
                }
                None => {
                    let why = if adapters.is_empty() {
                        "no wgpu adapter found".to_string()
                    } else {
                        format!(
                            "only a software adapter ('{}') found, which is slower than the CPU backend",
                            adapters[0].info.name
                        )
                    };
                    let mut open = open_cpu(BackendName::Cpu);
                    open.choice_note = Some(format!("auto: chose cpu, {why}"));
                    Ok(open)
                }
            }
        }
    }
}

/// Starts one named backend (for parity and bench).
pub fn open_named(name: BackendName) -> Result<OpenBackend> {
    match name {
        BackendName::Wgpu => open_wgpu(),
        other => Ok(open_cpu(other)),
    }
}

#[allow(deprecated)] // burn-ndarray is deprecated upstream; we keep it for comparison
fn open_cpu(name: BackendName) -> OpenBackend {
    let (device, implementation) = match name {
        BackendName::Ndarray => (Device::ndarray(), "burn-ndarray"),
        _ => (Device::flex(), "burn-flex"),
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    OpenBackend {
        device,
        info: DeviceInfo {
            backend: name,
            implementation: implementation.to_string(),
            device_name: cpu_model(),
            vendor: None,
            device_type: Some("cpu".to_string()),
            driver: None,
            graphics_api: None,
            max_storage_buffer_binding_bytes: None,
            max_buffer_bytes: None,
            threads: Some(threads),
            software: false,
            kernel_cache: None,
            adapter_index: None,
            adapter_chosen_by_flag: false,
            subgroup_lanes: None,
        },
        choice_note: None,
    }
}

/// The graphics APIs in the order burn's `Auto` tries them.
fn api_chain() -> Vec<wgpu::Backend> {
    if cfg!(target_os = "macos") {
        vec![wgpu::Backend::Metal]
    } else {
        vec![wgpu::Backend::Vulkan, wgpu::Backend::Dx12]
    }
}

/// An adapter wgpu reports, with its limits.
#[derive(Clone, Debug)]
struct Adapter {
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
}

/// The adapters of the first API in the chain that has any; enumerated once per process, on
/// the calling thread, before burn opens its own instance.
fn wgpu_adapters() -> Vec<Adapter> {
    static ADAPTERS: OnceLock<Vec<Adapter>> = OnceLock::new();
    ADAPTERS
        .get_or_init(|| {
            for api in api_chain() {
                let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
                    backends: api.into(),
                    ..wgpu::InstanceDescriptor::new_without_display_handle()
                });
                let adapters: Vec<Adapter> =
                    pollster::block_on(instance.enumerate_adapters(api.into()))
                        .iter()
                        .map(|a| Adapter {
                            info: a.get_info(),
                            limits: a.limits(),
                        })
                        .collect();
                if !adapters.is_empty() {
                    return adapters;
                }
            }
            Vec::new()
        })
        .clone()
}

fn is_software(adapter: &wgpu::AdapterInfo) -> bool {
    adapter.device_type == wgpu::DeviceType::Cpu
}

/// Ranks adapter types: discrete, integrated, virtual, other, then software.
fn type_rank(device_type: wgpu::DeviceType) -> u8 {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// The position of the best adapter of these types (the first of the best type), if any.
fn best_adapter(types: impl Iterator<Item = wgpu::DeviceType>) -> Option<usize> {
    types
        .enumerate()
        .min_by_key(|&(_, device_type)| type_rank(device_type))
        .map(|(position, _)| position)
}

/// The adapter `--device` (or `TRAINER_DEVICE`) asked for, set once at start-up.
static CHOSEN_ADAPTER: OnceLock<Option<usize>> = OnceLock::new();

/// Picks the wgpu adapter by its index in `trainer devices` for the rest of the process
/// (`--device N`; without the flag, `TRAINER_DEVICE`). An index that does not exist, or a
/// variable that is not a number, is one line naming the adapters there are (exit 2).
pub fn choose_adapter(flag: Option<usize>) -> Result<()> {
    let index = match flag {
        Some(index) => Some(index),
        None => match std::env::var("TRAINER_DEVICE") {
            Ok(text) if !text.trim().is_empty() => {
                let index = text.trim().parse().map_err(|_| {
                    TrainerError::bad_input(format!(
                        "TRAINER_DEVICE='{text}' is not an adapter index; {}",
                        adapter_list()
                    ))
                })?;
                check_adapter(index, "TRAINER_DEVICE=")?;
                Some(index)
            }
            _ => None,
        },
    };
    if let (Some(index), Some(_)) = (index, flag) {
        check_adapter(index, "--device")?;
    }
    let _ = CHOSEN_ADAPTER.set(index);
    Ok(())
}

/// Whether wgpu adapter `index` exists: one line naming the adapters there are otherwise
/// (`flag` says who asked).
pub fn check_adapter(index: usize, flag: &str) -> Result<()> {
    if index < wgpu_adapters().len() {
        return Ok(());
    }
    let named = if flag.ends_with('=') {
        format!("{flag}{index}")
    } else {
        format!("{flag} {index}")
    };
    Err(TrainerError::bad_input(format!(
        "{named} does not exist; {}",
        adapter_list()
    )))
}

/// The adapter `--device` picked, if any.
pub fn chosen_adapter() -> Option<usize> {
    CHOSEN_ADAPTER.get().copied().flatten()
}

/// "the wgpu adapters are: 0 llvmpipe (Cpu, Vulkan), 1 ..." for messages.
fn adapter_list() -> String {
    let adapters = wgpu_adapters();
    if adapters.is_empty() {
        return "this machine has no wgpu adapter".to_string();
    }
    let names: Vec<String> = adapters
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                "{i} {} ({:?}, {:?})",
                a.info.name, a.info.device_type, a.info.backend
            )
        })
        .collect();
    format!(
        "the wgpu adapters are: {} (trainer devices)",
        names.join(", ")
    )
}

/// The wgpu backend, once opened in this process.
static OPENED_WGPU: OnceLock<std::result::Result<OpenBackend, String>> = OnceLock::new();

/// Whether `device` is the wgpu device this process opened (with or without autodiff).
pub fn is_wgpu(device: &Device) -> bool {
    matches!(OPENED_WGPU.get(), Some(Ok(open)) if open.device == *device)
}

/// What the wgpu device this process opened is, once it is open.
fn opened_wgpu() -> Option<&'static DeviceInfo> {
    match OPENED_WGPU.get() {
        Some(Ok(open)) => Some(&open.info),
        _ => None,
    }
}

/// The largest storage buffer one binding may hold on the wgpu device this process opened.
pub fn wgpu_binding_limit() -> Option<u64> {
    opened_wgpu().and_then(|info| info.max_storage_buffer_binding_bytes)
}

/// Whether the wgpu device this process opened is a software rasterizer (lavapipe).
pub fn wgpu_is_software() -> bool {
    opened_wgpu().is_some_and(|info| info.software)
}

/// The fewest lanes a subgroup has on the wgpu device this process opened, when it offers
/// subgroup operations.
/// `TRAINER_SUBGROUP_LANES=N` (a test hook) stands for an adapter whose subgroups have N
/// lanes (0: none), so the tests reach the CNN family's fallback on any adapter.
pub fn wgpu_subgroup_lanes() -> Option<u32> {
    if let Some(lanes) = std::env::var("TRAINER_SUBGROUP_LANES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        return (lanes > 0).then_some(lanes);
    }
    opened_wgpu().and_then(|info| info.subgroup_lanes)
}

fn open_wgpu() -> Result<OpenBackend> {
    let opened = OPENED_WGPU.get_or_init(|| start_wgpu().map_err(|e| e.to_string()));
    opened.clone().map_err(|reason| TrainerError::BackendUnavailable {
        backend: "wgpu".to_string(),
        reason,
        hint: "Install a Vulkan driver (on Debian/Ubuntu without a GPU: apt-get install mesa-vulkan-drivers), or use --backend cpu".to_string(),
    })
}

fn start_wgpu() -> std::result::Result<OpenBackend, String> {
    let cache = kernel_cache::configure();
    let adapters = wgpu_adapters();
    let chosen = chosen_adapter();
    let position = match chosen {
        Some(index) => index,
        None => best_adapter(adapters.iter().map(|a| a.info.device_type))
            .ok_or_else(|| "no wgpu adapter found (no Vulkan, Metal or DX12 driver)".to_string())?,
    };
    let best = &adapters[position].info;
    let limits = &adapters[position].limits;
    // burn counts adapters per type: DiscreteGpu(n) is the n-th discrete adapter.
    let index = adapters[..position]
        .iter()
        .filter(|a| a.info.device_type == best.device_type)
        .count();
    let kind = match best.device_type {
        wgpu::DeviceType::DiscreteGpu => DeviceKind::DiscreteGpu(index),
        wgpu::DeviceType::IntegratedGpu => DeviceKind::IntegratedGpu(index),
        wgpu::DeviceType::VirtualGpu => DeviceKind::VirtualGpu(index),
        wgpu::DeviceType::Cpu => DeviceKind::Cpu,
        wgpu::DeviceType::Other => DeviceKind::DefaultDevice,
    };
    let api = match best.backend {
        wgpu::Backend::Metal => WgpuBackend::Metal,
        wgpu::Backend::Dx12 => WgpuBackend::Dx12,
        _ => WgpuBackend::Vulkan,
    };
    let (device, setup) = Device::wgpu_options()
        .device_kind(kind)
        .graphics_api(api)
        .init_with_setup()
        .map_err(|e| crate::error::root_cause(&e.to_string()))?;
    faults::watch(&setup.device);
    Ok(OpenBackend {
        device,
        info: DeviceInfo {
            backend: BackendName::Wgpu,
            implementation: "burn-wgpu (WGSL)".to_string(),
            device_name: best.name.clone(),
            vendor: Some(format!("0x{:04x}", best.vendor)),
            device_type: Some(format!("{:?}", best.device_type)),
            driver: Some(
                format!("{} {}", best.driver, best.driver_info)
                    .trim()
                    .to_string(),
            ),
            graphics_api: Some(format!("{:?}", best.backend)),
            max_storage_buffer_binding_bytes: Some(limits.max_storage_buffer_binding_size),
            max_buffer_bytes: Some(limits.max_buffer_size),
            threads: None,
            software: is_software(best),
            kernel_cache: Some(cache),
            adapter_index: Some(position),
            adapter_chosen_by_flag: chosen.is_some(),
            subgroup_lanes: setup
                .device
                .features()
                .contains(wgpu::Features::SUBGROUP)
                .then_some(best.subgroup_min_size),
        },
        choice_note: None,
    })
}

/// The processor model from /proc/cpuinfo, or the architecture when unknown.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// One line per backend this build can use on this machine, for `trainer devices`.
pub fn describe_all() -> Vec<String> {
    let mut lines = Vec::new();
    for name in [BackendName::Cpu, BackendName::Ndarray] {
        let info = open_cpu(name).info;
        lines.push(format!(
            "{}: {} on {} ({} threads)",
            name.as_str(),
            info.implementation,
            info.device_name,
            info.threads.unwrap_or(1)
        ));
    }
    let adapters = wgpu_adapters();
    if adapters.is_empty() {
        lines.push(
            "wgpu: unavailable: no adapter found (install a Vulkan driver, e.g. apt-get install mesa-vulkan-drivers)"
                .to_string(),
        );
    }
    for (index, adapter) in adapters.iter().enumerate() {
        let a = &adapter.info;
        lines.push(format!(
            "wgpu {index}: {} ({:?}, {:?}, driver {} {}; largest buffer {}){}",
            a.name,
            a.device_type,
            a.backend,
            a.driver,
            a.driver_info,
            gib(adapter.limits.max_buffer_size),
            if is_software(a) {
                " [software: used by --backend wgpu or --device, never by auto alone]"
            } else {
                ""
            }
        ));
    }
    lines
}

/// Bytes in GiB with one decimal ("2.0 GiB"), for the adapter list.
fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Gives the Vulkan loader's window-system libraries a runtime folder when the environment
/// has none (headless machines, CI), so that they do not print "XDG_RUNTIME_DIR is invalid or
/// not set" on every run. Call at start-up, before any thread exists.
pub fn prepare_environment() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("trainer-runtime-{}", user_id()));
    if std::fs::create_dir_all(&dir).is_ok() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        // SAFETY: called from `main` before any other thread is started.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
}

/// The user id from /proc/self/status, to keep one runtime folder per user.
fn user_id() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_else(|| "user".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::DeviceType::{Cpu, DiscreteGpu, IntegratedGpu, Other, VirtualGpu};

    /// Discrete, then integrated, then virtual, then other, then a software rasterizer; the
    /// first of the best type among equals.
    #[test]
    fn the_best_adapter_is_discrete_then_integrated_then_virtual_then_software() {
        let best = |types: &[wgpu::DeviceType]| best_adapter(types.iter().copied());
        assert_eq!(
            best(&[Cpu, IntegratedGpu, DiscreteGpu, VirtualGpu]),
            Some(2)
        );
        assert_eq!(best(&[Cpu, VirtualGpu, IntegratedGpu]), Some(2));
        assert_eq!(best(&[Cpu, Other, VirtualGpu]), Some(2));
        assert_eq!(best(&[Cpu, Other]), Some(1));
        assert_eq!(best(&[DiscreteGpu, DiscreteGpu]), Some(0));
        assert_eq!(best(&[Cpu]), Some(0));
        assert_eq!(best(&[]), None);
    }

    /// Vulkan, then DX12 (Windows), on every OS but macOS, which has Metal only.
    #[test]
    fn the_graphics_apis_are_vulkan_then_dx12_and_metal_on_macos() {
        let expected = if cfg!(target_os = "macos") {
            vec![wgpu::Backend::Metal]
        } else {
            vec![wgpu::Backend::Vulkan, wgpu::Backend::Dx12]
        };
        assert_eq!(api_chain(), expected);
    }
}
