//! `trainer sweep plan`: a TOML of settings, any of them a list, becomes the grid of their
//! product (or a seeded random subset of it), written as `plan.json` with its launchers.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checksum::checksum;
use crate::config::{self, Settings};
use crate::device::BackendChoice;
use crate::error::{Result, TrainerError};
use crate::pack::{OutputLock, write_atomic};
use crate::sweep::grid::{axes, choose, refuse_idle_axes, settings_at};
use crate::sweep::{launchers, task};

pub use crate::sweep::grid::{MAX_RUNS, value_text};

/// The plan's file name inside a sweep folder.
pub const PLAN_FILE: &str = "plan.json";
const FORMAT: u32 = 1;

/// How the launchers start the tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    /// Tasks running at once (Slurm's `%P`, Kubernetes' `parallelism`).
    pub parallel: usize,
    pub cpus_per_task: usize,
    /// Whether each task asks the scheduler for a GPU (a task runs on wgpu).
    pub gpu: bool,
    /// The trainer binary the launchers call.
    pub trainer: PathBuf,
    /// The sweep folder, absolute, as every worker must see it.
    pub dir: PathBuf,
}

/// One run of the sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub index: usize,
    pub settings: Settings,
}

/// `plan.json`: index -> full settings, in a stable order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    pub format: u32,
    /// FNV-1a of `varying` and `tasks`: a plan edited by hand no longer matches it.
    pub checksum: String,
    /// The settings that take more than one value, in grid order (the last varies fastest).
    pub varying: Vec<String>,
    /// Runs in the full grid (before `--max-runs`).
    pub grid_size: usize,
    pub launch: Launch,
    pub tasks: Vec<Task>,
}

/// What `trainer sweep plan` is given.
#[derive(Clone, Debug)]
pub struct PlanConfig {
    pub config: PathBuf,
    pub out: PathBuf,
    pub max_runs: Option<usize>,
    /// Seed of the random subset drawn by `max_runs` (not of the runs themselves).
    pub draw_seed: u64,
    pub parallel: usize,
    pub cpus_per_task: usize,
    /// Overrides the file's `backend` for every task.
    pub backend: Option<BackendChoice>,
    pub trainer: PathBuf,
    /// The defaults of every setting the file leaves out.
    pub defaults: Settings,
}

impl Plan {
    /// Reads `DIR/plan.json`; a folder without one is not a sweep.
    pub fn read(dir: &Path) -> Result<Plan> {
        let path = dir.join(PLAN_FILE);
        if !dir.is_dir() {
            return Err(TrainerError::bad_input(format!(
                "'{}' is not a folder",
                dir.display()
            )));
        }
        let text = std::fs::read_to_string(&path).map_err(|_| {
            TrainerError::bad_input(format!(
                "'{}' is not a sweep (no {PLAN_FILE}; make one with trainer sweep plan)",
                dir.display()
            ))
        })?;
        let plan: Plan = serde_json::from_str(&text).map_err(|e| {
            TrainerError::bad_input(format!(
                "'{}' is not a valid plan: {}",
                path.display(),
                crate::error::first_line(&e.to_string())
            ))
        })?;
        if plan.checksum != plan.compute_checksum()? {
            return Err(TrainerError::bad_input(format!(
                "'{}' was edited after it was planned (checksum mismatch); plan the sweep again into a new folder",
                path.display()
            )));
        }
        Ok(plan)
    }

    fn compute_checksum(&self) -> Result<String> {
        let text = serde_json::to_string(&(&self.varying, &self.tasks))
            .map_err(|e| TrainerError::Serialize(e.to_string()))?;
        Ok(checksum(text.as_bytes()))
    }

    /// The task with this index, or one line saying the plan's range.
    pub fn task(&self, index: usize) -> Result<&Task> {
        self.tasks.get(index).ok_or_else(|| {
            TrainerError::bad_input(format!(
                "task index {index} is outside the plan (0 to {})",
                self.tasks.len().saturating_sub(1)
            ))
        })
    }

    /// The value of each varying setting for a task, as text (`lr_cnn=0.003`).
    pub fn varying_values(&self, task: &Task) -> Vec<(String, String)> {
        let json = serde_json::to_value(&task.settings).unwrap_or(Value::Null);
        self.varying
            .iter()
            .map(|key| (key.clone(), value_text(&json[key.as_str()])))
            .collect()
    }
}

