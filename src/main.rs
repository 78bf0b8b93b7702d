//! The command line: parses arguments, calls the library, prints one line per error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use trainer::cmd::bench::BenchConfig;
use trainer::cmd::inference;
use trainer::cmd::parity::{self, ParityConfig, Tolerances};
use trainer::cmd::workshop;
use trainer::config::{self, Monitor, Settings};
use trainer::console::{Console, say};
use trainer::device::{BackendChoice, BackendName};
use trainer::error::{Result, TrainerError};
use trainer::memory;
use trainer::model::ModelKind;
use trainer::report::{RunConfig, round4};

/// Trains the workshop's Flatten+Linear baseline and Tiny CNN on stripe images and writes an
/// evidence pack that shows the training was healthy.
///
/// With no subcommand, runs the whole workshop. Exit codes: 0 success, 1 a failed run or
/// verdict, 2 bad input or a backend that cannot start, 3 the pack was written but a model
/// diverged, 130 interrupted.
#[derive(Parser, Debug)]
#[command(name = "trainer", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    run: RunArgs,

    /// On wgpu, do not use the WGSL kernels of shaders/ (images drawn on the device, evaluation
    /// summarized on the device): upload images from the host and read logits back instead.
    /// For comparison; the results are the same.
    #[arg(long, global = true)]
    no_gpu_kernels: bool,

    /// On the CPU backend, do not use the fused Tiny CNN operation of src/device/cpu_kernels.rs: run
    /// burn-flex's conv, ReLU and pooling layers one by one instead. For comparison; the
    /// results agree to float rounding (about 3x slower).
    #[arg(long, global = true)]
    no_cpu_kernels: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Rebuild the model from a checkpoint alone and print its test accuracy.
    Evaluate(EvaluateArgs),
    /// Classify image files with a checkpoint (class and confidence per image).
    Predict(PredictArgs),
    /// Compare two evidence packs: what changed, what it did, what to try next (writes
    /// RUN_B/reports/experiment_notes.md and experiment_loss_overlay.png).
    Compare(CompareArgs),
    /// List the backends and wgpu adapters this machine offers.
    Devices,
    /// Train on several backends from identical starting points and compare (exit 1 when
    /// they disagree beyond the tolerances).
    Parity(ParityArgs),
    /// Measure training throughput against batch size.
    Bench(BenchArgs),
    /// Many runs: plan a grid of settings, run its tasks (Slurm job array, Kubernetes Indexed
    /// Job, or this machine), collect one leaderboard.
    #[command(subcommand)]
    Sweep(SweepCommand),
}

#[derive(Subcommand, Debug)]
enum SweepCommand {
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
struct SweepPlanArgs {
    /// The sweep's TOML: the keys of --config, any value a list to sweep over (lr_cnn =
    /// [0.003, 0.01], seed = [1, 2]); split and models sweep as lists of lists. Relative data
    /// folders are read from the file's folder.
    #[arg(long)]
    config: PathBuf,

    /// The sweep folder (new or empty; every worker must see it).
    #[arg(long)]
    out: PathBuf,

    /// Draw this many runs at random from a larger grid (at most 10000).
    #[arg(long)]
    max_runs: Option<usize>,

    /// Seed of the --max-runs draw (the runs' own seed is the `seed` setting).
    #[arg(long, default_value_t = 0)]
    draw_seed: u64,

    /// Tasks at once: Slurm's array limit (%P) and the Indexed Job's parallelism.
    #[arg(long, default_value_t = 4)]
    parallel: usize,

    /// CPU cores per task (Slurm's --cpus-per-task, the pod's cpu request, the CPU backend's
    /// threads).
    #[arg(long, default_value_t = 1)]
    cpus_per_task: usize,

    /// Backend of every task, over the file's `backend` (wgpu asks Slurm and Kubernetes for
    /// one GPU per task).
    #[arg(long, value_enum)]
    backend: Option<BackendChoice>,

    /// The trainer binary the launchers call [default: this binary].
    #[arg(long)]
    trainer_bin: Option<PathBuf>,
}

/// `trainer sweep run`.
#[derive(Args, Debug)]
struct SweepRunArgs {
    /// The sweep folder (made by trainer sweep plan).
    dir: PathBuf,

