//! The CNN's classifier head (`--head gap|flatten`, `--hidden N`, `--dropout P`): bad values
//! are one line and exit 2, a flatten head with a hidden layer and dropout trains, reruns
//! identically, reloads from its checkpoint with the same evaluation, and agrees on cpu and
//! wgpu.

mod common;

use std::fs;

use common::*;

const FLATTEN: [&str; 10] = [
    "--models",
    "cnn",
    "--cnn-widths",
    "6,8",
    "--head",
    "flatten",
    "--hidden",
    "12",
    "--dropout",
    "0.25",
];

#[test]
fn nonsense_heads_are_one_line_and_exit_2() {
    let dir = temp();
    let cases: [(&[&str], &str); 4] = [
        (&["--dropout", "1"], "--dropout must be in [0, 1), got 1"),
        (
            &["--dropout", "-0.1"],
            "--dropout must be in [0, 1), got -0.1",
        ),
        (
            &["--hidden", "100000"],
            "--hidden takes 0 (no hidden layer) to 4096 units",
        ),
        (
            &[
                "--head",
                "flatten",
                "--hidden",
                "4096",
                "--cnn-widths",
                "128",
                "--image-size",
                "128",
            ],
            "weights in its first linear layer",
        ),
    ];
    for (i, (args, message)) in cases.iter().enumerate() {
        let pack = dir.path().join(format!("pack{i}"));
        let output = trainer().cpu().quiet().args(*args).out(&pack).run_fail(2);
        let err = stderr(&output);
        assert!(err.contains(message), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(!pack.exists(), "{args:?} wrote a pack");
    }
    // The config file's keys are checked the same way, naming the line.
    let config = dir.path().join("bad.toml");
    fs::write(&config, "head = \"flatten\"\ndropout = 1.5\n").unwrap();
    let output = trainer().cpu().quiet().config(&config).run_fail(2);
    assert!(
        stderr(&output).contains("--dropout must be in [0, 1)"),
        "{}",
        stderr(&output)
    );
    let output = trainer().cpu().quiet().args(["--head", "pool"]).run_fail(2);
    assert!(stderr(&output).contains("gap"), "{}", stderr(&output));
    // bench takes the same flags and checks them the same way.
    let output = trainer()
        .subcommand("bench")
        .args(["--dropout", "1"])
        .run_fail(2);
    assert!(
        stderr(&output).contains("--dropout must be in [0, 1)"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_flatten_head_trains_reruns_identically_and_reloads() {
    let dir = temp();
    let run = |name: &str| {
        let pack = dir.path().join(name);
        trainer()
            .cpu()
            .quiet()
            .args(FLATTEN)
            .args(["--epochs-cnn", "3", "--samples-per-class", "30"])
            .out(&pack)
            .run_ok();
        pack
    };
    let (a, b) = (run("a"), run("b"));
    let log = |pack: &std::path::Path| {
        fs::read_to_string(file(pack, "outputs/training_log.csv")).unwrap()
    };
    let rows: Vec<String> = log(&a)
        .lines()
        .map(|l| l.split(',').take(6).collect::<Vec<_>>().join(","))
        .collect();
    let rows_b: Vec<String> = log(&b)
        .lines()
        .map(|l| l.split(',').take(6).collect::<Vec<_>>().join(","))
        .collect();
    assert_eq!(rows, rows_b, "dropout is seeded: reruns are identical");
    let meta: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(file(&a, "checkpoints/best_model.json")).unwrap())
            .unwrap();
    assert_eq!(meta["model_name"], "CNN 6-8 flatten-h12-d0.25", "{meta}");
    assert_eq!(meta["head"], "flatten");
    assert_eq!(meta["hidden"], 12);
    assert_eq!(meta["dropout"], 0.25);
    let trace = fs::read_to_string(file(&a, "reports/shape_trace.md")).unwrap();
    assert!(trace.contains("| flatten | `(32, 512)` |"), "{trace}");
    assert!(
        trace.contains("| linear + relu (hidden) | `(32, 12)` |"),
        "{trace}"
    );
    let info: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(file(&a, "outputs/run_info.json")).unwrap())
            .unwrap();
    let model = &info["models"][0];
    assert_eq!(model["engine"], "fused CPU operation", "{info}");
    assert!(
        model["engine_note"].is_null(),
        "no fallback to explain: {info}"
    );
    // The checkpoint alone gives the recorded test accuracy (dropout off in evaluation).
    let out = stdout(&evaluate(&a).run_ok());
    assert_eq!(
        console_value(&out, "test_accuracy"),
        console_value(&out, "recorded_test_accuracy"),
        "{out}"
    );
}

/// A hidden layer and dropout after the global average pool keep the fused CPU operation.
#[test]
fn a_gap_head_with_hidden_and_dropout_stays_on_the_fused_path() {
    let dir = temp();
    let pack = dir.path().join("pack");
    trainer()
        .cpu()
        .quiet()
        .args(["--models", "cnn", "--hidden", "10", "--dropout", "0.5"])
        .args(["--epochs-cnn", "2", "--samples-per-class", "20"])
        .out(&pack)
        .run_ok();
    let info: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(file(&pack, "outputs/run_info.json")).unwrap())
            .unwrap();
    let text = info.to_string();
    assert!(text.contains("fused CPU operation"), "{text}");
    assert!(text.contains("CNN 8-16 gap-h10-d0.5"), "{text}");
    let out = stdout(&evaluate(&pack).run_ok());
    assert_eq!(
        console_value(&out, "test_accuracy"),
        console_value(&out, "recorded_test_accuracy"),
        "{out}"
    );
}

/// cpu (the fused CPU operation, the head as burn-flex's layers) and wgpu (burn's layers: the
/// WGSL kernels refuse this head, and say so) train the same flatten head with the same
/// dropout masks.
#[test]
fn cpu_and_wgpu_agree_on_a_flatten_head() {
    if !wgpu_available("cpu_and_wgpu_agree_on_a_flatten_head") {
        return;
    }
    let dir = temp();
    let out = dir.path().join("parity");
    trainer()
        .subcommand("parity")
        .quiet()
        .out(&out)
        .args(["--backends", "cpu,wgpu"])
        .args(FLATTEN)
        .args(["--epochs-cnn", "2", "--samples-per-class", "40"])
        .run_ok();
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("parity/parity_report.json")).unwrap())
            .unwrap();
    assert_eq!(json["passed"], true, "{json}");
    let c = &json["comparisons"][0];
    assert_eq!(c["model"], "CNN 6-8 flatten-h12-d0.25", "{c}");
    assert_eq!(c["engines"][0], "fused CPU operation", "{c}");
    assert_eq!(c["engines"][1], "layers", "{c}");
}

