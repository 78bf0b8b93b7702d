//! `--augment LIST`: random flips and crops (and a bare `--augment`'s shifts and noise) on the
//! training part, seeded and reproducible on both backends, recorded by the pack; and the
//! pack's suggestions from the curves.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;

/// Two epochs of a small CNN on `data` at 16 x 16 pixels, into `out`.
fn small_cnn(data: &Path, out: &Path) -> Trainer {
    trainer()
        .quiet()
        .data(data)
        .args(["--image-size", "16", "--models", "cnn", "--epochs-cnn", "2"])
        .out(out)
}

fn json(path: PathBuf) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap()
}

fn training_log(pack: &Path) -> String {
    fs::read_to_string(pack.join("outputs/training_log.csv")).unwrap()
}

/// On three-channel images: the same seed gives the same training whatever order the list
/// names them in; the augmentation changes the training (not the validation part's images);
/// run_info.json, config.json and the README say which augmentation ran.
#[test]
fn flips_and_crops_are_seeded_reproducible_and_recorded_on_colour_images() {
    let dir = temp();
    let data = hue_folder(dir.path(), 12, 16);
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        small_cnn(&data, &out).cpu().args(extra).run_ok();
        out
    };
    let a = run("a", &["--augment", "flip,crop"]);
    let b = run("b", &["--augment", "crop:2,flip"]);
    let plain = run("plain", &[]);
    assert_eq!(training_log(&a), training_log(&b));
    assert_ne!(training_log(&a), training_log(&plain));

    let info = json(a.join("outputs/run_info.json"));
    assert_eq!(info["settings"]["augment"], "flip,crop");
    assert_eq!(json(a.join("outputs/config.json"))["augment"], "flip,crop");
    assert_eq!(json(plain.join("outputs/config.json"))["augment"], false);
    let readme = fs::read_to_string(a.join("README.md")).unwrap();
    assert!(
        readme.contains(
            "- Augmentation: `flip,crop`: random horizontal flips (one image in two); random crops after padding by 2 pixel(s)"
        ),
        "{readme}"
    );
    let readme = fs::read_to_string(plain.join("README.md")).unwrap();
    assert!(readme.contains("- Augmentation: none."), "{readme}");
}

