//! `trainer bench`: steady-state training throughput against batch size, per backend and
//! model, measured as the PyTorch peer measures it (warm-up steps excluded, data already on
//! the device, the whole step timed: forward, loss, backward, global-norm clip, Adam step,
//! and a read of a value that depends on the step).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use burn::prelude::*;
use serde::Serialize;

use crate::config::{Color, MAX_GRAD_NORM};
use crate::console::Console;
use crate::data::{self, ImageBatch};
use crate::device::launches::LaunchCount;
use crate::device::{self, BackendName, DeviceInfo};
use crate::error::{Result, TrainerError, root_cause};
use crate::memory::{self, MemoryPolicy};
use crate::model::{CnnWidths, ModelKind, ModelSpec, Net};
use crate::pack::evidence::utc_timestamp;
use crate::pack::plots::{self, LineChart, Series};
use crate::pack::{self, OutputLock, Staging};
use crate::train::engine::Engine;
use crate::train::{StepFailure, TrainSettings, Weights};

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
    pub steps: usize,
    pub warmup: usize,
    pub out: PathBuf,
    pub memory_limit_bytes: Option<u64>,
    pub command: String,
}

/// The synthetic data's classes (the three stripe orientations).
const CLASSES: usize = 3;

impl BenchConfig {
    /// The measured shape of `kind`.
    pub fn spec(&self, kind: ModelKind) -> ModelSpec {
        ModelSpec {
            kind,
            channels: self.channels,
            widths: self.cnn_widths,
            head: self.head,
        }
    }
}

/// Whether a batch size was measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum RowStatus {
    #[serde(rename = "ok")]
    Ok,
    /// The reason is in the row's `note`.
    #[serde(rename = "does not fit")]
    DoesNotFit,
    /// Ctrl-C came during this row: its figures (if any) cover the steps timed before it.
    #[serde(rename = "interrupted")]
    Interrupted,
}

impl RowStatus {
    /// The name in throughput.csv and the README.
    pub fn as_str(self) -> &'static str {
        match self {
            RowStatus::Ok => "ok",
            RowStatus::DoesNotFit => "does not fit",
            RowStatus::Interrupted => "interrupted",
        }
    }
}

/// One measured (backend, model, batch size).
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    pub backend: String,
    pub device: String,
    pub model: String,
    pub batch_size: usize,
    pub image_size: usize,
    pub channels: usize,
    pub steps: usize,
    pub status: RowStatus,
    pub samples_per_sec: Option<f64>,
    /// Floating-point work done per second: samples/s times three forward passes' FLOPs
    /// ([`ModelSpec::forward_flops`]), in GFLOP/s.
    pub gflop_per_sec: Option<f64>,
    pub median_step_ms: Option<f64>,
    pub p10_step_ms: Option<f64>,
    pub p90_step_ms: Option<f64>,
    /// The first step alone: kernel compilation and autotuning happen there.
    pub first_step_ms: Option<f64>,
    /// Kernels the wgpu backend launched for one steady-state step (the first timed one).
    pub launches_per_step: Option<usize>,
    /// Whether the model trained in the wgpu kernels of src/device/gpu_train.rs.
    pub kernels: bool,
    pub peak_host_rss_bytes: Option<u64>,
    pub device_memory_bytes: Option<u64>,
    pub note: String,
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
                    skipped(&config, kind, batch, &open.info)
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
    write(&report)?;
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
    if config.models.contains(&ModelKind::Cnn) {
        config
            .cnn_widths
            .check_image_size(config.image_size)
            .map_err(TrainerError::bad_input)?;
    }
    crate::data::DataConfig::stripes(0, 5, config.image_size).validate()
}

/// The console line of one row.
pub fn describe(row: &BenchRow) -> String {
    match row.samples_per_sec {
        Some(rate) => format!(
            "{} {} batch {}: {} samples/s (median step {:.3} ms, first step {:.1} ms){}",
            row.backend,
            row.model,
            row.batch_size,
            samples_per_sec(rate),
            row.median_step_ms.unwrap_or(0.0),
            row.first_step_ms.unwrap_or(0.0),
            if row.note.is_empty() {
                String::new()
            } else {
                format!(" [{}]", row.note)
            }
        ),
        None => format!(
            "{} {} batch {}: {} ({})",
            row.backend,
            row.model,
            row.batch_size,
            row.status.as_str(),
            row.note
        ),
    }
}

