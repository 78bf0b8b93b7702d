//! The recipes: optimizers, schedules and label smoothing as flags, config keys, compare and
//! sweep keys; parity passing with them on cpu and wgpu; bad values refused; `lr-find`'s
//! suggestion training the Tiny CNN. (The comparison with PyTorch's recipes is in
//! tests/interop.rs, the update kernel against burn's optimizers in tests/gpu_kernels.rs.)

mod common;

use std::fs;
use std::path::Path;

use common::{file, read_csv, stderr, stdout, temp, trainer};

#[test]
fn bad_recipe_values_are_refused_with_one_line_and_nothing_written() {
    let dir = temp();
    let out = dir.path().join("never");
    let cases: [(&[&str], &str); 10] = [
        (
            &["--weight-decay", "-0.1", "--optimizer", "adamw"],
            "--weight-decay",
        ),
        (
            &["--weight-decay", "NaN", "--optimizer", "adamw"],
            "--weight-decay",
        ),
        (&["--weight-decay", "0.01"], "--optimizer adamw"),
        (
            &["--optimizer", "sgd", "--momentum", "1.0"],
            "--momentum must be in [0, 1)",
        ),
        (&["--momentum", "0.9"], "--optimizer sgd"),
        (&["--nesterov", "--optimizer", "adamw"], "--nesterov"),
        (&["--nesterov", "--optimizer", "sgd"], "--nesterov"),
        (&["--schedule", "linear"], "linear"),
        (&["--warmup-epochs", "10"], "--warmup-epochs"),
        (&["--label-smoothing", "1.0"], "--label-smoothing"),
    ];
    for (args, needle) in cases {
        let output = trainer().cpu().quiet().out(&out).args(args).run_fail(2);
        let err = stderr(&output);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?}: nothing written");
    }
}

