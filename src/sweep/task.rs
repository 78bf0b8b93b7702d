//! One task of a sweep, run by index into `runs/NNNN/`. Idempotent: a finished task (its
//! `state/NNNN.json`) is skipped; a task killed mid-run left no state and is redone from
//! scratch; a claim file (`state/NNNN.claim`: host, process, heartbeat) keeps two workers
//! given the same index from both running it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::Monitor;
use crate::console::Console;
use crate::error::{Result, TrainerError};
use crate::pack::write_atomic;
use crate::report::{Report, RunConfig};
use crate::sweep::plan::Plan;

pub const RUNS_DIR: &str = "runs";
pub const STATE_DIR: &str = "state";
/// How often a running task touches its claim.
const HEARTBEAT: Duration = Duration::from_secs(20);
/// A claim from another host not touched for this long belongs to a worker that died.
const CLAIM_STALE: Duration = Duration::from_secs(120);

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Trained and evaluated; its pack is in `runs/NNNN/`.
    Done,
    /// The pack was written but a model diverged (a result: the settings do not train).
    Diverged,
    /// The run failed; `error` says why.
    Failed,
}

impl Status {
    /// Whether a task that ended so is finished (a failed one is run again).
    pub fn is_finished(self) -> bool {
        self != Status::Failed
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Done => "done",
            Status::Diverged => "diverged",
            Status::Failed => "failed",
        }
    }
}

/// The model a task's run chose (by validation unless the task set `select_by = "test"`),
/// with the figures of its kept epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub model: String,
    /// Validation accuracy of the kept epoch.
    #[serde(alias = "best_val_acc")]
    pub val_acc: f64,
    /// Validation loss of the kept epoch (state files of older versions held the lowest of
    /// all epochs here).
    #[serde(alias = "best_val_loss")]
    pub val_loss: f64,
    pub best_epoch: usize,
    /// Test accuracy of the chosen model (shown, never used to rank).
    pub test_acc: f64,
    /// What chose the kept epoch, and ranks the task.
    #[serde(default = "default_monitor")]
    pub monitor: Monitor,
}

fn default_monitor() -> Monitor {
    Monitor::ValAcc
}

/// `state/NNNN.json`, written once a task has ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskState {
    pub index: usize,
    pub plan_checksum: String,
    pub status: Status,
    pub error: Option<String>,
    pub result: Option<TaskResult>,
    pub wall_seconds: f64,
    pub host: String,
    pub backend: Option<String>,
    pub device: Option<String>,
}

/// What `run` did.
#[derive(Debug)]
pub enum Outcome {
    Ran(TaskState),
    /// Finished earlier; nothing was done.
    AlreadyFinished(TaskState),
    /// Another worker holds the task (`host:pid`).
    Busy(String),
}

pub fn run_dir(dir: &Path, index: usize) -> PathBuf {
    dir.join(RUNS_DIR).join(format!("{index:04}"))
}

fn state_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(STATE_DIR).join(format!("{index:04}.json"))
}

/// The state of a task that ended under this plan, if it did.
pub fn read_state(dir: &Path, plan: &Plan, index: usize) -> Option<TaskState> {
    let text = fs::read_to_string(state_path(dir, index)).ok()?;
    let state: TaskState = serde_json::from_str(&text).ok()?;
    (state.plan_checksum == plan.checksum && state.index == index).then_some(state)
}

/// Whether any task of the folder has started (a state, a claim or a pack).
pub fn any_started(dir: &Path) -> bool {
    [RUNS_DIR, STATE_DIR]
        .iter()
        .any(|sub| fs::read_dir(dir.join(sub)).is_ok_and(|mut e| e.next().is_some()))
}

