//! The command line: every command, flag and default as clap declares them. `main.rs`
//! parses it and hands each command's arguments to its module in `cmd/`; nothing below
//! the commands reads it.

use std::path::PathBuf;
use std::sync::OnceLock;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Color, Monitor, Selection, Settings};
use crate::device::BackendChoice;
use crate::memory;
use crate::model::ModelKind;

/// Trains the workshop's Flatten+Linear baseline and Tiny CNN (or a CNN of --cnn-widths) on
/// stripe images or an image folder (grey or colour) and writes an evidence pack that shows
/// the training was healthy.
///
/// With no subcommand, runs the whole workshop. A flag given twice takes its last value (a
/// comma list its last list), on every command. Exit codes: 0 success, 1 a failed run or
/// verdict, 2 bad input or a backend that cannot start, 3 the pack was written but a model
/// diverged, 130 interrupted.
#[derive(Parser, Debug)]
#[command(
    name = "trainer",
    version,
    args_conflicts_with_subcommands = true,
    allow_negative_numbers = true,
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,

    /// On wgpu, do not use the WGSL kernels of shaders/ (each model's training step in two
    /// launches, evaluation in one, images drawn on the device): run burn's layers, upload
    /// images from the host and read logits back instead. For comparison; the results are the
    /// same.
    #[arg(long, global = true)]
    pub no_gpu_kernels: bool,

    /// The wgpu adapter to run on, by its index in `trainer devices` (default: the best
    /// one: discrete, integrated, virtual, then software). With --backend auto, picks wgpu on
    /// that adapter. Also TRAINER_DEVICE=N; run_info.json records the index.
    #[arg(long, global = true, value_name = "N")]
    pub device: Option<usize>,

    /// On the CPU backend, do not use the fused CNN operation of src/device/cpu_kernels.rs: run
    /// burn-flex's conv, ReLU and pooling layers one by one instead. For comparison; the
    /// results agree to float rounding, several times slower (figures in the README's
    /// Measurements).
    #[arg(long, global = true)]
    pub no_cpu_kernels: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Rebuild the model from a checkpoint alone and print its test accuracy.
    Evaluate(EvaluateArgs),
    /// Classify image files with a checkpoint (class and confidence per image).
    Predict(PredictArgs),
    /// Compare two evidence packs: what changed, what it did, what to try next (writes
    /// RUN_B/reports/experiment_notes.md and experiment_loss_overlay.png).
    Compare(CompareArgs),
    /// List the backends and wgpu adapters this machine offers.
    Devices,
    /// Write a checkpoint's model as ONNX (raw pixels to logits) or as safetensors under
    /// PyTorch's names, for any pack (older ones included).
    Export(ExportArgs),
    /// Train on several backends from identical starting points and compare (exit 1 when
    /// they disagree beyond the tolerances).
    Parity(ParityArgs),
    /// Measure training throughput against batch size.
    Bench(BenchArgs),
    /// The learning-rate range test: from a fresh model, a rate rising exponentially a step
    /// until the loss diverges; writes lr_find.csv and lr_find.png and ends with the flag to
    /// use (for example --lr-cnn 0.0042).
    LrFind(LrFindArgs),
    /// Many runs: plan a grid of settings, run its tasks (Slurm job array, Kubernetes Indexed
    /// Job, or this machine), collect one leaderboard.
    #[command(subcommand, subcommand_required = true, arg_required_else_help = true)]
    Sweep(SweepCommand),
}

#[derive(Subcommand, Debug)]
pub enum SweepCommand {
    /// Expand a TOML grid into DIR/plan.json, DIR/slurm.sbatch and DIR/k8s-job.yaml.
    Plan(SweepPlanArgs),
    /// Run one task of DIR (index from --task-index, SLURM_ARRAY_TASK_ID or
    /// JOB_COMPLETION_INDEX), or every unfinished task with --local.
    Run(SweepRunArgs),
    /// Rank what finished into DIR/leaderboard.csv, leaderboard.md and sweep_*.png (exit 1
    /// when tasks failed or are missing).
    Collect(SweepCollectArgs),
}

/// `trainer sweep plan`.
#[derive(Args, Debug)]
pub struct SweepPlanArgs {
    /// The sweep's TOML: the keys of --config, any value a list to sweep over (lr_cnn =
    /// [0.003, 0.01], seed = [1, 2]); split, models and cnn_widths sweep as lists of lists
    /// (cnn_widths = [[8, 16], [16, 32, 64]]). Relative data folders are read from the
    /// file's folder.
    #[arg(long)]
    pub config: PathBuf,