/// Bad lists and crops too big for the image are exit 2 with one line naming the choices,
/// from the command line and from a config file (with its line).
#[test]
fn bad_augmentation_lists_are_one_line_errors() {
    let dir = temp();
    for (list, says) in [
        (
            "spin",
            "unknown augmentation 'spin' (choose from shift-noise, flip, crop",
        ),
        ("crop:0", "pads nothing"),
        ("crop:-1", "whole number"),
        ("flip,flip", "names flip twice"),
    ] {
        let output = trainer()
            .cpu()
            .args(["--augment", list])
            .out(dir.path().join("never"))
            .run_fail(2);
        let err = stderr(&output);
        assert!(err.contains(says), "{list}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    let output = trainer()
        .cpu()
        .args(["--augment", "crop:8", "--image-size", "16"])
        .out(dir.path().join("never"))
        .run_fail(2);
    let err = stderr(&output);
    assert!(err.contains("N of crop:N must be below 8"), "{err}");

    let config = dir.path().join("bad.toml");
    fs::write(&config, "seed = 3\naugment = \"flip,spin\"\n").unwrap();
    let output = trainer()
        .cpu()
        .config(&config)
        .out(dir.path().join("never"))
        .run_fail(2);
    let err = stderr(&output);
    assert!(
        err.contains("line 2") && err.contains("unknown augmentation 'spin'"),
        "{err}"
    );
    assert!(!dir.path().join("never").exists());
}

/// A config's `augment` is true (shifts and noise), false or a list; a flag given wins, and
/// `--no-augment` turns any of them off. `outputs/config.json` records the effective one.
#[test]
fn config_values_and_flags_over_them() {
    let dir = temp();
    let recorded = |name: &str, config_value: &str, flags: &[&str]| {
        let config = dir.path().join(format!("{name}.toml"));
        fs::write(&config, format!("augment = {config_value}\n")).unwrap();
        let out = dir.path().join(name);
        trainer()
            .cpu()
            .quiet()
            .args(["--models", "baseline", "--epochs-baseline", "1"])
            .config(&config)
            .args(flags)
            .out(&out)
            .run_ok();
        json(out.join("outputs/config.json"))["augment"].clone()
    };
    assert_eq!(recorded("list", "\"crop:3\"", &[]), "crop:3");
    assert_eq!(recorded("true", "true", &[]), true);
    assert_eq!(recorded("off", "\"crop:3\"", &["--no-augment"]), false);
    assert_eq!(recorded("flag", "true", &["--augment", "crop"]), "crop");
    assert_eq!(recorded("bare", "false", &["--augment"]), true);
    assert_eq!(
        recorded(
            "last",
            "false",
            &["--no-augment", "--augment", "crop,shift-noise"]
        ),
        "crop,shift-noise"
    );
    // A flip on the stripe images is allowed, with a warning.
    let output = trainer()
        .cpu()
        .quiet()
        .args([
            "--models",
            "baseline",
            "--epochs-baseline",
            "1",
            "--augment",
            "flip",
        ])
        .out(dir.path().join("stripes"))
        .run_ok();
    let err = stderr(&output);
    assert!(
        err.contains("a flipped diagonal stripe runs the other way"),
        "{err}"
    );
}

/// wgpu trains with flips and crops, and the same images reach both backends: `trainer
/// parity` of cpu and wgpu with `--augment flip,crop` agrees within its tolerances.
#[test]
fn flips_and_crops_train_on_wgpu_as_on_cpu() {
    if !wgpu_available("flips_and_crops_train_on_wgpu_as_on_cpu") {
        return;
    }
    let dir = temp();
    let data = hue_folder(dir.path(), 12, 16);
    let pack = dir.path().join("wgpu");
    small_cnn(&data, &pack)
        .wgpu()
        .args(["--augment", "flip,crop"])
        .run_ok();
    assert_eq!(
        json(pack.join("outputs/run_info.json"))["settings"]["augment"],
        "flip,crop"
    );
    let out = dir.path().join("parity");
    let output = trainer()
        .subcommand("parity")
        .quiet()
        .data(&data)
        .args(["--backends", "cpu,wgpu", "--image-size", "16"])
        .args([
            "--models",
            "cnn",
            "--epochs-cnn",
            "2",
            "--augment",
            "flip,crop",
        ])
        .out(&out)
        .run_ok();
    assert!(stdout(&output).starts_with("PASS"), "{}", stdout(&output));
}

/// A real run's README says under its next steps what each model's curves show, with the
/// flags to try: on a few stripe images for two epochs the baseline overfits and the Tiny CNN
/// underfits, and each is told what to try.
#[test]
fn the_packs_next_steps_read_the_curves() {
    let dir = temp();
    let pack = dir.path().join("pack");
    trainer()
        .cpu()
        .quiet()
        .args(["--samples-per-class", "20"])
        .epochs(2, 2)
        .out(&pack)
        .run_ok();
    let readme = fs::read_to_string(pack.join("README.md")).unwrap();
    let next = &readme[readme.find("## Next steps").unwrap()..];
    let curves = &next[next.find("### From the curves").expect(next)..];
    let lines: Vec<&str> = curves.lines().filter(|l| l.starts_with("- **")).collect();
    assert_eq!(lines.len(), 2, "{curves}");
    // The baseline fits its training part far better than validation: more varied images
    // (a crop: flips do not suit the stripes) and early stopping.
    assert!(
        lines[0].starts_with("- **Flatten baseline: overfitting**")
            && lines[0].contains("`--augment crop`")
            && lines[0].contains("`--patience 3`"),
        "{curves}"
    );
    // The Tiny CNN learned little in two epochs: a bigger head and wider blocks.
    assert!(
        lines[1].starts_with("- **Tiny CNN: underfitting**")
            && lines[1].contains("`--head flatten --hidden 128`")
            && lines[1].contains("`--cnn-widths 16,32`"),
        "{curves}"
    );
}

/// `--augment flip` on an image folder says once, as a note, that a flip is right only where
/// a mirrored image is still its class (digits are not); `--quiet` leaves it out, and the
/// stripe images get their warning instead.
#[test]
fn a_flip_on_an_image_folder_is_cautioned_once() {
    let dir = temp();
    let data = hue_folder(dir.path(), 6, 16);
    let caution =
        "--augment flip trains on mirrored images: right where a mirrored image is still its class";
    let run = |name: &str, extra: &[&str]| {
        trainer()
            .cpu()
            .data(&data)
            .args(["--image-size", "16", "--models", "cnn", "--epochs-cnn", "1"])
            .args(extra)
            .out(dir.path().join(name))
            .run_ok()
    };
    let output = run("flip", &["--augment", "flip,crop"]);
    assert_eq!(
        stdout(&output).matches(caution).count(),
        1,
        "{}",
        stdout(&output)
    );
    assert!(!stderr(&output).contains(caution), "{}", stderr(&output));
    let output = run("crop", &["--augment", "crop"]);
    assert!(!stdout(&output).contains(caution), "{}", stdout(&output));
    let output = run("quiet", &["--augment", "flip", "--quiet"]);
    assert!(!stdout(&output).contains(caution), "{}", stdout(&output));
}