/// Runs task `index` unless it finished (done or diverged) or another worker holds it. A
/// failed task is run again. `run_pack` is the workshop run (the command's), which writes
/// the task's pack.
pub fn run(
    dir: &Path,
    plan: &Plan,
    index: usize,
    console: &Console,
    run_pack: impl FnOnce(RunConfig, &Console) -> Result<Report>,
) -> Result<Outcome> {
    let task = plan.task(index)?;
    if let Some(state) = read_state(dir, plan, index)
        && state.status.is_finished()
    {
        return Ok(Outcome::AlreadyFinished(state));
    }
    let _claim = match Claim::take(&dir.join(STATE_DIR).join(format!("{index:04}.claim")))? {
        Ok(claim) => claim,
        Err(holder) => return Ok(Outcome::Busy(holder)),
    };
    let started = Instant::now();
    let config = RunConfig {
        settings: task.settings.clone(),
        out: run_dir(dir, index),
        memory_limit_bytes: None,
        memory_preflight: true,
        quiet: true,
        command: format!("trainer sweep run {} --task-index {index}", dir.display()),
        // A task killed or requeued after an epoch goes on from its last epoch.
        resume: crate::pack::run_state::RunState::resumable(&run_dir(dir, index)),
        init_from: None,
        freeze_features: false,
        allow_test_overlap: false,
    };
    let outcome = run_pack(config, console);
    let mut state = TaskState {
        index,
        plan_checksum: plan.checksum.clone(),
        status: Status::Failed,
        error: None,
        result: None,
        wall_seconds: started.elapsed().as_secs_f64(),
        host: hostname(),
        backend: None,
        device: None,
    };
    match outcome {
        // Stopped by an interrupt: unfinished, its state kept for the next run to resume.
        Ok(report) if report.stopped.is_some() => {
            return Err(TrainerError::InterruptedKept(format!(
                "{}: the task's pack and state are kept, and its next run goes on from there",
                report.stopped.unwrap_or_default()
            )));
        }
        Ok(report) => {
            // A failed overfit check fails the task, as it fails a run (exit 1).
            state.error = report.overfit_failure();
            state.status = if state.error.is_some() {
                Status::Failed
            } else if report.diverged() {
                Status::Diverged
            } else {
                Status::Done
            };
            state.backend = Some(report.device.backend.as_str().to_string());
            state.device = Some(report.device.label());
            state.result = Some(chosen(&report, task.settings.monitor));
        }
        // Not an outcome: the task stays unfinished and is redone by the next run.
        Err(TrainerError::Interrupted) => return Err(TrainerError::Interrupted),
        Err(e) => state.error = Some(crate::error::first_line(&e.to_string())),
    }
    let json =
        serde_json::to_string_pretty(&state).map_err(|e| TrainerError::Serialize(e.to_string()))?;
    write_atomic(&state_path(dir, index), json + "\n")?;
    Ok(Outcome::Ran(state))
}

/// The model the task's pack chose, with its kept epoch's figures: the leaderboard shows
/// what the pack says.
fn chosen(report: &Report, monitor: Monitor) -> TaskResult {
    let m = report.best();
    TaskResult {
        model: m.spec.slug().to_string(),
        val_acc: m.trained.best_val_acc,
        val_loss: m.trained.best_val_loss,
        best_epoch: m.trained.best_epoch,
        test_acc: m.test.accuracy,
        monitor,
    }
}

/// This machine's name, as claims and states record it.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

/// A task's claim: created exclusively, touched while the task runs, removed when it ends.
struct Claim {
    path: PathBuf,
    stop: Arc<AtomicBool>,
}

impl Claim {
    /// Takes the claim, or returns who holds it. A claim whose process is gone (this host),
    /// or that was not touched for [`CLAIM_STALE`] (another host), is taken over.
    fn take(path: &Path) -> Result<std::result::Result<Claim, String>> {
        let me = format!("{} {}", hostname(), std::process::id());
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut file) => {
                    use std::io::Write;
                    writeln!(file, "{me}").map_err(|e| TrainerError::io("writing", path, e))?;
                    crate::interrupt::register_cleanup(path.to_path_buf());
                    return Ok(Ok(Claim::hold(path)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if let Some(holder) = live_holder(path) {
                        return Ok(Err(holder));
                    }
                    let _ = fs::remove_file(path);
                }
                Err(e) => return Err(TrainerError::io("creating claim", path, e)),
            }
        }
        Ok(Err("another worker".into()))
    }

    fn hold(path: &Path) -> Claim {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, file) = (stop.clone(), path.to_path_buf());
        std::thread::spawn(move || {
            let mut waited = Duration::ZERO;
            while !flag.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(250));
                waited += Duration::from_millis(250);
                if waited >= HEARTBEAT {
                    waited = Duration::ZERO;
                    if let Ok(f) = fs::File::options().append(true).open(&file) {
                        let _ = f.set_modified(SystemTime::now());
                    }
                }
            }
        });
        Claim {
            path: path.to_path_buf(),
            stop,
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = fs::remove_file(&self.path);
        crate::interrupt::unregister_cleanup(&self.path);
    }
}

/// `host:pid` of a claim's holder while it is alive.
fn live_holder(path: &Path) -> Option<String> {
    let age = fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok());
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut parts = text.split_whitespace();
    let (Some(host), Some(Ok(pid))) = (parts.next(), parts.next().map(str::parse::<u32>)) else {
        // Just created and not yet written, or garbage left by a crash.
        return age
            .is_some_and(|a| a < Duration::from_secs(10))
            .then(|| "another worker".into());
    };
    let alive = if host == hostname() {
        crate::pack::process_alive(pid)
    } else {
        age.is_some_and(|age| age < CLAIM_STALE)
    };
    alive.then(|| format!("{host}:{pid}"))
}