    /// The sweep folder (new or empty; every worker must see it).
    #[arg(long)]
    pub out: PathBuf,

    /// Draw this many runs at random from a larger grid (at most 10000).
    #[arg(long)]
    pub max_runs: Option<usize>,

    /// Seed of the --max-runs draw (the runs' own seed is the `seed` setting).
    #[arg(long, default_value_t = 0)]
    pub draw_seed: u64,

    /// Tasks at once: Slurm's array limit (%P) and the Indexed Job's parallelism.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,

    /// CPU cores per task (Slurm's --cpus-per-task, the pod's cpu request, the CPU backend's
    /// threads).
    #[arg(long, default_value_t = 1)]
    pub cpus_per_task: usize,

    /// Backend of every task, over the file's `backend` (wgpu asks Slurm and Kubernetes for
    /// one GPU per task).
    #[arg(long, value_enum)]
    pub backend: Option<BackendChoice>,

    /// The trainer binary the launchers call [default: this binary].
    #[arg(long)]
    pub trainer_bin: Option<PathBuf>,
}

/// `trainer sweep run`.
#[derive(Args, Debug)]
pub struct SweepRunArgs {
    /// The sweep folder (made by trainer sweep plan).
    pub dir: PathBuf,

    /// The task to run [default: SLURM_ARRAY_TASK_ID, else JOB_COMPLETION_INDEX].
    #[arg(long, conflicts_with = "local")]
    pub task_index: Option<usize>,

    /// Run every unfinished task on this machine.
    #[arg(long)]
    pub local: bool,

    /// With --local: tasks at once [default: the cores divided by the plan's cpus per task].
    #[arg(long, requires = "local")]
    pub jobs: Option<usize>,

    /// With --local: the wgpu adapters to spread the tasks over, by index in `trainer
    /// devices` (0,1): each of the --jobs workers keeps one, so no two tasks share an adapter
    /// while --jobs is at most the number listed (past that they share, round-robin). Given
    /// twice, the last list counts.
    #[arg(
        long,
        requires = "local",
        value_delimiter = ',',
        value_name = "N,...",
        action = clap::ArgAction::Set
    )]
    pub devices: Vec<usize>,

    /// Print only the results.
    #[arg(long)]
    pub quiet: bool,
}

/// `trainer sweep collect`.
#[derive(Args, Debug)]
pub struct SweepCollectArgs {
    /// The sweep folder.
    pub dir: PathBuf,
}

/// The workshop run.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Where to compute: auto (wgpu on a hardware GPU, else cpu), wgpu (any wgpu adapter,
    /// software ones included), cpu (burn-flex) or ndarray (burn-ndarray, deprecated upstream).
    #[arg(long, value_enum, default_value_t = Settings::default().backend)]
    pub backend: BackendChoice,

    /// Folder for the evidence pack. An existing folder is replaced only if it is an earlier
    /// trainer run, and only once the new pack is complete.
    #[arg(long, default_value = "deep_learning_workshop_run")]
    pub out: PathBuf,

    #[command(flatten)]
    pub train: TrainArgs,

    /// Read settings from a TOML or JSON file (keys as the flags, with underscores: seed,
    /// data, samples_per_class, image_size, split, models, batch_size, epochs_baseline,
    /// epochs_cnn, lr_baseline, lr_cnn, augment, patience, monitor, select_by, color,
    /// cnn_widths, head, hidden, dropout, batch_norm, overfit_batches, optimizer,
    /// weight_decay, momentum, nesterov, schedule, warmup_epochs, label_smoothing,
    /// val_fraction, max_per_class, strict_data, skip_bad_images, backend). Flags given on
    /// the command line win. A pack's
    /// outputs/config.json repeats its run.
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// Memory budget for one step, e.g. 512MiB or 2GiB; the batch is halved until the
    /// estimate fits (besides what the device itself offers).
    #[arg(long, value_parser = parse_size)]
    pub memory_limit: Option<u64>,

    /// Skip the memory estimate before training; only real allocation failures halve the batch.
    #[arg(long)]
    pub no_memory_preflight: bool,

    /// Print only warnings and the results: no progress bar, no epoch lines, no notes.
    #[arg(long)]
    pub quiet: bool,

    /// Continue the run that was stopped (Ctrl-C, SIGTERM) or crashed in RUN_DIR (its --out)
    /// from its last finished epoch, with its own settings: flags given must match them.
    /// Ends bit-identical to the same run uninterrupted on --backend cpu. Command line only
    /// (no config key).
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,

    /// Start training from a checkpoint's weights (a pack's checkpoints/best_model.json):
    /// fine-tuning. The model's shape must be the checkpoint's; another class count
    /// re-initialises the last layer. Command line only (no config key).
    #[arg(long, value_name = "CHECKPOINT")]
    pub init_from: Option<PathBuf>,

    /// With --init-from: train only the last layer (the head), keeping the features the
    /// checkpoint learned. Command line only (no config key).
    #[arg(long, requires = "init_from")]
    pub freeze_features: bool,

    /// With --init-from: train even when the checkpoint trained or validated on some of this
    /// run's test images (refused otherwise, naming how many); the pack then says its test
    /// accuracy overstates. Command line only (no config key).
    #[arg(long, requires = "init_from")]
    pub allow_test_overlap: bool,
}

