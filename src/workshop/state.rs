//! The run's state across epochs and processes: a new one or `--resume`'s, what an
//! interrupt keeps, and the pack written with it.

use std::path::Path;

use crate::config::Settings;
use crate::console::Console;
use crate::data::Splits;
use crate::error::{Result, TrainerError};
use crate::interrupt;
use crate::memory::MemoryPolicy;
use crate::model::init_from;
use crate::pack::evidence;
use crate::pack::run_state::{DataFingerprint, RunState, RunStatus, STATE_BIN, STATE_JSON};
use crate::pack::{self, Staging};
use crate::report::{Report, RunConfig};

use super::models::TrainedModels;

/// The settings of the run `--resume` names, checked against those asked (`explicit` says
/// which were given); none when that run finished (said in one line: nothing to do).
pub fn resumed_settings(
    dir: &Path,
    out: &Path,
    asked: &Settings,
    explicit: impl Fn(&str) -> bool,
    console: &Console,
) -> Result<Option<Settings>> {
    if explicit("out") && std::path::absolute(out).ok() != std::path::absolute(dir).ok() {
        return Err(TrainerError::bad_input(format!(
            "--out '{}' with --resume '{}': a resumed run goes on in its own folder; drop --out",
            out.display(),
            dir.display()
        )));
    }
    let state = RunState::read(dir)?;
    let mut asked = asked.clone();
    if let Some(folder) = &asked.data {
        asked.data = Some(
            std::path::absolute(folder).map_err(|e| TrainerError::io("resolving", folder, e))?,
        );
    }
    if *state.status() == RunStatus::Finished {
        // Other settings asked of a finished run (more epochs, say) would do nothing: refused.
        if let Err(differs) = state.settings(&asked, &explicit) {
            return Err(TrainerError::bad_input(format!(
                "{differs}; this run finished ({} epochs trained) and nothing was changed: to train it further, start a new run with --init-from {}",
                state.epochs_done(),
                dir.join("checkpoints/best_model.json").display()
            )));
        }
        console.result(&format!(
            "{}: this run finished ({} epochs trained); there is nothing to resume and nothing was changed",
            dir.display(),
            state.epochs_done()
        ));
        return Ok(None);
    }
    state.settings(&asked, explicit).map(Some)
}

/// The run's state: a new one, or (with `--resume`) the one `out` holds, on the same data,
/// with its memory events. A new run into a folder that holds a stopped run says that it
/// starts over.
pub(super) fn run_state(
    config: &RunConfig,
    splits: &Splits,
    memory: &mut MemoryPolicy,
    console: &Console,
) -> Result<RunState> {
    let data = DataFingerprint::of(splits)?;
    if config.resume {
        let mut state = RunState::read(&config.out)?;
        state.check_data(&data)?;
        state.set_status(RunStatus::InProgress);
        memory.events = state.events();
        console.info(&format!(
            "resuming {} after {} epoch(s) trained",
            config.out.display(),
            state.epochs_done()
        ));
        return Ok(state);
    }
    if let Ok(old) = RunState::read(&config.out)
        && *old.status() != RunStatus::Finished
    {
        console.warn(&format!(
            "'{}' holds a run stopped after {} epoch(s); this run starts over and replaces it (`--resume {}` would have continued it)",
            config.out.display(),
            old.epochs_done(),
            config.out.display()
        ));
    }
    RunState::new(&config.out, &config.settings, data)
}

/// The command the pack names: a new run's own, kept in its state; a resumed run's first
/// one, with the resuming command after it as a shell comment (the pack says how it was
/// made, and the line still runs).
pub(super) fn adopt_command(config: &mut RunConfig, state: &mut RunState) {
    match (config.resume, state.command()) {
        (true, Some(first)) => {
            config.command = format!("{first}  # resumed: {}", config.command);
        }
        _ => state.set_command(&config.command),
    }
}

