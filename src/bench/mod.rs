//! Training throughput against batch size, per backend and model, measured as the PyTorch
//! peer measures it (warm-up steps excluded, data already on the device, the whole step
//! timed: forward, loss, backward, global-norm clip, Adam step, and a read of a value that
//! depends on the step). [`measure`] times one row, [`row`] holds a row and its figures,
//! [`write`] writes the `bench/` pack; [`run`] is the whole sweep.

pub mod measure;
pub mod row;
pub mod write;

pub use measure::measure;
pub use row::{BenchRow, RowStatus, describe};

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::console::Console;
use crate::device::{self, BackendName, DeviceInfo};
use crate::error::{Result, TrainerError};
use crate::model::{CnnWidths, ModelKind, ModelSpec};
use crate::pack::evidence::utc_timestamp;
use crate::pack::{self, OutputLock};

/// What to measure.
#[derive(Clone, Debug, Serialize)]
pub struct BenchConfig {
    pub backends: Vec<BackendName>,
    pub models: Vec<ModelKind>,
    pub batch_sizes: Vec<usize>,
    pub image_size: usize,
    /// Input channels of the synthetic images: 1 (the stripes) or 3 (the stripes tinted
    /// per channel).
    pub channels: usize,
    /// The CNN's widths (the workshop's Tiny CNN by default).
    pub cnn_widths: CnnWidths,
    /// The CNN's head (the workshop's global average pool by default).
    pub head: crate::model::Head,
    /// BatchNorm after each convolution of the CNN (`--batch-norm`).
    pub batch_norm: bool,
    /// The models' classes (`--classes`): the size of their last layer. The images are the
    /// three stripe orientations whatever the count; labels cycle through the classes.
    pub classes: usize,
    pub steps: usize,
    pub warmup: usize,
    pub out: PathBuf,
    pub memory_limit_bytes: Option<u64>,
    pub command: String,
}

/// The models' classes unless `--classes` says otherwise: the synthetic data's three stripe
/// orientations.
pub const CLASSES: usize = 3;
/// The most classes `--classes` takes.
pub const MAX_CLASSES: usize = 1000;

impl BenchConfig {
    /// The measured shape of `kind`.
    pub fn spec(&self, kind: ModelKind) -> ModelSpec {
        ModelSpec {
            kind,
            channels: self.channels,
            widths: self.cnn_widths,
            head: self.head,
            batch_norm: self.batch_norm,
        }
    }
}

/// The whole sweep.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub config: BenchConfig,
    pub devices: Vec<DeviceInfo>,
    pub rows: Vec<BenchRow>,
    pub started_at_utc: String,
    pub trainer_version: &'static str,
    pub burn_version: &'static str,
    pub rustc_version: &'static str,
    /// The instruction set of the fused CNN operation (src/device/cpu_kernels.rs) where the cpu
    /// backend ran with it; null otherwise.
    pub cpu_kernels: Option<&'static str>,
}