/// Plans the sweep: checks every task's settings, writes plan.json and the launchers.
pub fn plan(config: &PlanConfig) -> Result<Plan> {
    let dir = std::path::absolute(&config.out)
        .map_err(|e| TrainerError::io("resolving", &config.out, e))?;
    check_counts(config)?;
    let file = config::ConfigFile::read(&config.config)?;
    let base_dir = config
        .config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    // Every refusal names the file: "sweep config 'grid.toml': ...".
    let named = |e: TrainerError| match e {
        TrainerError::BadInput(m) => TrainerError::BadInput(m.replacen(
            "sweep config:",
            &format!("sweep config '{}':", config.config.display()),
            1,
        )),
        other => other,
    };
    let axes = axes(file, &config.defaults, &base_dir, config.backend).map_err(named)?;
    let grid_size = axes
        .iter()
        .try_fold(1usize, |n, a| n.checked_mul(a.values.len()));
    let chosen = choose(grid_size, config.max_runs, config.draw_seed)?;
    let grid_size = grid_size.unwrap_or(usize::MAX);
    let defaults = serde_json::to_value(&config.defaults)
        .map_err(|e| TrainerError::Serialize(e.to_string()))?;
    let mut tasks = Vec::with_capacity(chosen.len());
    for (index, point) in chosen.into_iter().enumerate() {
        let settings = settings_at(&axes, point, &defaults, index).map_err(named)?;
        if let Some(folder) = &settings.data {
            crate::pack::check_outside(&dir, folder).map_err(|_| {
                TrainerError::bad_input(format!(
                    "sweep folder '{}' is inside the image folder '{}': its packs would be read as training data; plan into a folder outside it",
                    dir.display(),
                    folder.display()
                ))
            })?;
        }
        tasks.push(Task { index, settings });
    }
    let varying: Vec<String> = axes
        .iter()
        .filter(|a| a.values.len() > 1)
        .map(|a| a.key.clone())
        .collect();
    let settings: Vec<&Settings> = tasks.iter().map(|t| &t.settings).collect();
    refuse_idle_axes(&varying, &settings).map_err(named)?;
    let mut plan = Plan {
        format: FORMAT,
        checksum: String::new(),
        varying,
        grid_size,
        launch: Launch {
            parallel: config.parallel,
            cpus_per_task: config.cpus_per_task,
            gpu: tasks
                .iter()
                .any(|t| t.settings.backend == BackendChoice::Wgpu),
            trainer: config.trainer.clone(),
            dir: dir.clone(),
        },
        tasks,
    };
    plan.checksum = plan.compute_checksum()?;
    write(&dir, &plan)?;
    Ok(plan)
}

fn check_counts(config: &PlanConfig) -> Result<()> {
    if let Some(n) = config.max_runs
        && !(1..=MAX_RUNS).contains(&n)
    {
        return Err(TrainerError::bad_input(format!(
            "--max-runs must be between 1 and {MAX_RUNS}, got {n}"
        )));
    }
    if config.parallel == 0 || config.cpus_per_task == 0 {
        return Err(TrainerError::bad_input(
            "--parallel and --cpus-per-task must be at least 1",
        ));
    }
    Ok(())
}

/// Writes the plan and its launchers into `dir`. A folder that is not a sweep, or a sweep
/// whose runs have started under another plan, is left as it is. The folder is claimed with
/// the packs' lock ([`OutputLock`]), so two plans never write it at once; it is not staged
/// and swapped like a pack, because it keeps the runs that a plan of the same grid resumes
/// (plan.json, not the pack marker, says it is a sweep).
fn write(dir: &Path, plan: &Plan) -> Result<()> {
    let _lock = OutputLock::acquire(dir)?;
    if dir.exists() && !dir.is_dir() {
        return Err(TrainerError::bad_input(format!(
            "--out '{}' is a file, not a folder",
            dir.display()
        )));
    }
    if dir.join(PLAN_FILE).is_file() {
        let earlier = Plan::read(dir).ok();
        let same = earlier
            .as_ref()
            .is_some_and(|p| p.checksum == plan.checksum);
        if !same && task::any_started(dir) {
            return Err(TrainerError::bad_input(format!(
                "'{}' holds a sweep whose runs have started under another plan; choose another --out",
                dir.display()
            )));
        }
    } else if std::fs::read_dir(dir).is_ok_and(|mut e| e.next().is_some()) {
        return Err(TrainerError::bad_input(format!(
            "--out '{}' exists and is not a sweep folder; choose a new folder",
            dir.display()
        )));
    }
    for sub in ["logs", task::RUNS_DIR, task::STATE_DIR] {
        let path = dir.join(sub);
        std::fs::create_dir_all(&path)
            .map_err(|e| TrainerError::io("creating folder", &path, e))?;
    }
    let json =
        serde_json::to_string_pretty(plan).map_err(|e| TrainerError::Serialize(e.to_string()))?;
    write_atomic(&dir.join(PLAN_FILE), json + "\n")?;
    write_atomic(&dir.join(launchers::SLURM_FILE), launchers::slurm(plan))?;
    write_atomic(&dir.join(launchers::K8S_FILE), launchers::kubernetes(plan))?;
    Ok(())
}
