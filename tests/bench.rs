//! `trainer bench`: the sweep writes its four files, and a batch that does not fit is
//! recorded, not fatal.

mod common;

use std::fs;
use std::path::Path;

use common::*;

const COLUMNS: [&str; 16] = [
    "backend",
    "device",
    "model",
    "batch_size",
    "image_size",
    "steps",
    "status",
    "samples_per_sec",
    "median_step_ms",
    "p10_step_ms",
    "p90_step_ms",
    "first_step_ms",
    "launches_per_step",
    "peak_host_rss_bytes",
    "device_memory_bytes",
    "note",
];

/// Both models at batch 8 and 32, three timed steps after one warm-up step.
fn bench(out: &Path, backends: &str) -> Trainer {
    trainer()
        .subcommand("bench")
        .quiet()
        .backend(backends)
        .args([
            "--model",
            "both",
            "--batch-sizes",
            "8,32",
            "--steps",
            "3",
            "--warmup",
            "1",
        ])
        .out(out)
}

fn check(out: &Path, expected_rows: usize) -> Vec<Vec<String>> {
    let (header, rows) = read_csv(&out.join("bench/throughput.csv"));
    assert_eq!(header, COLUMNS);
    assert_eq!(rows.len(), expected_rows, "{rows:?}");
    assert_eq!(
        &fs::read(out.join("bench/throughput_vs_batch.png")).unwrap()[1..4],
        b"PNG"
    );
    let readme = fs::read_to_string(out.join("bench/README.md")).unwrap();
    assert!(readme.contains("| backend | model | batch |"), "{readme}");
    let info: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("bench/run_info.json")).unwrap())
            .unwrap();
    assert!(info["devices"][0]["device_name"].as_str().is_some());
    rows
}

#[test]
fn a_tiny_sweep_on_the_cpu_backends_writes_every_file() {
    let dir = temp();
    let out = dir.path().join("bench");
    bench(&out, "cpu,ndarray").run_ok();
    let rows = check(&out, 8);
    for row in rows {
        assert_eq!(row[6], "ok", "{row:?}");
        let rate: f64 = row[7].parse().unwrap();
        assert!(rate > 0.0, "{row:?}");
        let median: f64 = row[8].parse().unwrap();
        let (p10, p90): (f64, f64) = (row[9].parse().unwrap(), row[10].parse().unwrap());
        assert!(p10 <= median && median <= p90, "{row:?}");
        assert_eq!(row[12], "", "the CPU backends launch no kernels: {row:?}");
    }
}

#[test]
fn a_batch_that_does_not_fit_is_recorded_and_the_sweep_goes_on() {
    let dir = temp();
    let out = dir.path().join("bench");
    trainer()
        .subcommand("bench")
        .quiet()
        .cpu()
        .args([
            "--model",
            "both",
            "--batch-sizes",
            "8,32,64",
            "--steps",
            "2",
            "--warmup",
            "0",
        ])
        .out(&out)
        .env("TRAINER_FAIL_ALLOC_ABOVE", "16")
        .run_ok();
    let rows = check(&out, 6);
    for model in ["cnn", "baseline"] {
        let of: Vec<_> = rows.iter().filter(|r| r[2] == model).collect();
        assert_eq!(of[0][6], "ok");
        assert_eq!(of[1][6], "does not fit");
        assert!(of[1][15].contains("can't allocate"), "{:?}", of[1]);
        assert_eq!(of[2][6], "does not fit");
        assert!(of[2][7].is_empty());
    }
}

#[test]
fn a_tiny_sweep_on_wgpu() {
    if !wgpu_available("a_tiny_sweep_on_wgpu") {
        return;
    }
    let dir = temp();
    let out = dir.path().join("bench");
    bench(&out, "wgpu").run_ok();
    let rows = check(&out, 4);
    assert!(
        rows.iter().all(|r| r[0] == "wgpu" && r[6] == "ok"),
        "{rows:?}"
    );
    // Both models train in two kernels per step (src/device/gpu_train.rs): at most 10 is the
    // issue's bound, the layers launched 84 for the Tiny CNN.
    for row in &rows {
        let launches: usize = row[12].parse().unwrap();
        assert!((1..=10).contains(&launches), "launches per step: {row:?}");
    }
}
