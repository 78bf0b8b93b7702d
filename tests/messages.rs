//! Whole messages and partial work: clap's errors whole in one line, config errors that name
//! the key and line, duplicates refused, sizes in a unit that fits, predict's partial
//! results, a user's files kept in a pack, a panic as one line, CJK class names drawn.

mod common;

use std::fs;
use std::path::Path;

use common::*;

/// Runs `trainer ARGS` and returns its one-line error (exit 2).
fn one_line(args: &[&str]) -> String {
    let output = trainer().args(args).run_fail(2);
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.starts_with("trainer: error: "), "{args:?}: {err}");
    err
}

#[test]
fn clap_errors_are_shown_whole() {
    let err = one_line(&["predict", "--checkpoint", "x.json"]);
    assert!(
        err.contains("required arguments were not provided") && err.contains("<IMAGES>"),
        "{err}"
    );
    let err = one_line(&["--backend", "gpu"]);
    assert!(
        err.contains("[possible values: auto, wgpu, cpu, ndarray]"),
        "{err}"
    );
    let err = one_line(&["--monitor", "acc"]);
    assert!(err.contains("val_acc") && err.contains("val_loss"), "{err}");
    let err = one_line(&["evalute"]);
    assert!(err.contains("evaluate"), "a suggestion: {err}");
    // A command group alone lists its commands.
    let output = trainer().subcommand("sweep").run_fail(2);
    let err = stderr(&output);
    for command in ["plan", "run", "collect"] {
        assert!(err.contains(command), "{err}");
    }
}

/// Every flag given twice takes its last value, on every command: a single value (`--seed`,
/// `evaluate --checkpoint`) as a comma list (`--models`) does; clap refused the first.
#[test]
fn a_flag_given_twice_takes_its_last_value() {
    let dir = temp();
    let out = dir.path().join("pack");
    trainer()
        .cpu()
        .quiet()
        .quick()
        .args(["--seed", "1", "--seed", "7"])
        .args(["--models", "cnn,baseline", "--models", "baseline"])
        .args(["--samples-per-class", "9"])
        .out(&out)
        .run_ok();
    let config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("outputs/config.json")).unwrap())
            .unwrap();
    assert_eq!(config["seed"], 7, "{config}");
    assert_eq!(
        config["models"],
        serde_json::json!(["baseline"]),
        "{config}"
    );
    // A subcommand's flags alike: evaluate reads the last --checkpoint given.
    let first = dir.path().join("first.json");
    let last = dir.path().join("last.json");
    let output = trainer()
        .subcommand("evaluate")
        .cpu()
        .checkpoint(&first)
        .checkpoint(&last)
        .run_fail(2);
    let err = stderr(&output);
    assert!(
        err.contains("last.json") && !err.contains("first.json"),
        "{err}"
    );
}

