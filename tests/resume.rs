//! Long runs: the per-epoch lines, the run's state after every epoch (`checkpoints/last.*`),
//! `--resume` ending bit-identical to the run never stopped, what an interrupt keeps, and
//! `--init-from` / `--freeze-features` (fine-tuning).
//!
//! `TRAINER_INTERRUPT_AT=MODEL:EPOCH` acts as a Ctrl-C that arrives as that epoch starts
//! (`MODEL:EPOCH:val`: as its validation starts), so the stop lands on a known epoch; tests/interrupts.rs sends real signals.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// The pack's files that a rerun with the same seed gives byte for byte.
const DETERMINISTIC: [&str; 6] = [
    "outputs/training_log.csv",
    "outputs/model_comparison.csv",
    "outputs/confusion_matrix.csv",
    "outputs/metrics_summary.json",
    "outputs/error_samples.csv",
    "checkpoints/best_model.bpk",
];

/// A small, quick workshop run on the cpu.
fn small(extra: &[&str]) -> Trainer {
    small_on("cpu", extra)
}

/// A small, quick workshop run on `backend`.
fn small_on(backend: &str, extra: &[&str]) -> Trainer {
    trainer()
        .backend(backend)
        .quiet()
        .args([
            "--samples-per-class",
            "40",
            "--epochs-baseline",
            "3",
            "--epochs-cnn",
            "4",
        ])
        .args(extra)
}

/// Runs `extra` uninterrupted and stopped at `at` then resumed; asserts both packs agree.
fn stopped_and_resumed_match(extra: &[&str], at: &str, env: &[(&str, &str)]) {
    stopped_and_resumed_match_on("cpu", extra, at, env);
}

/// [`stopped_and_resumed_match`] on `backend`.
fn stopped_and_resumed_match_on(backend: &str, extra: &[&str], at: &str, env: &[(&str, &str)]) {
    let dir = temp();
    let (whole, cut) = (dir.path().join("whole"), dir.path().join("cut"));
    let mut run = small_on(backend, extra).out(&whole);
    for (k, v) in env {
        run = run.env(k, v);
    }
    run.run_ok();

    let mut stopped = small_on(backend, extra)
        .out(&cut)
        .env("TRAINER_INTERRUPT_AT", at);
    for (k, v) in env {
        stopped = stopped.env(k, v);
    }
    let output = stopped.run_fail(130);
    let summary = fs::read_to_string(cut.join("outputs/metrics_summary.json")).unwrap();
    assert!(
        summary.contains("\"incomplete\": \"stopped at epoch"),
        "{summary}"
    );
    assert!(stdout(&output).contains("incomplete: stopped at epoch"));
    let readme = fs::read_to_string(cut.join("README.md")).unwrap();
    assert!(
        readme.contains("**Incomplete: stopped at epoch"),
        "{readme}"
    );

    let mut resumed = trainer().quiet().arg("--resume").arg(&cut);
    for (k, v) in env {
        resumed = resumed.env(k, v);
    }
    resumed.run_ok();
    for file in DETERMINISTIC {
        assert_eq!(
            fs::read(whole.join(file)).unwrap(),
            fs::read(cut.join(file)).unwrap(),
            "{file} differs after stopping at {at} and resuming ({extra:?})"
        );
    }
    let state = fs::read_to_string(cut.join("checkpoints/last.json")).unwrap();
    assert!(state.contains("\"status\": \"finished\""), "{state}");
    // The pack names the command that started the run, and the resume after it.
    let command = run_info(&cut)["command"].as_str().unwrap().to_string();
    assert!(
        command.contains("--samples-per-class 40")
            && command.contains("  # resumed: ")
            && command.contains("--resume"),
        "{command}"
    );
}

#[test]
fn adam_resumed_in_the_cnn_ends_bit_identical() {
    stopped_and_resumed_match(&[], "cnn:3", &[]);
}

#[test]
fn adam_resumed_in_the_baseline_ends_bit_identical() {
    stopped_and_resumed_match(&[], "baseline:2", &[]);
}

#[test]
fn adamw_with_cosine_resumed_ends_bit_identical() {
    let recipe = [
        "--optimizer",
        "adamw",
        "--weight-decay",
        "0.01",
        "--schedule",
        "cosine",
    ];
    stopped_and_resumed_match(&recipe, "cnn:2", &[]);
}