/// The data and hyperparameters shared by the workshop run and parity. Their defaults are
/// config.rs's [`Settings::default`], not written here.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Seed of the data, the split, the initial parameters and the shuffling.
    #[arg(long, default_value_t = Settings::default().seed)]
    pub seed: u64,

    /// Samples per training step (halved automatically when memory runs short).
    #[arg(
        long,
        default_value_t = Settings::default().batch_size as u64,
        value_parser = clap::value_parser!(u64).range(1..=1_000_000)
    )]
    pub batch_size: u64,

    /// Epochs of the Flatten+Linear baseline.
    #[arg(long, default_value_t = Settings::default().epochs_baseline)]
    pub epochs_baseline: usize,

    /// Epochs of the CNN (the Tiny CNN or the --cnn-widths shape).
    #[arg(long, default_value_t = Settings::default().epochs_cnn)]
    pub epochs_cnn: usize,

    /// Learning rate of the baseline (the schedule's peak; see --schedule).
    #[arg(long, default_value_t = Settings::default().lr_baseline, allow_negative_numbers = true)]
    pub lr_baseline: f64,

    /// Learning rate of the CNN (the schedule's peak; see --schedule).
    #[arg(long, default_value_t = Settings::default().lr_cnn, allow_negative_numbers = true)]
    pub lr_cnn: f64,

    /// Stripe images generated per class (split 60/20/20 into train/val/test); with --data,
    /// use --max-per-class (this flag is refused there).
    #[arg(long, default_value_t = Settings::default().samples_per_class)]
    pub samples_per_class: usize,

    /// Height and width of the images, in pixels (folder images are resized to it).
    #[arg(long, default_value_t = Settings::default().image_size)]
    pub image_size: usize,

    /// Train on an image folder instead of the stripes: one subfolder per class, PNG, JPEG or
    /// BMP inside; read as --color says and resized (bilinear) to --image-size.
    #[arg(long)]
    pub data: Option<PathBuf>,

    /// Shares of train, val and test (TRAIN,VAL,TEST, adding up to 1), drawn with --seed;
    /// per class (stratified) for an image folder.
    #[arg(long, default_value = default_split(), value_parser = parse_split)]
    pub split: [f64; 3],

    /// A pre-split --data folder (train/ and test/ inside) without a val/ folder: the share
    /// of train/ drawn as validation, per class, with --seed (--split is refused there).
    /// Refused for any other data, whatever its value.
    #[arg(long, default_value_t = Settings::default().val_fraction)]
    pub val_fraction: f64,

    /// A --data folder: at most N images of each class from each folder, drawn with --seed,
    /// for a quick run on a big folder (--samples-per-class is the stripes').
    #[arg(long, value_name = "N")]
    pub max_per_class: Option<usize>,

    /// A --data folder: refuse byte-identical images in two classes (by default they are left
    /// out of training and evaluation and listed in outputs/data_issues.csv).
    #[arg(long, overrides_with = "no_strict_data")]
    pub strict_data: bool,

    /// Duplicates listed, not refused, whatever --config says (the last of --strict-data and
    /// --no-strict-data wins).
    #[arg(long, overrides_with = "strict_data")]
    pub no_strict_data: bool,

    /// A --data folder: train on the images that can be read and list the others in
    /// outputs/data_issues.csv (by default an unreadable image stops the run, naming it).
    #[arg(long, overrides_with = "no_skip_bad_images")]
    pub skip_bad_images: bool,

    /// An unreadable image stops the run, whatever --config says (the last of
    /// --skip-bad-images and --no-skip-bad-images wins).
    #[arg(long, overrides_with = "skip_bad_images")]
    pub no_skip_bad_images: bool,

    /// Which models to train, comma-separated, in order; given twice, the last list.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = default_models(),
        action = clap::ArgAction::Set
    )]
    pub models: Vec<ModelKind>,

    /// Augment the training part, seeded: a bare --augment shifts by up to one pixel and adds
    /// light noise; a LIST picks from shift-noise, flip (random horizontal flip), crop (random
    /// crop after padding by 2 pixels) and crop:N (padding by N): --augment flip,crop. Flips
    /// suit photos, not the stripe images (a flipped diagonal runs the other way).
    #[arg(
        long,
        num_args = 0..=1,
        default_missing_value = "shift-noise",
        value_name = "LIST",
        overrides_with = "no_augment"
    )]
    pub augment: Option<crate::data::Augment>,

    /// No augmentation, whatever --config says (the last of --augment and --no-augment wins).
    #[arg(long, overrides_with = "augment")]
    pub no_augment: bool,

    /// Early stopping: stop a model after this many epochs without improvement of --monitor.
    #[arg(long)]
    pub patience: Option<usize>,

    /// What picks the best epoch (and early stopping watches): val_acc or val_loss.
    #[arg(long, value_enum, default_value_t = Settings::default().monitor)]
    pub monitor: Monitor,

    /// What picks the best model among those trained: val (the --monitor figure of each
    /// model's kept epoch, ties by the other validation figure; the test part is measured
    /// after choosing) or test (the workshop script's rule: test accuracy, then validation
    /// accuracy, to reproduce its table exactly).
    #[arg(long, value_enum, default_value_t = Settings::default().select_by)]
    pub select_by: Selection,

    /// How an image folder's images are read: auto (rgb when any training image has colour,
    /// else gray), gray (one luminance channel) or rgb (three channels). The stripe images
    /// are gray.
    #[arg(long, value_enum, default_value_t = Settings::default().color)]
    pub color: Color,

    /// The CNN's shape: one width per block, comma-separated (1 to 4 blocks, widths 1 to
    /// 128). Each block is a 3x3 convolution (padding 1) and a ReLU, with a 2x2 max-pool
    /// between blocks, then the head (--head: a global average pool and a linear layer by
    /// default); --image-size must be at
    /// least 2 to the power (blocks - 1). The default 8,16 is the workshop's Tiny CNN. Given
    /// twice, the last list is the shape.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = default_widths(),
        value_parser = parse_width,
        action = clap::ArgAction::Set
    )]
    pub cnn_widths: Vec<usize>,

    #[command(flatten)]
    pub head: HeadArgs,

    /// The workshop's "overfit a tiny batch" check (the workshop run and sweeps; parity
    /// refuses it): train each model on the first N batches of the training part only, for at
    /// least 100 steps, and report whether its training loss fell below 0.05 (0.05 above the
    /// lowest loss --label-smoothing allows: the smoothed target's entropy) (exit 0 when
    /// every model did, 1 when one did not; the verdict is in reports/debug_checklist.md). A
    /// model that cannot overfit a batch has a bug, a wrong learning rate or wrong labels.
    #[arg(long, value_name = "N")]
    pub overfit_batches: Option<usize>,

    /// The optimizer: adam (the workshop's), adamw (Adam with decoupled weight decay) or sgd
    /// (with --momentum, --nesterov; --weight-decay as an L2 term).
    #[arg(long, value_enum, default_value_t = Settings::default().optimizer)]
    pub optimizer: crate::recipe::Optimizer,

    /// Weight decay: AdamW's decoupled decay (w -= lr * decay * w each step) or SGD's L2 term;
    /// at least 0 (Adam takes none). Not given: 0.01 for adamw (PyTorch's AdamW default), 0
    /// for sgd.
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f64>,

    /// SGD's momentum, in [0, 1) (PyTorch's: no dampening).
    #[arg(long, default_value_t = Settings::default().momentum, allow_negative_numbers = true)]
    pub momentum: f64,

    /// SGD's Nesterov momentum (needs --optimizer sgd and a --momentum above 0).
    #[arg(long, overrides_with = "no_nesterov")]
    pub nesterov: bool,

    /// No Nesterov momentum, whatever --config says (the last of --nesterov and
    /// --no-nesterov wins).
    #[arg(long, overrides_with = "nesterov")]
    pub no_nesterov: bool,

    /// How the learning rate moves, per step: constant, cosine (to 0), onecycle (PyTorch's
    /// OneCycleLR: from rate/25 up to the rate, then down) or step (/10 at half and at three
    /// quarters of the run). The rate of each epoch's last step is training_log.csv's `lr`,
    /// and curves/lr_schedule.png draws every step's.
    #[arg(long, value_enum, default_value_t = Settings::default().schedule)]
    pub schedule: crate::recipe::Schedule,

    /// Epochs of linear warm-up from rate/steps up to the rate (for onecycle: the length of
    /// its rising phase, 30% of the run by default); shorter than the run.
    #[arg(long, default_value_t = Settings::default().warmup_epochs, allow_negative_numbers = true)]
    pub warmup_epochs: f64,

    /// Label smoothing of the training loss, in [0, 1), as PyTorch's
    /// CrossEntropyLoss(label_smoothing=...) defines it (validation and test losses stay plain
    /// cross-entropy).
    #[arg(long, default_value_t = Settings::default().label_smoothing, allow_negative_numbers = true)]
    pub label_smoothing: f64,
}

