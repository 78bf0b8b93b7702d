//! Ctrl-C and SIGTERM on the commands that run long: a local sweep passes it on to its tasks,
//! waits for them and leaves none behind; bench writes the rows it measured (both exit 130);
//! a workshop run keeps the epochs it finished (130 for Ctrl-C, 143 for SIGTERM).

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
    // Unfinished: no state, no claim, no half pack; the next --local runs them again, going
    // on from the epochs a task finished (its run folder then holds a pack marked incomplete
    // and the run's state), or from the start.
    for index in 0..3 {
        assert!(!dir.join(format!("state/{index:04}.json")).exists());
        assert!(!dir.join(format!("state/{index:04}.claim")).exists());
        let run = dir.join(format!("runs/{index:04}"));
        if run.exists() {
            let summary = fs::read_to_string(run.join("outputs/metrics_summary.json")).unwrap();
            assert!(summary.contains("\"incomplete\""), "{summary}");
            assert!(run.join("checkpoints/last.bin").is_file());
        }
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
    let mut child = trainer()
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
    // The lock is taken before the device opens: an interrupt then stops bench before its
    // first row (no row to write). The backend line comes once the device is open, just
    // before the rows are measured.
    let stdout = child.stdout.take().expect("bench's stdout is piped");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok);
    let opened = lines.any(|line| line.starts_with("bench: backend:"));
    assert!(opened, "bench said which backend it measures");
    interrupt(&child);
    let started = Instant::now();
    // Read the rest, so bench's later lines are not written into a closed pipe.
    lines.for_each(drop);
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

/// Starts a CNN run whose epochs are long enough to be interrupted in the middle, and waits
/// until its first epoch is kept (its state file appears).
fn start_after_first_epoch(pack: &Path) -> std::process::Child {
    let child = trainer()
        .cpu()
        .args([
            "--models",
            "cnn",
            "--samples-per-class",
            "2000",
            "--epochs-cnn",
            "10000",
        ])
        .out(pack)
        .spawn();
    wait_for(
        &pack.join("checkpoints/last.bin"),
        Duration::from_secs(60),
        "the first epoch's state",
    );
    child
}

/// The epoch a stopped pack says it stopped at.
fn stopped_epoch(pack: &Path) -> usize {
    let summary = fs::read_to_string(pack.join("outputs/metrics_summary.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&summary).unwrap();
    let text = value["incomplete"].as_str().unwrap().to_string();
    assert!(text.starts_with("stopped at epoch "), "{text}");
    assert!(text.contains(" of 10000 (Tiny CNN)"), "{text}");
    text["stopped at epoch ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn ctrl_c_in_the_middle_of_a_run_keeps_the_epochs_finished() {
    let dir = temp();
    let pack = dir.path().join("pack");
    let child = start_after_first_epoch(&pack);
    interrupt(&child);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let epoch = stopped_epoch(&pack);
    assert!(epoch >= 2, "epoch 1 was kept before the interrupt");
    assert!(stdout(&output).contains(&format!("incomplete: stopped at epoch {epoch} of 10000")));
    let (_, rows) = read_csv(&pack.join("outputs/training_log.csv"));
    assert_eq!(rows.len(), epoch - 1, "epochs 1..{}", epoch - 1);
    assert!(
        fs::read_to_string(pack.join("README.md"))
            .unwrap()
            .contains("**Incomplete: stopped at epoch")
    );
}

#[test]
fn sigterm_keeps_the_epochs_finished_and_exits_143() {
    let dir = temp();
    let pack = dir.path().join("pack");
    let child = start_after_first_epoch(&pack);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(143), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "signal received (SIGTERM), stopping at the next step or batch; a second signal exits at once"
        ) && !stderr(&output).contains("Ctrl-C again"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("SIGTERM: stopped at epoch"),
        "{}",
        stderr(&output)
    );
    let epoch = stopped_epoch(&pack);
    let state = fs::read_to_string(pack.join("checkpoints/last.json")).unwrap();
    assert!(
        state.contains(&format!("stopped at epoch {epoch} of 10000")),
        "{state}"
    );
}

/// Ctrl-C during `parity`: it stops within a step, says so, exits 130, and leaves neither a
/// partial pack nor its staging folder or lock (README, "What happens when").
#[test]
fn parity_stops_within_a_step_and_leaves_no_partial_pack() {
    let dir = temp();
    let out = dir.path().join("parity");
    let child = trainer()
        .subcommand("parity")
        .args(["--backends", "cpu,ndarray"])
        .endless()
        .out(&out)
        .spawn();
    wait_for(&lock_of(&out), Duration::from_secs(20), "parity's lock");
    interrupt(&child);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(stderr(&output).contains("interrupt"), "{}", stderr(&output));
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