#[test]
fn sgd_with_onecycle_and_augmentation_resumed_ends_bit_identical() {
    let recipe = [
        "--optimizer",
        "sgd",
        "--momentum",
        "0.9",
        "--schedule",
        "onecycle",
        "--augment",
    ];
    stopped_and_resumed_match(&recipe, "cnn:4", &[]);
}

/// The head's dropout masks are keyed by the steps taken: the run's state keeps them, so the
/// resumed epochs draw the masks the whole run drew.
#[test]
fn a_classic_head_with_dropout_resumed_ends_bit_identical() {
    let head = ["--head", "flatten", "--hidden", "12", "--dropout", "0.25"];
    stopped_and_resumed_match(&head, "cnn-8-16-flatten-h12-d0.25:3", &[]);
}

/// The batch norms' running statistics are part of the run's state: a run stopped and
/// resumed ends with the same checkpoint, byte for byte, as one that ran through.
#[test]
fn batch_norm_resumed_ends_bit_identical() {
    stopped_and_resumed_match(&["--batch-norm"], "cnn-8-16-bn:3", &[]);
}

/// `--init-from` a batch-norm checkpoint goes on from its running statistics (the batches
/// tracked keep counting), and a run without batch norm is refused, naming both shapes.
#[test]
fn init_from_a_batch_norm_checkpoint_keeps_its_running_statistics() {
    let dir = temp();
    let first = dir.path().join("first");
    small(&["--models", "cnn", "--batch-norm"])
        .out(&first)
        .run_ok();
    let checkpoint = first.join("checkpoints/best_model.json");
    let tuned = dir.path().join("tuned");
    trainer()
        .cpu()
        .quiet()
        .args([
            "--samples-per-class",
            "40",
            "--models",
            "cnn",
            "--batch-norm",
        ])
        .args(["--epochs-cnn", "1"])
        .arg("--init-from")
        .arg(&checkpoint)
        .out(&tuned)
        .run_ok();
    let tracked = |checkpoint: &Path| {
        parameters(checkpoint)
            .into_iter()
            .find(|(name, _)| name == "Cnn.norms.0.num_batches_tracked")
            .unwrap()
            .1[0]
    };
    let (before, after) = (tracked(&checkpoint), tracked(&tuned.join("checkpoints")));
    let meta: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&checkpoint).unwrap()).unwrap();
    let per_epoch = before / meta["best_epoch"].as_f64().unwrap() as f32;
    assert_eq!(
        after,
        before + per_epoch,
        "one more epoch of batches tracked"
    );
    let output = small(&["--models", "cnn"])
        .arg("--init-from")
        .arg(&checkpoint)
        .out(dir.path().join("plain"))
        .run_fail(2);
    let err = stderr(&output);
    assert!(
        err.contains("the checkpoint is a CNN 8-16 bn") && err.contains("Tiny CNN"),
        "{err}"
    );
}

/// The same in the WGSL kernels, which key their masks by their own step count (Adam's time
/// in their saved state).
#[test]
fn a_classic_head_with_dropout_resumed_in_the_wgsl_kernels_ends_bit_identical() {
    if !wgpu_available("a_classic_head_with_dropout_resumed_in_the_wgsl_kernels_ends_bit_identical")
    {
        return;
    }
    let head = ["--head", "flatten", "--hidden", "12", "--dropout", "0.25"];
    stopped_and_resumed_match_on("wgpu", &head, "cnn-8-16-flatten-h12-d0.25:3", &[]);
}

/// In the WGSL kernels the batch norms' running statistics ride in the kernels' state: a
/// wgpu run stopped and resumed ends with the same checkpoint, byte for byte, as one that
/// ran through.
#[test]
fn batch_norm_resumed_in_the_wgsl_kernels_ends_bit_identical() {
    if !wgpu_available("batch_norm_resumed_in_the_wgsl_kernels_ends_bit_identical") {
        return;
    }
    stopped_and_resumed_match_on("wgpu", &["--batch-norm"], "cnn-8-16-bn:3", &[]);
}

/// An interrupt during an epoch's validation (issue 32: the run then failed "interrupted"
/// and wrote no pack) drops that epoch, keeps the ones before, and resumes from there.
#[test]
fn an_interrupt_during_validation_keeps_the_epochs_before_and_resumes_bit_identical() {
    stopped_and_resumed_match(&[], "cnn:3:val", &[]);
}