#[test]
fn config_errors_name_the_key_the_line_and_what_was_expected() {
    let dir = temp();
    let out = dir.path().join("never");
    let config = |name: &str, text: &str| {
        let path = dir.path().join(name);
        fs::write(&path, text).unwrap();
        path
    };
    let run = |path: &Path, extra: &[&str]| {
        let path = path.to_str().unwrap().to_string();
        let mut args = vec!["--config", path.as_str(), "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        one_line(&args)
    };
    let typed = config("typed.toml", "seed = 3\nepochs_cnn = \"3\"\n");
    let err = run(&typed, &[]);
    assert!(
        err.contains("line 2") && err.contains("'epochs_cnn'"),
        "{err}"
    );
    assert!(err.contains("expected usize"), "{err}");
    // The flag overrides the key, but the file is still wrong.
    let err = run(&typed, &["--epochs-cnn", "2"]);
    assert!(err.contains("'epochs_cnn'"), "{err}");
    let bare = config("bare.toml", "backend = cpu\n");
    let err = run(&bare, &[]);
    assert!(err.contains("line 1, column 11"), "{err}");
    assert!(err.contains("string values must be quoted"), "{err}");
    assert!(err.contains("backend = cpu"), "{err}");
    let json = config("upper.JSON", "{\"seed\": \"x\"}");
    let err = run(&json, &[]);
    assert!(
        err.contains("'seed'") && err.contains("expected u64"),
        "read as JSON: {err}"
    );
    assert!(!out.exists());
}

#[test]
fn duplicates_are_refused_and_batch_sizes_sorted() {
    let dir = temp();
    let out = dir.path().join("never");
    let err = one_line(&["--models", "cnn,cnn", "--out", out.to_str().unwrap()]);
    assert!(err.contains("names cnn twice"), "{err}");
    let output = sweep_plan(dir.path(), "seed = [1, 1]\n", "sweep").run_fail(2);
    assert!(
        stderr(&output).contains("'seed' lists 1 twice"),
        "{}",
        stderr(&output)
    );
    let bench = |sizes: &str, name: &str| {
        trainer()
            .subcommand("bench")
            .args(["--backend", "cpu", "--steps", "1", "--warmup", "0"])
            .args(["--batch-sizes", sizes])
            .out(dir.path().join(name))
    };
    let output = bench("16,8", "sorted").run_ok();
    assert!(
        stdout(&output).contains("smallest first: 8,16"),
        "{}",
        stdout(&output)
    );
    let (_, rows) = read_csv(&dir.path().join("sorted/bench/throughput.csv"));
    assert_eq!(
        rows.iter().map(|r| r[3].as_str()).collect::<Vec<_>>(),
        ["8", "16"]
    );
    let output = bench("8,8", "twice").run_fail(2);
    assert!(
        stderr(&output).contains("lists 8 twice"),
        "{}",
        stderr(&output)
    );
    // A budget no batch fits is a failed run (exit 1), its sizes in a unit that fits.
    let output = trainer()
        .cpu()
        .args(["--memory-limit", "1KiB"])
        .out(&out)
        .run_fail(1);
    let err = stderr(&output);
    assert!(
        err.contains("the budget is 1.0 KiB") && !err.contains("0.0 MiB"),
        "{err}"
    );
}

#[test]
fn a_panic_is_one_line_with_its_details_in_a_file() {
    for site in ["main", "thread"] {
        // As a user runs it: RUST_BACKTRACE set (as in a developer's shell) keeps Rust's report.
        let output = trainer()
            .env("TRAINER_INJECT_PANIC", site)
            .subcommand("devices")
            .command()
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(70), "{}", stderr(&output));
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "{site}: {err}");
        assert!(
            err.contains("internal error") && err.contains("injected panic"),
            "{err}"
        );
        assert!(
            !err.contains("RUST_BACKTRACE=full") && !err.contains("stack backtrace"),
            "{err}"
        );
        let file = err
            .split("details in ")
            .nth(1)
            .and_then(|rest| rest.strip_suffix(")\n"))
            .expect("names the details file");
        let details = fs::read_to_string(file).unwrap();
        assert!(details.contains("injected panic"), "{details}");
        let _ = fs::remove_file(file);
    }
}

#[test]
fn predict_gives_every_readable_file_its_result_and_each_other_one_line() {
    let dir = temp();
    let pack = dir.path().join("pack");
    trainer().cpu().quiet().quick().out(&pack).run_ok();
    let good = dir.path().join("good.png");
    image::GrayImage::from_pixel(16, 16, image::Luma([90]))
        .save(&good)
        .unwrap();
    let broken = dir.path().join("broken.png");
    fs::write(&broken, "not a picture").unwrap();
    let missing = dir.path().join("missing.png");
    let predict = || {
        trainer()
            .subcommand("predict")
            .cpu()
            .checkpoint(pack.join("checkpoints/best_model.json"))
            .arg(&good)
            .arg(&broken)
            .arg(&missing)
    };
    let output = predict().run_fail(2);
    assert!(
        stdout(&output).contains("good.png: "),
        "{}",
        stdout(&output)
    );
    let err = stderr(&output);
    assert!(
        err.contains("cannot read image") && err.contains("broken.png"),
        "{err}"
    );
    assert!(err.contains("missing.png"), "{err}");
    assert!(err.contains("2 of 3 image(s) could not be read"), "{err}");
    let output = predict().arg("--json").run_fail(2);
    let entries: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert!(entries[0]["class"].is_string());
    assert!(entries[1]["error"].is_string() && entries[2]["error"].is_string());
    // The CSV has a row for every file: the unreadable ones with their reason under `error`.
    let csv = dir.path().join("predictions.csv");
    predict().arg("--csv").arg(&csv).run_fail(2);
    let (header, rows) = read_csv(&csv);
    assert_eq!(header.last().map(String::as_str), Some("error"));
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows[0][1..].iter().any(|c| !c.is_empty()) && rows[0].last().unwrap().is_empty());
    for row in &rows[1..] {
        assert!(
            row[1].is_empty() && !row.last().unwrap().is_empty(),
            "{row:?}"
        );
    }
    assert!(rows[1][0].ends_with("broken.png") && rows[2][0].ends_with("missing.png"));
}

