//! What a reviewer must be able to trust in a pack: no file read twice or under two labels,
//! links to folders never followed, every class in every part, the test files recorded and
//! checked, one image-size bound, and the best model chosen on validation.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use common::*;

/// A quick cpu run on an image folder, at 16x16.
fn folder_run(data: &Path, out: &Path) -> Trainer {
    sized_run(data, out, 16)
}

fn sized_run(data: &Path, out: &Path, size: usize) -> Trainer {
    trainer()
        .cpu()
        .quiet()
        .data(data)
        .args(["--image-size", &size.to_string()])
        .epochs(2, 3)
        .out(out)
}

#[test]
fn links_to_folders_are_not_followed_and_each_file_is_read_once() {
    let dir = temp();
    let data = image_folder(dir.path(), 15);
    // The folder: a link back to the parent (a loop that brought 1,464 samples and
    // leaked test files into training), a second path to one file, a class folder that is a
    // link.
    symlink("..", data.join("vertical/loop")).unwrap();
    symlink("horizontal_003.png", data.join("horizontal/again.png")).unwrap();
    symlink(data.join("diagonal"), data.join("zz_linked_class")).unwrap();
    let pack = dir.path().join("pack");
    let output = folder_run(&data, &pack).run_ok();
    let err = stderr(&output);
    assert!(
        err.contains("skipped 'vertical/loop': a link to a folder: not followed"),
        "{err}"
    );
    assert!(
        err.contains(
            "skipped 'horizontal/again.png': the same file as 'horizontal/horizontal_003.png'"
        ),
        "{err}"
    );
    assert!(err.contains("skipped 'zz_linked_class'"), "{err}");
    let out = stdout(&output);
    assert_eq!(console_value(&out, "train_samples").as_deref(), Some("27"));
    assert_eq!(console_value(&out, "test_samples").as_deref(), Some("9"));
    assert_eq!(console_value(&out, "classes").as_deref(), Some("3"));

    // The checkpoint lists every file once, with its part; no file in two parts.
    let meta = checkpoint_meta(&pack);
    let files = meta["data_manifest"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 45);
    let mut names: Vec<&str> = files.iter().map(|f| f["file"].as_str().unwrap()).collect();
    names.dedup();
    assert_eq!(names.len(), 45);
    let tests = files.iter().filter(|f| f["part"] == "test").count();
    assert_eq!(tests, 9);

    // One file under two classes cannot have one label: left out and listed; --strict-data
    // refuses it, writing nothing.
    symlink(
        data.join("vertical/vertical_004.png"),
        data.join("diagonal/stolen.png"),
    )
    .unwrap();
    let other = dir.path().join("other");
    let output = folder_run(&data, &other).arg("--strict-data").run_fail(2);
    let err = stderr(&output);
    assert!(err.contains("in two classes"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!other.exists());
    let output = folder_run(&data, &other).run_ok();
    assert!(
        stderr(&output).contains("2 conflicting_labels"),
        "{}",
        stderr(&output)
    );
    let (_, rows) = read_csv(&other.join("outputs/data_issues.csv"));
    let listed: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(listed, ["diagonal/stolen.png", "vertical/vertical_004.png"]);
    let files = checkpoint_meta(&other)["data_manifest"]["files"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(files, 44);
}

#[test]
fn hidden_entries_copies_hard_links_and_packs_are_never_read_as_data() {
    let dir = temp();
    let data = image_folder(dir.path(), 12);
    // A notebook's checkpoint copy and a macOS metadata file: hidden, skipped.
    fs::create_dir_all(data.join("horizontal/.ipynb_checkpoints")).unwrap();
    fs::copy(
        data.join("horizontal/horizontal_004.png"),
        data.join("horizontal/.ipynb_checkpoints/horizontal_004-checkpoint.png"),
    )
    .unwrap();
    fs::write(data.join("vertical/._vertical_005.png"), b"AppleDouble").unwrap();
    // A plain copy of a file under another name, in its own class: read once.
    fs::copy(
        data.join("diagonal/diagonal_006.png"),
        data.join("diagonal/copy of diagonal_006.png"),
    )
    .unwrap();
    let pack = dir.path().join("pack");
    let output = folder_run(&data, &pack).run_ok();
    let err = stderr(&output);
    assert!(
        err.contains("skipped 'horizontal/.ipynb_checkpoints': hidden"),
        "{err}"
    );
    assert!(
        err.contains("skipped 'vertical/._vertical_005.png': hidden"),
        "{err}"
    );
    assert!(
        err.contains("1 file(s) left out or merged (1 duplicate)"),
        "{err}"
    );
    let (_, rows) = read_csv(&pack.join("outputs/data_issues.csv"));
    assert_eq!(rows.len(), 1);
    // The original name is kept (the shorter path), the copy listed.
    assert_eq!(rows[0][0], "diagonal/copy of diagonal_006.png");
    assert_eq!(rows[0][1], "duplicate");
    assert!(rows[0][2].contains("'diagonal/diagonal_006.png', which is kept"));
    assert_eq!(
        checkpoint_meta(&pack)["data_manifest"]["files"]
            .as_array()
            .unwrap()
            .len(),
        36
    );

    // An evidence pack inside the folder: refused as --out, skipped when it is there.
    let inside = data.join("vertical/run");
    let output = folder_run(&data, &inside).run_fail(2);
    assert!(
        stderr(&output).contains("is inside --data"),
        "{}",
        stderr(&output)
    );
    assert!(!inside.exists());
    let moved = data.join("zz_old_pack");
    fs::rename(&pack, &moved).unwrap();
    let again = dir.path().join("again");
    let output = folder_run(&data, &again).run_ok();
    assert!(
        stderr(&output).contains("skipped 'zz_old_pack': a trainer evidence pack"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        console_value(&stdout(&output), "classes").as_deref(),
        Some("3")
    );

    // The same bytes under two classes, by a hard link or by a copy: left out and listed,
    // refused with --strict-data.
    fs::hard_link(
        data.join("vertical/vertical_007.png"),
        data.join("horizontal/linked.png"),
    )
    .unwrap();
    let output = folder_run(&data, &dir.path().join("hard"))
        .arg("--strict-data")
        .run_fail(2);
    assert!(
        stderr(&output).contains("in two classes"),
        "{}",
        stderr(&output)
    );
    fs::remove_file(data.join("horizontal/linked.png")).unwrap();
    fs::copy(
        data.join("vertical/vertical_007.png"),
        data.join("horizontal/copied.png"),
    )
    .unwrap();
    let output = folder_run(&data, &dir.path().join("copied"))
        .arg("--strict-data")
        .run_fail(2);
    assert!(
        stderr(&output).contains("the same image (identical bytes) in two classes"),
        "{}",
        stderr(&output)
    );
    let copied = dir.path().join("copied");
    let output = folder_run(&data, &copied).run_ok();
    assert!(
        stderr(&output).contains("2 conflicting_labels"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn evaluate_follows_a_moved_folder_with_data() {
    let dir = temp();
    let data = image_folder(dir.path(), 8);
    let pack = dir.path().join("pack");
    folder_run(&data, &pack).run_ok();
    let checkpoint = pack.join("checkpoints/best_model.json");
    let moved = dir.path().join("moved images");
    fs::rename(&data, &moved).unwrap();
    let output = evaluate(&checkpoint).run_fail(2);
    assert!(
        stderr(&output).contains("give its new place with --data"),
        "{}",
        stderr(&output)
    );
    evaluate(&checkpoint).arg("--data").arg(&moved).run_ok();
}

fn checkpoint_meta(pack: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(pack.join("checkpoints/best_model.json")).unwrap())
        .unwrap()
}

#[test]
fn evaluate_names_the_files_that_changed_since_training_and_never_blames_the_model() {
    let dir = temp();
    let data = image_folder(dir.path(), 10);
    let pack = dir.path().join("pack");
    folder_run(&data, &pack).run_ok();
    let checkpoint = pack.join("checkpoints/best_model.json");
    evaluate(&checkpoint).run_ok();

    // One recorded test file removed, one file added, one training file changed.
    let meta = checkpoint_meta(&pack);
    let files = meta["data_manifest"]["files"].as_array().unwrap();
    let pick = |part: &str| {
        files.iter().find(|f| f["part"] == part).unwrap()["file"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (test_file, train_file) = (pick("test"), pick("train"));
    fs::remove_file(data.join(&test_file)).unwrap();
    fs::copy(data.join(&train_file), data.join("vertical/new_one.png")).unwrap();
    let bytes = fs::read(data.join(&train_file)).unwrap();
    image::load_from_memory(&bytes)
        .unwrap()
        .fliph()
        .save(data.join(&train_file))
        .unwrap();
    let output = evaluate(&checkpoint).run_fail(2);
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("the data folder"), "{err}");
    assert!(err.contains("changed since training"), "{err}");
    assert!(err.contains(&format!("1 removed ({test_file})")), "{err}");
    assert!(err.contains("1 added (vertical/new_one.png)"), "{err}");
    assert!(err.contains(&format!("1 changed ({train_file})")), "{err}");
    assert!(!err.contains("reloaded model scores"), "{err}");
}

#[test]
fn one_image_size_bound_for_training_and_loading() {
    let dir = temp();
    let data = image_folder(dir.path(), 6);
    let pack = dir.path().join("pack");
    let output = sized_run(&data, &pack, 4).run_fail(2);
    assert!(
        stderr(&output).contains("--image-size must be between 5 and"),
        "{}",
        stderr(&output)
    );
    assert!(!pack.exists());
    // The smallest size training takes, a checkpoint of it loads.
    sized_run(&data, &pack, 5).run_ok();
    let checkpoint = pack.join("checkpoints/best_model.json");
    evaluate(&checkpoint).run_ok();
    trainer()
        .subcommand("predict")
        .cpu()
        .checkpoint(&checkpoint)
        .arg(data.join("vertical/vertical_005.png"))
        .run_ok();
}

#[test]
fn every_class_is_in_every_part_of_a_small_stripe_split() {
    // With 5 images per class, the earlier permutation left a class out of the test part
    // for seeds 3 to 6 (an all-zero row in the confusion matrix).
    let dir = temp();
    for seed in 3..=6 {
        let pack = dir.path().join(format!("seed{seed}"));
        trainer()
            .cpu()
            .quiet()
            .args(["--samples-per-class", "5", "--seed", &seed.to_string()])
            .epochs(1, 1)
            .out(&pack)
            .run_ok();
        let (_, rows) = read_csv(&pack.join("outputs/confusion_matrix.csv"));
        for row in rows {
            let total: usize = row[1..].iter().map(|v| v.parse::<usize>().unwrap()).sum();
            assert_eq!(total, 1, "seed {seed}: class {} has one test image", row[0]);
        }
    }
}

/// The first model of model_comparison.csv and (model, best_val_acc, test_accuracy) of each.
fn comparison(pack: &Path) -> Vec<(String, f64, f64)> {
    let (header, rows) = read_csv(&pack.join("outputs/model_comparison.csv"));
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    rows.iter()
        .map(|r| {
            (
                r[col("model")].clone(),
                r[col("best_val_acc")].parse().unwrap(),
                r[col("test_accuracy")].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_best_model_is_chosen_on_validation_unless_asked_for_the_scripts_rule() {
    // Weak models on little data: find a seed where validation and test disagree on the
    // better model, as in the issue (validation 0.667 against 0.500, test the other way).
    let dir = temp();
    let run = |seed: u64, rule: &str| {
        let pack = dir.path().join(format!("s{seed}-{rule}"));
        trainer()
            .cpu()
            .quiet()
            .args(["--samples-per-class", "6", "--seed", &seed.to_string()])
            .args(["--select-by", rule, "--lr-cnn", "0.001"])
            .epochs(1, 1)
            .out(&pack)
            .run_ok();
        pack
    };
    let disagree = (1..40).find_map(|seed| {
        let pack = run(seed, "val");
        let models = comparison(&pack);
        let by_val = models.iter().map(|m| m.1).fold(f64::MIN, f64::max);
        let by_test = models.iter().map(|m| m.2).fold(f64::MIN, f64::max);
        let val_best: Vec<_> = models.iter().filter(|m| m.1 == by_val).collect();
        let test_best: Vec<_> = models.iter().filter(|m| m.2 == by_test).collect();
        (val_best.len() == 1 && test_best.len() == 1 && val_best[0].0 != test_best[0].0)
            .then(|| (seed, pack, val_best[0].0.clone(), test_best[0].0.clone()))
    });
    let (seed, pack, val_winner, test_winner) =
        disagree.expect("some seed where validation and test disagree");

    // Default: the validation winner is first, checkpointed and reported.
    assert_eq!(comparison(&pack)[0].0, val_winner);
    assert_eq!(checkpoint_meta(&pack)["model_name"], val_winner.as_str());
    let readme = fs::read_to_string(pack.join("README.md")).unwrap();
    assert!(
        readme.contains(&format!(
            "Best model: {val_winner}, chosen by the highest validation accuracy"
        )),
        "{readme}"
    );
    let summary: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(pack.join("outputs/metrics_summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["best_model"], val_winner.as_str());

    // --select-by test: the workshop script's rule, and the README says so.
    let pack = run(seed, "test");
    assert_eq!(comparison(&pack)[0].0, test_winner);
    let readme = fs::read_to_string(pack.join("README.md")).unwrap();
    assert!(readme.contains("--select-by test"), "{readme}");
}

#[test]
fn under_val_loss_the_comparison_names_its_columns_for_what_they_hold() {
    let dir = temp();
    let pack = dir.path().join("pack");
    trainer()
        .cpu()
        .quiet()
        .quick()
        .args(["--monitor", "val_loss"])
        .out(&pack)
        .run_ok();
    let (header, rows) = read_csv(&pack.join("outputs/model_comparison.csv"));
    assert_eq!(
        header,
        [
            "model",
            "epochs",
            "best_val_loss",
            "val_acc_at_best_val_loss",
            "test_loss",
            "test_accuracy",
            "best_epoch",
            "status"
        ]
    );
    // Ordered by the kept epoch's validation loss, lowest first, as the log shows it.
    let losses: Vec<f64> = rows.iter().map(|r| r[2].parse().unwrap()).collect();
    assert!(losses.windows(2).all(|w| w[0] <= w[1]), "{losses:?}");
    let (log_header, log) = read_csv(&pack.join("outputs/training_log.csv"));
    let at = |name: &str| log_header.iter().position(|h| h == name).unwrap();
    for row in &rows {
        let kept = log
            .iter()
            .find(|l| l[at("model")] == row[0] && l[at("epoch")] == row[6])
            .unwrap();
        assert_eq!(kept[at("val_loss")], row[2]);
        assert_eq!(kept[at("val_acc")], row[3]);
    }
    // compare still reads such a pack.
    trainer()
        .subcommand("compare")
        .arg(&pack)
        .arg(&pack)
        .run_ok();
}

/// A `--max-per-class` run records only the files it sampled: the others are not a change of
/// the folder, so `evaluate` (with or without `--data` naming the same folder) scores the
/// recorded test set again instead of refusing or scoring every image.
#[test]
fn a_max_per_class_run_is_evaluated_on_its_recorded_test_set() {
    let dir = temp();
    let data = image_folder(dir.path(), 12);
    let pack = dir.path().join("pack");
    folder_run(&data, &pack)
        .args(["--max-per-class", "8"])
        .run_ok();
    let checkpoint = pack.join("checkpoints/best_model.json");
    let meta = checkpoint_meta(&pack);
    let files = meta["data_manifest"]["files"].as_array().unwrap();
    let tests = files.iter().filter(|f| f["part"] == "test").count();
    let all = image_folder_count(&data);
    assert!(files.len() < all, "{} recorded of {all}", files.len());
    let expect = format!("test_samples: {tests}");
    let plain = evaluate(&checkpoint).run_ok();
    assert!(stdout(&plain).contains(&expect), "{}", stdout(&plain));
    let named = evaluate(&checkpoint)
        .arg("--data")
        .arg(&data)
        .out(dir.path().join("eval"))
        .run_ok();
    assert!(stdout(&named).contains(&expect), "{}", stdout(&named));
}

fn image_folder_count(root: &Path) -> usize {
    fs::read_dir(root)
        .unwrap()
        .map(|class| fs::read_dir(class.unwrap().path()).unwrap().count())
        .sum()
}