/// An incomplete pack says the epochs its stopped model trained, not its schedule's.
#[test]
fn an_incomplete_pack_says_the_epochs_actually_trained() {
    let dir = temp();
    let pack = dir.path().join("pack");
    small(&[])
        .out(&pack)
        .env("TRAINER_INTERRUPT_AT", "cnn:3")
        .run_fail(130);
    let (header, rows) = read_csv(&pack.join("outputs/model_comparison.csv"));
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let cnn = rows.iter().find(|r| r[0] == "Tiny CNN").unwrap();
    assert_eq!(cnn[column("epochs")], "2", "{rows:?}");
    assert_eq!(cnn[column("status")], "stopped at epoch 3", "{rows:?}");
    let baseline = rows.iter().find(|r| r[0] == "Flatten baseline").unwrap();
    assert_eq!(baseline[column("epochs")], "3", "{rows:?}");
    assert_eq!(baseline[column("status")], "ok", "{rows:?}");
    let readme = fs::read_to_string(pack.join("README.md")).unwrap();
    assert!(
        readme.contains("stopped after 2 of 4 epochs by an interrupt"),
        "{readme}"
    );
    assert!(!readme.contains("trained all 4 epochs"), "{readme}");
}

#[test]
fn a_run_resumed_after_a_batch_halving_ends_bit_identical() {
    stopped_and_resumed_match(&[], "cnn:3", &[("TRAINER_FAIL_ALLOC_ABOVE", "16")]);
}

#[test]
fn a_stop_before_the_first_epoch_finishes_keeps_nothing() {
    let dir = temp();
    let pack = dir.path().join("pack");
    let output = small(&[])
        .out(&pack)
        .env("TRAINER_INTERRUPT_AT", "baseline:1")
        .run_fail(130);
    assert!(
        stderr(&output).contains("interrupted"),
        "{}",
        stderr(&output)
    );
    assert!(!pack.exists(), "nothing is kept");
}

#[test]
fn resuming_with_other_settings_or_data_names_what_differs() {
    let dir = temp();
    let data = image_folder(dir.path(), 12);
    let pack = dir.path().join("pack");
    // A folder run: --samples-per-class is the stripes' (refused with --data).
    trainer()
        .cpu()
        .quiet()
        .args(["--epochs-baseline", "3", "--epochs-cnn", "4"])
        .data(&data)
        .out(&pack)
        .env("TRAINER_INTERRUPT_AT", "cnn:2")
        .run_fail(130);
    let before = fs::read(pack.join("checkpoints/last.bin")).unwrap();

    let other = trainer()
        .quiet()
        .arg("--resume")
        .arg(&pack)
        .args(["--seed", "7"])
        .run_fail(2);
    assert!(
        stderr(&other).contains("seed 42 (asked 7)"),
        "{}",
        stderr(&other)
    );

    // One image changed: the data's checksums differ.
    let file = data.join("vertical/vertical_005.png");
    let mut image = image::open(&file).unwrap().to_luma8();
    image.put_pixel(0, 0, image::Luma([255]));
    image.save(&file).unwrap();
    let changed = trainer().quiet().arg("--resume").arg(&pack).run_fail(2);
    assert!(
        stderr(&changed).contains("the data differs"),
        "{}",
        stderr(&changed)
    );
    assert_eq!(
        fs::read(pack.join("checkpoints/last.bin")).unwrap(),
        before,
        "nothing changed"
    );
}

#[test]
fn resuming_a_finished_run_says_so_and_changes_nothing() {
    let dir = temp();
    let pack = dir.path().join("pack");
    small(&[]).out(&pack).run_ok();
    let before = fs::read(pack.join("outputs/run_info.json")).unwrap();
    let output = trainer().arg("--resume").arg(&pack).run_ok();
    assert!(
        stdout(&output).contains("nothing to resume"),
        "{}",
        stdout(&output)
    );
    assert_eq!(
        fs::read(pack.join("outputs/run_info.json")).unwrap(),
        before
    );
    // Asking a finished run for more epochs would do nothing: refused, naming the setting and
    // the way to train on.
    let output = trainer()
        .arg("--resume")
        .arg(&pack)
        .args(["--epochs-cnn", "9"])
        .run_fail(2);
    let message = stderr(&output);
    assert!(
        message.contains("epochs_cnn") && message.contains("--init-from"),
        "{message}"
    );
    assert_eq!(
        fs::read(pack.join("outputs/run_info.json")).unwrap(),
        before
    );
}