/// A rate for people: whole samples/s from 100 up, three significant digits below (a slow
/// row is not "0 samples/s").
fn samples_per_sec(rate: f64) -> String {
    match rate {
        r if r >= 100.0 => format!("{r:.0}"),
        r if r >= 10.0 => format!("{r:.1}"),
        r if r >= 1.0 => format!("{r:.2}"),
        r => format!("{r:.3}"),
    }
}

fn empty_row(config: &BenchConfig, kind: ModelKind, batch: usize, info: &DeviceInfo) -> BenchRow {
    BenchRow {
        backend: info.backend.as_str().to_string(),
        device: info.device_name.clone(),
        model: config.spec(kind).slug(),
        batch_size: batch,
        image_size: config.image_size,
        channels: config.channels,
        steps: config.steps,
        status: RowStatus::DoesNotFit,
        samples_per_sec: None,
        gflop_per_sec: None,
        median_step_ms: None,
        p10_step_ms: None,
        p90_step_ms: None,
        first_step_ms: None,
        launches_per_step: None,
        kernels: false,
        peak_host_rss_bytes: None,
        device_memory_bytes: None,
        note: String::new(),
    }
}

fn skipped(config: &BenchConfig, kind: ModelKind, batch: usize, info: &DeviceInfo) -> BenchRow {
    let mut row = empty_row(config, kind, batch, info);
    row.note = "not tried: a smaller batch did not fit".to_string();
    row
}

/// A batch of `batch` stripe images (cycling through the classes) on `device`, each
/// channel the stripe image dimmed by a quarter more than the one before. On wgpu a
/// one-channel batch is drawn on the device by shaders/stripe_synth.wgsl; otherwise it is
/// generated on the host and uploaded.
fn synthetic_batch(
    batch: usize,
    image_size: usize,
    channels: usize,
    on_device: bool,
    device: &Device,
) -> ImageBatch {
    let on_device = on_device && channels == 1;
    let tinted = |gray: Vec<f32>| -> Vec<f32> {
        (0..channels)
            .flat_map(|c| gray.iter().map(move |v| v * (1.0 - 0.25 * c as f32)))
            .collect()
    };
    let samples = (0..batch)
        .map(|i| data::Sample {
            image: if on_device {
                Vec::new()
            } else {
                tinted(data::stripe_image(42, i % CLASSES, i / CLASSES, image_size))
            },
            label: i % CLASSES,
            sample_id: String::new(),
            recipe: Some(data::Recipe {
                seed: 42,
                class: (i % CLASSES) as u32,
                index: (i / CLASSES) as u32,
            }),
        })
        .collect();
    let mut batcher = data::ImageBatcher::plain(image_size, channels);
    batcher.stripes_on_device = on_device;
    burn::data::dataloader::batcher::Batcher::batch(&batcher, samples, device)
}

