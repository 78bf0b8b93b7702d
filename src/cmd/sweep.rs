//! `trainer sweep plan | run | collect`: the flags read, the sweep's library
//! ([`crate::sweep`]) called, and what it did printed.

use std::path::Path;

use crate::cli::{SweepCollectArgs, SweepCommand, SweepPlanArgs, SweepRunArgs};
use crate::config::Settings;
use crate::console::{Console, say};
use crate::error::{Result, TrainerError};
use crate::sweep::task::{self, Outcome, Status};
use crate::sweep::{Plan, PlanConfig, collect, local, plan};

/// `trainer sweep plan | run | collect`.
pub fn main(command: SweepCommand) -> Result<()> {
    match command {
        SweepCommand::Plan(args) => plan_main(args),
        SweepCommand::Run(args) => run_main(args),
        SweepCommand::Collect(args) => collect_main(args),
    }
}

/// Plans the grid, the settings the file leaves out being the workshop's defaults, and says
/// how to launch it.
fn plan_main(args: SweepPlanArgs) -> Result<()> {
    let trainer = match args.trainer_bin {
        Some(path) => find_binary(&path)?,
        None => std::env::current_exe()
            .map_err(|e| TrainerError::io("finding the trainer binary", Path::new("trainer"), e))?,
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
        defaults: Settings::default(),
    };
    let plan = plan::plan(&config)?;
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
    Ok(())
}

/// Runs every unfinished task here (`--local`), or the one task of this worker.
fn run_main(args: SweepRunArgs) -> Result<()> {
    let console = Console::new(args.quiet);
    if !args.devices.is_empty() && !args.local {
        return Err(TrainerError::bad_input(
            "--devices spreads a --local sweep over adapters; for one task give --device N",
        ));
    }
    let plan = Plan::read(&args.dir)?;
    if args.local {
        return run_local(&args, &plan, &console);
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
    match task::run(&args.dir, &plan, index, &console, crate::workshop::run)? {
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
                r.map_or(0.0, |r| r.val_acc)
            ));
        }
    }
    Ok(())
}

/// `sweep run --local`: every unfinished task here, `--jobs` at a time over `--devices`,
/// and one line of what happened.
fn run_local(args: &SweepRunArgs, plan: &Plan, console: &Console) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = args
        .jobs
        .unwrap_or((cores / plan.launch.cpus_per_task).max(1));
    for &index in &args.devices {
        crate::device::check_adapter(index, "--devices")?;
    }
    if plan.tasks.iter().all(|t| {
        t.settings.backend == crate::device::BackendChoice::Cpu
            || t.settings.backend == crate::device::BackendChoice::Ndarray
    }) && !args.devices.is_empty()
    {
        console.warn("--devices has no effect: every task of this plan runs on a CPU backend");
    }
    let summary = local::run_all(&args.dir, plan, jobs, &args.devices, console)?;
    console.result(
        &(format!(
            "sweep: ran {}, {} finished earlier, {} failed, {} interrupted, {} busy elsewhere",
            summary.ran,
            summary.skipped,
            summary.failed.len(),
            summary.interrupted.len(),
            summary.busy.len()
        ) + &match summary.not_started {
            0 => String::new(),
            n => format!(", {n} not started"),
        }),
    );
    if !summary.busy.is_empty() {
        console.warn(&format!(
            "{} task(s) held by another worker ({}) are not finished here; `trainer sweep collect` lists them as missing until that worker finishes them",
            summary.busy.len(),
            summary
                .busy
                .iter()
                .map(|i| format!("{i:04}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if crate::interrupt::requested() {
        return Err(TrainerError::InterruptedKept(format!(
            "the sweep stopped: {} task(s) interrupted and {} not started are unfinished ({}), every finished one kept; `trainer sweep run {} --local` resumes",
            summary.interrupted.len(),
            summary.not_started,
            summary
                .interrupted
                .iter()
                .map(|i| format!("{i:04}"))
                .collect::<Vec<_>>()
                .join(", "),
            args.dir.display()
        )));
    }
    if let Some((index, log)) = summary.failed.first() {
        return Err(TrainerError::VerdictFailed(format!(
            "{} tasks failed (task {index:04}: see {log})",
            summary.failed.len()
        )));
    }
    Ok(())
}

/// Ranks what finished; fails when tasks failed or are missing.
fn collect_main(args: SweepCollectArgs) -> Result<()> {
    let board = collect::collect(&args.dir)?;
    for file in &board.files {
        say(&file.display().to_string());
    }
    collect::verdict(&board)
}

/// `--trainer-bin`: a path as given (made absolute), or a bare name looked up on PATH as a
/// shell would; it must be a file here (the launchers run it on every node).
fn find_binary(path: &Path) -> Result<std::path::PathBuf> {
    let bare = path.components().count() == 1 && !path.as_os_str().is_empty();
    let found = if bare && !path.exists() {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(path))
                .find(|candidate| candidate.is_file())
        })
    } else {
        Some(path.to_path_buf())
    };
    match found {
        Some(file) if file.is_file() => Ok(std::path::absolute(&file).unwrap_or(file)),
        _ => Err(TrainerError::bad_input(format!(
            "--trainer-bin '{}' is not a file{}",
            path.display(),
            if bare { " here or on PATH" } else { "" }
        ))),
    }
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
