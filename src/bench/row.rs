//! One row of the bench: a measured (backend, model, batch size), its status and figures,
//! and the console line that says it.

use serde::Serialize;

use crate::bench::BenchConfig;
use crate::device::DeviceInfo;
use crate::memory;
use crate::model::ModelKind;

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
pub fn samples_per_sec(rate: f64) -> String {
    match rate {
        r if r >= 100.0 => format!("{r:.0}"),
        r if r >= 10.0 => format!("{r:.1}"),
        r if r >= 1.0 => format!("{r:.2}"),
        r => format!("{r:.3}"),
    }
}

pub fn empty_row(
    config: &BenchConfig,
    kind: ModelKind,
    batch: usize,
    info: &DeviceInfo,
) -> BenchRow {
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

pub fn skipped(config: &BenchConfig, kind: ModelKind, batch: usize, info: &DeviceInfo) -> BenchRow {
    let mut row = empty_row(config, kind, batch, info);
    row.note = "not tried: a smaller batch did not fit".to_string();
    row
}

/// The row's figures from its timed steps (`times`, seconds) and its first step.
pub fn fill_times(row: &mut BenchRow, times: &mut [f64], first_step_ms: f64) {
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
pub fn preflight_note(event: &memory::MemoryEvent) -> String {
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

/// The best (highest samples/s) row of each backend and model.
pub fn best_rows(rows: &[BenchRow]) -> Vec<&BenchRow> {
    let mut best: Vec<&BenchRow> = Vec::new();
    // Only rows measured in full: a row cut short by Ctrl-C is shown, never "best".
    for row in rows
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A measured row of `backend` and `model` at `batch`, `rate` samples/s.
    pub(crate) fn measured(backend: &str, model: &str, batch: usize, rate: f64) -> BenchRow {
        BenchRow {
            backend: backend.into(),
            device: "a device".into(),
            model: model.into(),
            batch_size: batch,
            image_size: 16,
            channels: 1,
            steps: 10,
            status: RowStatus::Ok,
            samples_per_sec: Some(rate),
            gflop_per_sec: None,
            median_step_ms: Some(1.0),
            p10_step_ms: Some(0.9),
            p90_step_ms: Some(1.1),
            first_step_ms: Some(10.0),
            launches_per_step: None,
            kernels: false,
            peak_host_rss_bytes: None,
            device_memory_bytes: None,
            note: String::new(),
        }
    }

    #[test]
    fn the_figures_are_the_timed_steps_quantiles_and_rate() {
        let mut row = measured("cpu", "cnn", 32, 0.0);
        row.status = RowStatus::DoesNotFit;
        // Ten steps of 1..10 ms, given out of order: 32 * 10 samples in 55 ms.
        let mut times: Vec<f64> = [5, 1, 9, 3, 7, 2, 10, 4, 8, 6]
            .iter()
            .map(|&ms| ms as f64 / 1e3)
            .collect();
        fill_times(&mut row, &mut times, 42.0);
        assert_eq!(row.status, RowStatus::Ok);
        let rate = row.samples_per_sec.unwrap();
        assert!((rate - 320.0 / 0.055).abs() < 1e-6, "{rate}");
        // Nearest rank on 9 gaps: p10 -> index 1, median -> 5 (4.5 rounds up), p90 -> 8.
        assert!((row.p10_step_ms.unwrap() - 2.0).abs() < 1e-9);
        assert!((row.median_step_ms.unwrap() - 6.0).abs() < 1e-9);
        assert!((row.p90_step_ms.unwrap() - 9.0).abs() < 1e-9);
        assert_eq!(row.first_step_ms, Some(42.0));
        // A row cut short by Ctrl-C keeps its mark.
        let mut cut = measured("cpu", "cnn", 32, 0.0);
        cut.status = RowStatus::Interrupted;
        fill_times(&mut cut, &mut [0.001], 1.0);
        assert_eq!(cut.status, RowStatus::Interrupted);
    }

    #[test]
    fn the_best_row_is_the_fastest_measured_in_full_per_backend_and_model() {
        let mut interrupted = measured("cpu", "cnn", 256, 900.0);
        interrupted.status = RowStatus::Interrupted;
        let rows = [
            measured("cpu", "cnn", 32, 100.0),
            measured("cpu", "cnn", 64, 300.0),
            measured("cpu", "baseline", 32, 50.0),
            measured("wgpu", "cnn", 32, 200.0),
            interrupted,
        ];
        let best: Vec<(&str, &str, usize)> = best_rows(&rows)
            .iter()
            .map(|r| (r.backend.as_str(), r.model.as_str(), r.batch_size))
            .collect();
        assert_eq!(
            best,
            [
                ("cpu", "cnn", 64),
                ("cpu", "baseline", 32),
                ("wgpu", "cnn", 32)
            ]
        );
    }

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
