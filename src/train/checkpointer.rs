//! The training loop's checkpointer, as burn-train's: after every epoch the loop hands it the
//! model's whole training state ([`ModelState`]: weights, optimizer state, where the schedule,
//! the shuffling and the augmentation are, the best epoch and its weights, the history), and
//! it keeps it. [`NoCheckpoints`] keeps nothing; the run's state file
//! ([`crate::train::run_state`]) writes it to `checkpoints/last.*` so that `--resume` goes on
//! from there.

use serde::{Deserialize, Serialize};

use super::EpochStats;
use crate::error::Result;
use crate::memory::MemoryEvent;

/// How a model's training ended; none while it goes on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    /// Every epoch trained.
    Finished,
    /// Early stopping, and why.
    StoppedEarly(String),
    /// A value stopped being finite at this step.
    Diverged {
        epoch: usize,
        step: usize,
        what: String,
    },
}

/// The best epoch so far, as [`super::BestTracker`] keeps it (its model is a blob).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BestState {
    pub epoch: usize,
    #[serde(with = "exact")]
    pub score: f64,
    #[serde(with = "exact")]
    pub val_acc: f64,
    #[serde(with = "exact")]
    pub val_loss: f64,
}

/// Which training state the weights blob holds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum WeightsKind {
    /// burn modules: the weights blob is the model's record, the optimizer blob burn's
    /// optimizer record.
    Layers,
    /// The wgpu kernels' flat state (parameters and Adam's moments, f32 little-endian) after
    /// `time` steps.
    Fused { time: usize },
}

/// A model's training state after an epoch, enough to go on with the next epoch and end
/// bit-identical to a run that was never stopped.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelState {
    /// The model's display name (one state per model of a run).
    pub model: String,
    pub epochs: usize,
    /// Epochs finished.
    pub epoch: usize,
    pub ended: Option<Ended>,
    /// The batch size the model is at (after any halving).
    pub batch_size: usize,
    /// Passes made over the shuffling loader (each pass draws the next permutation).
    pub loader_passes: usize,
    /// Samples augmented so far (each draws the next augmentation numbers).
    pub augmented: u64,
    pub weights_kind: WeightsKind,
    /// Steps the layer path has taken: the key of the next step's dropout masks (`--dropout`),
    /// so a resumed run draws the masks an unstopped one would. Absent in states written
    /// before `--dropout` (0: they had no dropout to draw).
    #[serde(default)]
    pub dropout_steps: u32,
    pub best: BestState,
    pub history: Vec<EpochStats>,
    #[serde(skip)]
    pub blobs: Blobs,
}

/// The binary parts of a [`ModelState`].
#[derive(Clone, Debug, Default)]
pub struct Blobs {
    pub weights: Vec<u8>,
    /// burn's optimizer record (empty for the kernels: their moments are in `weights`).
    pub optim: Vec<u8>,
    /// The best epoch's model record.
    pub best: Vec<u8>,
    /// Every step's loss so far, f32 little-endian.
    pub step_losses: Vec<u8>,
    /// Every step's learning rate so far, f64 little-endian.
    pub step_lrs: Vec<u8>,
    /// Where (in epochs) every step so far started, f64 little-endian.
    pub step_epochs: Vec<u8>,
}

impl Blobs {
    /// The blobs with their names, in file order.
    pub fn named(&self) -> [(&'static str, &Vec<u8>); 6] {
        [
            ("weights", &self.weights),
            ("optim", &self.optim),
            ("best", &self.best),
            ("step_losses", &self.step_losses),
            ("step_lrs", &self.step_lrs),
            ("step_epochs", &self.step_epochs),
        ]
    }

    /// The blob called `name`, to fill.
    pub fn slot(&mut self, name: &str) -> Option<&mut Vec<u8>> {
        match name {
            "weights" => Some(&mut self.weights),
            "optim" => Some(&mut self.optim),
            "best" => Some(&mut self.best),
            "step_losses" => Some(&mut self.step_losses),
            "step_lrs" => Some(&mut self.step_lrs),
            "step_epochs" => Some(&mut self.step_epochs),
            _ => None,
        }
    }
}

/// Keeps a model's training state after each epoch.
pub trait Checkpointer {
    /// Whether it keeps anything (when not, the loop does not read the state back).
    fn wanted(&self) -> bool;
    /// Keeps `state`, with the run's memory events so far.
    fn save(&mut self, state: ModelState, events: &[MemoryEvent]) -> Result<()>;
}

/// A checkpointer that keeps nothing (parity, bench).
pub struct NoCheckpoints;

impl Checkpointer for NoCheckpoints {
    fn wanted(&self) -> bool {
        false
    }
    fn save(&mut self, _: ModelState, _: &[MemoryEvent]) -> Result<()> {
        Ok(())
    }
}

/// f32 values as little-endian bytes, and back.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// f64 values as little-endian bytes, and back.
pub fn f64_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn f64_values(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

/// An f64 written as Rust writes it (the shortest text that reads back to the same bits,
/// `inf` and `NaN` included), so a resumed run's numbers are the very same.
pub mod exact {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{value:?}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse::<f64>().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_floats_read_back_to_the_same_bits() {
        #[derive(Serialize, Deserialize)]
        struct V(#[serde(with = "exact")] f64);
        for x in [
            0.1 + 0.2,
            1.0 / 3.0,
            f64::INFINITY,
            6e-3,
            0.9047619047619048,
        ] {
            let text = serde_json::to_string(&V(x)).unwrap();
            let back: V = serde_json::from_str(&text).unwrap();
            assert_eq!(back.0.to_bits(), x.to_bits(), "{text}");
        }
        let nan: V = serde_json::from_str(&serde_json::to_string(&V(f64::NAN)).unwrap()).unwrap();
        assert!(nan.0.is_nan());
    }

    #[test]
    fn float_blobs_round_trip() {
        let losses = [1.5f32, f32::MIN_POSITIVE, -0.0];
        assert_eq!(f32_values(&f32_bytes(&losses)), losses);
        let lrs = [0.006, 1e-300];
        assert_eq!(f64_values(&f64_bytes(&lrs)), lrs);
    }
}
