//! The workshop run as a user runs it: the whole pack, its contents, determinism, the
//! checkpoint, the wgpu path, and the safety of the user's folders.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// Files that two runs with the same settings write byte for byte the same (the checkpoint
/// too: parameter ids come from the parameter's position, not from burn's random ids).
const DETERMINISTIC: [&str; 10] = [
    "checkpoints/best_model.bpk",
    "checkpoints/best_model.onnx",
    "checkpoints/best_model.safetensors",
    "checkpoints/best_model.json",
    "outputs/training_log.csv",
    "outputs/model_comparison.csv",
    "outputs/confusion_matrix.csv",
    "outputs/error_samples.csv",
    "outputs/label_issues.csv",
    "outputs/metrics_summary.json",
];

fn check_pack(pack: &Path) {
    for file in trainer::pack::evidence::FILES {
        let path = pack.join(file);
        assert!(path.is_file(), "missing {}", path.display());
        assert!(
            fs::metadata(&path).unwrap().len() > 0,
            "empty {}",
            path.display()
        );
    }
    // One test sample's share of accuracy, with its significant digits (never "0.000").
    let readme = fs::read_to_string(pack.join("README.md")).unwrap();
    let share = readme
        .split("so one sample moves test accuracy by ")
        .nth(1)
        .and_then(|rest| rest.split(".\n").next())
        .unwrap_or_else(|| panic!("no test-sample sentence in the README"));
    let samples: f64 = readme
        .split("The test set has ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    let share: f64 = share.parse().unwrap();
    assert!((share * samples - 1.0).abs() < 0.01, "{share} x {samples}");
    let (header, rows) = read_csv(&pack.join("outputs/training_log.csv"));
    assert_eq!(
        header,
        [
            "model",
            "epoch",
            "train_loss",
            "train_acc",
            "val_loss",
            "val_acc"
        ]
    );
    assert_eq!(rows.len(), 4 + 10);
    for row in &rows {
        for value in &row[2..] {
            let v: f64 = value.parse().unwrap();
            assert!(v.is_finite() && v >= 0.0, "{row:?}");
        }
    }
    let (header, rows) = read_csv(&pack.join("outputs/model_comparison.csv"));
    assert_eq!(
        header[..5],
        [
            "model",
            "epochs",
            "best_val_acc",
            "test_loss",
            "test_accuracy"
        ]
    );
    assert_eq!(rows.len(), 2);
    // The Tiny CNN wins by validation (the rule) and by test accuracy (the script's rule).
    assert_eq!(rows[0][0], "Tiny CNN", "{rows:?}");
    let test = |row: &Vec<String>| row[4].parse::<f64>().unwrap();
    assert!(test(&rows[0]) >= test(&rows[1]), "{rows:?}");
    // The seed script's CSV: CRLF line ends.
    let log = fs::read_to_string(pack.join("outputs/training_log.csv")).unwrap();
    assert!(
        log.split_inclusive('\n').all(|line| line.ends_with("\r\n")),
        "{log:?}"
    );
    let (header, rows) = read_csv(&pack.join("outputs/confusion_matrix.csv"));
    assert_eq!(
        header,
        [
            "actual/predicted",
            "vertical_stripe",
            "horizontal_stripe",
            "diagonal_stripe"
        ]
    );
    let total: usize = rows
        .iter()
        .flat_map(|r| r[1..].iter().map(|v| v.parse::<usize>().unwrap()))
        .sum();
    assert_eq!(total, 84);
    let (header, rows) = read_csv(&pack.join("outputs/error_samples.csv"));
    assert_eq!(
        header,
        [
            "sample_id",
            "actual",
            "predicted",
            "confidence",
            "correct",
            "review_reason"
        ]
    );
    assert_eq!(rows.len(), 10);
    let summary: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(pack.join("outputs/metrics_summary.json")).unwrap(),
    )
    .unwrap();
    for key in [
        "best_model",
        "test_accuracy",
        "classes",
        "train_samples",
        "val_samples",
        "test_samples",
    ] {
        assert!(
            summary.get(key).is_some(),
            "metrics_summary.json lacks {key}"
        );
    }
    assert_eq!(summary["train_samples"], 252);
    let info = run_info(&pack);
    assert!(info["total_wall_seconds"].as_f64().unwrap() > 0.0);
    assert!(info["device"]["device_name"].as_str().is_some());
    let (header, rows) = read_csv(&pack.join("outputs/epoch_timing.csv"));
    assert_eq!(
        header,
        [
            "model",
            "epoch",
            "batch_size",
            "train_seconds",
            "val_seconds",
            "train_samples_per_sec",
            "train_samples"
        ]
    );
    assert_eq!(rows.len(), 14);
    let trace = fs::read_to_string(pack.join("reports/shape_trace.md")).unwrap();
    assert!(trace.contains("`(32, 1, 16, 16)`"), "{trace}");
    assert!(trace.contains("`(32,)`"));
    assert!(
        trace.contains("`(32, 8, 8, 8)`"),
        "maxpool shape missing: {trace}"
    );
    let png = fs::read(pack.join("curves/loss_curve.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    assert!(pack.join(".trainer-run").is_file());
}

/// Reads (baseline best val acc, cnn best val acc, test accuracy) from the console.
fn accuracies(out: &str) -> (f64, f64, f64) {
    let get = |k| {
        console_value(out, k)
            .unwrap_or_else(|| panic!("no {k} in:\n{out}"))
            .parse()
            .unwrap()
    };
    (
        get("baseline_val_acc"),
        get("cnn_val_acc"),
        get("test_accuracy"),
    )
}

#[test]
fn cpu_run_writes_the_whole_pack_reproducibly_and_the_checkpoint_reloads() {
    let dir = temp();
    let first = dir.path().join("run one");
    let second = dir.path().join("run-two");
    let output = trainer().cpu().quiet().out(&first).run_ok();
    let out = stdout(&output);
    assert!(out.starts_with("STEP 1: data prepared\ntrain_samples: 252\nval_samples: 84\ntest_samples: 84\nclasses: 3\nSTEP 2"), "{out}");
    let (baseline, cnn, test) = accuracies(&out);
    assert!(
        (0.85..=0.97).contains(&baseline),
        "baseline best val acc {baseline}"
    );
    assert!(cnn >= 0.98, "cnn best val acc {cnn}");
    assert!(test >= 0.97, "test accuracy {test}");
    check_pack(&first);

    trainer().cpu().quiet().out(&second).run_ok();
    for file in DETERMINISTIC {
        assert_eq!(
            fs::read(first.join(file)).unwrap(),
            fs::read(second.join(file)).unwrap(),
            "{file} differs between two runs with the same seed"
        );
    }

    let checkpoint = first.join("checkpoints/best_model.json");
    // A grey model's checkpoint keeps the format from before colour: no `channels` key, one
    // mean and one std, so older builds still read it.
    let meta: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&checkpoint).unwrap()).unwrap();
    assert!(meta.get("channels").is_none(), "{meta}");
    assert!(meta["normalization"]["mean"].is_f64(), "{meta}");
    assert!(meta["normalization"]["std"].is_f64(), "{meta}");
    let output = trainer()
        .subcommand("evaluate")
        .cpu()
        .checkpoint(&checkpoint)
        .run_ok();
    let out = stdout(&output);
    let reloaded = console_value(&out, "test_accuracy").unwrap();
    assert_eq!(reloaded, format!("{test:.3}"), "{out}");
}

