//! The exports opened by the real clients: PyTorch loads `best_model.safetensors` into the
//! equivalent Sequential and gives trainer's logits and test accuracy, onnxruntime runs
//! `best_model.onnx` on raw pixels to the same predictions, TensorBoard's own reader finds
//! every scalar of `training_log.csv` (tests/interop/check.py does the Python side). And
//! `trainer export`: the same bytes as the pack for any checkpoint, bad input refused.
//!
//! The Python clients come from `scripts/python-env.sh` (`.venv-interop/`, or
//! TRAINER_PYTHON); without them the client checks skip, saying why, unless
//! TRAINER_REQUIRE_PYTHON=1, when they fail.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{file, stderr, temp, trainer};

const CLIENTS: &str = "import torch, onnxruntime, onnx, safetensors, tensorboard, numpy";

fn check_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/check.py")
}

/// The Python with the clients, if there is one.
fn python(test: &str) -> Option<PathBuf> {
    let python = std::env::var_os("TRAINER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-interop/bin/python"));
    let works = Command::new(&python)
        .args(["-c", CLIENTS])
        .output()
        .is_ok_and(|o| o.status.success());
    if !works {
        if std::env::var("TRAINER_REQUIRE_PYTHON").as_deref() == Ok("1") {
            panic!(
                "{test}: '{}' cannot `{CLIENTS}`, and TRAINER_REQUIRE_PYTHON=1 requires it (scripts/python-env.sh)",
                python.display()
            );
        }
        eprintln!(
            "{test}: skipped: '{}' cannot `{CLIENTS}` (run scripts/python-env.sh)",
            python.display()
        );
        return None;
    }
    Some(python)
}

