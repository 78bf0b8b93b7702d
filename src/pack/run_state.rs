//! A run's state, written after every epoch into the run's own folder (`--out`), not the
//! staging folder: `checkpoints/last.bin` (everything, in one file written whole or not at
//! all) and `checkpoints/last.json` (its header, for people). A run that is killed leaves it
//! where `--resume OUT` finds it; the finished pack keeps it too, marked finished.
//!
//! `last.bin`: the line `trainer-run-state`, the header's length (u64, little-endian), the
//! header (JSON: status, settings, data, memory events, each model's [`ModelState`], and the
//! list of blobs with their sizes and checksums), then the blobs in that order.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{MARKER, write_atomic};
use crate::checksum::checksum;
use crate::config::Settings;
use crate::data::Splits;
use crate::error::{Result, TrainerError};
use crate::memory::MemoryEvent;
use crate::model::checkpoint::InitFrom;
use crate::train::checkpointer::{Checkpointer, ModelState};

pub const STATE_BIN: &str = "checkpoints/last.bin";
pub const STATE_JSON: &str = "checkpoints/last.json";
const MAGIC: &[u8] = b"trainer-run-state\n";
const VERSION: u32 = 1;

/// Where the run is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Training (or killed while training).
    InProgress,
    /// Stopped by an interrupt, in these words ("stopped at epoch 4 of 10").
    Stopped(String),
    /// Every model trained and the pack written.
    Finished,
}

/// What the run's data was, to refuse resuming it on other data.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DataFingerprint {
    pub classes: Vec<String>,
    pub split_sizes: [usize; 3],
    /// Checksum of the normalization and the folder's manifest (every file and its checksum).
    pub checksum: String,
}

impl DataFingerprint {
    pub fn of(splits: &Splits) -> Result<DataFingerprint> {
        let text = serde_json::to_string(&(&splits.normalization, &splits.manifest))
            .map_err(|e| TrainerError::Serialize(e.to_string()))?;
        Ok(DataFingerprint {
            classes: splits.classes.clone(),
            split_sizes: [splits.train.len(), splits.val.len(), splits.test.len()],
            checksum: checksum(text.as_bytes()),
        })
    }

    /// What differs between the run's data (`self`) and `now`, in words.
    fn difference(&self, now: &DataFingerprint) -> Option<String> {
        if self.classes != now.classes {
            Some(format!(
                "its classes are {:?}, the data now has {:?}",
                self.classes, now.classes
            ))
        } else if self.split_sizes != now.split_sizes {
            Some(format!(
                "its split was {:?} (train, val, test), the data now gives {:?}",
                self.split_sizes, now.split_sizes
            ))
        } else if self.checksum != now.checksum {
            Some("its images changed since (their checksums or normalization differ)".into())
        } else {
            None
        }
    }
}

/// A [`MemoryEvent`] as the state file keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SavedEvent {
    model: String,
    phase: String,
    epoch: usize,
    step: usize,
    from_batch: usize,
    to_batch: usize,
    reason: String,
    requested_bytes: Option<u64>,
    budget_bytes: Option<u64>,
}

impl SavedEvent {
    fn of(e: &MemoryEvent) -> SavedEvent {
        SavedEvent {
            model: e.model.clone(),
            phase: e.phase.to_string(),
            epoch: e.epoch,
            step: e.step,
            from_batch: e.from_batch,
            to_batch: e.to_batch,
            reason: e.reason.clone(),
            requested_bytes: e.requested_bytes,
            budget_bytes: e.budget_bytes,
        }
    }