#[test]
fn rerun_replaces_an_earlier_pack_but_never_a_foreign_folder() {
    let dir = temp();
    let foreign = dir.path().join("my-photos");
    fs::create_dir_all(&foreign).unwrap();
    fs::write(foreign.join("holiday.jpg"), b"not a pack").unwrap();
    let output = trainer().cpu().quiet().quick().out(&foreign).run_fail(2);
    assert_eq!(stderr(&output).lines().count(), 1, "{}", stderr(&output));
    assert!(stderr(&output).contains("not a trainer run"));
    assert_eq!(
        fs::read(foreign.join("holiday.jpg")).unwrap(),
        b"not a pack"
    );

    let pack = dir.path().join("pack");
    for _ in 0..2 {
        trainer().cpu().quiet().quick().out(&pack).run_ok();
    }
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn bad_flags_get_one_clear_line_and_exit_code_2() {
    let dir = temp();
    let out = dir.path().join("never");
    let cases: [&[&str]; 8] = [
        &["--batch-size", "0"],
        &["--lr-cnn", "-0.5"],
        &["--lr-baseline", "NaN"],
        &["--lr-cnn", "inf"],
        &["--backend", "tpu"],
        &["--image-size", "2"],
        &["--epochs-cnn", "0"],
        &["--memory-limit", "lots"],
    ];
    for case in cases {
        let output = trainer().out(&out).args(case).run_fail(2);
        let err = stderr(&output);
        assert_eq!(
            err.lines().count(),
            1,
            "{case:?} printed more than one line: {err}"
        );
        assert!(err.starts_with("trainer: "), "{case:?}: {err}");
        assert!(!err.contains("panicked"), "{case:?}: {err}");
    }
    assert!(!dir.path().join("never").exists());
}

#[test]
fn out_must_not_be_a_file_or_the_current_folder() {
    let dir = temp();
    let file = dir.path().join("a-file");
    fs::write(&file, "x").unwrap();
    for out in [file.as_path(), Path::new("."), Path::new("/")] {
        trainer().cpu().out(out).run_fail(2);
    }
    assert_eq!(fs::read_to_string(&file).unwrap(), "x");
}

#[test]
fn an_interrupted_run_leaves_the_earlier_pack_whole() {
    let dir = temp();
    let pack = dir.path().join("pack");
    trainer().cpu().quiet().quick().out(&pack).run_ok();
    let before = fs::read(pack.join("outputs/training_log.csv")).unwrap();

    // Interrupted once it holds the folder's lock: it is then past its start-up.
    let child = trainer().cpu().endless().out(&pack).spawn();
    wait_for(
        &lock_of(&pack),
        std::time::Duration::from_secs(20),
        "the run's lock",
    );
    interrupt(&child);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    // Before its first epoch finished it keeps nothing new and the earlier pack stays whole;
    // after, the new pack holds the epochs finished, marked incomplete.
    let summary = fs::read_to_string(pack.join("outputs/metrics_summary.json")).unwrap();
    if summary.contains("\"incomplete\"") {
        assert!(stdout(&output).contains("incomplete: stopped at epoch"));
        for file in trainer::pack::evidence::FILES {
            assert!(pack.join(file).is_file(), "missing {file}");
        }
    } else {
        assert!(
            stderr(&output).contains("interrupted"),
            "{}",
            stderr(&output)
        );
        assert_eq!(
            fs::read(pack.join("outputs/training_log.csv")).unwrap(),
            before
        );
    }
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "pack")
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[test]
fn wgpu_run_matches_the_cpu_accuracies() {
    if !wgpu_available("wgpu_run_matches_the_cpu_accuracies") {
        return;
    }
    let dir = temp();
    let cpu = trainer().cpu().quiet().out(dir.path().join("cpu")).run_ok();
    let wgpu_pack = dir.path().join("wgpu");
    let wgpu = trainer().wgpu().out(&wgpu_pack).run_ok();
    assert!(stdout(&wgpu).contains("backend: wgpu"), "{}", stdout(&wgpu));
    check_pack(&wgpu_pack);
    let (a, b, c) = accuracies(&stdout(&cpu));
    let (x, y, z) = accuracies(&stdout(&wgpu));
    for (cpu, gpu, what) in [(a, x, "baseline val"), (b, y, "cnn val"), (c, z, "test")] {
        assert!((cpu - gpu).abs() <= 0.02, "{what}: cpu {cpu} vs wgpu {gpu}");
    }
    let info = run_info(&wgpu_pack);
    assert_eq!(info["device"]["backend"], "wgpu");
    assert!(info["device"]["graphics_api"].as_str().is_some());
}

#[test]
fn a_backend_that_cannot_start_is_one_line_and_exit_code_2() {
    let dir = temp();
    let hide_vulkan = |command: Trainer| {
        command
            .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
            .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
    };
    let out = dir.path().join("pack");
    let output = hide_vulkan(trainer().wgpu().out(&out)).run_fail(2);
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("backend 'wgpu' cannot start") && err.contains("mesa-vulkan-drivers"),
        "{err}"
    );
    assert!(!out.exists());
    // auto falls back to the CPU and says why.
    let output = hide_vulkan(trainer().quick().out(&out)).run_ok();
    assert!(
        stdout(&output).contains("auto: chose cpu, no wgpu adapter found"),
        "{}",
        stdout(&output)
    );
    // With only a software adapter (lavapipe), auto still takes the CPU backend, saying why.
    let lavapipe = "/usr/share/vulkan/icd.d/lvp_icd.x86_64.json";
    if Path::new(lavapipe).exists() {
        let output = trainer()
            .quick()
            .out(&out)
            .env("VK_DRIVER_FILES", lavapipe)
            .env("VK_ICD_FILENAMES", lavapipe)
            .run_ok();
        assert!(
            stdout(&output).contains("auto: chose cpu, only a software adapter"),
            "{}",
            stdout(&output)
        );
    } else {
        eprintln!("auto with lavapipe alone: skipped: no {lavapipe}");
    }
}