/// Whether the command line gave the setting `key` (a config key: `augment`, `lr_cnn`),
/// either way for a switch (`--augment` or `--no-augment`): flags given win over `--config`.
pub fn given_on_command_line(matches: &clap::ArgMatches, key: &str) -> bool {
    use clap::parser::ValueSource;
    let given = |id: &str| {
        matches
            .try_get_raw(id)
            .is_ok_and(|_| matches.value_source(id) == Some(ValueSource::CommandLine))
    };
    given(key) || given(&format!("no_{key}"))
}

impl TrainArgs {
    /// The settings these flags give, on `backend`.
    pub fn settings(&self, backend: BackendChoice) -> Settings {
        Settings {
            backend,
            seed: self.seed,
            data: self.data.clone(),
            samples_per_class: self.samples_per_class,
            image_size: self.image_size,
            split: self.split,
            // Whether it was given is the matches' to say (config::merge).
            split_given: false,
            val_fraction_given: false,
            file_places: Vec::new(),
            models: self.models.clone(),
            batch_size: self.batch_size as usize,
            epochs_baseline: self.epochs_baseline,
            epochs_cnn: self.epochs_cnn,
            lr_baseline: self.lr_baseline,
            lr_cnn: self.lr_cnn,
            augment: self.augment.unwrap_or_default(),
            patience: self.patience,
            monitor: self.monitor,
            select_by: self.select_by,
            color: self.color,
            cnn_widths: self.cnn_widths.clone(),
            head: self.head.head,
            hidden: self.head.hidden,
            dropout: self.head.dropout,
            batch_norm: self.head.batch_norm,
            overfit_batches: self.overfit_batches,
            optimizer: self.optimizer,
            weight_decay: self
                .weight_decay
                .unwrap_or(self.optimizer.default_weight_decay()),
            momentum: self.momentum,
            nesterov: self.nesterov,
            schedule: self.schedule,
            warmup_epochs: self.warmup_epochs,
            label_smoothing: self.label_smoothing,
            val_fraction: self.val_fraction,
            max_per_class: self.max_per_class,
            strict_data: self.strict_data,
            skip_bad_images: self.skip_bad_images,
        }
    }
}

