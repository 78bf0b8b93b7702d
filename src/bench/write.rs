//! The bench's pack: `bench/throughput.csv` (the pack's CSV writer), the throughput plot,
//! `bench/README.md` and `bench/run_info.json`, staged and swapped in as every pack is.

use std::fmt::Write as _;

use crate::bench::BenchReport;
use crate::bench::row::{RowStatus, best_rows, samples_per_sec};
use crate::error::{Result, TrainerError};
use crate::memory;
use crate::pack::Staging;
use crate::pack::plots::{self, LineChart, Series};

fn opt<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_default()
}

/// Writes the report's files into its `--out`.
pub fn write(report: &BenchReport) -> Result<()> {
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

/// One chart per model (their throughputs differ by orders of magnitude), one line per
/// backend, the best batch size marked.
fn charts(report: &BenchReport) -> Vec<LineChart> {
    let best = best_rows(&report.rows);
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
        "\nEach row: {} warm-up steps, then {} timed steps of forward, cross-entropy, backward, global-norm clip 2.0, Adam step and a read of the gradient norm (one sync per step, as the PyTorch peer's `loss.item()`). The first step is timed on its own: compilation and autotuning happen there. The batch stays on the device (drawn there by shaders/stripe_synth.wgsl on wgpu, uploaded once elsewhere). On wgpu both models train in the kernels of src/device/gpu_train.rs unless `--no-gpu-kernels`; launches/step counts the kernels the first timed step launched (cubecl's launch observer). The models have {} classes (`--classes`; the images are the three stripe orientations, the labels cycle through the classes).\n",
        report.config.warmup, report.config.steps, report.config.classes
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
    for b in best_rows(&report.rows) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::BenchConfig;
    use crate::bench::row::tests::measured;
    use crate::model::CnnWidths;

    fn report(rows: Vec<crate::bench::BenchRow>) -> BenchReport {
        BenchReport {
            config: BenchConfig {
                cnn_widths: CnnWidths::new(&[8, 16]).unwrap(),
                ..crate::bench::tests::config()
            },
            devices: Vec::new(),
            rows,
            started_at_utc: "2026-01-01T00:00:00Z".into(),
            trainer_version: "0",
            burn_version: "0",
            rustc_version: "0",
            cpu_kernels: None,
        }
    }

    #[test]
    fn the_readme_has_a_line_per_row_and_the_best_batch() {
        let mut refused = measured("cpu", "tiny-cnn", 128, 0.0);
        refused.samples_per_sec = None;
        refused.status = RowStatus::DoesNotFit;
        refused.note = "over the budget".into();
        let md = markdown(&report(vec![
            measured("cpu", "tiny-cnn", 32, 1234.4),
            measured("cpu", "tiny-cnn", 64, 2345.6),
            refused,
        ]));
        assert!(md.contains("```bash\ntrainer bench\n```"), "{md}");
        assert!(md.contains("| cpu | tiny-cnn | 64 | 2346 |"), "{md}");
        assert!(md.contains("| does not fit: over the budget |"), "{md}");
        assert!(
            md.ends_with("- cpu / tiny-cnn: batch 64 (2346 samples/s)\n"),
            "{md}"
        );
    }
}
