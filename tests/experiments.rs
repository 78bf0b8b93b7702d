//! From workshop to tool: image folders, config files, early stopping, augmentation,
//! run comparison and prediction.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use trainer::data::DataConfig;

/// A run on an image folder: 16 x 16 pixels, three epochs of the baseline, twelve of the
/// Tiny CNN.
fn train(data: &Path, out: &Path) -> Trainer {
    trainer()
        .cpu()
        .quiet()
        .data(data)
        .args(["--image-size", "16"])
        .epochs(3, 12)
        .out(out)
}

#[test]
fn an_image_folder_trains_splits_by_class_and_predicts() {
    let dir = temp();
    let data = image_folder(dir.path(), 15);
    let pack = dir.path().join("pack");
    let output = train(&data, &pack).run_ok();
    assert!(
        stderr(&output).contains("skipped 'vertical/README.txt'"),
        "{}",
        stderr(&output)
    );
    let out = stdout(&output);
    assert_eq!(console_value(&out, "classes").as_deref(), Some("3"));
    let (header, _) = read_csv(&pack.join("outputs/confusion_matrix.csv"));
    assert_eq!(
        header,
        ["actual/predicted", "diagonal", "horizontal", "vertical"]
    );
    let readme = fs::read_to_string(pack.join("README.md")).unwrap();
    assert!(readme.contains("1 entry skipped"), "{readme}");
    assert!(readme.contains("## Top failure patterns"));
    assert!(readme.contains("bilinear"));
    assert_eq!(
        &fs::read(pack.join("curves/review_grid.png")).unwrap()[1..4],
        b"PNG"
    );

    // The split is stratified: every class in every part, 9/3/3 of each 15.
    let config = DataConfig {
        seed: 42,
        samples_per_class: 0,
        image_size: 16,
        split: [0.6, 0.2, 0.2],
        split_given: false,
        val_fraction_given: false,
        file_places: Vec::new(),
        folder: Some(data.clone()),
        color: trainer::data::Color::Auto,
        split_rule: trainer::data::SplitRule::Stratified,
        val_fraction: 0.2,
        max_per_class: None,
        strict_data: false,
        skip_bad_images: false,
    };
    let splits = trainer::data::load_splits(&config).unwrap();
    for (part, expected) in [(&splits.train, 9), (&splits.val, 3), (&splits.test, 3)] {
        for label in 0..3 {
            assert_eq!(
                part.samples.iter().filter(|s| s.label == label).count(),
                expected
            );
        }
    }
    // The normalization of the training part is stored with the checkpoint.
    let meta: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(pack.join("checkpoints/best_model.json")).unwrap(),
    )
    .unwrap();
    let stored = meta["normalization"]["mean"].as_f64().unwrap();
    assert!(
        (stored - splits.normalization.mean.0[0] as f64).abs() < 1e-6,
        "{stored}"
    );
    assert!(
        meta["preprocessing"]
            .as_str()
            .unwrap()
            .contains("mean and std of the training part")
    );
    let train_pixels: Vec<f32> = splits
        .train
        .samples
        .iter()
        .flat_map(|s| s.image.iter().copied().collect::<Vec<f32>>())
        .collect();
    let mean = train_pixels.iter().sum::<f32>() / train_pixels.len() as f32;
    assert!(
        mean.abs() < 1e-3,
        "training pixels are normalized to mean 0, got {mean}"
    );

    // predict, from the checkpoint alone, on files of the folder.
    let files: Vec<PathBuf> = [
        "diagonal/diagonal_005.png",
        "horizontal/horizontal_006.png",
        "vertical/vertical_007.png",
    ]
    .iter()
    .map(|f| data.join(f))
    .collect();
    let checkpoint = pack.join("checkpoints/best_model.json");
    let output = trainer()
        .subcommand("predict")
        .cpu()
        .arg("--json")
        .checkpoint(&checkpoint)
        .args(&files)
        .run_ok();
    let predictions: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    let predictions = predictions.as_array().unwrap();
    assert_eq!(predictions.len(), 3);
    let correct = predictions
        .iter()
        .zip(["diagonal", "horizontal", "vertical"])
        .filter(|(p, class)| p["class"] == *class)
        .count();
    assert!(correct >= 2, "{predictions:?}");
    for p in predictions {
        let c = p["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c));
    }
    let output = trainer()
        .subcommand("predict")
        .cpu()
        .checkpoint(&checkpoint)
        .arg(&files[0])
        .run_ok();
    assert!(
        stdout(&output).contains("(confidence 0."),
        "{}",
        stdout(&output)
    );
}