#[test]
fn resuming_a_folder_without_state_is_bad_input() {
    let dir = temp();
    let output = trainer().arg("--resume").arg(dir.path()).run_fail(2);
    assert!(
        stderr(&output).contains("no run state to resume"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn each_epoch_prints_one_line_with_its_figures_and_the_pack_is_listed() {
    let dir = temp();
    let pack = dir.path().join("pack");
    let output = trainer()
        .cpu()
        .args([
            "--samples-per-class",
            "40",
            "--epochs-baseline",
            "2",
            "--epochs-cnn",
            "3",
        ])
        .out(&pack)
        .run_ok();
    let out = stdout(&output);
    let lines: Vec<&str> = out.lines().filter(|l| l.contains(" epoch ")).collect();
    assert_eq!(lines.len(), 5, "{out}");
    for line in &lines {
        for part in [
            "train loss ",
            " acc ",
            "| val loss ",
            "| lr ",
            " s, ",
            " samples/s | ",
            " left",
        ] {
            assert!(line.contains(part), "{line}");
        }
    }
    assert!(
        lines[0].starts_with("Flatten baseline epoch 1/2: "),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].ends_with("| best"),
        "the first epoch is the best so far: {}",
        lines[0]
    );
    assert!(lines[4].starts_with("Tiny CNN epoch 3/3: "), "{}", lines[4]);
    assert!(lines[4].contains("| 0:00 left"), "{}", lines[4]);
    // No progress bar redraws when the output is not a terminal.
    assert!(!stderr(&output).contains('\r'), "{}", stderr(&output));
    for line in [
        "  outputs/ ",
        "  checkpoints/ best_model.bpk, best_model.json, best_model.onnx, best_model.safetensors, last.bin, last.json",
    ] {
        assert!(out.lines().any(|l| l.starts_with(line)), "{line}: {out}");
    }
    assert!(out.ends_with('\n'));

    let quiet = trainer()
        .cpu()
        .quiet()
        .args(["--samples-per-class", "40"])
        .quick()
        .out(&pack)
        .run_ok();
    assert!(!stdout(&quiet).contains(" epoch 1/1"), "{}", stdout(&quiet));
    assert!(stdout(&quiet).contains("best_model:"), "the summary stays");
}

/// A checkpoint's parameters, by name.
fn parameters(checkpoint: &Path) -> Vec<(String, Vec<f32>)> {
    let device = burn::tensor::Device::flex();
    let (net, _) = trainer::model::checkpoint::load(checkpoint, &device).unwrap();
    trainer::model::parameters(&net)
        .unwrap()
        .into_iter()
        .map(|(name, _, values)| (name, values))
        .collect()
}

#[test]
fn init_from_fine_tunes_and_freeze_features_keeps_the_convolutions() {
    let dir = temp();
    let first = dir.path().join("first");
    small(&["--models", "cnn"]).out(&first).run_ok();
    let checkpoint = first.join("checkpoints/best_model.json");

    // More classes: the last layer starts fresh, the rest from the checkpoint.
    let data = image_folder(dir.path(), 10);
    fs::create_dir_all(data.join("dots")).unwrap();
    for entry in fs::read_dir(data.join("vertical")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "png") {
            let image = image::open(&path).unwrap().to_luma8();
            let dots = image::GrayImage::from_fn(16, 16, |x, y| {
                image::Luma([if (x + y) % 3 == 0 {
                    255
                } else {
                    image.get_pixel(x, y)[0] / 4
                }])
            });
            dots.save(data.join("dots").join(path.file_name().unwrap()))
                .unwrap();
        }
    }
    let tuned = dir.path().join("tuned");
    let output = trainer()
        .cpu()
        .args(["--models", "cnn", "--epochs-cnn", "2", "--image-size", "16"])
        .data(&data)
        .arg("--init-from")
        .arg(&checkpoint)
        .arg("--freeze-features")
        .out(&tuned)
        .run_ok();
    assert!(
        stdout(&output).contains("features frozen: only the head trains"),
        "{}",
        stdout(&output)
    );
    assert!(
        stdout(&output).contains("the checkpoint has 3 classes and this run 4"),
        "{}",
        stdout(&output)
    );
    let info = fs::read_to_string(tuned.join("outputs/run_info.json")).unwrap();
    let meta = fs::read_to_string(&checkpoint).unwrap();
    let sum: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert!(
        info.contains(sum["params_checksum"].as_str().unwrap()),
        "{info}"
    );
    assert!(info.contains("\"freeze_features\": true"), "{info}");

    let (before, after) = (
        parameters(&checkpoint),
        parameters(&tuned.join("checkpoints")),
    );
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        if name.contains("conv") {
            assert_eq!(a, b, "{name} stayed frozen");
        }
    }
    let classifier = |p: &[(String, Vec<f32>)]| {
        p.iter()
            .find(|(n, _)| n.contains("classifier.weight"))
            .unwrap()
            .1
            .len()
    };
    assert_eq!(classifier(&after), classifier(&before) / 3 * 4);
}