/// A config file's keys are checked with the flags' values of the keys it leaves out: its
/// weight_decay with --optimizer adamw on the command line is fine; its bad value is still
/// refused when a flag overrides it.
#[test]
fn a_config_files_recipe_is_checked_with_the_flags() {
    let dir = temp();
    let file = dir.path().join("decay.toml");
    fs::write(
        &file,
        "weight_decay = 0.01\nepochs_baseline = 1\nepochs_cnn = 1\n",
    )
    .unwrap();
    let pack = dir.path().join("pack");
    trainer()
        .cpu()
        .quiet()
        .out(&pack)
        .config(&file)
        .args(["--optimizer", "adamw"])
        .run_ok();
    let config: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(common::file(&pack, "outputs/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["optimizer"], "adamw");
    assert_eq!(config["weight_decay"], 0.01);
    let bad = dir.path().join("bad.toml");
    fs::write(&bad, "label_smoothing = 1.5\n").unwrap();
    let output = trainer()
        .cpu()
        .quiet()
        .out(dir.path().join("never"))
        .config(&bad)
        .args(["--label-smoothing", "0.1"])
        .run_fail(2);
    assert!(stderr(&output).contains("line 1"), "{}", stderr(&output));
}

#[test]
fn a_schedule_is_in_the_log_the_plot_and_the_config() {
    let dir = temp();
    let pack = dir.path().join("cosine");
    trainer()
        .cpu()
        .quiet()
        .out(&pack)
        .args(["--schedule", "cosine", "--warmup-epochs", "1"])
        .args(["--optimizer", "adamw", "--weight-decay", "0.01"])
        .args(["--label-smoothing", "0.1"])
        .run_ok();
    let (header, rows) = read_csv(&file(&pack, "outputs/training_log.csv"));
    let lr = header.iter().position(|h| h == "lr").expect("an lr column");
    let cnn: Vec<f64> = rows
        .iter()
        .filter(|r| r[0] == "Tiny CNN")
        .map(|r| r[lr].parse().unwrap())
        .collect();
    assert_eq!(cnn.len(), 10);
    // Warm-up to 0.006 by the end of epoch 1, then a cosine towards 0.
    assert!(cnn[0] <= 0.006 + 1e-12 && cnn[0] > 0.005, "{cnn:?}");
    assert!(cnn.windows(2).skip(1).all(|w| w[1] < w[0]), "{cnn:?}");
    assert!(cnn[9] < 1e-4, "{cnn:?}");
    assert!(file(&pack, "curves/lr_schedule.png").is_file());
    // The recipe in words: run_info.json and the pack's README.
    let info = fs::read_to_string(file(&pack, "outputs/run_info.json")).unwrap();
    assert!(info.contains("\"optimizer\""), "{info}");
    let readme = fs::read_to_string(file(&pack, "README.md")).unwrap();
    assert!(readme.contains("Recipe: "), "{readme}");
    // The config repeats the run exactly.
    let again = dir.path().join("again");
    trainer()
        .cpu()
        .quiet()
        .out(&again)
        .config(file(&pack, "outputs/config.json"))
        .run_ok();
    assert_eq!(
        fs::read(file(&pack, "outputs/training_log.csv")).unwrap(),
        fs::read(file(&again, "outputs/training_log.csv")).unwrap()
    );
    // The workshop's recipe keeps the workshop's columns.
    let plain = dir.path().join("plain");
    trainer().cpu().quiet().quick().out(&plain).run_ok();
    let (header, _) = read_csv(&file(&plain, "outputs/training_log.csv"));
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
    // compare names the one key that changed.
    let b = dir.path().join("sgd");
    trainer()
        .cpu()
        .quiet()
        .quick()
        .out(&b)
        .args(["--optimizer", "sgd"])
        .run_ok();
    let said = stdout(&trainer().subcommand("compare").arg(&plain).arg(&b).run_ok());
    assert!(said.contains("changed: optimizer: adam -> sgd"), "{said}");
}

#[test]
fn parity_passes_with_each_optimizer_and_schedule() {
    if !common::wgpu_available("parity_passes_with_each_optimizer_and_schedule") {
        return;
    }
    let dir = temp();
    let recipes: [&[&str]; 3] = [
        &[
            "--optimizer",
            "sgd",
            "--momentum",
            "0.9",
            "--nesterov",
            "--weight-decay",
            "0.001",
            "--lr-cnn",
            "0.05",
            "--lr-baseline",
            "0.05",
            "--schedule",
            "step",
        ],
        &[
            "--optimizer",
            "adamw",
            "--weight-decay",
            "0.05",
            "--schedule",
            "onecycle",
            "--label-smoothing",
            "0.1",
        ],
        &["--schedule", "cosine", "--warmup-epochs", "1"],
    ];
    for (i, args) in recipes.iter().enumerate() {
        let out = dir.path().join(format!("parity-{i}"));
        trainer()
            .subcommand("parity")
            .quiet()
            .out(&out)
            .args([
                "--backends",
                "cpu,wgpu",
                "--epochs-baseline",
                "2",
                "--epochs-cnn",
                "4",
            ])
            .args(*args)
            .run_ok();
        let report: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(out.join("parity/parity_report.json")).unwrap(),
        )
        .unwrap();
        assert!(
            report["verdict"].as_str().unwrap().starts_with("PASS"),
            "{args:?}: {}",
            report["verdict"]
        );
    }
}

#[test]
fn a_sweep_varies_the_optimizer_and_the_schedule() {
    let dir = temp();
    let grid = dir.path().join("grid.toml");
    fs::write(
        &grid,
        "models = [[\"cnn\"]]\nepochs_cnn = 2\noptimizer = [\"adam\", \"sgd\"]\nschedule = [\"constant\", \"cosine\"]\n",
    )
    .unwrap();
    let sweep = dir.path().join("sweep");
    trainer()
        .subcommand("sweep plan")
        .arg("--config")
        .arg(&grid)
        .arg("--out")
        .arg(&sweep)
        .run_ok();
    let plan: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(sweep.join("plan.json")).unwrap()).unwrap();
    assert_eq!(
        plan["varying"],
        serde_json::json!(["optimizer", "schedule"])
    );
    trainer()
        .subcommand("sweep run")
        .arg(&sweep)
        .args(["--local", "--quiet"])
        .run_ok();
    trainer().subcommand("sweep collect").arg(&sweep).run_ok();
    let (header, rows) = read_csv(&sweep.join("leaderboard.csv"));
    assert!(header.contains(&"optimizer".to_string()), "{header:?}");
    assert_eq!(rows.len(), 4);
}

