//! Timing one row: a synthetic batch on the device, the model's first step, the warm-up and
//! the timed steps, and what the row held (memory, kernel launches).

use std::time::Instant;

use burn::prelude::*;

use crate::bench::BenchConfig;
use crate::bench::row::{self, BenchRow, RowStatus};
use crate::config::MAX_GRAD_NORM;
use crate::data::CLASSES as STRIPES;
use crate::data::{self, ImageBatch};
use crate::device::launches::LaunchCount;
use crate::device::{BackendName, DeviceInfo};
use crate::error::{Result, TrainerError, root_cause};
use crate::memory::{self, MemoryPolicy};
use crate::model::{ModelKind, ModelSpec, Net};
use crate::train::engine::{Engine, Workload};
use crate::train::{StepFailure, TrainSettings, Weights};

/// A batch of `batch` stripe images (cycling through the three orientations; labels cycling
/// through `classes`) on `device`, each
/// channel the stripe image dimmed by a quarter more than the one before. On wgpu a
/// one-channel batch is drawn on the device by shaders/stripe_synth.wgsl; otherwise it is
/// generated on the host and uploaded.
fn synthetic_batch(
    batch: usize,
    classes: usize,
    image_size: usize,
    channels: usize,
    on_device: bool,
    device: &Device,
) -> ImageBatch {
    let on_device = on_device && channels == 1;
    let stripes = STRIPES.len();
    let tinted = |gray: Vec<f32>| -> Vec<f32> {
        (0..channels)
            .flat_map(|c| gray.iter().map(move |v| v * (1.0 - 0.25 * c as f32)))
            .collect()
    };
    let samples = (0..batch)
        .map(|i| data::Sample {
            image: if on_device {
                Vec::new().into()
            } else {
                tinted(data::stripe_image(42, i % stripes, i / stripes, image_size)).into()
            },
            label: i % classes,
            sample_id: String::new(),
            recipe: Some(data::Recipe {
                seed: 42,
                class: (i % stripes) as u32,
                index: (i / stripes) as u32,
            }),
        })
        .collect();
    let batcher = crate::train::feed::DeviceBatcher {
        inner: data::ImageBatcher::plain(image_size, channels),
        stripes_on_device: on_device,
    };
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
    let mut row = row::empty_row(config, kind, batch, info);
    let mut policy = MemoryPolicy::new(config.memory_limit_bytes, true)?;
    let spec = config.spec(kind);
    let workload = Workload {
        batch,
        training: true,
    };
    let choice = Engine::choose(device, spec, config.classes, config.image_size, workload);
    // A model the device's kernels do not take runs on the layers: the row says why.
    let engine_note = choice.note.clone().unwrap_or_default();
    let footprint = choice
        .engine
        .footprint(spec, config.image_size, config.classes);
    if policy.preflight(&spec.display_name(), true, batch, &footprint, info)? < batch {
        row.note = row::preflight_note(&policy.events[0]);
        return Ok(row);
    }
    if let Some(reason) = policy.injected_failure(batch) {
        row.note = reason;
        return Ok(row);
    }
    memory::reset_peak_rss();
    let net = Net::init(spec, config.image_size, config.classes, 42, device);
    let mut weights = choice
        .engine
        .weights(net, device, &crate::recipe::Recipe::default());
    let batch_data = synthetic_batch(
        batch,
        config.classes,
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
        augment: crate::data::Augment::NONE,
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
    row::fill_times(&mut row, &mut times, first_step_ms);
    if !engine_note.is_empty() {
        row.note = if row.note.is_empty() {
            engine_note
        } else {
            format!("{}; {engine_note}", row.note)
        };
    }
    let launches = launches.filter(|_| info.backend == BackendName::Wgpu);
    fill_resources(&mut row, spec, config, launches, device);
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
    config: &BenchConfig,
    launches: Option<usize>,
    device: &Device,
) {
    let step_flops = 3 * spec.forward_flops(config.image_size, config.classes);
    row.gflop_per_sec = row
        .samples_per_sec
        .map(|rate| rate * step_flops as f64 / 1e9);
    row.peak_host_rss_bytes = memory::peak_rss_bytes();
    row.device_memory_bytes = device.memory_pool_usage().map(|u| u.bytes_reserved);
    row.launches_per_step = launches;
}