/// The same class count under other names: the checkpoint's output rows would answer for
/// classes they never learned, so the last layer starts fresh, with one line naming both
/// lists; under the checkpoint's own names it is kept.
#[test]
fn init_from_with_other_class_names_starts_the_last_layer_fresh() {
    let dir = temp();
    let data = image_folder(dir.path(), 8);
    let run = |name: &str, data: &Path, init: Option<&Path>| {
        let out = dir.path().join(name);
        let mut t = trainer().cpu();
        t = t.args(["--models", "cnn", "--epochs-cnn", "1", "--image-size", "16"]);
        t = t.data(data).out(&out);
        if let Some(checkpoint) = init {
            t = t.arg("--init-from").arg(checkpoint);
        }
        (stdout(&t.run_ok()), out.join("checkpoints/best_model.json"))
    };
    let (_, checkpoint) = run("first", &data, None);
    let renamed = dir.path().join("renamed");
    copy_tree(&data, &renamed);
    fs::rename(renamed.join("vertical"), renamed.join("upright")).unwrap();
    let (console, _) = run("renamed-run", &renamed, Some(&checkpoint));
    assert!(
        console.contains("the checkpoint's classes are diagonal, horizontal, vertical and this run's diagonal, horizontal, upright")
            && console.contains("last layer starts fresh"),
        "{console}"
    );
    let (console, _) = run("same-run", &data, Some(&checkpoint));
    assert!(!console.contains("last layer starts fresh"), "{console}");
}

#[test]
fn init_from_another_shape_names_the_mismatch() {
    let dir = temp();
    let first = dir.path().join("first");
    small(&["--models", "cnn"]).out(&first).run_ok();
    let output = small(&["--models", "cnn", "--cnn-widths", "16,32"])
        .arg("--init-from")
        .arg(first.join("checkpoints/best_model.json"))
        .out(dir.path().join("second"))
        .run_fail(2);
    let err = stderr(&output);
    assert!(
        err.contains("the checkpoint is a Tiny CNN") && err.contains("CNN 16-32"),
        "{err}"
    );
}

/// A mismatch of the second model is refused before the first trains: nothing is trained
/// and no state is left (one that could never resume).
#[test]
fn init_from_that_does_not_fit_a_later_model_is_refused_before_any_training() {
    let dir = temp();
    let first = dir.path().join("first");
    small(&["--models", "cnn"]).out(&first).run_ok();
    let second = dir.path().join("second");
    let output = small(&["--cnn-widths", "16,32"])
        .arg("--init-from")
        .arg(first.join("checkpoints/best_model.json"))
        .out(&second)
        .run_fail(2);
    let err = stderr(&output);
    assert!(err.contains("the checkpoint is a Tiny CNN"), "{err}");
    assert!(!stdout(&output).contains("epoch 1/"), "{}", stdout(&output));
    assert!(!second.join("checkpoints/last.json").exists());
    assert!(!second.join("checkpoints/last.bin").exists());
}

