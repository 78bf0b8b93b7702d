//! Helpers shared by the integration tests: run the real binary (the [`Trainer`] builder),
//! read the pack.
#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// One `trainer` command line, built as the README writes it:
/// `trainer().cpu().quiet().quick().out(&pack).run_ok()`. A subcommand goes first wherever
/// it is named; everything else in the order given.
pub struct Trainer {
    subcommand: Vec<OsString>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

/// The release binary under test, with no arguments yet.
pub fn trainer() -> Trainer {
    Trainer {
        subcommand: Vec::new(),
        args: Vec::new(),
        env: Vec::new(),
    }
}

impl Trainer {
    /// The subcommand (`"evaluate"`, `"sweep run"`), placed before every other argument.
    pub fn subcommand(mut self, words: &str) -> Self {
        self.subcommand
            .extend(words.split_whitespace().map(OsString::from));
        self
    }

    /// One more argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// More arguments.
    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// `--backend NAME`.
    pub fn backend(self, name: &str) -> Self {
        self.args(["--backend", name])
    }

    /// `--backend cpu`.
    pub fn cpu(self) -> Self {
        self.backend("cpu")
    }

    /// `--backend wgpu`.
    pub fn wgpu(self) -> Self {
        self.backend("wgpu")
    }

    /// `--quiet`: only the results on stdout.
    pub fn quiet(self) -> Self {
        self.arg("--quiet")
    }

    /// `--out DIR`.
    pub fn out(self, dir: impl AsRef<Path>) -> Self {
        self.arg("--out").arg(dir.as_ref())
    }

    /// `--checkpoint PATH`.
    pub fn checkpoint(self, path: impl AsRef<Path>) -> Self {
        self.arg("--checkpoint").arg(path.as_ref())
    }

    /// `--data FOLDER`: an image folder instead of the stripes.
    pub fn data(self, folder: impl AsRef<Path>) -> Self {
        self.arg("--data").arg(folder.as_ref())
    }

    /// `--config FILE`.
    pub fn config(self, file: impl AsRef<Path>) -> Self {
        self.arg("--config").arg(file.as_ref())
    }

    /// `--epochs-baseline BASELINE --epochs-cnn CNN`.
    pub fn epochs(self, baseline: usize, cnn: usize) -> Self {
        self.args([
            "--epochs-baseline",
            &baseline.to_string(),
            "--epochs-cnn",
            &cnn.to_string(),
        ])
    }

    /// One epoch of each model: `--epochs-baseline 1 --epochs-cnn 1`.
    pub fn quick(self) -> Self {
        self.epochs(1, 1)
    }

    /// A run that lasts until it is interrupted: `--epochs-cnn 10000 --samples-per-class 2000`.
    pub fn endless(self) -> Self {
        self.args(["--epochs-cnn", "10000", "--samples-per-class", "2000"])
    }

    /// An environment variable of the process.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// The process to start (for a test that spawns it); the memory hooks
    /// (`TRAINER_FAIL_ALLOC_ABOVE`, `TRAINER_CAP_MEMORY_AT`) of the test's own environment are
    /// never passed on.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_trainer"));
        command.env_remove("TRAINER_FAIL_ALLOC_ABOVE");
        command.env_remove("TRAINER_CAP_MEMORY_AT");
        command.args(&self.subcommand).args(&self.args);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Starts it with stdout and stderr piped.
    pub fn spawn(&self) -> Child {
        self.command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the trainer binary starts")
    }

    /// Runs it to the end.
    pub fn run(&self) -> Output {
        self.command().output().expect("the trainer binary runs")
    }

    /// Runs it and asserts success, showing the command line and both streams when not.
    pub fn run_ok(&self) -> Output {
        let output = self.run();
        assert!(
            output.status.success(),
            "{} failed ({:?}):\nstdout:\n{}\nstderr:\n{}",
            self.shown(),
            output.status.code(),
            stdout(&output),
            stderr(&output)
        );
        output
    }

    /// Runs it and asserts the exit code `code`, showing the command line and stderr when not.
    pub fn run_fail(&self, code: i32) -> Output {
        let output = self.run();
        assert_eq!(
            output.status.code(),
            Some(code),
            "{}: {}",
            self.shown(),
            stderr(&output)
        );
        output
    }