/// Measures one (model, batch size) on one device, as a row of the sweep. A batch that does
/// not fit comes back as a row with status "does not fit".
pub fn measure(
    config: &BenchConfig,
    kind: ModelKind,
    batch: usize,
    device: &Device,
    info: &DeviceInfo,
) -> Result<BenchRow> {
    let mut row = empty_row(config, kind, batch, info);
    let mut policy = MemoryPolicy::new(config.memory_limit_bytes, true)?;
    let spec = config.spec(kind);
    let choice = Engine::choose(device, spec, CLASSES, config.image_size);
    // A model the device's kernels do not take runs on the layers: the row says why.
    let engine_note = choice.note.clone().unwrap_or_default();
    let footprint = choice.engine.footprint(spec, config.image_size, CLASSES);
    if policy.preflight(&spec.display_name(), true, batch, &footprint, info)? < batch {
        row.note = preflight_note(&policy.events[0]);
        return Ok(row);
    }
    if let Some(reason) = policy.injected_failure(batch) {
        row.note = reason;
        return Ok(row);
    }
    memory::reset_peak_rss();
    let net = Net::init(spec, config.image_size, CLASSES, 42, device);
    let mut weights = choice
        .engine
        .weights(net, device, &crate::recipe::Recipe::default());
    let batch_data = synthetic_batch(
        batch,
        config.image_size,
        config.channels,
        choice.stripes_on_device(),
        &weights.batch_device(device),
    );
    let settings = TrainSettings {
        epochs: 1,
        lr: if kind == ModelKind::Cnn { 0.006 } else { 0.01 },
        batch_size: batch,
        max_grad_norm: MAX_GRAD_NORM,
        shuffle_seed: 0,
        monitor: crate::config::Monitor::ValAcc,
        patience: None,
        augment: false,
        recipe: crate::recipe::Recipe::default(),
    };
    let Some(Timing {
        mut times,
        first_step_ms,
        launches,
    }) = time_steps(config, &mut weights, &batch_data, &settings, &mut row)?
    else {
        device.memory_cleanup();
        return Ok(row);
    };
    if times.is_empty() {
        // Interrupted before a timed step: no figure to give.
        drop(weights);
        device.memory_cleanup();
        return Ok(row);
    }
    fill_times(&mut row, &mut times, first_step_ms);
    if !engine_note.is_empty() {
        row.note = if row.note.is_empty() {
            engine_note
        } else {
            format!("{}; {engine_note}", row.note)
        };
    }
    let launches = launches.filter(|_| info.backend == BackendName::Wgpu);
    fill_resources(&mut row, spec, config.image_size, launches, device);
    row.kernels = weights.is_fused();
    drop(weights);
    device.memory_cleanup();
    Ok(row)
}

/// What a row's steps gave: each timed step's seconds, the first step's milliseconds and the
/// launches of the first timed step.
struct Timing {
    times: Vec<f64>,
    first_step_ms: f64,
    launches: Option<usize>,
}