/// `--resume` goes on as the run was made: another `--init-from` or a `--freeze-features`
/// it was not made with is refused, named, and the stopped run is left as it was.
#[test]
fn resume_refuses_fine_tuning_flags_the_run_was_not_made_with() {
    let dir = temp();
    let first = dir.path().join("first");
    small(&["--models", "cnn"]).out(&first).run_ok();
    let checkpoint = first.join("checkpoints/best_model.json");
    let cut = dir.path().join("cut");
    small(&[])
        .out(&cut)
        .env("TRAINER_INTERRUPT_AT", "cnn:3")
        .run_fail(130);
    let before = fs::read(cut.join("checkpoints/last.bin")).unwrap();
    let output = trainer()
        .quiet()
        .arg("--resume")
        .arg(&cut)
        .arg("--init-from")
        .arg(&checkpoint)
        .arg("--freeze-features")
        .run_fail(2);
    let err = stderr(&output);
    assert!(
        err.contains("init_from unset") && err.contains("freeze_features false (asked true)"),
        "{err}"
    );
    assert_eq!(fs::read(cut.join("checkpoints/last.bin")).unwrap(), before);
    // Its own flags are accepted: a fine-tuning run resumed with them goes on.
    let tuned = dir.path().join("tuned");
    let tune = [
        "--init-from",
        checkpoint.to_str().unwrap(),
        "--freeze-features",
    ];
    small(&tune)
        .out(&tuned)
        .env("TRAINER_INTERRUPT_AT", "cnn:3")
        .run_fail(130);
    trainer()
        .quiet()
        .arg("--resume")
        .arg(&tuned)
        .args(tune)
        .run_ok();
}

#[test]
fn a_stopped_sweep_task_continues_from_its_last_epoch_when_run_again() {
    let root = temp();
    sweep_plan(
        root.path(),
        "backend = \"cpu\"\nmodels = [\"cnn\"]\nsamples_per_class = 30\nepochs_cnn = 4\nlr_cnn = [0.003, 0.01]\n",
        "sweep",
    )
    .run_ok();
    let dir = root.path().join("sweep");
    // Every task stops as its epoch 3 starts (as a preempted job would), keeping epochs 1-2.
    let first = trainer()
        .subcommand("sweep run")
        .arg(&dir)
        .arg("--local")
        .env("TRAINER_INTERRUPT_AT", "cnn:3")
        .run();
    assert!(
        stdout(&first).contains("2 interrupted"),
        "{}",
        stdout(&first)
    );
    for index in 0..2 {
        let run = dir.join(format!("runs/{index:04}"));
        let state = fs::read_to_string(run.join("checkpoints/last.json")).unwrap();
        assert!(state.contains("stopped at epoch 3 of 4"), "{state}");
    }
    // Requeued: each task goes on from epoch 3 and finishes all 4.
    trainer()
        .subcommand("sweep run")
        .arg(&dir)
        .arg("--local")
        .run_ok();
    for index in 0..2 {
        let run = dir.join(format!("runs/{index:04}"));
        let info = fs::read_to_string(run.join("outputs/run_info.json")).unwrap();
        assert!(info.contains("\"resumed\": true"), "{info}");
        let (_, rows) = read_csv(&run.join("outputs/training_log.csv"));
        assert_eq!(rows.len(), 4, "all four epochs: {rows:?}");
        assert!(dir.join(format!("state/{index:04}.json")).exists());
    }
}

#[test]
fn a_stop_before_the_first_epoch_leaves_the_earlier_pack_whole() {
    let dir = temp();
    let pack = dir.path().join("pack");
    small(&[]).out(&pack).run_ok();
    let before = fs::read(pack.join("checkpoints/last.bin")).unwrap();
    small(&["--seed", "3"])
        .out(&pack)
        .env("TRAINER_INTERRUPT_AT", "baseline:1")
        .run_fail(130);
    assert_eq!(fs::read(pack.join("checkpoints/last.bin")).unwrap(), before);
}

#[test]
fn a_fine_tuning_run_resumed_ends_bit_identical() {
    let dir = temp();
    let first = dir.path().join("first");
    small(&["--models", "cnn"]).out(&first).run_ok();
    let checkpoint = first.join("checkpoints/best_model.json");
    let checkpoint = checkpoint.to_str().unwrap();
    // Stopped in the baseline: the CNN, not yet started, must still start from the checkpoint.
    let tune = ["--init-from", checkpoint, "--freeze-features"];
    stopped_and_resumed_match(&tune, "baseline:2", &[]);
}