    /// The command line, for messages.
    fn shown(&self) -> String {
        std::iter::once("trainer".into())
            .chain(
                self.subcommand
                    .iter()
                    .chain(&self.args)
                    .map(|a| a.to_string_lossy()),
            )
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
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
    let output = trainer().subcommand("devices").run();
    let has = output.status.success()
        && stdout(&output)
            .lines()
            .any(|l| l.starts_with("wgpu ") && !l.contains("unavailable"));
    if !has {
        if std::env::var("TRAINER_REQUIRE_WGPU").as_deref() == Ok("1") {
            panic!("{test}: no wgpu adapter, and TRAINER_REQUIRE_WGPU=1 requires one");
        }
        eprintln!("{test}: skipped: no wgpu adapter (install mesa-vulkan-drivers)");
    }
    has
}

/// Whether the adapter `--backend wgpu` opens is a software one (lavapipe): every wgpu
/// adapter `trainer devices` lists is marked software.
pub fn wgpu_is_software() -> bool {
    let output = trainer().subcommand("devices").run();
    let adapters: Vec<String> = stdout(&output)
        .lines()
        .filter(|l| l.starts_with("wgpu ") && !l.contains("unavailable"))
        .map(str::to_string)
        .collect();
    !adapters.is_empty() && adapters.iter().all(|l| l.contains("software"))
}

/// A pack's `outputs/run_info.json`.
pub fn run_info(pack: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(pack.join("outputs/run_info.json")).unwrap())
        .unwrap()
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

/// `trainer sweep plan` of `toml` (written to ROOT/NAME.toml) into ROOT/NAME.
pub fn sweep_plan(root: &Path, toml: &str, name: &str) -> Trainer {
    let config = root.join(format!("{name}.toml"));
    std::fs::write(&config, toml).unwrap();
    trainer()
        .subcommand("sweep plan")
        .config(config)
        .out(root.join(name))
}

/// Waits until `path` exists (at most `limit`), instead of sleeping a fixed time.
pub fn wait_for(path: &Path, limit: std::time::Duration, what: &str) {
    let started = std::time::Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed() < limit,
            "{what}: {} never appeared",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The lock file a run into `pack` holds while it runs (`.NAME.lock` beside it).
pub fn lock_of(pack: &Path) -> PathBuf {
    pack.parent().unwrap().join(format!(
        ".{}.lock",
        pack.file_name().unwrap().to_string_lossy()
    ))
}

/// Starts an endless cpu run into `pack` and returns once it holds its lock (its interrupt
/// handler is installed before that).
pub fn start_long_run(pack: &Path) -> std::process::Child {
    let child = trainer().cpu().quiet().endless().out(pack).spawn();
    wait_for(
        &lock_of(pack),
        std::time::Duration::from_secs(20),
        "the first run's lock",
    );
    child
}

/// Sends SIGINT to `child`, as Ctrl-C does.
pub fn interrupt(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// `trainer evaluate --checkpoint CHECKPOINT` on the cpu, quiet.
pub fn evaluate(checkpoint: &Path) -> Trainer {
    trainer()
        .subcommand("evaluate")
        .cpu()
        .quiet()
        .checkpoint(checkpoint)
}

/// A CNN of the family: `channels` input channels, one block per width.
pub fn cnn_spec(channels: usize, widths: &[usize]) -> trainer::model::ModelSpec {
    trainer::model::ModelSpec {
        kind: trainer::model::ModelKind::Cnn,
        channels,
        widths: trainer::model::CnnWidths::new(widths).unwrap(),
        head: trainer::model::Head::default(),
        batch_norm: false,
    }
}

/// Every parameter's gradient in `grads`, in the flat order of `trainer::model::flat`.
pub fn flat_gradients(net: &trainer::model::Net, grads: &burn::optim::GradientsParams) -> Vec<f32> {
    use burn::module::{Module, ModuleMapper, Param};
    use burn::prelude::Tensor;
    struct ToGrads<'a>(&'a burn::optim::GradientsParams);
    impl ModuleMapper for ToGrads<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let grad = self
                .0
                .get::<D>(param.id)
                .expect("every parameter has a gradient");
            param.map(|_| grad)
        }
    }
    let flat = trainer::model::flat::to_flat(&net.clone().map(&mut ToGrads(grads)));
    flat.into_data().try_to_vec::<f32>().expect("f32 values")
}

/// Writes a colour folder of `size`-pixel PNGs whose three classes differ only in hue at
/// equal luminance: a blue, an orange or a grey disc on grey noise. Grey images cannot tell
/// the classes apart; RGB ones can.
pub fn hue_folder(root: &Path, per_class: usize, size: u32) -> PathBuf {
    let data = root.join("hues");
    // Green chosen so that 0.2126 R + 0.7152 G + 0.0722 B is 128 for each colour.
    let equal_luma = |r: f64, b: f64| [r, (128.0 - 0.2126 * r - 0.0722 * b) / 0.7152, b];
    let classes = [
        ("blue", equal_luma(40.0, 250.0)),
        ("grey", [128.0; 3]),
        ("orange", equal_luma(250.0, 20.0)),
    ];
    let mut rng = Lcg(3);
    for (name, colour) in classes {
        let folder = data.join(name);
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..per_class {
            let margin = size as usize / 4;
            let centre = (
                margin + rng.below(size as usize - 2 * margin),
                margin + rng.below(size as usize - 2 * margin),
            );
            let radius = (size as usize / 6 + rng.below(3)).pow(2);
            let mut image = image::RgbImage::new(size, size);
            for (x, y, pixel) in image.enumerate_pixels_mut() {
                let noise = rng.below(51) as f64 - 25.0;
                let distance =
                    (x as usize).abs_diff(centre.0).pow(2) + (y as usize).abs_diff(centre.1).pow(2);
                let rgb = if distance <= radius {
                    colour.map(|c| c + noise / 3.0)
                } else {
                    [128.0 + noise; 3]
                };
                *pixel = image::Rgb(rgb.map(|c| c.round().clamp(0.0, 255.0) as u8));
            }
            image.save(folder.join(format!("{i:03}.png"))).unwrap();
        }
    }
    data
}