#[test]
fn a_file_the_user_added_to_a_pack_survives_a_rerun() {
    let dir = temp();
    let pack = dir.path().join("pack");
    trainer().cpu().quiet().quick().out(&pack).run_ok();
    fs::write(pack.join("my_notes.md"), "what I saw").unwrap();
    fs::create_dir_all(pack.join("my plots")).unwrap();
    fs::write(pack.join("my plots/a.txt"), "a").unwrap();
    fs::write(pack.join("outputs/mine.csv"), "x,y").unwrap();
    let output = trainer().cpu().quick().out(&pack).run_ok();
    assert!(
        stdout(&output).contains(
            "kept from the earlier pack (not written by trainer): my plots/a.txt, my_notes.md, outputs/mine.csv"
        ),
        "{}",
        stdout(&output)
    );
    assert_eq!(
        fs::read_to_string(pack.join("my_notes.md")).unwrap(),
        "what I saw"
    );
    assert_eq!(
        fs::read_to_string(pack.join("my plots/a.txt")).unwrap(),
        "a"
    );
    assert_eq!(
        fs::read_to_string(pack.join("outputs/mine.csv")).unwrap(),
        "x,y"
    );
    // Another command does not replace a workshop pack: its model would be lost.
    let output = trainer()
        .subcommand("bench")
        .args(["--backend", "cpu", "--steps", "1", "--batch-sizes", "8"])
        .out(&pack)
        .run_fail(2);
    assert!(
        stderr(&output).contains("holds a workshop pack"),
        "{}",
        stderr(&output)
    );
    assert!(pack.join("checkpoints/best_model.json").is_file());
}

#[test]
fn a_class_named_in_chinese_or_japanese_is_drawn_with_every_glyph() {
    use trainer::pack::plots::{every_glyph_drawn, family_for};
    for name in ["縦縞", "横縞_2", "中文类别", "한국어", "vertical_stripe"] {
        assert!(
            every_glyph_drawn(name),
            "{name} would show missing-glyph boxes"
        );
    }
    assert_eq!(
        family_for("vertical_stripe"),
        "sans-serif",
        "Latin stays in DejaVu Sans"
    );
    assert_ne!(family_for("縦縞"), "sans-serif");
    // And a whole run on such a folder draws its plots.
    let dir = temp();
    let data = image_folder(dir.path(), 6);
    fs::rename(data.join("vertical"), data.join("縦縞")).unwrap();
    let pack = dir.path().join("pack");
    trainer()
        .cpu()
        .quiet()
        .data(&data)
        .args(["--image-size", "12"])
        .quick()
        .out(&pack)
        .run_ok();
    for png in ["curves/confusion_matrix.png", "curves/review_grid.png"] {
        assert_eq!(&fs::read(pack.join(png)).unwrap()[1..4], b"PNG");
    }
}

/// `--device N` picks a wgpu adapter by its index in `trainer devices`; one that does not
/// exist, or a TRAINER_DEVICE that is not a number, is one line listing the adapters.
#[test]
fn a_device_that_does_not_exist_is_refused_with_the_list() {
    let dir = temp();
    let out = dir.path().join("never");
    let err = one_line(&["--device", "99", "--out", out.to_str().unwrap()]);
    assert!(err.contains("--device 99 does not exist"), "{err}");
    assert!(!out.exists());
    // On a CPU backend too: the index is checked, not ignored.
    let err = one_line(&[
        "--backend",
        "cpu",
        "--device",
        "99",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("--device 99 does not exist"), "{err}");
    assert!(!out.exists());
    let output = trainer()
        .out(&out)
        .env("TRAINER_DEVICE", "first")
        .run_fail(2);
    assert!(
        stderr(&output).contains("TRAINER_DEVICE='first' is not an adapter index"),
        "{}",
        stderr(&output)
    );
    assert!(!out.exists());
    // `trainer devices` still lists the adapters, with the same line as a warning.
    let output = trainer()
        .subcommand("devices")
        .env("TRAINER_DEVICE", "first")
        .run_ok();
    assert!(stderr(&output).contains("warning"), "{}", stderr(&output));
    assert!(stdout(&output).contains("cpu:"), "{}", stdout(&output));
    // A CPU backend ignores it, with a warning.
    if !wgpu_available("a_device_that_does_not_exist_is_refused_with_the_list") {
        return;
    }
    let pack = dir.path().join("pack");
    let output = trainer()
        .cpu()
        .quick()
        .args(["--device", "0"])
        .out(&pack)
        .run_ok();
    assert!(
        stderr(&output).contains("--device picks a wgpu adapter; the cpu backend does not use one"),
        "{}",
        stderr(&output)
    );
}