/// `trainer parity`.
#[derive(Args, Debug)]
pub struct ParityArgs {
    /// Backends to compare, comma-separated; the first is the reference; given twice, the last
    /// list.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "cpu,wgpu",
        action = clap::ArgAction::Set
    )]
    pub backends: Vec<String>,

    /// Folder for the report (parity/parity_report.json, .md, loss_overlay.png).
    #[arg(long, default_value = "parity_run")]
    pub out: PathBuf,

    #[command(flatten)]
    pub train: TrainArgs,

    /// Largest relative difference allowed between first-epoch step losses.
    #[arg(long, default_value_t = 1e-4)]
    pub loss_rtol: f64,

    /// Largest absolute difference allowed between test logits.
    #[arg(long, default_value_t = 1e-3)]
    pub logits_atol: f64,

    /// Largest absolute difference allowed between final parameters.
    #[arg(long, default_value_t = 1e-3)]
    pub param_atol: f64,

    /// Smallest share of test samples whose predictions must agree.
    #[arg(long, default_value_t = 0.99)]
    pub min_agreement: f64,

    /// A figure may also reach this many times what either backend (the larger) differs from
    /// itself after a start nudged by one unit in the last place (how far the training
    /// carries a rounding); 0 judges by the tolerances alone.
    #[arg(long, default_value_t = 10.0)]
    pub sensitivity_factor: f64,

    /// Test hook: BACKEND=EPSILON adds EPSILON to the first parameter on BACKEND.
    #[arg(long, hide = true)]
    pub perturb_init: Option<String>,

    /// Print only the results.
    #[arg(long)]
    pub quiet: bool,
}