/// With `--resume`, `--init-from` and `--freeze-features` must be the run's own (a run goes
/// on as it was made): one that differs is refused, named as other settings are, from the
/// stopped run's state before any data is read.
pub(super) fn check_resumed_fine_tuning(
    config: &RunConfig,
    device: &burn::prelude::Device,
) -> Result<()> {
    if !config.resume {
        return Ok(());
    }
    let state = RunState::read(&config.out)?;
    let mut differs = Vec::new();
    if config.freeze_features && !state.freeze_features() {
        differs.push("freeze_features false (asked true)".to_string());
    }
    if let Some(path) = &config.init_from {
        let (_, meta) = init_from::read(path, device)?;
        let asked = init_from::described(path, &meta);
        let same = state
            .init_from()
            .is_some_and(|theirs| theirs.params_checksum == asked.params_checksum);
        if !same {
            let theirs = state
                .init_from()
                .map_or("unset".to_string(), |t| t.path.clone());
            differs.push(format!("init_from {theirs} (asked {})", asked.path));
        }
    }
    if differs.is_empty() {
        return Ok(());
    }
    Err(TrainerError::bad_input(format!(
        "--resume '{}': the run was made with other settings: {}; resume with its own settings (or none) or start a new run",
        config.out.display(),
        differs.join(", ")
    )))
}

/// A resumed run starts the models it had not started as it would have, and checks the
/// test overlap as it was allowed: `--init-from`, `--freeze-features` and
/// `--allow-test-overlap` are the run's own (given again, they are kept for the rest of it).
/// Recorded in the state for the next resume.
pub(super) fn adopt_fine_tuning(
    config: &mut RunConfig,
    state: &mut RunState,
    device: &burn::prelude::Device,
) -> Result<()> {
    config.freeze_features |= state.freeze_features();
    state.set_freeze_features(config.freeze_features);
    config.allow_test_overlap |= state.allow_test_overlap();
    state.set_allow_test_overlap(config.allow_test_overlap);
    if config.init_from.is_none() {
        config.init_from = state.init_from().map(|i| i.path.clone().into());
    }
    if let Some(path) = &config.init_from {
        // Checked before any training, and recorded for a resumed run.
        let (_, meta) = init_from::read(path, device)?;
        state.set_init_from(Some(init_from::described(path, &meta)));
    }
    Ok(())
}

/// After an interrupt: the models with a finished epoch are kept (their best epoch so far),
/// the state is marked stopped, and the rest of the run (testing, the pack) goes on. Returns
/// "stopped at epoch 4 of 10 (CNN)" then; an interrupt before any epoch finished keeps
/// nothing.
pub(super) fn keep_finished(
    trained: &mut TrainedModels,
    state: &mut RunState,
    console: &Console,
) -> Result<Option<String>> {
    let Some(cut) = trained
        .models
        .iter()
        .find(|m| m.trained.interrupted.is_some())
    else {
        return Ok(None);
    };
    let epoch = cut.trained.interrupted.unwrap_or(0);
    let stopped = format!(
        "stopped at epoch {epoch} of {} ({})",
        cut.epochs,
        cut.spec.display_name()
    );
    trained.models.retain(|m| m.trained.best_epoch > 0);
    if trained.models.is_empty() {
        return Err(TrainerError::Interrupted);
    }
    interrupt::acknowledge();
    state.set_status(RunStatus::Stopped(stopped.clone()));
    state.write()?;
    console.warn(&format!(
        "{}: {stopped}; the pack is written from the epochs finished (each model's best so far) and marked incomplete",
        interrupt::signal_name()
    ));
    Ok(Some(stopped))
}

/// Writes the pack (with the run's state, marked finished or stopped) into a staging
/// folder and swaps it in place of `out`.
pub(super) fn write_pack(report: &Report, state: &mut RunState, console: &Console) -> Result<()> {
    let staging = Staging::begin(&report.config.out, pack::PackKind::Workshop)?;
    evidence::write_pack(&staging, report)?;
    if report.stopped.is_none() {
        state.set_status(RunStatus::Finished);
    }
    let (bin, json) = state.encode()?;
    staging.write(STATE_BIN, bin)?;
    staging.write(STATE_JSON, json)?;
    if interrupt::requested() {
        return Err(TrainerError::Interrupted);
    }
    let kept = staging.commit()?;
    if let Some(note) = pack::kept_note(&kept) {
        console.info(&note);
    }
    Ok(())
}
