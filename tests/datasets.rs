//! Real datasets as people download them: pre-split folders (train/ and test/), byte-identical
//! copies as data rather than a refusal, unreadable and odd files, quick runs on big folders.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

const CLASSES: [&str; 3] = ["ankle-boot", "t-shirt-top", "trouser"];

/// Writes `per_class` distinct 12x12 gray PNGs of each class under `dir/<class>/`; `seed`
/// makes the pictures of one folder differ from another's.
fn class_folders(dir: &Path, per_class: usize, seed: u64) {
    for (label, class) in CLASSES.iter().enumerate() {
        let folder = dir.join(class);
        fs::create_dir_all(&folder).unwrap();
        for i in 0..per_class {
            let values = trainer::data::stripe_image(seed, label, i, 12);
            let pixels: Vec<u8> = values
                .iter()
                .map(|v| (((v + 1.0) / 2.5) * 255.0).round().clamp(0.0, 255.0) as u8)
                .collect();
            image::GrayImage::from_raw(12, 12, pixels)
                .unwrap()
                .save(folder.join(format!("{i:03}.png")))
                .unwrap();
        }
    }
}

/// A downloaded-style folder: train/ (`train` a class) and test/ (`test` a class).
fn pre_split(root: &Path, train: usize, test: usize) -> PathBuf {
    let data = root.join("fashion");
    class_folders(&data.join("train"), train, 1);
    class_folders(&data.join("test"), test, 2);
    data
}

fn run(data: &Path, out: &Path) -> Trainer {
    trainer()
        .cpu()
        .quiet()
        .data(data)
        .args(["--image-size", "12", "--models", "baseline"])
        .epochs(1, 1)
        .out(out)
}

fn sizes(output: &std::process::Output) -> [usize; 3] {
    let out = stdout(output);
    ["train_samples", "val_samples", "test_samples"].map(|key| {
        console_value(&out, key)
            .unwrap_or_else(|| panic!("no {key} in {out}"))
            .parse()
            .unwrap()
    })
}

fn issues(pack: &Path) -> Vec<Vec<String>> {
    let (header, rows) = read_csv(&pack.join("outputs/data_issues.csv"));
    assert_eq!(header, ["path", "issue", "detail", "action"]);
    rows
}

#[test]
fn a_pre_split_folder_trains_on_its_splits_and_evaluate_finds_its_test_part() {
    let dir = temp();
    let data = pre_split(dir.path(), 10, 4);
    let pack = dir.path().join("pack");
    let output = run(&data, &pack).run_ok();
    // 20% of each class of train/ is validation; test/ is the test part.
    assert_eq!(sizes(&output), [24, 6, 12]);
    assert_eq!(
        console_value(&stdout(&output), "classes").as_deref(),
        Some("3")
    );
    let info = run_info(&pack);
    let origins = info["data_folder"]["origins"].as_array().unwrap();
    assert_eq!(origins[2]["from"], "test/");
    assert_eq!(origins[2]["images"], 12);
    assert!(
        origins[1]["from"]
            .as_str()
            .unwrap()
            .contains("20% of train/")
    );
    let readme = fs::read_to_string(pack.join("README.md")).unwrap();
    assert!(readme.contains("pre-split"), "{readme}");
    assert!(readme.contains("test: 12 images from test/"), "{readme}");
    assert!(issues(&pack).is_empty());
    // The checkpoint records the test files under test/, and evaluate reads them again.
    let meta: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(pack.join("checkpoints/best_model.json")).unwrap(),
    )
    .unwrap();
    let files = meta["data_manifest"]["files"].as_array().unwrap();
    assert!(
        files
            .iter()
            .filter(|f| f["part"] == "test")
            .all(|f| f["file"].as_str().unwrap().starts_with("test/"))
    );
    let output = evaluate(&pack.join("checkpoints/best_model.json")).run_ok();
    assert!(stdout(&output).contains("12"), "{}", stdout(&output));
    // --data naming the training folder scores that recorded test part, with the macro F1
    // and each class's scores as any other folder's.
    let output = trainer()
        .subcommand("evaluate")
        .cpu()
        .checkpoint(pack.join("checkpoints/best_model.json"))
        .data(&data)
        .run_ok();
    let printed = stdout(&output);
    assert!(printed.contains("test_samples: 12"), "{printed}");
    assert!(
        printed.contains("macro_f1: ") && printed.contains("  trouser: precision "),
        "{printed}"
    );

    // A given validation folder is the validation part; --val-fraction draws from train.
    class_folders(&data.join("val"), 3, 3);
    assert_eq!(
        sizes(&run(&data, &dir.path().join("v")).run_ok()),
        [30, 9, 12]
    );
    fs::remove_dir_all(data.join("val")).unwrap();
    let output = run(&data, &dir.path().join("f"))
        .args(["--val-fraction", "0.5"])
        .run_ok();
    assert_eq!(sizes(&output), [15, 15, 12]);
}