    fn event(&self) -> MemoryEvent {
        MemoryEvent {
            model: self.model.clone(),
            phase: match self.phase.as_str() {
                "preflight" => "preflight",
                "train" => "train",
                _ => "eval",
            },
            epoch: self.epoch,
            step: self.step,
            from_batch: self.from_batch,
            to_batch: self.to_batch,
            reason: self.reason.clone(),
            requested_bytes: self.requested_bytes,
            budget_bytes: self.budget_bytes,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct BlobRef {
    model: String,
    name: String,
    bytes: u64,
    checksum: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
    status: RunStatus,
    settings: serde_json::Value,
    data: DataFingerprint,
    /// The checkpoint the run started from (`--init-from`), if any, and its checksum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    init_from: Option<InitFrom>,
    /// Whether only the last layer trains (`--freeze-features`).
    #[serde(default)]
    freeze_features: bool,
    /// Whether the run trains although the `init_from` checkpoint saw some of its test
    /// images (`--allow-test-overlap`); a state written before the field was kept reads
    /// false, and its resume is checked as a new run.
    #[serde(default)]
    allow_test_overlap: bool,
    /// The command line that started the run (a state written before the field was kept
    /// reads none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    memory_events: Vec<SavedEvent>,
    models: Vec<ModelState>,
    blobs: Vec<BlobRef>,
}

/// A run's state: what `checkpoints/last.*` holds.
#[derive(Clone, Debug)]
pub struct RunState {
    out: PathBuf,
    header: Header,
}

impl RunState {
    /// A new run's state, to be written into `out`.
    pub fn new(out: &Path, settings: &Settings, data: DataFingerprint) -> Result<RunState> {
        Ok(RunState {
            out: out.to_path_buf(),
            header: Header {
                format: "trainer-run-state".into(),
                version: VERSION,
                status: RunStatus::InProgress,
                settings: serde_json::to_value(settings)
                    .map_err(|e| TrainerError::Serialize(e.to_string()))?,
                data,
                init_from: None,
                freeze_features: false,
                allow_test_overlap: false,
                command: None,
                memory_events: Vec::new(),
                models: Vec::new(),
                blobs: Vec::new(),
            },
        })
    }

    /// Whether `out` holds a run's state.
    pub fn exists(out: &Path) -> bool {
        out.join(STATE_BIN).is_file()
    }

    /// Whether `out` holds the state of a run that did not finish (one to resume).
    pub fn resumable(out: &Path) -> bool {
        RunState::read(out).is_ok_and(|s| *s.status() != RunStatus::Finished)
    }

    pub fn status(&self) -> &RunStatus {
        &self.header.status
    }

    pub fn set_status(&mut self, status: RunStatus) {
        self.header.status = status;
    }

    /// The command line that started the run, if the state kept it.
    pub fn command(&self) -> Option<&str> {
        self.header.command.as_deref()
    }

    pub fn set_command(&mut self, command: &str) {
        self.header.command = Some(command.to_string());
    }

    pub fn set_init_from(&mut self, init: Option<InitFrom>) {
        self.header.init_from = init;
    }

    pub fn init_from(&self) -> Option<&InitFrom> {
        self.header.init_from.as_ref()
    }

    /// Whether the run trains only the last layer (kept for `--resume`).
    pub fn freeze_features(&self) -> bool {
        self.header.freeze_features
    }

    pub fn set_freeze_features(&mut self, freeze: bool) {
        self.header.freeze_features = freeze;
    }

    /// Whether the run trains although its `--init-from` checkpoint saw some of its test
    /// images (kept for `--resume`).
    pub fn allow_test_overlap(&self) -> bool {
        self.header.allow_test_overlap
    }

    pub fn set_allow_test_overlap(&mut self, allow: bool) {
        self.header.allow_test_overlap = allow;
    }

    /// The state of the model called `name`, if it trained at least an epoch.
    pub fn model(&self, name: &str) -> Option<ModelState> {
        self.header.models.iter().find(|m| m.model == name).cloned()
    }

    /// The memory events of the run so far.
    pub fn events(&self) -> Vec<MemoryEvent> {
        self.header
            .memory_events
            .iter()
            .map(SavedEvent::event)
            .collect()
    }

    /// Epochs finished, over all models, and epochs asked for (models not yet started
    /// count their `epochs`).
    pub fn epochs_done(&self) -> usize {
        self.header.models.iter().map(|m| m.epoch).sum()
    }

    /// The run's settings, checked against those asked now: a setting `explicit` says was
    /// given (on the command line or in --config) must be the run's own; the run's own are
    /// returned.
    pub fn settings(&self, asked: &Settings, explicit: impl Fn(&str) -> bool) -> Result<Settings> {
        let theirs: Settings = serde_json::from_value(self.header.settings.clone())
            .map_err(|e| self.unreadable(format!("its settings cannot be read: {e}")))?;
        let asked_value =
            serde_json::to_value(asked).map_err(|e| TrainerError::Serialize(e.to_string()))?;
        let mut differs = Vec::new();
        if let (Some(run), Some(now)) = (self.header.settings.as_object(), asked_value.as_object())
        {
            for (key, value) in now {
                if explicit(key) && run.get(key) != Some(value) {
                    differs.push(format!(
                        "{key} {} (asked {value})",
                        run.get(key)
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "unset".into())
                    ));
                }
            }
        }
        if !differs.is_empty() {
            return Err(TrainerError::bad_input(format!(
                "--resume '{}': the run was made with other settings: {}; resume with its own settings (or none) or start a new run",
                self.out.display(),
                differs.join(", ")
            )));
        }
        Ok(theirs)
    }

    /// Refuses to go on with other data than the run's.
    pub fn check_data(&self, now: &DataFingerprint) -> Result<()> {
        match self.header.data.difference(now) {
            None => Ok(()),
            Some(what) => Err(TrainerError::bad_input(format!(
                "--resume '{}': the data differs from the run's: {what}",
                self.out.display()
            ))),
        }
    }

    fn unreadable(&self, reason: String) -> TrainerError {
        TrainerError::bad_input(format!(
            "--resume '{}': {} is not a readable run state: {reason}",
            self.out.display(),
            STATE_BIN
        ))
    }

    /// The state file and its readable header.
    pub fn encode(&self) -> Result<(Vec<u8>, String)> {
        let mut header = self.header.clone();
        header.blobs.clear();
        let mut body = Vec::new();
        for model in &self.header.models {
            for (name, blob) in model.blobs.named() {
                header.blobs.push(BlobRef {
                    model: model.model.clone(),
                    name: name.to_string(),
                    bytes: blob.len() as u64,
                    checksum: checksum(blob),
                });
                body.extend_from_slice(blob);
            }
        }
        let json = serde_json::to_string_pretty(&header)
            .map_err(|e| TrainerError::Serialize(e.to_string()))?;
        let mut bin = MAGIC.to_vec();
        bin.extend_from_slice(&(json.len() as u64).to_le_bytes());
        bin.extend_from_slice(json.as_bytes());
        bin.extend_from_slice(&body);
        Ok((bin, json + "\n"))
    }

    /// Writes the state into the run's folder (each file whole or not at all). A new folder
    /// gets the marker of a trainer run first, so that the run that goes on may replace it.
    pub fn write(&self) -> Result<()> {
        let folder = self.out.join("checkpoints");
        fs::create_dir_all(&folder).map_err(|e| TrainerError::io("creating folder", &folder, e))?;
        let marker = self.out.join(MARKER);
        if !marker.exists() {
            write_atomic(
                &marker,
                "written by trainer: a run in progress keeps its state in checkpoints/last.*; `trainer --resume` with this folder continues it\ncommand: workshop\n",
            )?;
        }
        let (bin, json) = self.encode()?;
        write_atomic(&self.out.join(STATE_BIN), bin)?;
        write_atomic(&self.out.join(STATE_JSON), json)
    }

    /// Reads the state a run left in `out`.
    pub fn read(out: &Path) -> Result<RunState> {
        let path = out.join(STATE_BIN);
        let mut state = RunState {
            out: out.to_path_buf(),
            header: Header {
                format: String::new(),
                version: 0,
                status: RunStatus::InProgress,
                settings: serde_json::Value::Null,
                data: DataFingerprint {
                    classes: Vec::new(),
                    split_sizes: [0; 3],
                    checksum: String::new(),
                },
                init_from: None,
                freeze_features: false,
                allow_test_overlap: false,
                command: None,
                memory_events: Vec::new(),
                models: Vec::new(),
                blobs: Vec::new(),
            },
        };
        let bytes = fs::read(&path).map_err(|e| {
            TrainerError::bad_input(format!(
                "--resume '{}': no run state to resume ({}: {e}); a run writes it after its first epoch",
                out.display(),
                STATE_BIN
            ))
        })?;
        state.header = state.decode(&bytes)?;
        Ok(state)
    }

    fn decode(&self, bytes: &[u8]) -> Result<Header> {
        let start = MAGIC.len() + 8;
        if bytes.len() < start || !bytes.starts_with(MAGIC) {
            return Err(self.unreadable("it does not start as one".into()));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[MAGIC.len()..start]);
        let end = start.saturating_add(u64::from_le_bytes(len) as usize);
        let text = bytes
            .get(start..end)
            .ok_or_else(|| self.unreadable("it is truncated".into()))?;
        let mut header: Header = serde_json::from_slice(text)
            .map_err(|e| self.unreadable(format!("its header: {e}")))?;
        if header.version != VERSION {
            return Err(self.unreadable(format!(
                "version {} (this trainer reads {VERSION})",
                header.version
            )));
        }
        let mut at = end;
        for blob in header.blobs.clone() {
            let until = at.saturating_add(blob.bytes as usize);
            let data = bytes
                .get(at..until)
                .ok_or_else(|| self.unreadable("it is truncated".into()))?;
            if checksum(data) != blob.checksum {
                return Err(self.unreadable(format!("{} {} is corrupted", blob.model, blob.name)));
            }
            let slot = header
                .models
                .iter_mut()
                .find(|m| m.model == blob.model)
                .and_then(|m| m.blobs.slot(&blob.name))
                .ok_or_else(|| self.unreadable(format!("a blob of no model ({})", blob.model)))?;
            *slot = data.to_vec();
            at = until;
        }
        Ok(header)
    }
}

impl Checkpointer for RunState {
    fn wanted(&self) -> bool {
        true
    }

    /// Keeps the model's state (replacing its earlier one) and writes the run's state.
    fn save(&mut self, state: ModelState, events: &[MemoryEvent]) -> Result<()> {
        self.header.memory_events = events.iter().map(SavedEvent::of).collect();
        match self
            .header
            .models
            .iter_mut()
            .find(|m| m.model == state.model)
        {
            Some(slot) => *slot = state,
            None => self.header.models.push(state),
        }
        self.write()
    }
}
