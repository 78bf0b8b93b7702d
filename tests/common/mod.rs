//! Helpers shared by the integration tests: run the real binary, read the pack.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The release binary under test.
pub fn trainer() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_trainer"));
    command.env_remove("TRAINER_FAIL_ALLOC_ABOVE");
    command
}

/// Runs trainer with `args`, returns its output.
pub fn run(args: &[&str]) -> Output {
    trainer()
        .args(args)
        .output()
        .expect("the trainer binary runs")
}

/// Runs trainer with `args` and an extra environment variable.
pub fn run_env(args: &[&str], key: &str, value: &str) -> Output {
    trainer()
        .args(args)
        .env(key, value)
        .output()
        .expect("the trainer binary runs")
}

/// Stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success, showing stderr when not.
pub fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "trainer failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        stdout(output),
        stderr(output)
    );
}

/// A fresh temporary folder, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh temporary folder (unique per process and call).
pub fn temp() -> TempDir {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("trainer-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temp folder");
    TempDir(dir)
}

/// Reads a CSV into (header, rows).
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_path(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let header = reader
        .headers()
        .expect("a header")
        .iter()
        .map(str::to_string)
        .collect();
    let rows = reader
        .records()
        .map(|r| r.expect("a row").iter().map(str::to_string).collect())
        .collect();
    (header, rows)
}

/// The value of `key: value` on the console.
pub fn console_value(out: &str, key: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")).map(str::to_string))
}

/// Whether a wgpu adapter exists; a test that needs one skips (printing why) unless
/// TRAINER_REQUIRE_WGPU=1, in which case it fails.
pub fn wgpu_available(test: &str) -> bool {
    let output = run(&["devices"]);
    let has = output.status.success()
        && stdout(&output)
            .lines()
            .any(|l| l.starts_with("wgpu:") && !l.contains("unavailable"));
    if !has {
        if std::env::var("TRAINER_REQUIRE_WGPU").as_deref() == Ok("1") {
            panic!("{test}: no wgpu adapter, and TRAINER_REQUIRE_WGPU=1 requires one");
        }
        eprintln!("{test}: skipped: no wgpu adapter (install mesa-vulkan-drivers)");
    }
    has
}

/// The path of a file of a pack.
pub fn file(pack: &Path, relative: &str) -> PathBuf {
    pack.join(relative)
}

/// A small deterministic generator for test inputs.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Writes stripe images as class folders of PNG files (one BMP and one JPEG among them), plus a
/// text file that is not an image.
pub fn image_folder(root: &Path, per_class: usize) -> PathBuf {
    let data = root.join("my images");
    for (label, class) in ["diagonal", "horizontal", "vertical"].iter().enumerate() {
        let folder = data.join(class);
        std::fs::create_dir_all(&folder).unwrap();
        // Classes in folder order: diagonal (2), horizontal (1), vertical (0) of the recipe.
        let recipe = 2 - label;
        for i in 0..per_class {
            let values = trainer::data::stripe_image(7, recipe, i, 20);
            let pixels: Vec<u8> = values
                .iter()
                .map(|v| (((v + 1.0) / 2.5) * 255.0).round().clamp(0.0, 255.0) as u8)
                .collect();
            let image = image::GrayImage::from_raw(20, 20, pixels).unwrap();
            let extension = match i {
                0 => "bmp",
                1 => "jpg",
                _ => "png",
            };
            image
                .save(folder.join(format!("{class}_{i:03}.{extension}")))
                .unwrap();
        }
    }
    std::fs::write(data.join("vertical").join("README.txt"), "not an image").unwrap();
    data
}