/// Runs the sweep and writes bench/throughput.csv, bench/throughput_vs_batch.png,
/// bench/README.md and bench/run_info.json into `config.out`.
pub fn run(config: BenchConfig, console: &Console) -> Result<BenchReport> {
    validate(&config)?;
    pack::check_target(&config.out, pack::PackKind::Bench)?;
    let _lock = OutputLock::acquire(&config.out)?;
    let started_at_utc = utc_timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    let opened = config
        .backends
        .iter()
        .map(|&b| device::open_named(b))
        .collect::<Result<Vec<_>>>()?;
    let mut rows = Vec::new();
    // Each row is measured in full unless Ctrl-C comes: then the row stops within a step and
    // the rows so far are written, the last marked interrupted.
    'backends: for open in &opened {
        console.info(&format!("bench: {}", open.info.summary()));
        for &kind in &config.models {
            let mut fits = true;
            for &batch in &config.batch_sizes {
                if crate::interrupt::requested() {
                    break 'backends;
                }
                let row = if fits {
                    measure(&config, kind, batch, &open.device, &open.info)?
                } else {
                    row::skipped(&config, kind, batch, &open.info)
                };
                fits = row.status == RowStatus::Ok;
                console.info(&describe(&row));
                rows.push(row);
            }
        }
    }
    let interrupted = crate::interrupt::requested();
    let cpu_kernels = opened
        .iter()
        .any(|o| crate::device::cpu_kernels::available(&o.device))
        .then(crate::device::cpu_kernels::instruction_set);
    let report = BenchReport {
        config,
        devices: opened.iter().map(|o| o.info.clone()).collect(),
        rows,
        started_at_utc,
        trainer_version: env!("CARGO_PKG_VERSION"),
        burn_version: env!("TRAINER_BURN_VERSION"),
        rustc_version: env!("TRAINER_RUSTC_VERSION"),
        cpu_kernels,
    };
    write::write(&report)?;
    if interrupted {
        let cut = report
            .rows
            .iter()
            .filter(|r| r.status == RowStatus::Interrupted)
            .count();
        return Err(TrainerError::InterruptedKept(format!(
            "bench stopped; {} row(s) are in {}: {} measured in full{}",
            report.rows.len(),
            report.config.out.join("bench/throughput.csv").display(),
            report.rows.len() - cut,
            if cut > 0 {
                ", the last cut short (marked interrupted, with the steps it timed)"
            } else {
                ""
            }
        )));
    }
    Ok(report)
}

fn validate(config: &BenchConfig) -> Result<()> {
    if config.backends.is_empty() || config.models.is_empty() || config.batch_sizes.is_empty() {
        return Err(TrainerError::bad_input(
            "bench needs at least one backend, one model and one batch size",
        ));
    }
    if config.batch_sizes.iter().any(|&b| b == 0 || b > 1 << 20) {
        return Err(TrainerError::bad_input(
            "--batch-sizes must be between 1 and 1048576",
        ));
    }
    if let Some(twice) = config.batch_sizes.windows(2).find(|w| w[0] == w[1]) {
        return Err(TrainerError::bad_input(format!(
            "--batch-sizes lists {} twice; give each batch size once",
            twice[0]
        )));
    }
    if config.steps == 0 {
        return Err(TrainerError::bad_input("--steps must be at least 1"));
    }
    if !(2..=MAX_CLASSES).contains(&config.classes) {
        return Err(TrainerError::bad_input(format!(
            "--classes must be between 2 and {MAX_CLASSES}"
        )));
    }
    if config.models.contains(&ModelKind::Cnn) {
        config
            .cnn_widths
            .check_image_size(config.image_size)
            .map_err(TrainerError::bad_input)?;
        config
            .head
            .check(&config.cnn_widths, config.image_size)
            .map_err(TrainerError::bad_input)?;
    }
    crate::data::DataConfig::stripes(0, 5, config.image_size).validate()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small bench's settings, for the tests of the bench's modules.
    pub(crate) fn config() -> BenchConfig {
        BenchConfig {
            backends: vec![BackendName::Cpu],
            models: vec![ModelKind::Cnn],
            batch_sizes: vec![32, 64],
            image_size: 16,
            channels: 1,
            cnn_widths: CnnWidths::default(),
            head: crate::model::Head::default(),
            batch_norm: false,
            classes: CLASSES,
            steps: 10,
            warmup: 2,
            out: "unused".into(),
            memory_limit_bytes: None,
            command: "trainer bench".into(),
        }
    }

    #[test]
    fn a_bench_with_nothing_to_measure_or_a_batch_twice_is_refused() {
        assert!(validate(&config()).is_ok());
        let refused = |change: fn(&mut BenchConfig)| {
            let mut c = config();
            change(&mut c);
            validate(&c).map(|_| ()).unwrap_err().to_string()
        };
        assert!(refused(|c| c.models.clear()).contains("at least one backend"));
        assert!(refused(|c| c.batch_sizes = vec![0]).contains("between 1 and"));
        assert!(refused(|c| c.batch_sizes = vec![32, 32]).contains("lists 32 twice"));
        assert!(refused(|c| c.steps = 0).contains("--steps must be at least 1"));
        assert!(refused(|c| c.classes = 1).contains("--classes must be between 2"));
        assert!(refused(|c| c.image_size = 1).contains("image"));
    }
}