/// A `--val-fraction` that leaves a class almost nothing to train on is said: the console
/// and run_info give the share validation really got (each class rounds on its own), and one
/// warning names the class left with fewer than five training images.
#[test]
fn a_val_fraction_that_leaves_few_training_images_is_said_with_its_real_share() {
    let dir = temp();
    let data = pre_split(dir.path(), 10, 4);
    let pack = dir.path().join("pack");
    let output = trainer()
        .cpu()
        .data(&data)
        .args(["--image-size", "12", "--models", "baseline"])
        .args(["--val-fraction", "0.999"])
        .epochs(1, 1)
        .out(&pack)
        .run_ok();
    // 9 of each class's 10 go to validation (one is kept for training): 90%, not 99.9%.
    assert_eq!(sizes(&output), [3, 27, 12]);
    let out = stdout(&output);
    assert!(
        out.contains("val: 27 images from 90% of train/ (--val-fraction asks 99.9%"),
        "{out}"
    );
    let info = run_info(&pack);
    let from = info["data_folder"]["origins"][1]["from"].as_str().unwrap();
    assert!(from.starts_with("90% of train/"), "{from}");
    let err = stderr(&output);
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("training image"))
        .collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].starts_with("trainer: warning: class '")
            && warnings[0].contains("keeps 1 training image(s) (3 of 3 classes keep fewer than 5)")
            && warnings[0].contains("--val-fraction 0.999"),
        "{err}"
    );
    assert!(
        info["data_folder"]["few_training_images"]
            .as_str()
            .is_some_and(|w| w.contains("keeps 1 training image")),
        "{info}"
    );
    // The default share keeps 8 of 10 for training: no warning, and the share as asked.
    let output = run(&data, &dir.path().join("default")).run_ok();
    assert!(
        !stderr(&output).contains("training image"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_pre_split_folder_refuses_different_classes_and_split() {
    let dir = temp();
    let data = pre_split(dir.path(), 6, 3);
    let out = dir.path().join("pack");
    // Any --split given, the default's value too: the folder's split is given.
    for split in ["0.8,0.1,0.1", "0.6,0.2,0.2"] {
        let output = run(&data, &out).args(["--split", split]).run_fail(2);
        let err = stderr(&output);
        assert!(
            err.contains(&format!("--split {split} cannot apply")) && err.contains("already split"),
            "{err}"
        );
        assert!(!out.exists());
    }
    // A config file's default split (a pack's outputs/config.json records it) repeats the run.
    let config = dir.path().join("config.toml");
    fs::write(&config, "split = [0.6, 0.2, 0.2]\n").unwrap();
    run(&data, &out).arg("--config").arg(&config).run_ok();
    fs::remove_dir_all(&out).unwrap();
    fs::rename(data.join("test/trouser"), data.join("test/trousers")).unwrap();
    let output = run(&data, &out).run_fail(2);
    let err = stderr(&output);
    assert!(err.contains("test/ lacks trouser"), "{err}");
    assert!(err.contains("trousers"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!out.exists());
}

#[test]
fn split_folders_without_train_and_test_are_refused_and_a_stray_folder_is_named() {
    let dir = temp();
    let data = dir.path().join("half");
    class_folders(&data.join("val"), 3, 1);
    class_folders(&data.join("test"), 3, 2);
    let out = dir.path().join("pack");
    let err = stderr(&run(&data, &out).run_fail(2));
    assert!(err.contains("has val/ and test/ but no train/"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!out.exists());
    fs::rename(data.join("val"), data.join("train")).unwrap();
    fs::remove_dir_all(data.join("test")).unwrap();
    let err = stderr(&run(&data, &out).run_fail(2));
    assert!(err.contains("has train/ but no test/"), "{err}");
    assert!(!out.exists());
    // A folder beside train/ and test/ is named, not read.
    class_folders(&data.join("test"), 3, 2);
    class_folders(&data.join("extras"), 2, 3);
    let output = trainer()
        .cpu()
        .data(&data)
        .args(["--image-size", "12", "--models", "baseline"])
        .epochs(1, 1)
        .out(&out)
        .run_ok();
    let err = stderr(&output);
    assert!(
        err.contains("'extras/'") && err.contains("not read"),
        "{err}"
    );
}

#[test]
fn an_empty_class_in_a_split_folder_and_val_fraction_on_class_folders_are_refused() {
    let dir = temp();
    let data = pre_split(dir.path(), 6, 3);
    let out = dir.path().join("pack");
    for file in fs::read_dir(data.join("test/trouser")).unwrap() {
        fs::remove_file(file.unwrap().path()).unwrap();
    }
    let err = stderr(&run(&data, &out).run_fail(2));
    assert!(
        err.contains("class 'trouser' has no image to use in test/"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!out.exists());
    // --val-fraction draws from a pre-split folder's train/: a folder of classes refuses it.
    let flat = dir.path().join("flat");
    class_folders(&flat, 10, 1);
    let err = stderr(&run(&flat, &out).args(["--val-fraction", "0.3"]).run_fail(2));
    assert!(
        err.contains("--val-fraction 0.3 cannot apply") && err.contains("pre-split"),
        "{err}"
    );
    assert!(!out.exists());
}

/// `--val-fraction` draws validation from a pre-split folder's train/ and nothing else: given
/// where the layout has its own validation (val/) or is split by `--split` (class folders),
/// or with no folder at all, it is refused whatever its value, the default's included (val/
/// silently won over it). A config file's other value is refused; its default (a pack's
/// config.json records it) repeats the run.
#[test]
fn val_fraction_is_refused_where_nothing_is_drawn_from_train() {
    let dir = temp();
    let data = pre_split(dir.path(), 6, 3);
    class_folders(&data.join("val"), 3, 3);
    let out = dir.path().join("pack");
    for fraction in ["0.3", "0.2"] {
        let err = stderr(
            &run(&data, &out)
                .args(["--val-fraction", fraction])
                .run_fail(2),
        );
        assert!(
            err.contains(&format!("--val-fraction {fraction} cannot apply"))
                && err.contains("val/"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!out.exists());
    }
    let config = dir.path().join("config.toml");
    fs::write(&config, "val_fraction = 0.3\n").unwrap();
    // A config file's key is named as the file's key, at its line; a flag over it as the flag.
    let err = stderr(&run(&data, &out).arg("--config").arg(&config).run_fail(2));
    assert!(
        err.contains("line 1: 'val_fraction' = 0.3 cannot apply")
            && err.contains("config.toml")
            && err.contains("leave val_fraction out")
            && !err.contains("--val-fraction 0.3"),
        "{err}"
    );
    let err = stderr(
        &run(&data, &out)
            .arg("--config")
            .arg(&config)
            .args(["--val-fraction", "0.4"])
            .run_fail(2),
    );
    assert!(err.contains("--val-fraction 0.4 cannot apply"), "{err}");
    fs::write(&config, "split = [0.5, 0.25, 0.25]\n").unwrap();
    let err = stderr(&run(&data, &out).arg("--config").arg(&config).run_fail(2));
    assert!(
        err.contains("line 1: 'split' = [0.5, 0.25, 0.25] cannot apply")
            && !err.contains("--split 0.5"),
        "{err}"
    );
    fs::write(&config, "val_fraction = 0.2\n").unwrap();
    run(&data, &out).arg("--config").arg(&config).run_ok();
    let flat = dir.path().join("flat");
    class_folders(&flat, 10, 1);
    let fresh = dir.path().join("fresh");
    let err = stderr(
        &run(&flat, &fresh)
            .args(["--val-fraction", "0.2"])
            .run_fail(2),
    );
    assert!(err.contains("--val-fraction 0.2 cannot apply"), "{err}");
    let stripes = trainer().cpu().quiet().args(["--val-fraction", "0.2"]);
    let err = stderr(&stripes.epochs(1, 1).out(&fresh).run_fail(2));
    assert!(
        err.contains("--val-fraction applies to an image folder"),
        "{err}"
    );
    assert!(!fresh.exists());
}

#[test]
fn copies_are_listed_left_out_across_classes_kept_once_within_and_never_in_two_splits() {
    let dir = temp();
    let data = pre_split(dir.path(), 10, 4);
    let copy = |from: &str, to: &str| fs::copy(data.join(from), data.join(to)).unwrap();
    // The same picture under two classes, a copy within one class, a test image in train.
    copy("train/trouser/000.png", "train/ankle-boot/from-trouser.png");
    copy("train/trouser/001.png", "train/trouser/copy-of-001.png");
    copy("test/ankle-boot/000.png", "train/ankle-boot/leaked.png");
    let pack = dir.path().join("pack");
    let output = run(&data, &pack).run_ok();
    let err = stderr(&output);
    assert!(err.contains("data: 4 file(s) left out or merged"), "{err}");
    // train/ loses trouser/000 (conflict) and the conflicting copy; keeps 001 once; the
    // leaked copy stays in test only: 30 - 1 = 29 training images.
    let [train, val, test] = sizes(&output);
    assert_eq!((train + val, test), (29, 12));
    let rows = issues(&pack);
    let find = |path: &str| rows.iter().find(|r| r[0] == path).cloned();
    assert_eq!(
        find("train/trouser/000.png").unwrap()[1],
        "conflicting_labels"
    );
    assert_eq!(
        find("train/ankle-boot/from-trouser.png").unwrap()[1],
        "conflicting_labels"
    );
    assert_eq!(
        find("train/trouser/copy-of-001.png").unwrap()[1],
        "duplicate"
    );
    assert_eq!(
        find("train/ankle-boot/leaked.png").unwrap()[1],
        "copy_across_splits"
    );
    assert_eq!(rows.len(), 4);
    // No file in two parts, no conflicting copy anywhere.
    let meta: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(pack.join("checkpoints/best_model.json")).unwrap(),
    )
    .unwrap();
    let used: Vec<&str> = meta["data_manifest"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file"].as_str().unwrap())
        .collect();
    assert!(!used.contains(&"train/trouser/000.png"));
    assert!(!used.contains(&"train/ankle-boot/leaked.png"));
    assert!(used.contains(&"test/ankle-boot/000.png"));
    // evaluate still accepts the folder as it was.
    evaluate(&pack.join("checkpoints/best_model.json")).run_ok();

    // --strict-data refuses the copy across classes, writing nothing.
    let strict = dir.path().join("strict");
    let output = run(&data, &strict).arg("--strict-data").run_fail(2);
    assert!(
        stderr(&output).contains("in two classes"),
        "{}",
        stderr(&output)
    );
    assert!(!strict.exists());
}

#[test]
fn unreadable_images_stop_the_run_naming_ten_unless_skipped() {
    let dir = temp();
    let data = dir.path().join("flat");
    class_folders(&data, 8, 1);
    for i in 0..12 {
        fs::write(
            data.join(format!("trouser/bad-{i:02}.png")),
            "not a picture",
        )
        .unwrap();
    }
    let out = dir.path().join("pack");
    let output = run(&data, &out).run_fail(2);
    let err = stderr(&output);
    assert!(
        err.contains("12 image file(s) cannot be read, the first ten"),
        "{err}"
    );
    assert_eq!(err.matches("trouser/bad-").count(), 10, "{err}");
    assert!(err.contains("--skip-bad-images"), "{err}");
    assert!(!out.exists());
    let output = run(&data, &out).arg("--skip-bad-images").run_ok();
    let [train, val, test] = sizes(&output);
    assert_eq!(train + val + test, 24);
    let rows = issues(&out);
    assert_eq!(rows.len(), 12);
    assert!(
        rows.iter()
            .all(|r| r[1] == "unreadable" && r[0].contains("bad-"))
    );
}

#[test]
fn max_per_class_takes_a_seeded_sample_and_samples_per_class_points_to_it() {
    let dir = temp();
    let data = dir.path().join("flat");
    class_folders(&data, 20, 1);
    let out = dir.path().join("pack");
    let output = run(&data, &out).args(["--max-per-class", "5"]).run_ok();
    assert_eq!(sizes(&output), [9, 3, 3]);
    let output = run(&data, &dir.path().join("s"))
        .args(["--samples-per-class", "5"])
        .run_fail(2);
    assert!(
        stderr(&output).contains("--max-per-class"),
        "{}",
        stderr(&output)
    );
    let config = dir.path().join("quick.toml");
    fs::write(&config, "samples_per_class = 5\n").unwrap();
    let output = run(&data, &dir.path().join("c"))
        .config(&config)
        .run_fail(2);
    assert!(
        stderr(&output).contains("--max-per-class"),
        "{}",
        stderr(&output)
    );
    fs::write(&config, "max_per_class = 4\n").unwrap();
    let output = run(&data, &dir.path().join("c")).config(&config).run_ok();
    let [train, val, test] = sizes(&output);
    assert_eq!(train + val + test, 12);
    // Too small a sample says so, rather than only "has 1 image(s) to split".
    let output = run(&data, &dir.path().join("one"))
        .args(["--max-per-class", "1"])
        .run_fail(2);
    let err = stderr(&output);
    assert!(
        err.contains("has 1 image(s) to split (--max-per-class 1 leaves too few)"),
        "{err}"
    );
}

#[test]
fn images_of_mixed_sizes_and_modes_are_converted() {
    let dir = temp();
    let data = dir.path().join("mixed");
    class_folders(&data, 6, 1);
    let folder = data.join("t-shirt-top");
    image::RgbImage::from_pixel(30, 20, image::Rgb([200, 10, 10]))
        .save(folder.join("rgb.png"))
        .unwrap();
    image::RgbaImage::from_pixel(8, 8, image::Rgba([10, 200, 10, 128]))
        .save(folder.join("rgba.png"))
        .unwrap();
    image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_pixel(12, 12, image::Luma([40000]))
        .save(folder.join("deep.png"))
        .unwrap();
    let pack = dir.path().join("pack");
    let output = trainer()
        .cpu()
        .data(&data)
        .args(["--image-size", "12", "--models", "baseline"])
        .epochs(1, 1)
        .out(&pack)
        .run_ok();
    let out = stdout(&output);
    assert!(out.contains("21 images read"), "{out}");
    assert!(out.contains("1 gray 16-bit"), "{out}");
    assert!(out.contains("1 rgba 8-bit"), "{out}");
    assert!(out.contains("2 resized to 12x12"), "{out}");
    assert!(out.contains("rgb (3 channels)"), "{out}");
}

#[test]
fn a_sweep_over_a_pre_split_folder_draws_each_val_fraction() {
    let dir = temp();
    let data = pre_split(dir.path(), 8, 2);
    let toml = format!(
        "backend = \"cpu\"\nmodels = [\"baseline\"]\nepochs_baseline = 1\nimage_size = 12\ndata = {:?}\nval_fraction = [0.25, 0.5]\n",
        data.display().to_string()
    );
    sweep_plan(dir.path(), &toml, "grid").run_ok();
    let grid = dir.path().join("grid");
    trainer()
        .subcommand("sweep run")
        .arg(&grid)
        .args(["--local", "--jobs", "1"])
        .run_ok();
    let mut vals: Vec<u64> = fs::read_dir(grid.join("runs"))
        .unwrap()
        .map(|run| {
            let info: serde_json::Value = serde_json::from_str(
                &fs::read_to_string(run.unwrap().path().join("outputs/run_info.json")).unwrap(),
            )
            .unwrap();
            info["data_folder"]["origins"][1]["images"]
                .as_u64()
                .unwrap()
        })
        .collect();
    vals.sort();
    // 8 training images a class: 2 (25%) or 4 (50%) of each of 3 classes.
    assert_eq!(vals, [6, 12]);
    // --split in a sweep over a pre-split folder: the task fails, its log saying why.
    let toml = toml.replace("val_fraction = [0.25, 0.5]", "split = [0.5, 0.25, 0.25]");
    sweep_plan(dir.path(), &toml, "bad").run_ok();
    let output = trainer()
        .subcommand("sweep run")
        .arg(dir.path().join("bad"))
        .args(["--local", "--jobs", "1"])
        .run();
    assert!(!output.status.success());
    let log = fs::read_to_string(dir.path().join("bad/logs/task-0000.log")).unwrap();
    assert!(log.contains("is already split"), "{log}");
}