    /// The task to run [default: SLURM_ARRAY_TASK_ID, else JOB_COMPLETION_INDEX].
    #[arg(long, conflicts_with = "local")]
    task_index: Option<usize>,

    /// Run every unfinished task on this machine.
    #[arg(long)]
    local: bool,

    /// With --local: tasks at once [default: the cores divided by the plan's cpus per task].
    #[arg(long, requires = "local")]
    jobs: Option<usize>,

    /// Print only the results.
    #[arg(long)]
    quiet: bool,
}

/// `trainer sweep collect`.
#[derive(Args, Debug)]
struct SweepCollectArgs {
    /// The sweep folder.
    dir: PathBuf,
}

/// The workshop run.
#[derive(Args, Debug)]
struct RunArgs {
    /// Where to compute: auto (wgpu on a hardware GPU, else cpu), wgpu (any wgpu adapter,
    /// software ones included), cpu (burn-flex) or ndarray (burn-ndarray, deprecated upstream).
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,

    /// Folder for the evidence pack. An existing folder is replaced only if it is an earlier
    /// trainer run, and only once the new pack is complete.
    #[arg(long, default_value = "deep_learning_workshop_run")]
    out: PathBuf,

    #[command(flatten)]
    train: TrainArgs,

    /// Read settings from a TOML or JSON file (keys as the flags, with underscores: seed,
    /// data, samples_per_class, image_size, split, models, batch_size, epochs_baseline,
    /// epochs_cnn, lr_baseline, lr_cnn, augment, patience, monitor, backend). Flags given on
    /// the command line win. A pack's outputs/config.json repeats its run.
    #[arg(long)]
    config: Option<PathBuf>,

    /// Memory budget for one step, e.g. 512MiB or 2GiB; the batch is halved until the
    /// estimate fits (besides what the device itself offers).
    #[arg(long, value_parser = parse_size)]
    memory_limit: Option<u64>,

    /// Skip the memory estimate before training; only real allocation failures halve the batch.
    #[arg(long)]
    no_memory_preflight: bool,

    /// Print only the results: no progress bar, no notes.
    #[arg(long)]
    quiet: bool,
}

/// The data and hyperparameters shared by the workshop run and parity.
#[derive(Args, Debug)]
struct TrainArgs {
    /// Seed of the data, the split, the initial parameters and the shuffling.
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// Samples per training step (halved automatically when memory runs short).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch_size: u64,

    /// Epochs of the Flatten+Linear baseline.
    #[arg(long, default_value_t = 4)]
    epochs_baseline: usize,

    /// Epochs of the Tiny CNN.
    #[arg(long, default_value_t = 10)]
    epochs_cnn: usize,

    /// Adam learning rate of the baseline.
    #[arg(long, default_value_t = 0.01, allow_negative_numbers = true)]
    lr_baseline: f64,

    /// Adam learning rate of the Tiny CNN.
    #[arg(long, default_value_t = 0.006, allow_negative_numbers = true)]
    lr_cnn: f64,

    /// Images generated per class (split 60/20/20 into train/val/test).
    #[arg(long, default_value_t = 140)]
    samples_per_class: usize,

    /// Height and width of the images, in pixels (folder images are resized to it).
    #[arg(long, default_value_t = 16)]
    image_size: usize,

    /// Train on an image folder instead of the stripes: one subfolder per class, PNG, JPEG or
    /// BMP inside; converted to grayscale and resized (bilinear) to --image-size.
    #[arg(long)]
    data: Option<PathBuf>,

    /// Shares of train, val and test (TRAIN,VAL,TEST, adding up to 1), drawn with --seed;
    /// per class (stratified) for an image folder.
    #[arg(long, default_value = "0.6,0.2,0.2", value_parser = parse_split)]
    split: [f64; 3],

    /// Which models to train, comma-separated, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "baseline,cnn"
    )]
    models: Vec<ModelKind>,

    /// Augment the training part (shifts of one pixel, light noise; never flips or rotations,
    /// which would turn one stripe class into another).
    #[arg(long)]
    augment: bool,

    /// Early stopping: stop a model after this many epochs without improvement of --monitor.
    #[arg(long)]
    patience: Option<usize>,

    /// What picks the best epoch (and early stopping watches): val_acc or val_loss.
    #[arg(long, value_enum, default_value = "val_acc")]
    monitor: Monitor,
}