/// `trainer bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Backends to measure, comma-separated: cpu, wgpu, ndarray or auto; given twice, the
    /// last list.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "auto",
        action = clap::ArgAction::Set
    )]
    pub backend: Vec<String>,

    /// Which model: cnn, baseline or both.
    #[arg(long, default_value = "cnn", value_parser = ["cnn", "baseline", "both"])]
    pub model: String,

    /// Batch sizes to measure, comma-separated, smallest first; given twice, the last list.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "8,16,32,64,128,256,512,1024",
        action = clap::ArgAction::Set
    )]
    pub batch_sizes: Vec<usize>,

    /// Height and width of the images, in pixels.
    #[arg(long, default_value_t = Settings::default().image_size)]
    pub image_size: usize,

    /// Channels of the synthetic images: gray (one) or rgb (three: the stripes tinted per
    /// channel). auto is taken as gray here: bench draws its own images.
    #[arg(long, value_enum, default_value_t = Color::Gray, hide_possible_values = true)]
    pub color: Color,

    /// The CNN's shape, as for the workshop run: one width per block, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = default_widths(),
        value_parser = parse_width,
        action = clap::ArgAction::Set
    )]
    pub cnn_widths: Vec<usize>,

    #[command(flatten)]
    pub head: HeadArgs,

    /// Classes of the models (their last layer's size), 2 to 1000: the images stay the three
    /// stripe orientations, the labels cycle through the classes (to compare with a peer's
    /// 10-class network).
    #[arg(long, default_value_t = crate::bench::CLASSES)]
    pub classes: usize,

    /// Timed steps per batch size.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,

    /// Untimed steps before them (after the separately timed first step).
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,

    /// Folder for bench/throughput.csv, .png, README.md and run_info.json.
    #[arg(long, default_value = "bench_run")]
    pub out: PathBuf,

    /// Memory budget for one step (e.g. 512MiB); larger batches are recorded as not fitting.
    #[arg(long, value_parser = parse_size)]
    pub memory_limit: Option<u64>,

    /// Print only where the results are.
    #[arg(long)]
    pub quiet: bool,
}

/// `trainer compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The earlier pack (the reference).
    pub run_a: PathBuf,
    /// The later pack (the notes are written into it).
    pub run_b: PathBuf,
}

/// `trainer predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// The checkpoint: checkpoints/best_model.json (or .bpk, or the pack folder).
    #[arg(long)]
    pub checkpoint: PathBuf,

    /// Where to compute (as for the workshop run).
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,

    /// Print one JSON array instead of one line per image.
    #[arg(long)]
    pub json: bool,

    /// Also write every prediction to this CSV file: path, predicted, confidence, and the
    /// top 3 classes with their probabilities (rounded down to 4 decimals).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,

    /// Replace the --csv file if it exists (checked before any image is classified).
    #[arg(long)]
    pub force: bool,

    /// Image files (PNG, JPEG, BMP) and folders (every image file under them); preprocessed
    /// as the checkpoint says. Folders of class subfolders named as the checkpoint's classes
    /// also get the accuracy.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// `trainer lr-find`.
#[derive(Args, Debug)]
pub struct LrFindArgs {
    /// Where to compute (as for the workshop run).
    #[arg(long, value_enum, default_value_t = Settings::default().backend)]
    pub backend: BackendChoice,

    /// The model to test: cnn (the --cnn-widths family) or baseline.
    #[arg(long, value_enum, default_value = "cnn")]
    pub model: ModelKind,

    /// Folder for lr_find.csv, lr_find.png and README.md (an earlier lr-find there is
    /// replaced; another command's pack is refused).
    #[arg(long, default_value = "lr_find_run")]
    pub out: PathBuf,

    /// The rate of the first step.
    #[arg(long, default_value_t = 1e-7)]
    pub start_lr: f64,

    /// The rate of the last step.
    #[arg(long, default_value_t = 10.0)]
    pub end_lr: f64,

    /// Steps from --start-lr to --end-lr, 10 to 100000 (the test stops earlier when the loss
    /// diverges).
    #[arg(long, default_value_t = 200)]
    pub steps: usize,

