//! One side of a parity comparison: a model trained and tested on one backend from the
//! shared start, and what the comparison needs of it.

use std::time::Instant;

use crate::console::Console;
use crate::data;
use crate::device::{BackendName, OpenBackend};
use crate::error::{Result, TrainerError};
use crate::memory::MemoryPolicy;
use crate::model::{self, ModelKind, ModelSpec};
use crate::parity::{BackendSummary, ParityConfig};
use crate::train::{self, Context, TrainSettings};

/// One model trained on one backend.
pub struct Side {
    pub step_losses: Vec<f32>,
    pub steps_per_epoch: usize,
    pub params: Vec<(String, Vec<usize>, Vec<f32>)>,
    pub logits: Vec<f32>,
    pub predictions: Vec<(String, usize)>,
    pub best_val_acc: f64,
    pub best_epoch: usize,
    pub test_accuracy: f64,
    pub train_seconds: f64,
    pub train_samples: usize,
    /// What ran the model's steps ([`crate::train::engine::Engine::name`]).
    pub engine: &'static str,
}

/// Every model trained on every backend: the sides of each backend in `config.backends`'
/// order, each with the model's shape; the same again from a nudged start
/// ([`Start::Nudged`]), in the same order; each backend's summary.
pub struct Trained {
    pub sides: Vec<Vec<(ModelSpec, Side)>>,
    pub nudged: Vec<Vec<Side>>,
    pub summaries: Vec<BackendSummary>,
}

/// Where a side starts.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Start {
    /// The shared initial parameters.
    Shared,
    /// The shared parameters, each one unit in the last place away: the size of a rounding,
    /// whose growth through training on the backend measures what the verdict allows.
    Nudged,
}

/// Trains every model on every opened backend, in order, from the shared start (timed for
/// the backend's summary) and from the nudged one.
pub fn train_all(
    config: &ParityConfig,
    splits: &data::Splits,
    opened: &[OpenBackend],
    console: &Console,
) -> Result<Trained> {
    let mut trained = Trained {
        sides: Vec::new(),
        nudged: Vec::new(),
        summaries: Vec::new(),
    };
    for (name, open) in config.backends.iter().zip(opened) {
        console.info(&format!("parity: training on {}", open.info.summary()));
        let ctx = Context {
            device: &open.device,
            device_info: &open.info,
            progress: console,
        };
        let mut memory = MemoryPolicy::new(None, true)?;
        let started = Instant::now();
        let mut per_model = Vec::new();
        for &kind in &config.settings.models {
            let at = (*name, Start::Shared);
            per_model.push(train_side(config, splits, kind, at, &mut memory, &ctx)?);
        }
        trained.summaries.push(BackendSummary {
            backend: name.as_str().to_string(),
            device: open.info.clone(),
            wall_seconds: started.elapsed().as_secs_f64(),
        });
        trained.sides.push(per_model);
        console.info(&format!(
            "parity: training on {} again from a start one unit in the last place away (how far it carries a rounding)",
            name.as_str()
        ));
        let mut nudged = Vec::new();
        for &kind in &config.settings.models {
            let at = (*name, Start::Nudged);
            nudged.push(train_side(config, splits, kind, at, &mut memory, &ctx)?.1);
        }
        trained.nudged.push(nudged);
    }
    Ok(trained)
}

/// Trains and tests one model on one backend from the shared start (perturbed on the
/// backend the test hook names), and keeps what the comparison needs.
fn train_side(
    config: &ParityConfig,
    splits: &data::Splits,
    kind: ModelKind,
    (name, start): (BackendName, Start),
    memory: &mut MemoryPolicy,
    ctx: &Context,
) -> Result<(ModelSpec, Side)> {
    let settings = &config.settings;
    let (epochs, lr) = settings.schedule(kind);
    // The shape the workshop run would train: the data's channels, --cnn-widths.
    let mut net = crate::setup::init_net(settings, kind, splits, ctx.device)?;
    let spec = settings.spec(kind, splits.train.channels)?;
    if let Some((target, epsilon)) = config.perturb
        && target == name
    {
        net = model::perturb_first_parameter(net, epsilon);
    }
    if start == Start::Nudged {
        net = model::nudge_every_parameter(net);
    }
    let train_settings = TrainSettings::new(settings, epochs, lr);
    let (trained, test) = train::train_and_test(net, splits, &train_settings, true, memory, ctx)?;
    let params = model::parameters(&trained.last).map_err(|reason| TrainerError::Device {
        backend: name.as_str().to_string(),
        reason,
    })?;
    let side = Side {
        steps_per_epoch: splits.train.len().div_ceil(trained.final_batch),
        step_losses: trained.step_losses,
        params,
        logits: test.logits,
        predictions: test
            .predictions
            .iter()
            .map(|p| (p.sample_id.clone(), p.predicted))
            .collect(),
        best_val_acc: trained.best_val_acc,
        best_epoch: trained.best_epoch,
        test_accuracy: test.accuracy,
        train_seconds: trained.history.iter().map(|e| e.train_seconds).sum(),
        train_samples: trained.history.iter().map(|e| e.train_samples).sum(),
        engine: trained.engine.engine.name(),
    };
    Ok((spec, side))
}