impl TrainArgs {
    fn settings(&self, backend: BackendChoice) -> Settings {
        Settings {
            backend,
            seed: self.seed,
            data: self.data.clone(),
            samples_per_class: self.samples_per_class,
            image_size: self.image_size,
            split: self.split,
            models: self.models.clone(),
            batch_size: self.batch_size as usize,
            epochs_baseline: self.epochs_baseline,
            epochs_cnn: self.epochs_cnn,
            lr_baseline: self.lr_baseline,
            lr_cnn: self.lr_cnn,
            augment: self.augment,
            patience: self.patience,
            monitor: self.monitor,
        }
    }
}

/// `trainer parity`.
#[derive(Args, Debug)]
struct ParityArgs {
    /// Backends to compare, comma-separated; the first is the reference.
    #[arg(long, value_delimiter = ',', default_value = "cpu,wgpu")]
    backends: Vec<String>,

    /// Folder for the report (parity/parity_report.json, .md, loss_overlay.png).
    #[arg(long, default_value = "parity_run")]
    out: PathBuf,

    #[command(flatten)]
    train: TrainArgs,

    /// Largest relative difference allowed between first-epoch step losses.
    #[arg(long, default_value_t = 1e-4)]
    loss_rtol: f64,

    /// Largest absolute difference allowed between test logits.
    #[arg(long, default_value_t = 1e-3)]
    logits_atol: f64,

    /// Smallest share of test samples whose predictions must agree.
    #[arg(long, default_value_t = 0.99)]
    min_agreement: f64,

    /// Test hook: BACKEND=EPSILON adds EPSILON to the first parameter on BACKEND.
    #[arg(long, hide = true)]
    perturb_init: Option<String>,

    /// Print only the results.
    #[arg(long)]
    quiet: bool,
}

/// `trainer bench`.
#[derive(Args, Debug)]
struct BenchArgs {
    /// Backends to measure, comma-separated: cpu, wgpu, ndarray or auto.
    #[arg(long, value_delimiter = ',', default_value = "auto")]
    backend: Vec<String>,

    /// Which model: cnn, baseline or both.
    #[arg(long, default_value = "cnn", value_parser = ["cnn", "baseline", "both"])]
    model: String,

    /// Batch sizes to measure, comma-separated, smallest first.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "8,16,32,64,128,256,512,1024"
    )]
    batch_sizes: Vec<usize>,

    /// Height and width of the images, in pixels.
    #[arg(long, default_value_t = 16)]
    image_size: usize,

    /// Timed steps per batch size.
    #[arg(long, default_value_t = 50)]
    steps: usize,

    /// Untimed steps before them (after the separately timed first step).
    #[arg(long, default_value_t = 5)]
    warmup: usize,

    /// Folder for bench/throughput.csv, .png, README.md and run_info.json.
    #[arg(long, default_value = "bench_run")]
    out: PathBuf,

    /// Memory budget for one step (e.g. 512MiB); larger batches are recorded as not fitting.
    #[arg(long, value_parser = parse_size)]
    memory_limit: Option<u64>,

    /// Print only where the results are.
    #[arg(long)]
    quiet: bool,
}

/// `trainer compare`.
#[derive(Args, Debug)]
struct CompareArgs {
    /// The earlier pack (the reference).
    run_a: PathBuf,
    /// The later pack (the notes are written into it).
    run_b: PathBuf,
}

/// `trainer predict`.
#[derive(Args, Debug)]
struct PredictArgs {
    /// The checkpoint: checkpoints/best_model.json (or .bpk, or the pack folder).
    #[arg(long)]
    checkpoint: PathBuf,

    /// Where to compute (as for the workshop run).
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,

    /// Print one JSON array instead of one line per image.
    #[arg(long)]
    json: bool,

    /// Image files (PNG, JPEG, BMP); preprocessed as the checkpoint says.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Args, Debug)]
struct EvaluateArgs {
    /// The checkpoint: checkpoints/best_model.json (or .bpk, or the pack folder).
    #[arg(long)]
    checkpoint: PathBuf,

