//! `trainer sweep plan`: a TOML of settings, any of them a list, becomes the grid of their
//! product (or a seeded random subset of it), written as `plan.json` with its launchers.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checksum::checksum;
use crate::cmd::sweep::{launchers, task};
use crate::config::{self, Settings};
use crate::device::BackendChoice;
use crate::error::{Result, TrainerError};
use crate::pack::{OutputLock, write_atomic};

/// The plan's file name inside a sweep folder.
pub const PLAN_FILE: &str = "plan.json";
/// The largest grid planned without `--max-runs`, and the most runs `--max-runs` may ask for.
pub const MAX_RUNS: usize = 10_000;
/// Settings whose one value is already a list: a sweep over them is a list of lists.
const LIST_VALUED: [&str; 3] = ["split", "models", "cnn_widths"];
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

/// One setting's values.
struct Axis {
    key: String,
    values: Vec<Value>,
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

/// A setting's value as one short text: numbers and strings bare, lists comma-separated.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "none".to_string(),
        Value::Array(items) => items.iter().map(value_text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
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
    refuse_idle_axes(&varying, &tasks).map_err(named)?;
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

/// The file's settings as axes, in key order; a setting the file leaves out is not an axis.
fn axes(
    file: config::ConfigFile,
    defaults: &Settings,
    base_dir: &Path,
    backend: Option<BackendChoice>,
) -> Result<Vec<Axis>> {
    let known =
        serde_json::to_value(defaults).map_err(|e| TrainerError::Serialize(e.to_string()))?;
    let mut axes = Vec::new();
    let lines: Vec<Option<usize>> = file.values.keys().map(|k| file.line_of(k)).collect();
    for ((key, value), line) in file.values.into_iter().zip(lines) {
        if known.get(&key).is_none() {
            let names: Vec<&str> = known
                .as_object()
                .map(|m| m.keys().map(String::as_str).collect())
                .unwrap_or_default();
            return Err(TrainerError::bad_input(format!(
                "sweep config: unknown setting '{key}' (known: {})",
                names.join(", ")
            )));
        }
        let is_list = match &value {
            Value::Array(items) if LIST_VALUED.contains(&key.as_str()) => {
                items.is_empty() || items.iter().all(Value::is_array)
            }
            Value::Array(_) => true,
            _ => false,
        };
        let mut values = match value {
            Value::Array(items) if is_list => items,
            single => vec![single],
        };
        if values.is_empty() {
            return Err(TrainerError::bad_input(format!(
                "sweep config: '{key}' is an empty list; give at least one value"
            )));
        }
        if let Some(twice) = values
            .iter()
            .enumerate()
            .find(|(i, v)| values[..*i].contains(v))
            .map(|(_, v)| v)
        {
            return Err(TrainerError::bad_input(format!(
                "sweep config: '{key}' lists {} twice; each value once (two identical tasks would only repeat each other)",
                value_text(twice)
            )));
        }
        if key == "data" {
            for v in &mut values {
                if let Value::String(s) = v {
                    let path = base_dir.join(&*s);
                    let path = std::path::absolute(&path).unwrap_or(path);
                    *s = path.display().to_string();
                }
            }
        }
        check_each(&known, &key, &values, line)?;
        axes.push(Axis { key, values });
    }
    if let Some(choice) = backend {
        let value =
            serde_json::to_value(choice).map_err(|e| TrainerError::Serialize(e.to_string()))?;
        axes.retain(|a| a.key != "backend");
        axes.push(Axis {
            key: "backend".into(),
            values: vec![value],
        });
        axes.sort_by(|a, b| a.key.cmp(&b.key));
    }
    Ok(axes)
}

/// The grid points to run: all of them, or `max_runs` drawn with `seed`, in grid order.
fn choose(grid_size: Option<usize>, max_runs: Option<usize>, seed: u64) -> Result<Vec<usize>> {
    match (grid_size, max_runs) {
        (Some(n), None) if n <= MAX_RUNS => Ok((0..n).collect()),
        (Some(n), Some(m)) if m >= n => Ok((0..n).collect()),
        (n, None) => Err(TrainerError::bad_input(format!(
            "the grid has {} runs, more than {MAX_RUNS}; give --max-runs N to draw a random subset",
            n.map(|n| n.to_string())
                .unwrap_or_else(|| "too many".into())
        ))),
        (n, Some(m)) => {
            let n = n.unwrap_or(usize::MAX) as u64;
            let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
            let mut picked = std::collections::BTreeSet::new();
            while picked.len() < m {
                state = splitmix64(state);
                picked.insert((state % n) as usize);
            }
            Ok(picked.into_iter().collect())
        }
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A swept key that changes no task (`cnn_widths` where no task trains the CNN, `color`
/// where every task trains on the stripes) would only repeat the same runs: refused.
fn refuse_idle_axes(varying: &[String], tasks: &[Task]) -> Result<()> {
    for key in varying {
        let idle = match key.as_str() {
            "cnn_widths" | "head" | "hidden" | "dropout" => !tasks
                .iter()
                .any(|t| t.settings.models.contains(&crate::model::ModelKind::Cnn)),
            "color" => tasks.iter().all(|t| t.settings.data.is_none()),
            _ => false,
        };
        if idle {
            return Err(TrainerError::bad_input(format!(
                "sweep config: '{key}' varies but changes no task ({}): the tasks would only repeat each other",
                if key == "color" {
                    "every task trains on the gray stripe images"
                } else {
                    "no task trains the CNN"
                }
            )));
        }
    }
    Ok(())
}

/// Each value of a swept key on its own against the settings, so that a bad one is named
/// with its key and line rather than found later in a task.
fn check_each(known: &Value, key: &str, values: &[Value], line: Option<usize>) -> Result<()> {
    for value in values {
        let mut one = known.clone();
        one[key] = value.clone();
        if let Err(e) = serde_json::from_value::<Settings>(one) {
            return Err(TrainerError::bad_input(format!(
                "sweep config:{} '{key}' = {value}: {}",
                line.map(|l| format!(" line {l}:")).unwrap_or_default(),
                crate::error::first_line(&e.to_string())
            )));
        }
    }
    Ok(())
}

/// The settings at one grid point (mixed radix, the last axis fastest), checked.
fn settings_at(axes: &[Axis], point: usize, defaults: &Value, index: usize) -> Result<Settings> {
    let mut json = defaults.clone();
    let mut rest = point;
    let mut chosen = Vec::new();
    for axis in axes.iter().rev() {
        let value = axis.values[rest % axis.values.len()].clone();
        rest /= axis.values.len();
        if axis.values.len() > 1 {
            chosen.push(format!("{}={}", axis.key, value_text(&value)));
        }
        json[axis.key.as_str()] = value;
    }
    chosen.reverse();
    let what = if chosen.is_empty() {
        format!("task {index}")
    } else {
        format!("task {index} ({})", chosen.join(", "))
    };
    let settings: Settings = serde_json::from_value(json).map_err(|e| {
        TrainerError::bad_input(format!(
            "sweep config: {what}: {}",
            crate::error::first_line(&e.to_string())
        ))
    })?;
    settings
        .validate()
        .map_err(|e| TrainerError::bad_input(format!("sweep config: {what}: {e}")))?;
    if let Some(folder) = &settings.data
        && !folder.is_dir()
    {
        return Err(TrainerError::bad_input(format!(
            "sweep config: {what}: the image folder '{}' does not exist",
            folder.display()
        )));
    }
    Ok(settings)
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