    /// The data, batch size, seed, colour, model shape and optimizer as for the workshop run
    /// (the epochs, rates, schedule and checks are the test's own: those flags are ignored,
    /// with a warning).
    #[command(flatten)]
    pub train: TrainArgs,

    /// Print only the results.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The checkpoint: checkpoints/best_model.json (or .bpk, or the pack folder).
    #[arg(long)]
    pub checkpoint: PathBuf,

    /// onnx: the whole model, normalization inside, raw pixels in [0, 1] to logits;
    /// safetensors: the weights under the PyTorch nn.Sequential's names.
    #[arg(long, value_enum)]
    pub format: crate::export::ExportFormat,

    /// The file to write (its folder is created).
    #[arg(long)]
    pub out: PathBuf,

    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct EvaluateArgs {
    /// The checkpoint: checkpoints/best_model.json (or .bpk, or the pack folder).
    #[arg(long)]
    pub checkpoint: PathBuf,

    /// Where to compute (as for the workshop run).
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,

    /// Samples per evaluation batch.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch_size: u64,

    /// A labelled folder to score (class subfolders named as the checkpoint's classes; a
    /// folder with train/ and test/ is scored on its test/): accuracy, per-class precision,
    /// recall and F1, confusion matrix and review grid, written to --out. The folder the
    /// checkpoint was trained on (moved or not, unchanged) gives its recorded test set again.
    #[arg(long)]
    pub data: Option<PathBuf>,

    /// Folder for the evaluation pack (README.md, outputs/per_class_metrics.csv, confusion
    /// matrix CSV and PNG, error samples, review grid); with --data it defaults to
    /// evaluation_run (an earlier evaluation there is replaced; another command's pack is
    /// refused).
    #[arg(long)]
    pub out: Option<PathBuf>,

    /// Print only the results.
    #[arg(long)]
    pub quiet: bool,
}

/// The CNN's classifier head (the workshop run, bench).
#[derive(Args, Debug, Clone)]
pub struct HeadArgs {
    /// The CNN's head after its last block: gap (global average pool, one feature per
    /// channel: the workshop's) or flatten (the last block's whole map, channels x side x
    /// side, as PyTorch's nn.Flatten).
    #[arg(long, value_enum, default_value_t = Settings::default().head)]
    pub head: crate::model::HeadKind,

    /// Units of a hidden Linear + ReLU before the head's last Linear; 0 for none (at most
    /// 4096).
    #[arg(long, value_name = "N", default_value_t = Settings::default().hidden)]
    pub hidden: usize,

    /// Dropout before each Linear of the CNN's head, while training only, in [0, 1) (PyTorch's
    /// nn.Dropout: kept values scaled by 1/(1-P)); seeded by --seed, the same on every backend.
    #[arg(long, value_name = "P", default_value_t = Settings::default().dropout, allow_negative_numbers = true)]
    pub dropout: f64,

    /// BatchNorm after each convolution of the CNN, before its ReLU (PyTorch's nn.BatchNorm2d:
    /// batch statistics while training, running statistics, momentum 0.1, in evaluation and in
    /// the checkpoint).
    #[arg(long, overrides_with = "no_batch_norm")]
    pub batch_norm: bool,

    /// No batch norm, whatever --config says (the last of --batch-norm and --no-batch-norm
    /// wins).
    #[arg(long, overrides_with = "batch_norm")]
    pub no_batch_norm: bool,
}

/// `--cnn-widths`' default as clap shows and parses it: the widths of [`Settings::default`].
fn default_widths() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        Settings::default()
            .cnn_widths
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// One width of `--cnn-widths`: a whole number from 1 to the widest block.
fn parse_width(text: &str) -> Result<usize, String> {
    let max = crate::model::spec::MAX_WIDTH;
    match text.trim().parse::<usize>() {
        Ok(w) if (1..=max).contains(&w) => Ok(w),
        Ok(w) => Err(format!("a width is 1 to {max}, got {w}")),
        Err(_) if text.trim().is_empty() => {
            Err("an empty width (a comma with no number on one side?); give one number per block, such as 16,32,64".into())
        }
        Err(_) => Err(format!("a width is a whole number from 1 to {max}")),
    }
}

/// `--split`'s default as clap shows and parses it: the shares of [`Settings::default`].
fn default_split() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        Settings::default()
            .split
            .map(|share| share.to_string())
            .join(",")
    })
}