#[test]
fn bad_image_folders_get_a_clear_error_naming_the_problem() {
    let dir = temp();
    let out = dir.path().join("pack");
    let expect_error = |data: &Path, needle: &str| {
        let output = train(data, &out).run_fail(2);
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "expected '{needle}' in: {err}");
        assert!(!out.exists());
    };

    let empty = dir.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    expect_error(&empty, "no class folders");
    expect_error(&dir.path().join("missing"), "is not a folder");

    let one = dir.path().join("one");
    fs::create_dir_all(one.join("only")).unwrap();
    expect_error(&one, "one class folder ('only')");

    let data = image_folder(&dir.path().join("few"), 2);
    expect_error(&data, "has 2 image(s)");

    let data = image_folder(&dir.path().join("broken"), 6);
    let broken = data.join("horizontal/horizontal_004.png");
    let bytes = fs::read(&broken).unwrap();
    fs::write(&broken, &bytes[..bytes.len() / 3]).unwrap();
    expect_error(&data, "horizontal_004.png");

    let data = image_folder(&dir.path().join("fake"), 6);
    fs::write(
        data.join("diagonal/diagonal_003.png"),
        "this is text, not a PNG",
    )
    .unwrap();
    expect_error(&data, "diagonal_003.png");
}

#[test]
fn a_config_file_sets_everything_flags_win_and_config_json_repeats_the_run() {
    let dir = temp();
    let config = dir.path().join("experiment.toml");
    fs::write(
        &config,
        "backend = \"cpu\"\nseed = 7\nbatch_size = 16\nepochs_baseline = 2\nepochs_cnn = 3\nlr_cnn = 0.01\nmodels = [\"cnn\", \"baseline\"]\naugment = true\n",
    )
    .unwrap();
    let first = dir.path().join("first");
    trainer()
        .quiet()
        .config(&config)
        .args(["--epochs-cnn", "4"])
        .out(&first)
        .run_ok();
    let effective: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(first.join("outputs/config.json")).unwrap())
            .unwrap();
    assert_eq!(effective["seed"], 7);
    assert_eq!(effective["batch_size"], 16);
    assert_eq!(effective["epochs_cnn"], 4, "the flag wins over the file");
    assert_eq!(effective["augment"], true);
    assert_eq!(effective["models"], serde_json::json!(["cnn", "baseline"]));
    let (_, log) = read_csv(&first.join("outputs/training_log.csv"));
    assert_eq!(log.len(), 4 + 2);
    assert_eq!(
        log[0][0], "Tiny CNN",
        "models train in the configured order"
    );

    let again = dir.path().join("again");
    trainer()
        .quiet()
        .config(first.join("outputs/config.json"))
        .out(&again)
        .run_ok();
    for file in [
        "outputs/training_log.csv",
        "outputs/model_comparison.csv",
        "outputs/config.json",
    ] {
        assert_eq!(
            fs::read(first.join(file)).unwrap(),
            fs::read(again.join(file)).unwrap(),
            "{file}"
        );
    }

    fs::write(&config, "batch_sise = 16\n").unwrap();
    let output = trainer()
        .quiet()
        .config(&config)
        .out(dir.path().join("x"))
        .run_fail(2);
    assert!(
        stderr(&output).contains("unknown setting 'batch_sise'"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn early_stopping_records_the_epoch_kept_and_why_it_stopped() {
    let dir = temp();
    let pack = dir.path().join("pack");
    trainer()
        .cpu()
        .quiet()
        .args([
            "--epochs-cnn",
            "40",
            "--patience",
            "2",
            "--monitor",
            "val_acc",
            "--models",
            "cnn",
        ])
        .out(&pack)
        .run_ok();
    let (header, rows) = read_csv(&pack.join("outputs/training_log.csv"));
    assert_eq!(header.last().unwrap(), "note");
    assert!(
        rows.len() < 40,
        "training should stop early, ran {} epochs",
        rows.len()
    );
    let last = rows.last().unwrap();
    assert!(
        last[6].contains("early stop: val_acc did not improve for 2 epoch(s)"),
        "{last:?}"
    );
    assert!(rows.iter().any(|r| r[6].contains("kept: best val_acc")));
    let readme = fs::read_to_string(pack.join("README.md")).unwrap();
    assert!(readme.contains("stopped early"), "{readme}");
    let (_, comparison) = read_csv(&pack.join("outputs/model_comparison.csv"));
    assert_eq!(comparison.len(), 1);
    assert!(comparison[0][6].starts_with("ok, stopped early after epoch"));
    // `epochs` is the epochs trained (the seed's runs train all they are given), not the 40
    // asked for.
    assert_eq!(comparison[0][1], rows.len().to_string(), "{comparison:?}");
}

#[test]
fn compare_names_the_changed_value_and_warns_about_two() {
    let dir = temp();
    let pack = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        trainer()
            .cpu()
            .quiet()
            .epochs(2, 4)
            .args(extra)
            .out(&out)
            .run_ok();
        out
    };
    let a = pack("a", &[]);
    let b = pack("b", &["--lr-cnn", "0.003"]);
    let c = pack("c", &["--lr-cnn", "0.003", "--batch-size", "16"]);

    let output = trainer().subcommand("compare").arg(&a).arg(&b).run_ok();
    assert!(
        stdout(&output).contains("changed: lr_cnn: 0.006 -> 0.003"),
        "{}",
        stdout(&output)
    );
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));
    let notes = fs::read_to_string(b.join("reports/experiment_notes.md")).unwrap();
    assert!(notes.contains("`lr_cnn`: 0.006 -> 0.003"), "{notes}");
    assert!(!notes.contains("Warning"));
    assert!(notes.contains("## Suggested next step"));
    assert!(b.join("reports/experiment_loss_overlay.png").is_file());

    let output = trainer().subcommand("compare").arg(&a).arg(&c).run_ok();
    assert!(
        stderr(&output).contains("2 settings changed"),
        "{}",
        stderr(&output)
    );
    let notes = fs::read_to_string(c.join("reports/experiment_notes.md")).unwrap();
    assert!(
        notes.contains("`batch_size`: 32 -> 16") && notes.contains("`lr_cnn`"),
        "{notes}"
    );
    assert!(notes.contains("Warning: 2 settings changed"), "{notes}");

    let output = trainer()
        .subcommand("compare")
        .arg(&a)
        .arg(dir.path().join("nope"))
        .run_fail(2);
    assert_eq!(stderr(&output).lines().count(), 1);
}

