//! Ctrl-C on the commands that run long: a local sweep passes it on to its tasks, waits for
//! them and leaves none behind; bench writes the rows it measured. Both exit 130.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// Whether process `pid` still runs (Linux).
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

/// The process id in a task's claim file (`host pid`).
fn claim_pid(dir: &Path, index: usize) -> u32 {
    let claim = fs::read_to_string(dir.join(format!("state/{index:04}.claim"))).unwrap();
    claim.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_local_sweep_passes_ctrl_c_to_its_tasks_and_leaves_none_behind() {
    let root = temp();
    sweep_plan(
        root.path(),
        "backend = \"cpu\"\nmodels = [\"cnn\"]\nsamples_per_class = 3000\nepochs_cnn = 5000\nlr_cnn = [0.003, 0.01, 0.02]\n",
        "sweep",
    )
    .run_ok();
    let dir = root.path().join("sweep");
    let parent = trainer()
        .subcommand("sweep run")
        .arg(&dir)
        .args(["--local", "--jobs", "2"])
        .spawn();
    // Interrupted once both running tasks train (each holds its pack's lock).
    for index in 0..2 {
        wait_for(
            &lock_of(&dir.join(format!("runs/{index:04}"))),
            Duration::from_secs(60),
            "a task's run",
        );
    }
    let tasks = [claim_pid(&dir, 0), claim_pid(&dir, 1)];
    interrupt(&parent);
    let started = Instant::now();
    let output = parent.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped in time"
    );
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    for pid in tasks {
        assert!(!alive(pid), "task process {pid} was left running");
    }
    let out = format!("{}{}", stdout(&output), stderr(&output));
    for index in 0..2 {
        assert!(
            out.contains(&format!("task {index:04}: interrupted")),
            "{out}"
        );
    }
    assert!(
        !out.contains("FAILED") && !out.contains(": finished"),
        "{out}"
    );
    assert!(out.contains("resumes"), "{out}");
    // Unfinished: no state, no claim, no half pack; the next --local runs them again.
    for index in 0..3 {
        assert!(!dir.join(format!("state/{index:04}.json")).exists());
        assert!(!dir.join(format!("state/{index:04}.claim")).exists());
        assert!(!dir.join(format!("runs/{index:04}")).exists());
    }
}

#[test]
fn a_task_another_worker_holds_is_busy_not_finished() {
    let root = temp();
    sweep_plan(
        root.path(),
        "backend = \"cpu\"\nmodels = [\"cnn\"]\nsamples_per_class = 10\nepochs_cnn = 1\nlr_cnn = [0.003, 0.01]\n",
        "sweep",
    )
    .run_ok();
    let dir = root.path().join("sweep");
    // Task 1 is claimed by a live process (this test), on this host.
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    fs::create_dir_all(dir.join("state")).unwrap();
    fs::write(
        dir.join("state/0001.claim"),
        format!("{} {}\n", host.trim(), std::process::id()),
    )
    .unwrap();
    let output = trainer()
        .subcommand("sweep run")
        .arg(&dir)
        .arg("--local")
        .run_ok();
    let out = format!("{}{}", stdout(&output), stderr(&output));
    assert!(out.contains("task 0000: finished"), "{out}");
    assert!(out.contains("task 0001: busy"), "{out}");
    assert!(
        out.contains("ran 1, 0 finished earlier, 0 failed, 0 interrupted, 1 busy"),
        "{out}"
    );
    assert!(!dir.join("state/0001.json").exists());
}

#[test]
fn bench_stops_within_a_step_and_writes_the_rows_it_measured() {
    let dir = temp();
    let out = dir.path().join("bench");
    let child = trainer()
        .subcommand("bench")
        .args([
            "--backend",
            "cpu",
            "--batch-sizes",
            "8,16",
            "--steps",
            "1000000",
        ])
        .out(&out)
        .spawn();
    wait_for(&lock_of(&out), Duration::from_secs(20), "bench's lock");
    interrupt(&child);
    let started = Instant::now();
    let output = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopped in time"
    );
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("row(s) are in"),
        "{}",
        stderr(&output)
    );
    let (header, rows) = read_csv(&out.join("bench/throughput.csv"));
    let status = header.iter().position(|h| h == "status").unwrap();
    assert_eq!(rows.len(), 1, "the row cut short: {rows:?}");
    assert_eq!(rows[0][status], "interrupted");
    // The row's steps are the steps it timed, as its note says.
    let steps = header.iter().position(|h| h == "steps").unwrap();
    let note = header.iter().position(|h| h == "note").unwrap();
    assert!(
        rows[0][note].starts_with(&format!("interrupted after {} of 1000000", rows[0][steps])),
        "{rows:?}"
    );
    let readme = fs::read_to_string(out.join("bench/README.md")).unwrap();
    assert!(readme.contains("interrupted"), "{readme}");
}
