//! A checkpoint scored on the user's own labelled folders (`trainer evaluate --data`),
//! `predict` over folders with `--csv`, and the label-issue evidence of a training pack.

use std::fs;
use std::path::{Path, PathBuf};

mod common;
use common::{evaluate, image_folder, read_csv, stderr, stdout, temp, trainer};

/// A pack trained on a stripe folder in which `moved` horizontal images were moved into the
/// vertical class (wrong labels, for the label-issue evidence). Returns (data, pack).
fn trained_pack(root: &Path, moved: usize) -> (PathBuf, PathBuf) {
    let data = image_folder(root, 14);
    for i in 0..moved {
        let name = format!("horizontal_{:03}.png", 4 + i);
        fs::rename(
            data.join("horizontal").join(&name),
            data.join("vertical").join(&name),
        )
        .unwrap();
    }
    let pack = root.join("pack");
    trainer()
        .cpu()
        .quiet()
        .data(&data)
        .args(["--image-size", "16"])
        .epochs(2, 4)
        .out(&pack)
        .run_ok();
    (data, pack)
}

/// Another labelled folder of the same classes: `per_class` stripe images a class, written
/// as `size` x `size` PNGs in colour when `rgb`.
fn labelled_folder(root: &Path, per_class: usize, size: u32, rgb: bool) -> PathBuf {
    let folder = root.join(format!("labelled-{per_class}-{size}-{rgb}"));
    for (label, class) in ["diagonal", "horizontal", "vertical"].iter().enumerate() {
        fs::create_dir_all(folder.join(class)).unwrap();
        for i in 0..per_class {
            let values = trainer::data::stripe_image(11, 2 - label, i, size as usize);
            let pixels: Vec<u8> = values
                .iter()
                .map(|v| (((v + 1.0) / 2.5) * 255.0).round().clamp(0.0, 255.0) as u8)
                .collect();
            let grey = image::GrayImage::from_raw(size, size, pixels).unwrap();
            let path = folder.join(class).join(format!("{class}_{i:03}.png"));
            if rgb {
                image::DynamicImage::ImageLuma8(grey)
                    .to_rgb8()
                    .save(path)
                    .unwrap();
            } else {
                grey.save(path).unwrap();
            }
        }
    }
    folder
}

fn number(cell: &str) -> f64 {
    cell.parse()
        .unwrap_or_else(|_| panic!("not a number: {cell}"))
}