/// `--overfit-batches 1`, the workshop's "overfit a tiny batch": on the stripes both models
/// drive their training loss near zero (exit 0); at a learning rate of 1e-7 they cannot
/// (exit 1, the pack still written with the verdict in its checklist); 0 batches is refused.
#[test]
fn the_overfit_check_passes_on_the_stripes_and_fails_without_a_learning_rate() {
    let dir = temp();
    let out = dir.path().join("overfit");
    let output = trainer()
        .cpu()
        .quiet()
        .args(["--overfit-batches", "1"])
        .out(&out)
        .run_ok();
    let text = stdout(&output);
    for model in ["Flatten baseline", "Tiny CNN"] {
        assert!(
            text.contains(&format!("overfit_check: {model}: passed")),
            "{text}"
        );
    }
    assert_eq!(console_value(&text, "train_samples").as_deref(), Some("32"));
    let (header, log) = read_csv(&out.join("outputs/training_log.csv"));
    let loss = header.iter().position(|h| h == "train_loss").unwrap();
    let last: f64 = log.last().unwrap()[loss].parse().unwrap();
    assert!(last < 0.05, "{last}");
    let checklist = std::fs::read_to_string(out.join("reports/debug_checklist.md")).unwrap();
    assert!(checklist.contains("Tiny CNN: **passed**"), "{checklist}");

    let stuck = dir.path().join("stuck");
    let output = trainer()
        .cpu()
        .quiet()
        .args([
            "--overfit-batches",
            "1",
            "--lr-cnn",
            "1e-7",
            "--lr-baseline",
            "1e-7",
        ])
        .out(&stuck)
        .run_fail(1);
    assert!(
        stderr(&output).contains("overfit check failed"),
        "{}",
        stderr(&output)
    );
    let checklist = std::fs::read_to_string(stuck.join("reports/debug_checklist.md")).unwrap();
    assert!(checklist.contains("Tiny CNN: **failed**"), "{checklist}");

    // More batches than there are: all of them, said once, and the budget stays whole.
    let all = dir.path().join("all");
    let output = trainer()
        .cpu()
        .args(["--overfit-batches", "1000", "--models", "baseline"])
        .out(&all)
        .run_ok();
    assert!(
        stderr(&output).contains("the check uses 8"),
        "{}",
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("after 104 steps"),
        "{}",
        stdout(&output)
    );
    // parity compares backends on the whole training part: it refuses the check.
    let output = trainer()
        .subcommand("parity")
        .args(["--backends", "cpu,ndarray", "--overfit-batches", "1"])
        .out(dir.path().join("parity"))
        .run_fail(2);
    assert!(
        stderr(&output).contains("--overfit-batches"),
        "{}",
        stderr(&output)
    );

    let never = dir.path().join("never");
    let output = trainer()
        .args(["--overfit-batches", "0"])
        .out(&never)
        .run_fail(2);
    assert!(
        stderr(&output).contains("at least 1"),
        "{}",
        stderr(&output)
    );
    assert!(!never.exists());
}
