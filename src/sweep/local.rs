//! `trainer sweep run DIR --local --jobs J`: every unfinished task on this machine, J at a
//! time, each in its own `trainer sweep run DIR --task-index I` process (as a scheduler would
//! start it), with one progress bar. Each task's output goes to `logs/task-NNNN.log`. Ctrl-C
//! is passed on to the running tasks (see [`crate::interrupt`]); they stop after their
//! step and stay unfinished, so the next `--local` runs them again.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

use crate::console::Console;
use crate::error::{Result, TrainerError};
use crate::sweep::plan::Plan;
use crate::sweep::task;

/// What a local sweep did.
#[derive(Debug, Default)]
pub struct LocalSummary {
    /// Tasks that ran to their end here (finished or failed).
    pub ran: usize,
    pub skipped: usize,
    /// `(index, log file)` of the tasks that failed.
    pub failed: Vec<(usize, String)>,
    /// Tasks stopped by an interrupt: unfinished, run again by the next `--local`.
    pub interrupted: Vec<usize>,
    /// Tasks another worker held (a claim by a live process): not run, not finished.
    pub busy: Vec<usize>,
    /// Tasks an interrupt kept from starting.
    pub not_started: usize,
}

/// How one task's process ended, as the sweep reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TaskEnd {
    /// Done or diverged: its state is written.
    Finished,
    Failed,
    /// Stopped by an interrupt; it stays unfinished and runs again on resume.
    Interrupted,
    /// Another worker holds it.
    Busy,
}

impl TaskEnd {
    fn line(self, index: usize) -> String {
        let what = match self {
            TaskEnd::Finished => "finished",
            TaskEnd::Failed => "FAILED (see its log)",
            TaskEnd::Interrupted => "interrupted (unfinished: the next run --local runs it again)",
            TaskEnd::Busy => "busy: another worker holds it (not run here)",
        };
        format!("task {index:04}: {what}")
    }
}

/// Runs every unfinished task of the plan, `jobs` at a time. An interrupt is passed on to
/// the running tasks, which stop after their step; the sweep waits for them and reports them
/// as interrupted (exit 130).
pub fn run_all(
    dir: &Path,
    plan: &Plan,
    jobs: usize,
    devices: &[usize],
    console: &Console,
) -> Result<LocalSummary> {
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
    let launch = TaskLaunch {
        exe: &exe,
        dir,
        threads: std::env::var("RAYON_NUM_THREADS")
            .unwrap_or_else(|_| plan.launch.cpus_per_task.to_string()),
    };
    std::thread::scope(|scope| {
        for worker in 0..jobs.min(pending.len()) {
            // Each worker keeps one adapter for all its tasks.
            let device = (!devices.is_empty()).then(|| devices[worker % devices.len()]);
            let (launch, next, summary, pending, bar) = (&launch, &next, &summary, &pending, &bar);
            scope.spawn(move || {
                loop {
                    let slot = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&index) = pending.get(slot) else {
                        break;
                    };
                    if crate::interrupt::requested() {
                        break;
                    }
                    let (end, log) = launch.run(plan, index, device);
                    if let Ok(mut s) = summary.lock() {
                        match end {
                            TaskEnd::Finished => s.ran += 1,
                            TaskEnd::Failed => {
                                s.ran += 1;
                                s.failed.push((index, log.display().to_string()));
                            }
                            TaskEnd::Interrupted => s.interrupted.push(index),
                            TaskEnd::Busy => s.busy.push(index),
                        }
                    }
                    let line = end.line(index);
                    match &bar {
                        Some(bar) => {
                            bar.inc(1);
                            if end != TaskEnd::Finished {
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
    let mut summary = summary
        .into_inner()
        .map_err(|_| TrainerError::bad_input("a sweep worker thread panicked"))?;
    summary.not_started =
        pending.len() - summary.ran - summary.interrupted.len() - summary.busy.len();
    Ok(summary)
}

/// What starting a task's process needs.
struct TaskLaunch<'a> {
    exe: &'a Path,
    dir: &'a Path,
    /// The CPU backend's threads per task.
    threads: String,
}

impl TaskLaunch<'_> {
    /// Runs task `index` as its own `trainer sweep run DIR --task-index I` process (its own
    /// process group, its output in `logs/task-NNNN.log`), passing interrupts on, and says
    /// how it ended.
    fn run(&self, plan: &Plan, index: usize, device: Option<usize>) -> (TaskEnd, PathBuf) {
        let log = self.dir.join("logs").join(format!("task-{index:04}.log"));
        let status = std::fs::File::create(&log).and_then(|out| {
            let err = out.try_clone()?;
            let mut command = Command::new(self.exe);
            command
                .args(["sweep", "run"])
                .arg(self.dir)
                .args(["--task-index", &index.to_string()])
                .env("RAYON_NUM_THREADS", &self.threads)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err);
            // The global switches reach the tasks, in the environment.
            if !crate::device::cpu_kernels::enabled() {
                command.env("TRAINER_CPU_KERNELS", "off");
            }
            if !crate::device::gpu_kernels::enabled() {
                command.env("TRAINER_GPU_KERNELS", "off");
            }
            if let Some(adapter) = device.or_else(crate::device::chosen_adapter) {
                command.env("TRAINER_DEVICE", adapter.to_string());
            }
            #[cfg(unix)]
            {
                use std::os::unix::process::CommandExt;
                command.process_group(0);
            }
            // If this process dies without passing an interrupt on (SIGKILL), the kernel
            // sends the task SIGTERM, which it handles as Ctrl-C: no task outlives the sweep.
            #[cfg(target_os = "linux")]
            {
                use std::os::unix::process::CommandExt;
                // SAFETY: prctl(2) is async-signal-safe, as pre_exec requires.
                unsafe {
                    command.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                        Ok(())
                    });
                }
            }
            // Forgotten by the interrupt handler before it is reaped (see run_child).
            crate::interrupt::run_child(command.spawn()?)
        });
        let end = match status {
            Err(_) => TaskEnd::Failed,
            // Ended by our Ctrl-C (exit 130, 143 for a SIGTERM, or the signal itself after a
            // second one): its run's state stays for the next run to resume; a task killed by
            // anything else (the kernel's out-of-memory killer) failed.
            Ok(status)
                if matches!(status.code(), Some(130 | 143))
                    || (status.code().is_none() && crate::interrupt::requested()) =>
            {
                TaskEnd::Interrupted
            }
            Ok(status) if status.success() => match task::read_state(self.dir, plan, index) {
                Some(state) if state.status.is_finished() => TaskEnd::Finished,
                _ => TaskEnd::Busy,
            },
            Ok(_) => TaskEnd::Failed,
        };
        (end, log)
    }
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