/// The rate `lr-find` suggests on the stripes trains the Tiny CNN to a validation accuracy
/// of at least 0.95 in the workshop's 10 epochs.
#[test]
fn lr_find_suggests_a_rate_that_trains_the_tiny_cnn() {
    let dir = temp();
    let out = dir.path().join("lr");
    let said = stdout(
        &trainer()
            .subcommand("lr-find")
            .cpu()
            .quiet()
            .out(&out)
            .run_ok(),
    );
    let last = said.trim().lines().last().unwrap().to_string();
    let rate = last
        .strip_prefix("--lr-cnn ")
        .unwrap_or_else(|| panic!("the last line is the flag: {said}"));
    let (header, rows) = read_csv(&out.join("lr_find.csv"));
    assert_eq!(header, ["step", "lr", "loss", "smoothed_loss"]);
    assert!(rows.len() >= 100, "{} steps", rows.len());
    assert!(out.join("lr_find.png").is_file());
    let pack = dir.path().join("pack");
    trainer()
        .cpu()
        .quiet()
        .out(&pack)
        .args(["--models", "cnn", "--lr-cnn", rate])
        .run_ok();
    let (_, comparison) = read_csv(&file(&pack, "outputs/model_comparison.csv"));
    let best_val: f64 = comparison[0][2].parse().unwrap();
    assert!(best_val >= 0.95, "--lr-cnn {rate}: best val acc {best_val}");
    check_lr_find_refusals(dir.path());
    // A workshop flag that means nothing to the test is ignored, with a warning.
    let output = trainer()
        .subcommand("lr-find")
        .cpu()
        .quiet()
        .out(dir.path().join("ignored"))
        .args(["--steps", "10", "--epochs-cnn", "3"])
        .run_ok();
    assert!(
        stderr(&output).contains("lr-find ignores --epochs-baseline/--epochs-cnn"),
        "{}",
        stderr(&output)
    );
}

fn check_lr_find_refusals(dir: &Path) {
    for args in [
        &["--start-lr", "1", "--end-lr", "0.1"][..],
        &["--steps", "3"],
        &["--start-lr", "0"],
    ] {
        let out = dir.join("refused");
        let output = trainer()
            .subcommand("lr-find")
            .cpu()
            .quiet()
            .out(&out)
            .args(args)
            .run_fail(2);
        assert_eq!(stderr(&output).trim().lines().count(), 1);
        assert!(!out.exists());
    }
}

/// The schedule counts steps of the requested batch size, so a run whose batch was halved on
/// memory pressure keeps its pace: halved from 32 at its first step, it moves its rate (and
/// trains) exactly as a run started at 16 does. (Counting the halved steps as whole ones
/// would run the schedule out at half the run.)
#[test]
fn a_halved_batch_keeps_the_schedules_pace() {
    let dir = temp();
    let run = |name: &str, batch: &str, fail: Option<&str>| {
        let pack = dir.path().join(name);
        let mut run = trainer()
            .cpu()
            .quiet()
            .out(&pack)
            .args(["--models", "baseline", "--epochs-baseline", "3"])
            .args(["--schedule", "cosine", "--batch-size", batch]);
        if let Some(above) = fail {
            run = run.env("TRAINER_FAIL_ALLOC_ABOVE", above);
        }
        run.run_ok();
        pack
    };
    let halved = run("halved", "32", Some("16"));
    let direct = run("direct", "16", None);
    let (_, events) = read_csv(&file(&halved, "outputs/memory_events.csv"));
    assert_eq!(events.len(), 1, "it did halve: {events:?}");
    let (header, rows) = read_csv(&file(&halved, "outputs/training_log.csv"));
    let lr = header.iter().position(|h| h == "lr").expect("an lr column");
    let rates: Vec<f64> = rows.iter().map(|r| r[lr].parse().unwrap()).collect();
    assert!(rates.windows(2).all(|w| w[1] < w[0]), "{rates:?}");
    assert_eq!(
        fs::read_to_string(file(&halved, "outputs/training_log.csv")).unwrap(),
        fs::read_to_string(file(&direct, "outputs/training_log.csv")).unwrap(),
        "the halved run's rates and losses"
    );
}
