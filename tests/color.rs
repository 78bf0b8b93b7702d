//! Colour folders and the CNN family as a user runs them: `--color auto` reads a folder whose
//! classes differ only in hue in RGB and learns it where grey cannot; the checkpoint, the
//! shape trace and the review grid carry the channels; predict converts grey and colour
//! files; a family CNN is named everywhere and reloads; bad shapes and colours are refused
//! in one line with nothing written.

mod common;

use std::fs;
use std::path::Path;

use common::*;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

fn test_accuracy(pack: &Path) -> f64 {
    json(&pack.join("outputs/metrics_summary.json"))["test_accuracy"]
        .as_f64()
        .unwrap()
}

/// A hue folder trained under `--color COLOR` (CNN only, 12 epochs) into `out`.
fn train(data: &Path, color: &str, out: &Path) -> std::process::Output {
    trainer()
        .cpu()
        .quiet()
        .data(data)
        .args(["--color", color, "--image-size", "16", "--models", "cnn"])
        .args(["--epochs-cnn", "12"])
        .out(out)
        .run_ok()
}

#[test]
fn a_colour_folder_is_learned_in_rgb_and_the_pack_carries_the_channels() {
    let dir = temp();
    let data = hue_folder(dir.path(), 30, 16);
    let rgb = dir.path().join("rgb");
    let output = trainer()
        .cpu()
        .data(&data)
        .args([
            "--image-size",
            "16",
            "--models",
            "cnn",
            "--epochs-cnn",
            "12",
        ])
        .out(&rgb)
        .run_ok();
    // auto says which and why, on the console and in run_info.json.
    let console = format!("{}{}", stdout(&output), stderr(&output));
    assert!(
        console.contains("rgb") && console.contains("colour"),
        "{console}"
    );
    let info = json(&rgb.join("outputs/run_info.json"));
    assert_eq!(info["color"]["channels"], 3, "{info}");
    assert!(
        info["color"]["why"]
            .as_str()
            .unwrap()
            .contains("--color auto")
    );
    // Grey cannot tell equal-luminance hues apart; RGB can.
    let gray = dir.path().join("gray");
    train(&data, "gray", &gray);
    let (rgb_acc, gray_acc) = (test_accuracy(&rgb), test_accuracy(&gray));
    assert!(rgb_acc >= 0.9, "rgb test accuracy {rgb_acc}");
    assert!(gray_acc <= 0.7, "gray test accuracy {gray_acc}");

    // The checkpoint records the channels and one mean and std per channel.
    let meta = json(&rgb.join("checkpoints/best_model.json"));
    assert_eq!(meta["channels"], 3);
    for stat in ["mean", "std"] {
        assert_eq!(
            meta["normalization"][stat].as_array().unwrap().len(),
            3,
            "{meta}"
        );
    }
    let trace = fs::read_to_string(rgb.join("reports/shape_trace.md")).unwrap();
    assert!(trace.contains(", 3, 16, 16)`"), "{trace}");
    // The review grid shows colour: some pixel has red, green and blue apart.
    let grid = image::open(rgb.join("curves/review_grid.png"))
        .unwrap()
        .to_rgb8();
    assert!(
        grid.pixels().any(|p| p[0].abs_diff(p[2]) > 60),
        "the review grid has no colour"
    );
    // The checkpoint reloads to the recorded accuracy.
    let evaluated = evaluate(&rgb.join("checkpoints/best_model.json")).run_ok();
    assert_eq!(
        console_value(&stdout(&evaluated), "test_accuracy")
            .unwrap()
            .parse::<f64>()
            .unwrap(),
        rgb_acc
    );

    // predict converts a grey file for the RGB model and a colour file for the grey one.
    let grey_file = dir.path().join("grey.png");
    image::GrayImage::from_pixel(16, 16, image::Luma([128]))
        .save(&grey_file)
        .unwrap();
    let colour_file = data.join("blue/000.png");
    for (pack, file) in [(&rgb, &grey_file), (&gray, &colour_file)] {
        let output = trainer()
            .subcommand("predict")
            .cpu()
            .checkpoint(pack.join("checkpoints/best_model.json"))
            .args(["--json"])
            .arg(file)
            .run_ok();
        let results: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
        assert!(results[0]["class"].is_string(), "{results}");
    }
}

#[test]
fn a_folder_of_grey_and_colour_files_trains_in_rgb_under_auto() {
    let dir = temp();
    let data = image_folder(dir.path(), 8);
    // A few colour files among the grey stripes (auto looks at the training part).
    for i in 0..4 {
        image::RgbImage::from_pixel(20, 20, image::Rgb([200, 30 + i, 30]))
            .save(data.join(format!("diagonal/red_{i}.png")))
            .unwrap();
    }
    let out = dir.path().join("pack");
    trainer()
        .cpu()
        .quiet()
        .quick()
        .data(&data)
        .out(&out)
        .run_ok();
    let info = json(&out.join("outputs/run_info.json"));
    assert_eq!(info["color"]["channels"], 3, "{info}");
    assert_eq!(
        json(&out.join("checkpoints/best_model.json"))["channels"],
        3
    );
}