/// `--freeze-features` on wgpu: the kernels train every parameter, so burn's layers run the
/// model, and the run says why (README, "Fine-tuning").
#[test]
fn freeze_features_on_wgpu_runs_the_layers_and_says_why() {
    if !wgpu_available("freeze_features_on_wgpu_runs_the_layers_and_says_why") {
        return;
    }
    let dir = temp();
    let first = dir.path().join("first");
    small(&["--models", "cnn"]).out(&first).run_ok();
    let tuned = dir.path().join("tuned");
    trainer()
        .wgpu()
        .quiet()
        .args(["--models", "cnn", "--samples-per-class", "20"])
        .args(["--epochs-cnn", "1"])
        .arg("--init-from")
        .arg(first.join("checkpoints/best_model.json"))
        .arg("--freeze-features")
        // Stripes with more per class than the checkpoint's run: its test images overlap.
        .arg("--allow-test-overlap")
        .out(&tuned)
        .run_ok();
    let info = run_info(&tuned);
    let model = &info["models"][0];
    assert_eq!(model["engine"], "layers", "{model}");
    assert!(
        model["engine_note"]
            .as_str()
            .is_some_and(|n| n.contains("cannot freeze the features")),
        "{model}"
    );
}

/// The CNN fine-tuned from `checkpoint` (of [`small`]'s stripes) on 60 stripes per class: the
/// checkpoint's images come again, some of them in this run's test part.
fn more_stripes_from(checkpoint: &Path, epochs: &str) -> Trainer {
    trainer()
        .cpu()
        .quiet()
        .args(["--models", "cnn", "--samples-per-class", "60"])
        .args(["--epochs-cnn", epochs])
        .arg("--init-from")
        .arg(checkpoint)
}

/// `--init-from` refuses a run whose test images the checkpoint trained or validated on
/// (another seed splits the same folder otherwise), naming how many, before anything is
/// written; the checkpoint's own split is fine, and `--allow-test-overlap` trains with a
/// warning and a pack that says its test accuracy overstates. Stripes alike (more samples
/// per class regenerate the checkpoint's images in other parts).
#[test]
fn init_from_refuses_test_images_the_checkpoint_trained_on() {
    let dir = temp();
    let data = image_folder(dir.path(), 12);
    let tune = |seed: &str| {
        trainer().cpu().quiet().data(&data).args([
            "--models",
            "cnn",
            "--epochs-cnn",
            "1",
            "--seed",
            seed,
        ])
    };
    let first = dir.path().join("first");
    tune("1").out(&first).run_ok();
    let checkpoint = first.join("checkpoints/best_model.json");
    let refused = dir.path().join("refused");
    let output = tune("2")
        .arg("--init-from")
        .arg(&checkpoint)
        .out(&refused)
        .run_fail(2);
    let err = stderr(&output);
    assert!(
        err.contains(
            "of this run's 6 test images were the checkpoint's training or validation images"
        ) && err.contains("--allow-test-overlap"),
        "{err}"
    );
    assert!(!refused.exists(), "nothing written");
    tune("1")
        .arg("--init-from")
        .arg(&checkpoint)
        .out(dir.path().join("same"))
        .run_ok();
    let allowed = dir.path().join("allowed");
    let output = tune("2")
        .arg("--init-from")
        .arg(&checkpoint)
        .arg("--allow-test-overlap")
        .out(&allowed)
        .run_ok();
    assert!(
        stderr(&output).contains("test images were the checkpoint's training or validation images: the test accuracy overstates"),
        "{}",
        stderr(&output)
    );
    let readme = fs::read_to_string(allowed.join("README.md")).unwrap();
    assert!(
        readme.contains("**The test accuracy overstates:**"),
        "{readme}"
    );
    let info = run_info(&allowed);
    let seen = info["init_from_test_overlap"]["seen"].as_u64().unwrap();
    assert!((1..=6).contains(&seen), "{info}");

    let stripes = dir.path().join("stripes");
    small(&["--models", "cnn"]).out(&stripes).run_ok();
    let output = more_stripes_from(&stripes.join("checkpoints/best_model.json"), "1")
        .out(dir.path().join("more"))
        .run_fail(2);
    assert!(
        stderr(&output).contains("of this run's 36 test images were the checkpoint's"),
        "{}",
        stderr(&output)
    );
}

