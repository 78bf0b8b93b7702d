//! Faults: divergence, broken checkpoints, full or read-only disks, concurrent runs,
//! interrupts and odd paths. Nothing may lose results or leave a lie behind.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A short run on the CPU: one epoch of the baseline, two of the Tiny CNN.
fn short(out: &Path) -> Trainer {
    trainer().cpu().quiet().epochs(1, 2).out(out)
}

/// Names in `dir` other than `keep`.
fn leftovers(dir: &Path, keep: &[&str]) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

fn one_line_error(output: &std::process::Output) -> String {
    let err = stderr(output);
    assert_eq!(
        err.lines().count(),
        1,
        "expected one line on stderr, got:\n{err}"
    );
    assert!(err.starts_with("trainer: "), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
    err
}

#[test]
fn a_diverging_model_stops_and_the_other_still_trains() {
    let dir = temp();
    let pack = dir.path().join("pack");
    let output = trainer()
        .cpu()
        .args(["--lr-cnn", "1e6"])
        .out(&pack)
        .run_fail(3);
    let err = stderr(&output);
    assert!(
        err.contains("Tiny CNN diverged") && err.contains("epoch 1 step"),
        "{err}"
    );
    assert!(err.contains("debug_checklist.md"), "{err}");
    let (_, rows) = read_csv(&pack.join("outputs/model_comparison.csv"));
    let cnn = rows.iter().find(|r| r[0] == "Tiny CNN").unwrap();
    assert!(cnn[6].starts_with("diverged at epoch 1 step"), "{cnn:?}");
    // `epochs` counts the epochs finished: none before a divergence in epoch 1.
    assert_eq!(cnn[1], "0", "{cnn:?}");
    let baseline = rows.iter().find(|r| r[0] == "Flatten baseline").unwrap();
    assert_eq!(baseline[6], "ok");
    assert_eq!(
        rows[0][0], "Flatten baseline",
        "the diverged model is not the best"
    );
    let readme = fs::read_to_string(pack.join("README.md")).unwrap();
    assert!(readme.contains("diverged at epoch 1"), "{readme}");
    let meta = fs::read_to_string(pack.join("checkpoints/best_model.json")).unwrap();
    assert!(meta.contains("Flatten baseline"));
}

#[test]
fn broken_checkpoints_are_refused_and_never_panic() {
    let dir = temp();
    let pack = dir.path().join("pack");
    short(&pack).run_ok();
    let source = pack.join("checkpoints");
    let params = fs::read(source.join("best_model.bpk")).unwrap();
    let meta = fs::read(source.join("best_model.json")).unwrap();
    let device = burn::tensor::Device::flex();
    let (_, original) =
        trainer::model::checkpoint::load(&source, &device).expect("the original loads");

    let case = dir.path().join("case");
    fs::create_dir_all(&case).unwrap();
    let mut rng = Lcg(7);
    let mut refused = 0;
    for i in 0..400 {
        let (mut p, mut m) = (params.clone(), meta.clone());
        let target = if i % 2 == 0 { &mut p } else { &mut m };
        if rng.below(3) == 0 {
            let keep = rng.below(target.len());
            target.truncate(keep);
        } else {
            let at = rng.below(target.len());
            target[at] ^= 1 << rng.below(8);
        }
        fs::write(case.join("best_model.bpk"), &p).unwrap();
        fs::write(case.join("best_model.json"), &m).unwrap();
        let outcome = std::panic::catch_unwind(|| trainer::model::checkpoint::load(&case, &device));
        match outcome {
            Err(_) => panic!("case {i}: loading panicked"),
            Ok(Err(e)) => {
                refused += 1;
                let text = e.to_string();
                assert!(!text.contains('\n'), "case {i}: multi-line error {text}");
                assert_eq!(e.exit_code(), 2, "case {i}: {text}");
            }
            // Only a change that does not alter the content (whitespace in the JSON) may load,
            // and then it loads the same checkpoint.
            Ok(Ok((_, loaded))) => assert_eq!(loaded, original, "case {i}: loaded something else"),
        }
    }
    assert!(
        refused > 350,
        "only {refused} of 400 corruptions were refused"
    );

    // The command line says the same in one line.
    fs::write(case.join("best_model.bpk"), &params[..params.len() / 2]).unwrap();
    fs::write(case.join("best_model.json"), &meta).unwrap();
    let output = trainer()
        .subcommand("evaluate")
        .cpu()
        .checkpoint(&case)
        .run_fail(2);
    assert!(one_line_error(&output).contains("truncated"));
    let output = trainer()
        .subcommand("evaluate")
        .cpu()
        .checkpoint(dir.path().join("nothing"))
        .run_fail(2);
    one_line_error(&output);
}

#[test]
fn a_wrong_version_checkpoint_is_named_as_such() {
    let dir = temp();
    let pack = dir.path().join("pack");
    short(&pack).run_ok();
    let meta = pack.join("checkpoints/best_model.json");
    let text = fs::read_to_string(&meta).unwrap();
    fs::write(
        &meta,
        text.replace("\"format_version\": 1", "\"format_version\": 99"),
    )
    .unwrap();
    let output = trainer()
        .subcommand("evaluate")
        .cpu()
        .checkpoint(&meta)
        .run_fail(2);
    assert!(one_line_error(&output).contains("format version 99"));
}

/// Mounts a tmpfs of `size` at `at`; false when this process may not mount (not root, or a
/// container without the capability).
fn mount_tmpfs(at: &Path, options: &str) -> bool {
    fs::create_dir_all(at).unwrap();
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", options, "tmpfs", at.to_str().unwrap()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_keeps_the_earlier_pack() {
    let dir = temp();
    let disk = dir.path().join("disk");
    if !mount_tmpfs(&disk, "size=4m") {
        eprintln!(
            "a_full_disk_is_a_clear_error_and_keeps_the_earlier_pack: skipped: cannot mount a tmpfs (needs root)"
        );
        return;
    }
    let _mount = Mount(disk.clone());
    let pack = disk.join("pack");
    short(&pack).run_ok();
    let before = fs::read(pack.join("outputs/training_log.csv")).unwrap();
    // Fill the disk: dd stops when no byte is left.
    let filler = disk.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=4k"])
        .stderr(Stdio::null())
        .status();
    assert!(fs::metadata(&filler).map(|m| m.len()).unwrap_or(0) > 0);
    let output = short(&pack).run_fail(1);
    let err = one_line_error(&output);
    assert!(err.contains("No space left"), "{err}");
    assert_eq!(
        fs::read(pack.join("outputs/training_log.csv")).unwrap(),
        before
    );
    assert_eq!(leftovers(&disk, &["pack", "filler"]), Vec::<String>::new());
}

#[test]
fn a_read_only_output_is_a_clear_error() {
    let dir = temp();
    let disk = dir.path().join("ro");
    // Root ignores permissions: a read-only mount then; anyone else: a read-only folder.
    let _mount = if mount_tmpfs(&disk, "size=1m,ro") {
        Some(Mount(disk.clone()))
    } else {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&disk, fs::Permissions::from_mode(0o555)).unwrap();
        None
    };
    // An --out where no file can be made is bad input (2): said of --out, with the OS's
    // reason, not of the lock file the user never heard of.
    let output = short(&disk.join("pack")).run_fail(2);
    let err = one_line_error(&output);
    assert!(
        err.contains("Read-only") || err.contains("Permission denied"),
        "{err}"
    );
    assert!(err.contains("--out '") && !err.contains("lock"), "{err}");
    assert!(
        err.contains(disk.to_str().unwrap()),
        "names the file: {err}"
    );
    if _mount.is_none() {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&disk, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Starts a long run into `pack` and waits until it holds the lock.
#[test]
fn a_second_run_into_the_same_folder_refuses_while_the_first_runs() {
    let dir = temp();
    let pack = dir.path().join("pack");
    let first = start_long_run(&pack);
    let output = short(&pack).run_fail(2);
    assert!(one_line_error(&output).contains("another trainer run"));
    interrupt(&first);
    let first = first.wait_with_output().unwrap();
    assert_eq!(first.status.code(), Some(130));
    // The epochs it finished, if any, are kept as a pack marked incomplete; nothing else.
    if pack.exists() {
        let summary = fs::read_to_string(pack.join("outputs/metrics_summary.json")).unwrap();
        assert!(
            summary.contains("\"incomplete\": \"stopped at epoch"),
            "{summary}"
        );
    }
    assert_eq!(leftovers(dir.path(), &["pack"]), Vec::<String>::new());
    // Once the first is gone, the folder is free again.
    short(&pack).run_ok();
    // A lock whose process is gone (a killed run's) is taken over.
    fs::write(lock_of(&pack), "4194303\n").unwrap();
    short(&pack).run_ok();
    assert!(!lock_of(&pack).exists(), "the taken-over lock is released");
}

#[test]
fn a_second_interrupt_exits_at_once() {
    let dir = temp();
    let pack = dir.path().join("pack");
    let child = start_long_run(&pack);
    interrupt(&child);
    interrupt(&child);
    let started = Instant::now();
    let output = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    // No staging folder or lock is left; the folder holds at most the run's state after the
    // epochs it finished (to resume), never a half-written pack.
    assert_eq!(leftovers(dir.path(), &["pack"]), Vec::<String>::new());
    if pack.exists() {
        assert!(pack.join("checkpoints/last.bin").is_file());
        assert!(
            !pack.join("outputs").exists() || pack.join("outputs/metrics_summary.json").is_file()
        );
    }
}

#[test]
fn odd_paths_work_and_the_home_folder_is_refused() {
    let dir = temp();
    let pack = dir.path().join("präsentation 日本 run").join("pack two");
    short(&pack).run_ok();
    assert!(pack.join("outputs/training_log.csv").is_file());
    let checkpoint = pack.join("checkpoints/best_model.json");
    evaluate(&checkpoint).run_ok();

    let home = dir.path().join("home");
    fs::create_dir_all(&home).unwrap();
    let output = short(&home).env("HOME", &home).run_fail(2);
    assert!(one_line_error(&output).contains("home folder"));
}