/// `--models`' default as clap shows and parses it: the models of [`Settings::default`].
fn default_models() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        Settings::default()
            .models
            .iter()
            .filter_map(|m| m.to_possible_value().map(|v| v.get_name().to_string()))
            .collect::<Vec<_>>()
            .join(",")
    })
}

fn parse_split(text: &str) -> std::result::Result<[f64; 3], String> {
    let parts: Vec<&str> = text.split(',').collect();
    let shares: Vec<f64> = parts.iter().filter_map(|p| p.trim().parse().ok()).collect();
    match shares[..] {
        [a, b, c] if parts.len() == 3 => Ok([a, b, c]),
        _ => Err(format!(
            "'{text}' is not three shares TRAIN,VAL,TEST such as 0.6,0.2,0.2"
        )),
    }
}

fn parse_size(text: &str) -> std::result::Result<u64, String> {
    memory::parse_bytes(text)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// --help's list of config keys is the one an unknown key's error gives (the keys of
    /// [`Settings`]): head, hidden, dropout and batch_norm were missing from it.
    #[test]
    fn the_config_help_names_every_config_key_and_no_other() {
        let command = Cli::command();
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == "config")
            .expect("--config");
        let help = arg.get_long_help().or(arg.get_help()).unwrap().to_string();
        let list = help.split_once("underscores: ").unwrap().1;
        let list = list.split_once(')').unwrap().0;
        let mut listed: Vec<&str> = list.split(',').map(str::trim).collect();
        listed.sort_unstable();
        let serde_json::Value::Object(keys) = serde_json::to_value(Settings::default()).unwrap()
        else {
            panic!("settings are not a table");
        };
        let mut known: Vec<&str> = keys.keys().map(String::as_str).collect();
        known.sort_unstable();
        assert_eq!(listed, known, "{help}");
    }

    /// The flags' defaults are config.rs's: a run with no flags is `Settings::default()`.
    #[test]
    fn no_flags_give_the_default_settings() {
        let cli = Cli::try_parse_from(["trainer"]).expect("no flags parse");
        assert_eq!(cli.run.train.settings(cli.run.backend), Settings::default());
        let parity = Cli::try_parse_from(["trainer", "parity"]).expect("parity parses");
        let Some(Command::Parity(args)) = parity.command else {
            panic!("parity parsed as {:?}", parity.command);
        };
        assert_eq!(
            args.train.settings(Settings::default().backend),
            Settings::default()
        );
    }

    /// `--cnn-widths` given twice is the last one (it appended to a four-block 32-64-8-16 net).
    #[test]
    fn the_last_cnn_widths_wins() {
        let cli = Cli::try_parse_from(["trainer", "--cnn-widths", "32,64", "--cnn-widths", "8,16"])
            .expect("repeated widths parse");
        assert_eq!(cli.run.train.cnn_widths, vec![8, 16]);
        let once = Cli::try_parse_from(["trainer", "--cnn-widths", "4,6,8"]).expect("one list");
        assert_eq!(once.run.train.cnn_widths, vec![4, 6, 8]);
    }

    /// Every other comma list given twice is the last list too (they appended: `--models cnn
    /// --models baseline` trained both, `--devices 0 --devices 1` listed two adapters).
    #[test]
    fn the_last_list_wins_for_every_list_flag() {
        let parse = |line: &str| {
            Cli::try_parse_from(line.split_whitespace()).expect("repeated lists parse")
        };
        let run = parse("trainer --models cnn --models baseline");
        assert_eq!(run.run.train.models, vec![ModelKind::Baseline]);
        let command = |line: &str| parse(line).command.expect("a subcommand");
        let Command::Sweep(SweepCommand::Run(sweep)) =
            command("trainer sweep run d --local --devices 0,1 --devices 2")
        else {
            panic!("sweep run parsed as another command");
        };
        assert_eq!(sweep.devices, vec![2]);
        let Command::Parity(parity) =
            command("trainer parity --backends cpu,wgpu --backends cpu,ndarray")
        else {
            panic!("parity parsed as another command");
        };
        assert_eq!(parity.backends, ["cpu", "ndarray"]);
        let bench = "trainer bench --backend cpu,wgpu --backend ndarray";
        let Command::Bench(bench) =
            command(&format!("{bench} --batch-sizes 8,16 --batch-sizes 32"))
        else {
            panic!("bench parsed as another command");
        };
        assert_eq!(bench.backend, ["ndarray"]);
        assert_eq!(bench.batch_sizes, vec![32]);
    }
}