/// `--resume` with an `--init-from` the run was not made with is refused from the stopped
/// run's state, before its data is read: here the folder is gone, and the refusal still
/// names the fine-tuning flag, not the folder.
#[test]
fn resume_refuses_another_init_from_before_reading_the_data() {
    let dir = temp();
    let first = dir.path().join("first");
    small(&["--models", "cnn"]).out(&first).run_ok();
    let data = image_folder(dir.path(), 8);
    let cut = dir.path().join("cut");
    trainer()
        .cpu()
        .quiet()
        .data(&data)
        .args(["--models", "cnn", "--epochs-cnn", "3"])
        .out(&cut)
        .env("TRAINER_INTERRUPT_AT", "cnn:2")
        .run_fail(130);
    fs::rename(&data, dir.path().join("moved away")).unwrap();
    let output = trainer()
        .quiet()
        .arg("--resume")
        .arg(&cut)
        .arg("--init-from")
        .arg(first.join("checkpoints/best_model.json"))
        .run_fail(2);
    let err = stderr(&output);
    assert!(err.contains("init_from unset"), "{err}");
}

/// Rewrites the header of the run state `dir` holds (as an older trainer would have written
/// it, say), keeping its blobs.
fn edit_state(dir: &Path, edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) {
    let path = dir.join("checkpoints/last.bin");
    let bytes = fs::read(&path).unwrap();
    let start = b"trainer-run-state\n".len() + 8;
    let len = u64::from_le_bytes(bytes[start - 8..start].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[start..start + len]).unwrap();
    edit(header.as_object_mut().unwrap());
    let text = serde_json::to_vec(&header).unwrap();
    let mut rewritten = bytes[..start - 8].to_vec();
    rewritten.extend((text.len() as u64).to_le_bytes());
    rewritten.extend(&text);
    rewritten.extend(&bytes[start + len..]);
    fs::write(&path, rewritten).unwrap();
}

/// `--allow-test-overlap` is the run's own: its state records it, so `--resume` goes on
/// without it being given again (and the pack says overlap was allowed), while a state that
/// does not allow it (an older trainer's) is refused until the flag is given again. A resume
/// used to skip the check altogether.
#[test]
fn a_resumed_run_keeps_its_allow_test_overlap() {
    let dir = temp();
    let first = dir.path().join("first");
    small(&["--models", "cnn"]).out(&first).run_ok();
    let checkpoint = first.join("checkpoints/best_model.json");
    let cut = dir.path().join("cut");
    more_stripes_from(&checkpoint, "2")
        .arg("--allow-test-overlap")
        .out(&cut)
        .env("TRAINER_INTERRUPT_AT", "cnn:2")
        .run_fail(130);
    let allowed = fs::read(cut.join("checkpoints/last.bin")).unwrap();
    edit_state(&cut, |header| {
        header.remove("allow_test_overlap");
    });
    let resume = || trainer().quiet().arg("--resume").arg(&cut);
    let err = stderr(&resume().run_fail(2));
    assert!(
        err.contains("of this run's 36 test images were the checkpoint's")
            && err.contains("--allow-test-overlap"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let again = [
        "--allow-test-overlap".as_ref(),
        "--init-from".as_ref(),
        checkpoint.as_os_str(),
    ];
    resume().args(again).run_ok();
    let state = fs::read_to_string(cut.join("checkpoints/last.json")).unwrap();
    assert!(state.contains("\"allow_test_overlap\": true"), "{state}");
    // The run's own state, which allowed it: a bare --resume goes on, and the pack says so.
    fs::write(cut.join("checkpoints/last.bin"), allowed).unwrap();
    let output = resume().run_ok();
    assert!(
        stderr(&output).contains("the test accuracy overstates"),
        "{}",
        stderr(&output)
    );
    let info = run_info(&cut);
    assert_eq!(info["allow_test_overlap"], true, "{info}");
    assert!(
        info["init_from_test_overlap"]["seen"].as_u64().unwrap() > 0,
        "{info}"
    );
    let readme = fs::read_to_string(cut.join("README.md")).unwrap();
    assert!(
        readme.contains("**The test accuracy overstates:**"),
        "{readme}"
    );
}

/// Copies the folder `from` (files and class folders) to `to`.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        match path.is_dir() {
            true => copy_tree(&path, &target),
            false => {
                fs::copy(&path, &target).unwrap();
            }
        }
    }
}
