//! `trainer sweep run DIR --local --jobs J`: every unfinished task on this machine, J at a
//! time, each in its own `trainer sweep run DIR --task-index I` process (as a scheduler would
//! start it), with one progress bar. Each task's output goes to `logs/task-NNNN.log`.

use std::io::IsTerminal;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

use crate::cmd::sweep::plan::Plan;
use crate::cmd::sweep::task;
use crate::console::Console;
use crate::error::{Result, TrainerError};

/// What a local sweep did.
#[derive(Debug, Default)]
pub struct LocalSummary {
    pub ran: usize,
    pub skipped: usize,
    /// `(index, log file)` of the tasks that failed.
    pub failed: Vec<(usize, String)>,
}

/// Runs every unfinished task of the plan, `jobs` at a time.
pub fn run_all(dir: &Path, plan: &Plan, jobs: usize, console: &Console) -> Result<LocalSummary> {
    if jobs == 0 {
        return Err(TrainerError::bad_input("--jobs must be at least 1"));
    }
    let exe = std::env::current_exe()
        .map_err(|e| TrainerError::io("finding the trainer binary", Path::new("trainer"), e))?;
    let pending: Vec<usize> = plan
        .tasks
        .iter()
        .map(|t| t.index)
        .filter(|&i| task::read_state(dir, plan, i).is_none_or(|s| !s.status.is_finished()))
        .collect();
    let skipped = plan.tasks.len() - pending.len();
    console.info(&format!(
        "sweep: {} tasks, {skipped} finished earlier, running {} with {jobs} at a time",
        plan.tasks.len(),
        pending.len()
    ));
    let bar = progress_bar(pending.len() as u64, console);
    let next = AtomicUsize::new(0);
    let summary = Mutex::new(LocalSummary {
        skipped,
        ..LocalSummary::default()
    });
    let threads = std::env::var("RAYON_NUM_THREADS")
        .unwrap_or_else(|_| plan.launch.cpus_per_task.to_string());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(pending.len()) {
            scope.spawn(|| {
                loop {
                    let slot = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&index) = pending.get(slot) else {
                        break;
                    };
                    if crate::interrupt::requested() {
                        break;
                    }
                    let log = dir.join("logs").join(format!("task-{index:04}.log"));
                    let ok = std::fs::File::create(&log)
                        .and_then(|out| {
                            let err = out.try_clone()?;
                            Command::new(&exe)
                                .args(["sweep", "run"])
                                .arg(dir)
                                .args(["--task-index", &index.to_string()])
                                .env("RAYON_NUM_THREADS", &threads)
                                .stdin(Stdio::null())
                                .stdout(out)
                                .stderr(err)
                                .status()
                        })
                        .is_ok_and(|s| s.success());
                    let line = format!(
                        "task {index:04}: {}",
                        if ok {
                            "finished"
                        } else {
                            "FAILED (see its log)"
                        }
                    );
                    if let Ok(mut s) = summary.lock() {
                        s.ran += 1;
                        if !ok {
                            s.failed.push((index, log.display().to_string()));
                        }
                    }
                    match &bar {
                        Some(bar) => {
                            bar.inc(1);
                            if !ok {
                                bar.suspend(|| console.warn(&line));
                            }
                        }
                        None => console.info(&line),
                    }
                }
            });
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if crate::interrupt::requested() {
        return Err(TrainerError::Interrupted);
    }
    summary
        .into_inner()
        .map_err(|_| TrainerError::bad_input("a sweep worker thread panicked"))
}

fn progress_bar(len: u64, console: &Console) -> Option<ProgressBar> {
    if console.is_quiet() || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("sweep [{bar:30}] {pos}/{len} tasks {elapsed} (eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(bar)
}