#[test]
fn a_family_cnn_is_named_everywhere_and_reloads() {
    let dir = temp();
    let data = hue_folder(dir.path(), 12, 16);
    let out = dir.path().join("pack");
    trainer()
        .cpu()
        .quiet()
        .quick()
        .data(&data)
        .args(["--image-size", "16", "--cnn-widths", "5,7,9"])
        .out(&out)
        .run_ok();
    let (_, rows) = read_csv(&out.join("outputs/model_comparison.csv"));
    assert!(rows.iter().any(|r| r[0] == "CNN 5-7-9"), "{rows:?}");
    let (_, log) = read_csv(&out.join("outputs/training_log.csv"));
    assert!(
        log.iter().any(|r| r.iter().any(|c| c == "CNN 5-7-9")),
        "{log:?}"
    );
    let config = json(&out.join("outputs/config.json"));
    assert_eq!(config["cnn_widths"], serde_json::json!([5, 7, 9]));
    // Widths without the CNN change nothing, and the run says so.
    let baseline = trainer()
        .cpu()
        .quick()
        .data(&data)
        .args([
            "--image-size",
            "16",
            "--cnn-widths",
            "5,7,9",
            "--models",
            "baseline",
        ])
        .out(dir.path().join("baseline"))
        .run_ok();
    assert!(
        stderr(&baseline).contains("--cnn-widths has no effect"),
        "{}",
        stderr(&baseline)
    );
    let meta = json(&out.join("checkpoints/best_model.json"));
    if meta["model_kind"] == "cnn" {
        assert_eq!(meta["model_name"], "CNN 5-7-9");
    }
    evaluate(&out.join("checkpoints/best_model.json")).run_ok();
    // The pack's config repeats the run, shape included.
    let again = dir.path().join("again");
    trainer()
        .cpu()
        .quiet()
        .config(out.join("outputs/config.json"))
        .data(&data)
        .out(&again)
        .run_ok();
    assert_eq!(
        fs::read(out.join("outputs/training_log.csv")).unwrap(),
        fs::read(again.join("outputs/training_log.csv")).unwrap()
    );
    // compare pairs the Tiny CNN of one pack with the family CNN of the other.
    let tiny = dir.path().join("tiny");
    trainer()
        .cpu()
        .quiet()
        .quick()
        .data(&data)
        .args(["--image-size", "16"])
        .out(&tiny)
        .run_ok();
    let compared = trainer()
        .subcommand("compare")
        .arg(&tiny)
        .arg(&out)
        .run_ok();
    assert!(
        stdout(&compared).contains("cnn_widths"),
        "{}",
        stdout(&compared)
    );
    let notes = fs::read_to_string(out.join("reports/experiment_notes.md")).unwrap();
    assert!(notes.contains("| CNN 5-7-9 | B | 1 |"), "{notes}");
    assert!(notes.contains("Tiny CNN -> CNN 5-7-9"), "{notes}");
}

#[test]
fn bad_shapes_and_colours_are_refused_in_one_line_with_nothing_written() {
    let dir = temp();
    let out = dir.path().join("never");
    let out_text = out.to_str().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (&["--cnn-widths", "0"], "width is 1 to 128"),
        (&["--cnn-widths", "8,,16"], "empty width"),
        (&["--cnn-widths", "8,8,8,8,8"], "1 to 4 widths"),
        (&["--cnn-widths", "1000"], "width is 1 to 128"),
        (&["--color", "rgb"], "stripe images are grayscale"),
        (&["--color", "purple"], "possible values: auto, gray, rgb"),
        (
            &["--cnn-widths", "8,8,8,8", "--image-size", "6"],
            "at least 8",
        ),
    ];
    for (args, expected) in cases {
        let output = trainer().args(args).args(["--out", out_text]).run_fail(2);
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
    // A config's widths as one string: the hint is the list to write instead.
    let config = dir.path().join("widths.toml");
    fs::write(&config, "cnn_widths = \"8,16\"\n").unwrap();
    let output = trainer()
        .config(&config)
        .args(["--out", out_text])
        .run_fail(2);
    assert!(
        stderr(&output).contains("line 1") && stderr(&output).contains("cnn_widths = [8, 16]"),
        "{}",
        stderr(&output)
    );
    // bench and parity refuse the same shapes.
    for command in ["bench", "parity"] {
        let output = trainer()
            .subcommand(command)
            .args(["--cnn-widths", "8,,16", "--out", out_text])
            .run_fail(2);
        assert!(
            stderr(&output).contains("empty width"),
            "{}",
            stderr(&output)
        );
        assert!(!out.exists());
    }
}
