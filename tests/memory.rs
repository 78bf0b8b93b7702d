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
    let info = run_info(&halved);
    for model in info["models"].as_array().unwrap() {
        assert_eq!(model["requested_batch_size"], 32);
        assert_eq!(model["final_batch_size"], 16);
    }
    // The settings keep the batch asked for and say the one the run ended on.
    assert_eq!(info["settings"]["batch_size"], 32, "{info}");
    assert_eq!(info["settings"]["final_batch_size"], 16, "{info}");
    let direct_info = run_info(&direct);
    assert_eq!(direct_info["settings"]["final_batch_size"], 16);
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

/// A device error that is not a memory shortage is reported as it is (one line, exit 1) and
/// not retried at a smaller batch; the earlier pack stays (`TRAINER_FAIL_DEVICE_ABOVE`, a
/// test hook, fails every step of more than N samples so).
#[test]
fn another_device_error_is_reported_and_not_retried() {
    let dir = temp();
    let pack = dir.path().join("pack");
    short(&pack).run_ok();
    let before = fs::read(pack.join("outputs/training_log.csv")).unwrap();
    let output = short(&pack)
        .args(["--batch-size", "32"])
        .env("TRAINER_FAIL_DEVICE_ABOVE", "16")
        .run_fail(1);
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("device lost (injected"), "{err}");
    assert!(
        !stdout(&output).contains("-> 16"),
        "no halving: {}",
        stdout(&output)
    );
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

/// Whether the wgpu adapter is a software one (lavapipe), whose device memory is the
/// process's own: capping the address space then starves the device, as another process
/// filling a GPU does. On a hardware adapter the test says why it does not apply.
fn software_adapter(test: &str) -> bool {
    trainer::device::prepare_environment();
    let software = trainer::device::open_named(trainer::device::BackendName::Wgpu)
        .map(|open| open.info.software)
        .unwrap_or(false);
    if !software {
        eprintln!(
            "{test}: not applicable: the adapter's memory is not the process's (not lavapipe)"
        );
    }
    software
}

/// A genuine out-of-memory inside the wgpu kernels in the middle of an epoch: before each
/// model's third step, TRAINER_CAP_MEMORY_AT releases the device's cached memory and caps the
/// process's address space 60 MiB above what it maps; the Tiny CNN's steps at 64x64 and
/// batch 512 need 110 MB, so lavapipe's next buffer fails to allocate and wgpu reports "Out
/// of Memory" on cubecl's device thread. The epoch goes back to its start, is trained again
/// at 256, and the run finishes with every sample trained once an epoch.
#[test]
fn a_real_out_of_memory_inside_the_kernels_halves_and_goes_on() {
    let test = "a_real_out_of_memory_inside_the_kernels_halves_and_goes_on";
    if !wgpu_available(test) || !software_adapter(test) {
        return;
    }
    let dir = temp();
    let pack = dir.path().join("pack");
    let output = trainer()
        .wgpu()
        .args(["--no-memory-preflight", "--image-size", "64"])
        .args(["--batch-size", "512", "--samples-per-class", "1000"])
        .epochs(1, 2)
        .env("TRAINER_CAP_MEMORY_AT", "3:60")
        .out(&pack)
        .run_ok();
    let console = stdout(&output);
    assert!(console.contains("capped the address space"), "{console}");
    let info = std::fs::read_to_string(pack.join("outputs/run_info.json")).unwrap();
    assert!(
        info.contains("TRAINER_CAP_MEMORY_AT=3:60 trainer "),
        "the recorded command reruns the same: {info}"
    );

    let (_, events) = read_csv(&pack.join("outputs/memory_events.csv"));
    assert_eq!(events.len(), 1, "one halving, the Tiny CNN's: {events:?}");
    let event = &events[0];
    assert_eq!(event[..3], ["Tiny CNN", "train", "1"], "{event:?}");
    assert_eq!(event[4..6], ["512", "256"], "{event:?}");
    assert!(event[6].contains("Out of Memory"), "{event:?}");
    assert!(
        event[6].contains("redoing epoch 1 from its start"),
        "{event:?}"
    );

    let (_, timing) = read_csv(&pack.join("outputs/epoch_timing.csv"));
    assert_eq!(timing.len(), 3, "{timing:?}");
    for row in &timing {
        assert_eq!(
            row[6], "1800",
            "every sample trained once an epoch: {row:?}"
        );
    }
    for row in timing.iter().filter(|r| r[0] == "Tiny CNN") {
        assert_eq!(row[2], "256", "{row:?}");
    }
    let (_, log) = read_csv(&pack.join("outputs/training_log.csv"));
    assert_eq!(log.len(), 3, "{log:?}");
    let readme = std::fs::read_to_string(pack.join("README.md")).unwrap();
    assert!(readme.contains("halved 1 time(s)"), "{readme}");
}

#[test]
fn a_malformed_memory_cap_is_refused() {
    for value in ["3", "0:100", "3:0", "x:1", "3:-1"] {
        let output = short(&temp().path().join("pack"))
            .env("TRAINER_CAP_MEMORY_AT", value)
            .run_fail(2);
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "{value}: {err}");
        let note = stdout(&output);
        assert!(!note.contains("capped"), "{value}: {note}");
        assert!(
            err.contains("TRAINER_CAP_MEMORY_AT must be STEP:MIB"),
            "{value}: {err}"
        );
    }
}

/// Off wgpu the memory hook does not apply, whether or not its STEP would be reached: one
/// line saying so for the run, not one per model, and not "the epoch is too short".
#[test]
fn the_memory_cap_says_once_that_it_does_not_apply_on_the_cpu() {
    let output = trainer()
        .epochs(1, 1)
        .cpu()
        .args(["--samples-per-class", "20"])
        .env("TRAINER_CAP_MEMORY_AT", "3:60")
        .out(&temp().path().join("pack"))
        .run_ok();
    let console = stdout(&output);
    let notes: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("TRAINER_CAP_MEMORY_AT"))
        .collect();
    assert_eq!(notes.len(), 1, "{console}");
    assert!(
        notes[0].contains("not applied") && notes[0].contains("this run is on cpu"),
        "{console}"
    );
}