/// Runs the first step, the warm-up and the timed steps, one read each. Ctrl-C stops it
/// between steps (the row marked interrupted, its steps those timed); a step that cannot
/// allocate gives `None`, the row noted.
fn time_steps(
    config: &BenchConfig,
    weights: &mut Weights,
    batch_data: &ImageBatch,
    settings: &TrainSettings,
    row: &mut BenchRow,
) -> Result<Option<Timing>> {
    let mut timing = Timing {
        times: Vec::with_capacity(config.steps),
        first_step_ms: 0.0,
        launches: None,
    };
    for step in 0..1 + config.warmup + config.steps {
        if crate::interrupt::requested() {
            row.status = RowStatus::Interrupted;
            row.note = format!(
                "interrupted after {} of {} timed steps",
                timing.times.len(),
                config.steps
            );
            // The figures are of the steps timed.
            row.steps = timing.times.len();
            break;
        }
        let counting = (step == 1 + config.warmup).then(LaunchCount::start);
        let started = Instant::now();
        // One read per step, as the peer's `loss.item()`: the step has run when it returns.
        match weights
            .step(batch_data, settings, settings.lr)
            .and_then(|done| weights.read_norm(done))
        {
            Ok(_) => {}
            Err(StepFailure::Allocation(reason)) => {
                row.note = root_cause(&reason);
                return Ok(None);
            }
            Err(StepFailure::Other(reason)) => {
                return Err(TrainerError::Device {
                    backend: row.backend.clone(),
                    reason: root_cause(&reason),
                });
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        if let Some(counting) = counting {
            timing.launches = Some(counting.finish());
        }
        if step == 0 {
            timing.first_step_ms = seconds * 1e3;
        } else if step > config.warmup {
            timing.times.push(seconds);
        }
    }
    Ok(Some(timing))
}

/// The row's work rate and what it held: GFLOP/s from samples/s, peak host memory, the
/// device's memory pool and the launches of one step (counted on wgpu only).
fn fill_resources(
    row: &mut BenchRow,
    spec: ModelSpec,
    image_size: usize,
    launches: Option<usize>,
    device: &Device,
) {
    let step_flops = 3 * spec.forward_flops(image_size, CLASSES);
    row.gflop_per_sec = row
        .samples_per_sec
        .map(|rate| rate * step_flops as f64 / 1e9);
    row.peak_host_rss_bytes = memory::peak_rss_bytes();
    row.device_memory_bytes = device.memory_pool_usage().map(|u| u.bytes_reserved);
    row.launches_per_step = launches;
}

/// The row's figures from its timed steps (`times`, seconds) and its first step.
fn fill_times(row: &mut BenchRow, times: &mut [f64], first_step_ms: f64) {
    let total: f64 = times.iter().sum();
    times.sort_by(f64::total_cmp);
    let quantile = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize] * 1e3;
    if row.status != RowStatus::Interrupted {
        row.status = RowStatus::Ok;
    }
    row.samples_per_sec = Some((row.batch_size * times.len()) as f64 / total.max(1e-12));
    row.median_step_ms = Some(quantile(0.5));
    row.p10_step_ms = Some(quantile(0.1));
    row.p90_step_ms = Some(quantile(0.9));
    row.first_step_ms = Some(first_step_ms);
}

/// The note of a row the preflight refused: why, and the sizes.
fn preflight_note(event: &crate::memory::MemoryEvent) -> String {
    format!(
        "{} ({} needed, {} available)",
        event.reason,
        event
            .requested_bytes
            .map(memory::format_bytes)
            .unwrap_or_default(),
        event
            .budget_bytes
            .map(memory::format_bytes)
            .unwrap_or_default()
    )
}

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

fn write(report: &BenchReport) -> Result<()> {
    let staging = Staging::begin(&report.config.out, crate::pack::PackKind::Bench)?;
    let header = [
        "backend",
        "device",
        "model",
        "batch_size",
        "image_size",
        "channels",
        "steps",
        "status",
        "samples_per_sec",
        "gflop_per_sec",
        "median_step_ms",
        "p10_step_ms",
        "p90_step_ms",
        "first_step_ms",
        "launches_per_step",
        "peak_host_rss_bytes",
        "device_memory_bytes",
        "note",
    ];
    let mut rows = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    for r in &report.rows {
        rows.push(vec![
            r.backend.clone(),
            r.device.clone(),
            r.model.clone(),
            r.batch_size.to_string(),
            r.image_size.to_string(),
            r.channels.to_string(),
            r.steps.to_string(),
            r.status.as_str().to_string(),
            opt(r.samples_per_sec.map(|v| format!("{v:.1}"))),
            opt(r.gflop_per_sec.map(|v| format!("{v:.2}"))),
            opt(r.median_step_ms.map(|v| format!("{v:.4}"))),
            opt(r.p10_step_ms.map(|v| format!("{v:.4}"))),
            opt(r.p90_step_ms.map(|v| format!("{v:.4}"))),
            opt(r.first_step_ms.map(|v| format!("{v:.2}"))),
            opt(r.launches_per_step),
            opt(r.peak_host_rss_bytes),
            opt(r.device_memory_bytes),
            r.note.clone(),
        ]);
    }
    // The pack's one CSV writer: the seed's CRLF line ends here too.
    let bytes = crate::pack::evidence::csv_text(rows)?;
    staging.write("bench/throughput.csv", bytes)?;
    plots::draw_stacked(
        &staging.path("bench/throughput_vs_batch.png")?,
        &charts(report),
    )?;
    staging.write("bench/README.md", markdown(report))?;
    let json =
        serde_json::to_string_pretty(report).map_err(|e| TrainerError::Serialize(e.to_string()))?;
    staging.write("bench/run_info.json", json)?;
    // A user's files at the pack's top are carried over (pack::OWNED).
    staging.commit().map(|_kept| ())
}

/// The best (highest samples/s) row of each backend and model.
fn best_rows(report: &BenchReport) -> Vec<&BenchRow> {
    let mut best: Vec<&BenchRow> = Vec::new();
    // Only rows measured in full: a row cut short by Ctrl-C is shown, never "best".
    for row in report
        .rows
        .iter()
        .filter(|r| r.samples_per_sec.is_some() && r.status == RowStatus::Ok)
    {
        match best
            .iter_mut()
            .find(|b| b.backend == row.backend && b.model == row.model)
        {
            Some(b) if b.samples_per_sec < row.samples_per_sec => *b = row,
            Some(_) => {}
            None => best.push(row),
        }
    }
    best
}

/// One chart per model (their throughputs differ by orders of magnitude), one line per
/// backend, the best batch size marked.
fn charts(report: &BenchReport) -> Vec<LineChart> {
    let best = best_rows(report);
    let mut charts = Vec::new();
    for &kind in &report.config.models {
        let spec = report.config.spec(kind);
        let model = spec.slug();
        let mut chart = LineChart::new(
            &format!(
                "{}: training throughput against batch size ({}x{}x{} images)",
                spec.display_name(),
                report.config.channels,
                report.config.image_size,
                report.config.image_size
            ),
            "batch size (log2 scale)",
            "samples per second",
        );
        chart.log2_x = true;
        chart.legend_lower_right = true;
        for (i, backend) in report.config.backends.iter().enumerate() {
            chart.series.push(Series {
                label: format!("{} / {model}", backend.as_str()),
                points: report
                    .rows
                    .iter()
                    .filter(|r| r.backend == backend.as_str() && r.model == model)
                    .filter_map(|r| r.samples_per_sec.map(|s| (r.batch_size as f64, s)))
                    .collect(),
                dashed: false,
                colour: i,
            });
        }
        for b in best.iter().filter(|b| b.model == model) {
            if let Some(rate) = b.samples_per_sec {
                chart.marks.push((
                    (b.batch_size as f64, rate),
                    format!("best {}: batch {} ({:.0}/s)", b.backend, b.batch_size, rate),
                ));
            }
        }
        charts.push(chart);
    }
    charts
}

fn markdown(report: &BenchReport) -> String {
    let mut out = String::from("# Training throughput against batch size\n\n");
    let _ = writeln!(out, "```bash\n{}\n```\n", report.config.command);
    let _ = writeln!(out, "Measured {}.\n", report.started_at_utc);
    for d in &report.devices {
        let _ = writeln!(out, "- {}", d.summary());
    }
    if let Some(isa) = report.cpu_kernels {
        let _ = writeln!(
            out,
            "- cpu: the CNN's convolutions, ReLUs and pooling run as one fused operation (src/device/cpu_kernels.rs, {isa}); `--no-cpu-kernels` runs burn-flex's layers instead"
        );
    }
    let _ = writeln!(
        out,
        "\nEach row: {} warm-up steps, then {} timed steps of forward, cross-entropy, backward, global-norm clip 2.0, Adam step and a read of the gradient norm (one sync per step, as the PyTorch peer's `loss.item()`). The first step is timed on its own: compilation and autotuning happen there. The batch stays on the device (drawn there by shaders/stripe_synth.wgsl on wgpu, uploaded once elsewhere). On wgpu both models train in the kernels of src/device/gpu_train.rs unless `--no-gpu-kernels`; launches/step counts the kernels the first timed step launched (cubecl's launch observer).\n",
        report.config.warmup, report.config.steps
    );
    let ms = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
    let bytes = |v: Option<u64>| v.map(memory::format_bytes).unwrap_or_default();
    let rows: Vec<Vec<String>> = report
        .rows
        .iter()
        .map(|r| {
            vec![
                r.backend.clone(),
                r.model.clone(),
                r.batch_size.to_string(),
                r.samples_per_sec.map(samples_per_sec).unwrap_or_default(),
                r.gflop_per_sec
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_default(),
                ms(r.median_step_ms),
                ms(r.p10_step_ms),
                ms(r.p90_step_ms),
                r.first_step_ms
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_default(),
                opt(r.launches_per_step),
                bytes(r.peak_host_rss_bytes),
                bytes(r.device_memory_bytes),
                match r.status {
                    RowStatus::Ok if r.note.is_empty() => r.status.as_str().to_string(),
                    RowStatus::Ok | RowStatus::DoesNotFit => {
                        format!("{}: {}", r.status.as_str(), r.note)
                    }
                    RowStatus::Interrupted => r.note.clone(),
                },
            ]
        })
        .collect();
    out += &crate::pack::evidence::markdown_table(
        &[
            "backend",
            "model",
            "batch",
            "samples/s",
            "GFLOP/s",
            "median ms",
            "p10 ms",
            "p90 ms",
            "first step ms",
            "launches/step",
            "peak host RSS",
            "device memory",
            "status",
        ],
        &rows,
    );
    let _ = writeln!(out, "\n## Best batch size\n");
    for b in best_rows(report) {
        let _ = writeln!(
            out,
            "- {} / {}: batch {} ({} samples/s)",
            b.backend,
            b.model,
            b.batch_size,
            samples_per_sec(b.samples_per_sec.unwrap_or(0.0))
        );
    }
    out
}

/// `trainer bench`: the backends (`auto` resolved to the one it opens) and models from the
/// flags, the measurement, and where its README is.
pub fn main(args: crate::cli::BenchArgs) -> Result<()> {
    let console = Console::new(args.quiet);
    let mut backends = Vec::new();
    for name in &args.backend {
        let name = if name.trim() == "auto" {
            device::open(crate::device::BackendChoice::Auto)?
                .info
                .backend
        } else {
            BackendName::parse(name)?
        };
        if backends.contains(&name) {
            return Err(TrainerError::bad_input(format!(
                "--backend names {} twice; give each backend once",
                name.as_str()
            )));
        }
        backends.push(name);
    }
    let color = match args.color {
        // The bench draws its own images: gray unless rgb is asked for.
        Color::Auto | Color::Gray => Color::Gray,
        Color::Rgb => Color::Rgb,
    };
    let cnn_widths = CnnWidths::new(&args.cnn_widths).map_err(TrainerError::bad_input)?;
    let head = crate::model::Head::new(args.head.head, args.head.hidden, args.head.dropout)
        .and_then(|head| head.check(&cnn_widths, args.image_size).map(|()| head))
        .map_err(TrainerError::bad_input)?;
    let models = match args.model.as_str() {
        "baseline" => vec![ModelKind::Baseline],
        "both" => vec![ModelKind::Cnn, ModelKind::Baseline],
        _ => vec![ModelKind::Cnn],
    };
    if !models.contains(&ModelKind::Cnn) && !cnn_widths.is_tiny() {
        console.warn("--cnn-widths has no effect: --model baseline measures no CNN");
    }
    // Measured smallest first: once a batch does not fit, the larger ones are skipped.
    let mut batch_sizes = args.batch_sizes.clone();
    batch_sizes.sort_unstable();
    if batch_sizes != args.batch_sizes {
        console.info(&format!(
            "bench: measuring the batch sizes smallest first: {}",
            batch_sizes
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    let config = BenchConfig {
        backends,
        models,
        batch_sizes,
        image_size: args.image_size,
        channels: if color == Color::Rgb { 3 } else { 1 },
        cnn_widths,
        head,
        steps: args.steps,
        warmup: args.warmup,
        out: args.out,
        memory_limit_bytes: args.memory_limit,
        command: crate::cmd::command_line(),
    };
    let report = run(config, &console)?;
    console.result(
        &report
            .config
            .out
            .join("bench/README.md")
            .display()
            .to_string(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_rate_keeps_three_digits() {
        assert_eq!(samples_per_sec(6550.4), "6550");
        assert_eq!(samples_per_sec(69.44), "69.4");
        assert_eq!(samples_per_sec(1.234), "1.23");
        assert_eq!(samples_per_sec(0.1634), "0.163");
    }

    #[test]
    fn a_row_on_the_layers_says_why_on_the_console() {
        let mut row = BenchRow {
            backend: "wgpu".into(),
            device: "lavapipe".into(),
            model: "cnn-128".into(),
            batch_size: 1,
            image_size: 512,
            channels: 1,
            steps: 1,
            status: RowStatus::Ok,
            samples_per_sec: Some(0.16),
            gflop_per_sec: None,
            median_step_ms: Some(6117.0),
            p10_step_ms: None,
            p90_step_ms: None,
            first_step_ms: Some(82292.2),
            launches_per_step: None,
            kernels: false,
            peak_host_rss_bytes: None,
            device_memory_bytes: None,
            note: String::new(),
        };
        assert!(!describe(&row).contains('['));
        row.note = "CNN 128: too big; burn's layers run it".into();
        let line = describe(&row);
        assert!(line.contains("0.160 samples/s"), "{line}");
        assert!(
            line.ends_with("[CNN 128: too big; burn's layers run it]"),
            "{line}"
        );
    }
}