/// A sweep takes lists of the head's keys (one task per combination, each with its head);
/// a head that varies where no task trains the CNN is refused, and a bad value is one line.
#[test]
fn sweeps_vary_the_head() {
    let root = temp();
    let toml = "backend = \"cpu\"\nmodels = [\"cnn\"]\nhead = [\"gap\", \"flatten\"]\nhidden = [0, 16]\ndropout = 0.25\n";
    sweep_plan(root.path(), toml, "grid").run_ok();
    let plan: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(root.path().join("grid/plan.json")).unwrap())
            .unwrap();
    let heads: Vec<(String, u64)> = plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let s = &t["settings"];
            (
                s["head"].as_str().unwrap().to_string(),
                s["hidden"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(heads.len(), 4, "{plan}");
    assert!(heads.contains(&("flatten".to_string(), 16)), "{heads:?}");
    let idle = sweep_plan(
        root.path(),
        "models = [\"baseline\"]\nhidden = [0, 16]\n",
        "idle",
    )
    .run_fail(2);
    assert!(
        stderr(&idle).contains("'hidden' varies but changes no task"),
        "{}",
        stderr(&idle)
    );
    let bad = sweep_plan(
        root.path(),
        "models = [\"cnn\"]\ndropout = [0.5, 1.0]\n",
        "bad",
    )
    .run_fail(2);
    assert!(
        stderr(&bad).contains("--dropout must be in [0, 1)"),
        "{}",
        stderr(&bad)
    );
    assert_eq!(stderr(&bad).trim().lines().count(), 1, "{}", stderr(&bad));
}