fn run_python(python: &Path, args: &[&str]) -> String {
    let out = Command::new(python)
        .arg(check_script())
        .args(args)
        .output()
        .expect("python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "check.py {args:?}:\n{text}");
    text
}

/// A folder of 3 classes of 16x16 PNGs with `channels` channels.
fn folder(python: &Path, dir: &Path, channels: usize) -> PathBuf {
    let data = dir.join(format!("data-{channels}"));
    run_python(
        python,
        &[
            "make",
            data.to_str().unwrap(),
            &channels.to_string(),
            "20",
            "16",
        ],
    );
    data
}

#[test]
fn pytorch_onnxruntime_and_tensorboard_open_the_exports() {
    let Some(python) = python("pytorch_onnxruntime_and_tensorboard_open_the_exports") else {
        return;
    };
    let root = temp();
    let gray = folder(&python, root.path(), 1);
    let rgb = folder(&python, root.path(), 3);
    let cases: [(&str, &Path, &[&str]); 7] = [
        ("baseline", &gray, &["--models", "baseline"]),
        ("rgb-baseline", &rgb, &["--models", "baseline"]),
        ("tiny", &gray, &["--models", "cnn"]),
        (
            "rgb-3-blocks",
            &rgb,
            &["--models", "cnn", "--cnn-widths", "8,16,32"],
        ),
        // The classic head: Flatten, Dropout, Linear(512, 12), ReLU, Dropout, Linear(12, C);
        // the ONNX graph is the evaluation one (no dropout).
        (
            "flatten-hidden-dropout",
            &gray,
            &[
                "--models",
                "cnn",
                "--cnn-widths",
                "6,8",
                "--head",
                "flatten",
            ],
        ),
        // Batch norm after each conv: BatchNorm2d with its running statistics in PyTorch's
        // eval mode, BatchNormalization in the ONNX graph.
        (
            "batch-norm",
            &gray,
            &["--models", "cnn", "--cnn-widths", "6,8", "--batch-norm"],
        ),
        (
            "rgb-batch-norm-flatten",
            &rgb,
            &[
                "--models",
                "cnn",
                "--cnn-widths",
                "4,6,8",
                "--batch-norm",
                "--head",
                "flatten",
                "--hidden",
                "10",
            ],
        ),
    ];
    for (name, data, args) in cases {
        let pack = root.path().join(name);
        trainer()
            .cpu()
            .quiet()
            .data(data)
            .out(&pack)
            .args([
                "--image-size",
                "16",
                "--epochs-baseline",
                "3",
                "--epochs-cnn",
                "3",
            ])
            .args(args)
            .args(match name {
                "flatten-hidden-dropout" => &["--hidden", "12", "--dropout", "0.25"][..],
                _ => &[],
            })
            .run_ok();
        let said = run_python(
            &python,
            &[
                "check",
                env!("CARGO_BIN_EXE_trainer"),
                pack.to_str().unwrap(),
            ],
        );
        assert_eq!(said.matches("interop: ").count(), 3, "{name}: {said}");
    }
}

/// Every optimizer, schedule, the warm-up, label smoothing and batch norm (training on the
/// batch's statistics) against PyTorch's, from the same initial weights, one full-batch step an epoch: each epoch's training loss within
/// 5e-6 relative (ten times the measured 5.4e-7), one-cycle also with a rising phase the
/// steps reach, on the CPU path and (where there is an adapter) the wgpu kernels.
#[test]
fn recipes_give_pytorchs_losses() {
    let Some(python) = python("recipes_give_pytorchs_losses") else {
        return;
    };
    let mut backends = vec!["cpu"];
    if common::wgpu_available("recipes_give_pytorchs_losses (wgpu)") {
        backends.push("wgpu");
    }
    for backend in backends {
        let root = temp();
        let said = run_python(
            &python,
            &[
                "recipes",
                env!("CARGO_BIN_EXE_trainer"),
                root.path().to_str().unwrap(),
                backend,
            ],
        );
        assert_eq!(
            said.matches("interop: recipe ").count(),
            11,
            "{backend}: {said}"
        );
    }
}

/// A quick workshop pack (stripes, both models).
fn pack(dir: &Path) -> PathBuf {
    let pack = dir.join("pack");
    trainer().cpu().quiet().quick().out(&pack).run_ok();
    pack
}

#[test]
fn export_writes_the_packs_bytes_for_any_checkpoint() {
    let root = temp();
    let pack = pack(root.path());
    for (format, name) in [
        ("onnx", "best_model.onnx"),
        ("safetensors", "best_model.safetensors"),
    ] {
        let out = root.path().join("out").join(name);
        let said = trainer()
            .subcommand("export")
            .checkpoint(file(&pack, "checkpoints/best_model.json"))
            .args(["--format", format, "--out"])
            .arg(&out)
            .run_ok();
        assert!(common::stdout(&said).starts_with("wrote "));
        assert!(
            fs::read(&out).unwrap()
                == fs::read(file(&pack, &format!("checkpoints/{name}"))).unwrap(),
            "{format}: export and pack differ"
        );
    }
}

#[test]
fn export_refuses_bad_input_and_writes_nothing() {
    let root = temp();
    let pack = pack(root.path());
    let out = root.path().join("model.onnx");
    let export_to = |checkpoint: &Path, to: &Path| {
        trainer()
            .subcommand("export")
            .checkpoint(checkpoint)
            .args(["--format", "onnx", "--out"])
            .arg(to)
    };
    let export = |checkpoint: &Path| export_to(checkpoint, &out);
    let one_line = |output: &std::process::Output, needle: &str| {
        let err = stderr(output);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{needle}: {err}");
    };
    // Missing.
    one_line(
        &export(&root.path().join("nowhere.json")).run_fail(2),
        "cannot read",
    );
    // Tampered: a class renamed in the description.
    let tampered = root.path().join("tampered");
    copy_checkpoint(&pack, &tampered);
    let meta = tampered.join("best_model.json");
    let text = fs::read_to_string(&meta).unwrap();
    fs::write(&meta, text.replacen("vertical_stripe", "vertical_strip", 1)).unwrap();
    one_line(&export(&meta).run_fail(2), "checksum");
    // Truncated parameters.
    let truncated = root.path().join("truncated");
    copy_checkpoint(&pack, &truncated);
    let params = truncated.join("best_model.bpk");
    let bytes = fs::read(&params).unwrap();
    fs::write(&params, &bytes[..bytes.len() / 2]).unwrap();
    one_line(
        &export(&truncated.join("best_model.json")).run_fail(2),
        "checkpoint",
    );
    assert!(!out.exists(), "nothing written for a bad checkpoint");
    // An unknown format.
    let unknown = trainer()
        .subcommand("export")
        .checkpoint(file(&pack, "checkpoints/best_model.json"))
        .args(["--format", "tflite", "--out"])
        .arg(&out)
        .run_fail(2);
    one_line(&unknown, "tflite");
    // An existing file is kept without --force, replaced with it.
    fs::write(&out, "keep me").unwrap();
    let good = file(&pack, "checkpoints/best_model.json");
    one_line(&export(&good).run_fail(2), "--force");
    assert_eq!(fs::read_to_string(&out).unwrap(), "keep me");
    // The checkpoint's own files are never the output, --force or not.
    for own in ["best_model.bpk", "best_model.json"] {
        let path = file(&pack, &format!("checkpoints/{own}"));
        let before = fs::read(&path).unwrap();
        let refused = export_to(&pack, &path).arg("--force").run_fail(2);
        one_line(&refused, "would destroy it");
        assert!(fs::read(&path).unwrap() == before, "{own} kept");
    }
    // Neither a pipe nor a path under a file.
    let fifo = root.path().join("pipe");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let refused = export_to(&good, &fifo).arg("--force").run_fail(2);
    one_line(&refused, "not a regular file");
    let under = export_to(&good, &out.join("x.onnx")).run_fail(2);
    one_line(&under, "is a file, not a folder");
    export(&good).arg("--force").run_ok();
    assert!(
        fs::read(&out).unwrap() == fs::read(file(&pack, "checkpoints/best_model.onnx")).unwrap()
    );
}

fn copy_checkpoint(pack: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for name in ["best_model.json", "best_model.bpk"] {
        fs::copy(file(pack, &format!("checkpoints/{name}")), to.join(name)).unwrap();
    }
}