#[test]
fn a_labelled_folder_is_scored_per_class_and_agrees_with_its_confusion_matrix() {
    let dir = temp();
    let (data, pack) = trained_pack(dir.path(), 0);
    let checkpoint = pack.join("checkpoints/best_model.json");
    // A copy of the training folder less one file (not the recorded folder, so scored as a
    // folder): its train and validation images are counted in a warning.
    let copy = dir.path().join("copy");
    for class in ["diagonal", "horizontal", "vertical"] {
        fs::create_dir_all(copy.join(class)).unwrap();
        for file in fs::read_dir(data.join(class)).unwrap() {
            let file = file.unwrap();
            fs::copy(file.path(), copy.join(class).join(file.file_name())).unwrap();
        }
    }
    fs::remove_file(
        fs::read_dir(copy.join("diagonal"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap();
    let output = evaluate(&checkpoint)
        .data(&copy)
        .out(dir.path().join("own"))
        .run_ok();
    let err = stderr(&output);
    let line = err
        .lines()
        .find(|l| l.contains("byte-identical to the checkpoint's training/validation images"))
        .unwrap_or_else(|| panic!("{err}"));
    let seen: usize = line
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap();
    assert!(line.contains(&format!("{seen} of 41 images")), "{line}");
    assert!((25..41).contains(&seen), "{line}");
    // The pack records the caveat too, not only the console.
    let summary: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(dir.path().join("own/outputs/metrics_summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["seen_in_training"], seen, "{summary}");
    let readme = fs::read_to_string(dir.path().join("own/README.md")).unwrap();
    assert!(
        readme.contains(&format!(
            "**The accuracy overstates:** {seen} of the 41 images"
        )),
        "{readme}"
    );
    // Laid out as downloaded: train/ and test/; evaluate scores test/ only.
    let split = dir.path().join("downloaded");
    fs::create_dir_all(&split).unwrap();
    fs::rename(
        labelled_folder(dir.path(), 5, 20, false),
        split.join("test"),
    )
    .unwrap();
    fs::rename(
        labelled_folder(dir.path(), 3, 20, false),
        split.join("train"),
    )
    .unwrap();
    let out = dir.path().join("scored");
    let output = evaluate(&checkpoint).data(&split).out(&out).run_ok();
    assert!(!stderr(&output).contains("byte-identical"));
    let summary = fs::read_to_string(out.join("outputs/metrics_summary.json")).unwrap();
    assert!(summary.contains("\"seen_in_training\": 0"), "{summary}");
    assert!(
        !fs::read_to_string(out.join("README.md"))
            .unwrap()
            .contains("overstates")
    );
    let console = stdout(&output);
    assert!(console.contains("samples: 15"), "{console}");
    let accuracy = number(&common::console_value(&console, "accuracy").unwrap());
    assert!((0.0..=1.0).contains(&accuracy), "{console}");

    let (header, rows) = read_csv(&out.join("outputs/per_class_metrics.csv"));
    assert_eq!(header, ["class", "precision", "recall", "f1", "support"]);
    let (_, matrix) = read_csv(&out.join("outputs/confusion_matrix.csv"));
    assert_eq!(rows.len(), 3);
    for (i, row) in rows.iter().enumerate() {
        let (precision, recall, f1) = (number(&row[1]), number(&row[2]), number(&row[3]));
        for v in [precision, recall, f1] {
            assert!((0.0..=1.0).contains(&v), "{row:?}");
        }
        let counts = |r: usize, c: usize| number(&matrix[r][c + 1]);
        let hit = counts(i, i);
        let actual: f64 = (0..3).map(|c| counts(i, c)).sum();
        let predicted: f64 = (0..3).map(|r| counts(r, i)).sum();
        assert_eq!(number(&row[4]), actual, "support is the row's sum");
        assert_eq!(actual, 5.0);
        assert!((recall - hit / actual).abs() < 1e-4, "{row:?} {matrix:?}");
        let expected_precision = if predicted > 0.0 {
            hit / predicted
        } else {
            0.0
        };
        assert!(
            (precision - expected_precision).abs() < 1e-4,
            "{row:?} {matrix:?}"
        );
    }
    let raw = fs::read_to_string(out.join("outputs/per_class_metrics.csv")).unwrap();
    assert!(raw.ends_with("\r\n"), "CRLF line ends");
    for file in trainer::pack::evaluation::FILES {
        assert!(out.join(file).is_file(), "{file} is missing");
    }
    let readme = fs::read_to_string(out.join("README.md")).unwrap();
    assert!(readme.contains("test part"), "{readme}");
    // Without --data, the recorded test set as before.
    let output = evaluate(&checkpoint).run_ok();
    assert!(stdout(&output).contains("recorded_test_accuracy: "));
}

#[test]
fn other_classes_are_refused_naming_both_lists_and_other_sizes_are_converted_in_one_line() {
    let dir = temp();
    let (_, pack) = trained_pack(dir.path(), 0);
    let checkpoint = pack.join("checkpoints/best_model.json");
    let other = labelled_folder(dir.path(), 2, 20, false);
    fs::rename(other.join("vertical"), other.join("upright")).unwrap();
    let out = dir.path().join("refused");
    let output = evaluate(&checkpoint).data(&other).out(&out).run_fail(2);
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("diagonal, horizontal, upright"), "{err}");
    assert!(err.contains("diagonal, horizontal, vertical"), "{err}");
    assert!(!out.exists(), "nothing written");

    // Unreadable images stop it before anything is written, counted and named.
    let broken = labelled_folder(dir.path(), 2, 16, false);
    fs::write(broken.join("vertical/zz_broken.png"), "not a picture").unwrap();
    let output = evaluate(&checkpoint).data(&broken).out(&out).run_fail(2);
    let err = stderr(&output);
    assert!(
        err.contains("1 image(s) cannot be read") && err.contains("zz_broken.png"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");

    // 32x32 colour files for a 16x16 grey checkpoint.
    let big = labelled_folder(dir.path(), 3, 32, true);
    let output = evaluate(&checkpoint)
        .data(&big)
        .out(dir.path().join("converted"))
        .run_ok();
    let err = stderr(&output);
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("images read as"))
        .collect();
    assert_eq!(said.len(), 1, "{err}");
    assert!(said[0].contains("9 resized from 32x32"), "{err}");
    assert!(said[0].contains("9 converted from 3 channel(s)"), "{err}");
}

#[test]
fn predict_classifies_a_folder_into_a_csv_and_gives_the_accuracy_of_a_labelled_one() {
    let dir = temp();
    let (_, pack) = trained_pack(dir.path(), 0);
    let folder = labelled_folder(dir.path(), 4, 16, false);
    let csv = dir.path().join("predictions.csv");
    let output = trainer()
        .subcommand("predict")
        .cpu()
        .checkpoint(pack.join("checkpoints/best_model.json"))
        .arg("--csv")
        .arg(&csv)
        .arg(&folder)
        .run_ok();
    let console = stdout(&output);
    assert!(console.contains("accuracy: "), "{console}");
    assert!(
        console.contains("of 12 images in class folders"),
        "{console}"
    );
    let (header, rows) = read_csv(&csv);
    assert_eq!(header[..3], ["path", "predicted", "confidence"]);
    assert_eq!(rows.len(), 12, "one row an image");
    for row in &rows {
        assert!(Path::new(&row[0]).is_file(), "{row:?}");
        let top: Vec<f64> = [4, 6, 8].iter().map(|&i| number(&row[i])).collect();
        assert!(top.iter().sum::<f64>() <= 1.0, "{row:?}");
        assert!(
            top.windows(2).all(|w| w[0] >= w[1]),
            "most probable first: {row:?}"
        );
        assert_eq!(row[1], row[3], "the prediction is the top class");
        // The console and the CSV write the same rounding, in Python's float format.
        let line = format!("{}: {} (confidence {})", row[0], row[1], row[2]);
        assert!(console.contains(&line), "{line} not in {console}");
        for cell in [&row[2], &row[4], &row[6], &row[8]] {
            let python = format!("{:?}", number(cell));
            assert_eq!(*cell, python, "{row:?}");
        }
    }
    assert!(fs::read_to_string(&csv).unwrap().contains("\r\n"));
    // An existing --csv is replaced only with --force, and one under a file is refused, both
    // before any image is classified; a missing folder is made (as export does).
    let predict = |csv: &Path| {
        trainer()
            .subcommand("predict")
            .cpu()
            .checkpoint(pack.join("checkpoints/best_model.json"))
            .arg("--csv")
            .arg(csv)
            .arg(&folder)
    };
    let before = fs::read_to_string(&csv).unwrap();
    let output = predict(&csv).run_fail(2);
    assert!(
        stderr(&output).contains("exists; pass --force"),
        "{}",
        stderr(&output)
    );
    assert!(stdout(&output).is_empty(), "nothing classified");
    assert_eq!(fs::read_to_string(&csv).unwrap(), before);
    predict(&csv).arg("--force").run_ok();
    let output = predict(&csv.join("p.csv")).run_fail(2);
    assert!(
        stderr(&output).contains("is under a file, not a folder"),
        "{}",
        stderr(&output)
    );
    assert!(stdout(&output).is_empty(), "nothing classified");
    let made = dir.path().join("no-such-folder/deeper/p.csv");
    predict(&made).run_ok();
    assert_eq!(read_csv(&made).1.len(), read_csv(&csv).1.len());
}

#[test]
fn the_pack_lists_the_training_images_the_model_puts_in_another_class() {
    let dir = temp();
    let (_, pack) = trained_pack(dir.path(), 4);
    let (header, rows) = read_csv(&pack.join("outputs/label_issues.csv"));
    assert_eq!(
        header,
        [
            "sample_id",
            "part",
            "label",
            "predicted",
            "probability",
            "loss"
        ]
    );
    assert!(!rows.is_empty() && rows.len() <= 50);
    let losses: Vec<f64> = rows.iter().map(|r| number(&r[5])).collect();
    assert!(losses.windows(2).all(|w| w[0] >= w[1]), "{losses:?}");
    for row in &rows {
        assert!(row[1] == "train" || row[1] == "val", "{row:?}");
        assert_ne!(row[2], row[3], "{row:?}");
        assert!((0.0..=1.0).contains(&number(&row[4])), "{row:?}");
    }
    assert!(pack.join("curves/top_losses.png").is_file());
    let readme = fs::read_to_string(pack.join("README.md")).unwrap();
    assert!(
        readme.contains("outputs/label_issues.csv") && readme.contains("curves/top_losses.png")
    );
}