    /// Where to compute (as for the workshop run).
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,

    /// Samples per evaluation batch.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch_size: u64,

    /// Print only the results.
    #[arg(long)]
    quiet: bool,
}

/// mimalloc keeps freed blocks for reuse: the training step allocates and frees the same
/// large buffers every step, which glibc's malloc returns to the kernel and faults back in.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

fn main() -> ExitCode {
    install_panic_hook();
    trainer::device::prepare_environment();
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let line = trainer::error::first_line(&text);
            eprintln!("trainer: error: {}", line.trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    if cli.no_gpu_kernels {
        trainer::device::gpu_kernels::disable();
    }
    if cli.no_cpu_kernels {
        trainer::device::cpu_kernels::set_enabled(false);
    }
    trainer::interrupt::install();
    match dispatch(cli, &matches) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("trainer: error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Exit code of a run whose pack was written but in which a model diverged.
const EXIT_DIVERGED: u8 = 3;

fn dispatch(cli: Cli, matches: &ArgMatches) -> Result<ExitCode> {
    let done = match cli.command {
        Some(Command::Evaluate(args)) => evaluate(args),
        Some(Command::Parity(args)) => parity(args),
        Some(Command::Bench(args)) => bench(args),
        Some(Command::Predict(args)) => predict(args),
        Some(Command::Compare(args)) => compare(args),
        Some(Command::Sweep(command)) => return sweep(command),
        Some(Command::Devices) => {
            for line in trainer::device::describe_all() {
                say(&line);
            }
            Ok(())
        }
        None => return run(cli.run, matches),
    };
    done.map(|()| ExitCode::SUCCESS)
}

fn run(args: RunArgs, matches: &ArgMatches) -> Result<ExitCode> {
    let console = Console::new(args.quiet);
    let flags = args.train.settings(args.backend);
    let settings = match &args.config {
        None => flags,
        Some(path) => config::merge(
            &flags,
            Some(config::read_file(path)?),
            |key| matches.value_source(key) == Some(ValueSource::CommandLine),
            path,
        )?,
    };
    let config = RunConfig {
        settings,
        out: args.out,
        memory_limit_bytes: args.memory_limit,
        memory_preflight: !args.no_memory_preflight,
        quiet: args.quiet,
        command: command_line(),
    };
    let report = workshop::run(config, &console)?;
    for line in workshop::console_summary(&report) {
        console.result(&line);
    }
    if report.diverged() {
        return Ok(ExitCode::from(EXIT_DIVERGED));
    }
    Ok(ExitCode::SUCCESS)
}

fn bench(args: BenchArgs) -> Result<()> {
    let console = Console::new(args.quiet);
    let mut backends = Vec::new();
    for name in &args.backend {
        let name = if name.trim() == "auto" {
            trainer::device::open(BackendChoice::Auto)?.info.backend
        } else {
            BackendName::parse(name)?
        };
        if !backends.contains(&name) {
            backends.push(name);
        }
    }
    let models = match args.model.as_str() {
        "baseline" => vec![ModelKind::Baseline],
        "both" => vec![ModelKind::Cnn, ModelKind::Baseline],
        _ => vec![ModelKind::Cnn],
    };
    let config = BenchConfig {
        backends,
        models,
        batch_sizes: args.batch_sizes,
        image_size: args.image_size,
        steps: args.steps,
        warmup: args.warmup,
        out: args.out,
        memory_limit_bytes: args.memory_limit,
        command: command_line(),
    };
    let report = trainer::cmd::bench::run(config, &console)?;
    console.result(
        &report
            .config
            .out
            .join("bench/README.md")
            .display()
            .to_string(),
    );
    Ok(())
}

fn parity(args: ParityArgs) -> Result<()> {
    let console = Console::new(args.quiet);
    let backends = args
        .backends
        .iter()
        .map(|b| BackendName::parse(b))
        .collect::<Result<Vec<_>>>()?;
    let perturb = match &args.perturb_init {
        None => None,
        Some(spec) => {
            let (backend, epsilon) = spec
                .split_once('=')
                .ok_or_else(|| TrainerError::bad_input("--perturb-init takes BACKEND=EPSILON"))?;
            let epsilon: f32 = epsilon
                .parse()
                .map_err(|_| TrainerError::bad_input("--perturb-init: EPSILON must be a number"))?;
            Some((BackendName::parse(backend)?, epsilon))
        }
    };
    let config = ParityConfig {
        backends,
        out: args.out,
        settings: args.train.settings(BackendChoice::Cpu),
        tolerances: Tolerances {
            loss_rtol: args.loss_rtol,
            logits_atol: args.logits_atol,
            min_agreement: args.min_agreement,
        },
        perturb,
        command: command_line(),
    };
    let out = config.out.clone();
    let report = parity::run(config, &console)?;
    console.result(&report.verdict);
    console.result(&out.join("parity/parity_report.md").display().to_string());
    Ok(())
}

fn compare(args: CompareArgs) -> Result<()> {
    let result = trainer::cmd::compare::compare(&args.run_a, &args.run_b)?;
    if result.differences.is_empty() {
        say("changed: nothing");
    }
    for d in &result.differences {
        say(&format!("changed: {}: {} -> {}", d.key, d.a, d.b));
    }
    if result.differences.len() > 1 {
        trainer::console::warn(&format!(
            "{} settings changed; change one variable at a time to know what each does",
            result.differences.len()
        ));
    }
    say(&format!("next: {}", result.suggestion));
    say(&result.notes_path.display().to_string());
    Ok(())
}

fn predict(args: PredictArgs) -> Result<()> {
    let (_, _, predictions) =
        inference::predict_files(&args.checkpoint, &args.images, args.backend)?;
    if args.json {
        let json = serde_json::to_string_pretty(&predictions)
            .map_err(|e| TrainerError::Serialize(e.to_string()))?;
        say(&json);
    } else {
        for p in &predictions {
            say(&format!(
                "{}: {} (confidence {:.4})",
                p.file, p.class, p.confidence
            ));
        }
    }
    Ok(())
}

fn evaluate(args: EvaluateArgs) -> Result<()> {
    let console = Console::new(args.quiet);
    let result = inference::evaluate_checkpoint(
        &args.checkpoint,
        args.backend,
        args.batch_size as usize,
        &console,
    )?;
    console.info(&result.device.summary());
    console.result(&format!("model: {}", result.meta.model_name));
    console.result(&format!("test_samples: {}", result.test.predictions.len()));
    console.result(&format!("test_accuracy: {:.3}", result.test.accuracy));
    console.result(&format!(
        "recorded_test_accuracy: {:.3}",
        result.meta.test_accuracy
    ));
    if (round4(result.test.accuracy) - result.meta.test_accuracy).abs() > 1e-9 {
        return Err(TrainerError::VerdictFailed(format!(
            "the reloaded model scores {:.4}, the checkpoint recorded {:.4}",
            result.test.accuracy, result.meta.test_accuracy
        )));
    }
    Ok(())
}

fn sweep(command: SweepCommand) -> Result<ExitCode> {
    use trainer::cmd::sweep::{self, Plan, PlanConfig, task::Outcome, task::Status};
    match command {
        SweepCommand::Plan(args) => {
            // The defaults of every setting come from the flags' own defaults.
            let defaults = Cli::try_parse_from(["trainer"])
                .map_err(|e| TrainerError::bad_input(e.to_string()))?;
            let trainer = match args.trainer_bin {
                Some(path) => path,
                None => std::env::current_exe().map_err(|e| {
                    TrainerError::io(
                        "finding the trainer binary",
                        std::path::Path::new("trainer"),
                        e,
                    )
                })?,
            };
            let config = PlanConfig {
                config: args.config,
                out: args.out,
                max_runs: args.max_runs,
                draw_seed: args.draw_seed,
                parallel: args.parallel,
                cpus_per_task: args.cpus_per_task,
                backend: args.backend,
                trainer: std::path::absolute(&trainer).unwrap_or(trainer),
                defaults: defaults.run.train.settings(defaults.run.backend),
            };
            let plan = sweep::plan::plan(&config)?;
            let dir = plan.launch.dir.display().to_string();
            say(&format!(
                "planned {} tasks (grid {}; varying: {})",
                plan.tasks.len(),
                plan.grid_size,
                if plan.varying.is_empty() {
                    "nothing".to_string()
                } else {
                    plan.varying.join(", ")
                }
            ));
            say(&format!("{dir}/plan.json"));
            say(&format!("slurm:      sbatch {dir}/slurm.sbatch"));
            say(&format!(
                "kubernetes: kubectl apply -f {dir}/k8s-job.yaml (fill in its placeholders)"
            ));
            say(&format!("here:       trainer sweep run {dir} --local"));
        }
        SweepCommand::Run(args) => {
            let console = Console::new(args.quiet);
            let plan = Plan::read(&args.dir)?;
            if args.local {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let jobs = args
                    .jobs
                    .unwrap_or((cores / plan.launch.cpus_per_task).max(1));
                let summary = sweep::local::run_all(&args.dir, &plan, jobs, &console)?;
                console.result(&format!(
                    "sweep: ran {}, {} finished earlier, {} failed",
                    summary.ran,
                    summary.skipped,
                    summary.failed.len()
                ));
                if let Some((index, log)) = summary.failed.first() {
                    return Err(TrainerError::VerdictFailed(format!(
                        "{} tasks failed (task {index:04}: see {log})",
                        summary.failed.len()
                    )));
                }
                return Ok(ExitCode::SUCCESS);
            }
            let index = task_index(args.task_index)?;
            let task = plan.task(index)?;
            let what = plan
                .varying_values(task)
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            console.info(&format!("task {index:04}/{}: {what}", plan.tasks.len()));
            match sweep::task::run(&args.dir, &plan, index, &console)? {
                Outcome::AlreadyFinished(state) => console.result(&format!(
                    "task {index:04}: {} earlier, skipped",
                    state.status.as_str()
                )),
                Outcome::Busy(holder) => {
                    console.result(&format!("task {index:04}: being run by {holder}, skipped"))
                }
                Outcome::Ran(state) => {
                    if state.status == Status::Failed {
                        return Err(TrainerError::VerdictFailed(format!(
                            "task {index:04} failed: {}",
                            state.error.unwrap_or_default()
                        )));
                    }
                    let r = state.result.as_ref();
                    console.result(&format!(
                        "task {index:04}: {} in {:.1} s, {} best val acc {:.4}",
                        state.status.as_str(),
                        state.wall_seconds,
                        r.map_or("", |r| r.model.as_str()),
                        r.map_or(0.0, |r| r.best_val_acc)
                    ));
                }
            }
        }
        SweepCommand::Collect(args) => {
            let board = sweep::collect::collect(&args.dir)?;
            for file in &board.files {
                say(&file.display().to_string());
            }
            sweep::collect::verdict(&board)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The task index: the flag, else the scheduler's variable.
fn task_index(flag: Option<usize>) -> Result<usize> {
    if let Some(index) = flag {
        return Ok(index);
    }
    for var in ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"] {
        if let Ok(text) = std::env::var(var) {
            return text.trim().parse().map_err(|_| {
                TrainerError::bad_input(format!("{var}='{text}' is not a task index"))
            });
        }
    }
    Err(TrainerError::bad_input(
        "no task index: give --task-index I (or run under Slurm or Kubernetes), or --local to run every task here",
    ))
}

/// The command line as typed, quoted where needed.
fn command_line() -> String {
    std::env::args()
        .enumerate()
        .map(|(i, a)| {
            let a = if i == 0 { "trainer".to_string() } else { a };
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                trainer::cmd::shell_quote(&a)
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A panic is a bug: one line, unless RUST_BACKTRACE asks for more. Panics on burn's worker
/// threads are left unprinted: burn catches some of them (an autotune candidate that cannot
/// launch), and one that is not caught reaches the main thread as an error.
fn install_panic_hook() {
    if std::env::var_os("RUST_BACKTRACE").is_some() {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        if std::thread::current().name() != Some("main") {
            return;
        }
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        eprintln!(
            "trainer: internal error: {} (this is a bug; set RUST_BACKTRACE=1 for details)",
            trainer::error::first_line(&message)
        );
    }));
}
