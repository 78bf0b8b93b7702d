//! Memory pressure: halving the batch loses no sample and changes nothing but the batch size.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// A short run on the CPU: two epochs of the baseline, three of the Tiny CNN.
fn short(out: &Path) -> Trainer {
    trainer().epochs(2, 3).quiet().cpu().out(out)
}

#[test]
fn a_failure_at_the_first_step_halves_and_matches_a_run_started_at_half() {
    let dir = temp();
    let halved = dir.path().join("halved");
    let direct = dir.path().join("direct");
    short(&halved)
        .args(["--batch-size", "32"])
        .env("TRAINER_FAIL_ALLOC_ABOVE", "16")
        .run_ok();
    short(&direct).args(["--batch-size", "16"]).run_ok();

    let (header, events) = read_csv(&halved.join("outputs/memory_events.csv"));
    assert_eq!(
        header,
        [
            "model",
            "phase",
            "epoch",
            "step",
            "from_batch",
            "to_batch",
            "reason",
            "requested_bytes",
            "budget_bytes"
        ]
    );
    assert_eq!(events.len(), 2, "{events:?}");
    for (event, model) in events.iter().zip(["Flatten baseline", "Tiny CNN"]) {
        assert_eq!(event[..6], [model, "train", "1", "1", "32", "16"]);
        assert!(event[6].contains("can't allocate"), "{event:?}");
    }
    assert_eq!(
        fs::read(halved.join("outputs/training_log.csv")).unwrap(),
        fs::read(direct.join("outputs/training_log.csv")).unwrap(),
        "halving at the first step must give the same training as starting at the halved size"
    );
    let (_, timing) = read_csv(&halved.join("outputs/epoch_timing.csv"));
    assert_eq!(timing.len(), 5);
    for row in &timing {
        assert_eq!(row[2], "16", "{row:?}");
        assert_eq!(
            row[6], "252",
            "every epoch trains on every sample once: {row:?}"
        );
    }
    let info: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(halved.join("outputs/run_info.json")).unwrap())
            .unwrap();
    for model in info["models"].as_array().unwrap() {
        assert_eq!(model["requested_batch_size"], 32);
        assert_eq!(model["final_batch_size"], 16);
    }
    let readme = fs::read_to_string(halved.join("README.md")).unwrap();
    assert!(readme.contains("halved 2 time(s)"), "{readme}");
}

#[test]
fn a_failure_at_batch_one_is_a_clear_error_and_keeps_the_earlier_pack() {
    let dir = temp();
    let pack = dir.path().join("pack");
    short(&pack).run_ok();
    let before = fs::read(pack.join("outputs/training_log.csv")).unwrap();
    let output = short(&pack)
        .env("TRAINER_FAIL_ALLOC_ABOVE", "0")
        .run_fail(1);
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("batch of 1"), "{err}");
    assert_eq!(
        fs::read(pack.join("outputs/training_log.csv")).unwrap(),
        before
    );
}

#[test]
fn a_small_memory_limit_halves_twice_before_training() {
    let dir = temp();
    let pack = dir.path().join("pack");
    short(&pack).args(["--memory-limit", "600KB"]).run_ok();
    let (_, events) = read_csv(&pack.join("outputs/memory_events.csv"));
    let cnn: Vec<_> = events.iter().filter(|e| e[0] == "Tiny CNN").collect();
    assert_eq!(cnn.len(), 2, "{events:?}");
    assert_eq!(cnn[0][1..6], ["preflight", "0", "0", "32", "16"]);
    assert_eq!(cnn[1][1..6], ["preflight", "0", "0", "16", "8"]);
    assert_eq!(cnn[0][8], "600000");
    let (_, timing) = read_csv(&pack.join("outputs/epoch_timing.csv"));
    assert!(
        timing
            .iter()
            .filter(|r| r[0] == "Tiny CNN")
            .all(|r| r[2] == "8")
    );
}

/// A lavapipe workshop run without the memory preflight, with `flags`; returns the Tiny CNN's
/// training halvings (rows of memory_events.csv) and checks every training sample was
/// trained on once per epoch (`samples` of them).
fn lavapipe_halvings(flags: &[&str], samples: &str) -> Vec<Vec<String>> {
    let dir = temp();
    let pack = dir.path().join("pack");
    trainer()
        .wgpu()
        .quiet()
        .arg("--no-memory-preflight")
        .args(flags)
        .quick()
        .out(&pack)
        .run_ok();
    let (_, timing) = read_csv(&pack.join("outputs/epoch_timing.csv"));
    for row in &timing {
        assert_eq!(row[6], samples, "every sample trained once: {row:?}");
    }
    let (_, events) = read_csv(&pack.join("outputs/memory_events.csv"));
    events
        .into_iter()
        .filter(|e| e[0] == "Tiny CNN" && e[1] == "train")
        .collect()
}

/// The adapter's largest storage binding, in bytes, when the test's largest buffer
/// (`needs` bytes) passes it: the failure these tests provoke is that binding refused, so on
/// an adapter that binds more (a real GPU) they say why they do not apply and pass.
fn binding_limit_below(test: &str, needs: u64) -> Option<u64> {
    trainer::device::prepare_environment();
    let open = trainer::device::open_named(trainer::device::BackendName::Wgpu).ok()?;
    let limit = open.info.max_storage_buffer_binding_bytes?;
    if needs <= limit {
        eprintln!(
            "{test}: not applicable: the adapter binds {limit} bytes, more than the {needs} this test needs to fail (lavapipe binds 128 MiB)"
        );
        return None;
    }
    Some(limit)
}

/// burn's layers (`--no-gpu-kernels`): conv1's output at 64x64 for the 1,260 training samples
/// is 165 MB, more than lavapipe binds (128 MiB), and the allocation really fails.
#[test]
fn lavapipe_halves_on_a_real_allocation_failure() {
    let test = "lavapipe_halves_on_a_real_allocation_failure";
    if !wgpu_available(test) || binding_limit_below(test, 1260 * 8 * 64 * 64 * 4).is_none() {
        return;
    }
    let flags = [
        "--no-gpu-kernels",
        "--image-size",
        "64",
        "--batch-size",
        "2048",
        "--samples-per-class",
        "700",
    ];
    let events = lavapipe_halvings(&flags, "1260");
    assert!(
        events.iter().any(|e| e[4] == "2048"),
        "no halving recorded for the Tiny CNN: {events:?}"
    );
}

/// The wgpu kernels: at 80x80, 468 samples' scratch (137 MB) is more than lavapipe binds
/// (128 MiB); the kernels refuse it before launching, and the batch halves until it fits.
#[test]
fn the_wgpu_kernels_halve_a_batch_whose_scratch_does_not_fit() {
    let test = "the_wgpu_kernels_halve_a_batch_whose_scratch_does_not_fit";
    if !wgpu_available(test) || binding_limit_below(test, 137_000_000).is_none() {
        return;
    }
    let flags = [
        "--image-size",
        "80",
        "--batch-size",
        "1024",
        "--samples-per-class",
        "260",
    ];
    let events = lavapipe_halvings(&flags, "468");
    assert!(
        events.iter().any(|e| e[6].contains("can't allocate")),
        "no halving recorded for the Tiny CNN: {events:?}"
    );
}
