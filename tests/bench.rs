//! `trainer bench`: the sweep writes its four files, and a batch that does not fit is
//! recorded, not fatal.

mod common;

use std::fs;
use std::path::Path;

use common::*;

const COLUMNS: [&str; 18] = [
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
        assert_eq!(row[7], "ok", "{row:?}");
        let rate: f64 = row[8].parse().unwrap();
        assert!(rate > 0.0, "{row:?}");
        let gflops: f64 = row[9].parse().unwrap();
        assert!(gflops > 0.0, "{row:?}");
        let median: f64 = row[10].parse().unwrap();
        let (p10, p90): (f64, f64) = (row[11].parse().unwrap(), row[12].parse().unwrap());
        assert!(p10 <= median && median <= p90, "{row:?}");
        assert_eq!(row[14], "", "the CPU backends launch no kernels: {row:?}");
        assert_eq!(row[5], "1", "the stripes are one channel: {row:?}");
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
        assert_eq!(of[0][7], "ok");
        assert_eq!(of[1][7], "does not fit");
        assert!(of[1][17].contains("can't allocate"), "{:?}", of[1]);
        assert_eq!(of[2][7], "does not fit");
        assert!(of[2][8].is_empty());
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
        rows.iter().all(|r| r[0] == "wgpu" && r[7] == "ok"),
        "{rows:?}"
    );
    // Both models train in two kernels per step (src/device/gpu_train.rs), as the README
    // says: the sample kernel and the update kernel (the layers launched 84 for the Tiny CNN).
    for row in &rows {
        let launches: usize = row[14].parse().unwrap();
        assert_eq!(launches, 2, "launches per step: {row:?}");
    }
}

/// A 3-channel CNN of three blocks: each backend measures it (wgpu in its kernels, at most
/// three launches a step), the rows name the shape and their GFLOP/s follow from samples/s.
#[test]
fn an_rgb_family_cnn_on_every_backend() {
    let dir = temp();
    let out = dir.path().join("bench");
    let backends = if wgpu_available("an_rgb_family_cnn_on_every_backend") {
        "cpu,ndarray,wgpu"
    } else {
        "cpu,ndarray"
    };
    trainer()
        .subcommand("bench")
        .quiet()
        .backend(backends)
        .args([
            "--color",
            "rgb",
            "--cnn-widths",
            "4,6,8",
            "--image-size",
            "9",
            "--batch-sizes",
            "8",
            "--steps",
            "2",
            "--warmup",
            "1",
        ])
        .out(&out)
        .run_ok();
    let rows = check(&out, backends.split(',').count());
    // Forward FLOPs of one 3x9x9 image: 9x9, 4x4 and 2x2 convolutions, then the linear layer.
    let forward = 2 * 9 * (3 * 4 * 81 + 4 * 6 * 16 + 6 * 8 * 4) + 2 * 8 * 3;
    for row in &rows {
        assert_eq!(
            (row[2].as_str(), row[5].as_str(), row[7].as_str()),
            ("cnn-4-6-8", "3", "ok"),
            "{row:?}"
        );
        let rate: f64 = row[8].parse().unwrap();
        let gflops: f64 = row[9].parse().unwrap();
        let expected = rate * 3.0 * forward as f64 / 1e9;
        assert!(
            (gflops - expected).abs() <= 0.006 + 1e-3 * expected,
            "{row:?}"
        );
        if row[0] == "wgpu" {
            let launches: usize = row[14].parse().unwrap();
            assert!((1..=3).contains(&launches), "launches per step: {row:?}");
        }
    }
}

/// Every head of the grid (global average pool or flatten, hidden 0 or 128, dropout
/// 0 or 0.25), without and with `--batch-norm`, trains on wgpu in the WGSL kernels: each row
/// names the shape, says no fallback, and counts at most four launches a step.
#[test]
fn every_head_takes_at_most_four_launches_on_wgpu() {
    if !wgpu_available("every_head_takes_at_most_four_launches_on_wgpu") {
        return;
    }
    let dir = temp();
    for norm in ["--no-batch-norm", "--batch-norm"] {
        for head in ["gap", "flatten"] {
            for hidden in ["0", "128"] {
                for dropout in ["0", "0.25"] {
                    let out = dir.path().join(format!("{head}-{hidden}-{dropout}{norm}"));
                    trainer()
                        .subcommand("bench")
                        .quiet()
                        .backend("wgpu")
                        .args(["--model", "cnn", "--cnn-widths", "4,6", "--image-size", "8"])
                        .args([
                            "--head",
                            head,
                            "--hidden",
                            hidden,
                            "--dropout",
                            dropout,
                            norm,
                        ])
                        .args(["--batch-sizes", "6", "--steps", "1", "--warmup", "0"])
                        .out(&out)
                        .run_ok();
                    let rows = check(&out, 1);
                    let row = &rows[0];
                    let slug = if norm == "--batch-norm" {
                        "cnn-4-6-bn"
                    } else {
                        "cnn-4-6"
                    };
                    assert!(row[2].starts_with(slug), "{row:?}");
                    assert_eq!(row[7], "ok", "{row:?}");
                    assert!(row[17].is_empty(), "no fallback note: {row:?}");
                    let launches: usize = row[14].parse().unwrap();
                    assert!((1..=4).contains(&launches), "launches per step: {row:?}");
                }
            }
        }
    }
}

/// `--classes 10` gives the models ten outputs (the peer's 10-class network): the rows'
/// GFLOP/s count a 8x10 last layer, and run_info and the README record the count.
#[test]
fn classes_sets_the_models_output_size() {
    let dir = temp();
    let out = dir.path().join("bench");
    trainer()
        .subcommand("bench")
        .quiet()
        .backend("cpu")
        .args("--cnn-widths 4,8 --image-size 8 --classes 10 --batch-sizes 8".split(' '))
        .args(["--steps", "2", "--warmup", "1"])
        .out(&out)
        .run_ok();
    let rows = check(&out, 1);
    // Forward FLOPs of one 8x8 image: 8x8 and 4x4 convolutions, then the 8x10 linear layer.
    let forward = 2 * 9 * (4 * 64 + 4 * 8 * 16) + 2 * 8 * 10;
    let rate: f64 = rows[0][8].parse().unwrap();
    let gflops: f64 = rows[0][9].parse().unwrap();
    let expected = rate * 3.0 * forward as f64 / 1e9;
    assert!(
        (gflops - expected).abs() <= 0.006 + 1e-3 * expected,
        "{:?}",
        rows[0]
    );
    let info: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("bench/run_info.json")).unwrap())
            .unwrap();
    assert_eq!(info["config"]["classes"], 10);
    let readme = fs::read_to_string(out.join("bench/README.md")).unwrap();
    assert!(readme.contains("The models have 10 classes"), "{readme}");
    let refused = trainer()
        .subcommand("bench")
        .quiet()
        .backend("cpu")
        .args(["--classes", "1"])
        .out(&dir.path().join("refused"))
        .run_fail(2);
    assert!(stderr(&refused).contains("--classes must be between 2 and 1000"));
}
