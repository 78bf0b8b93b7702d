//! One training step: forward, cross-entropy, backward, global-norm clipping, Adam.

use burn::module::{ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use super::TrainSettings;
use crate::data::ImageBatch;
use crate::memory::is_allocation_failure;
use crate::model::Net;

/// A step's outcome that the loop keeps.
pub(crate) struct Step {
    pub net: Net,
    pub optim: ModuleOptimizer,
    pub loss: Tensor<1>,
    pub correct: Tensor<1, Int>,
    /// The global gradient norm before clipping, read back from the device.
    pub norm: f32,
}

/// Why a step did not complete.
pub(crate) enum StepFailure {
    /// The device could not allocate what the step needs.
    Allocation(String),
    /// Anything else.
    Other(String),
}

impl From<crate::device::gpu_train::Refusal> for StepFailure {
    fn from(refusal: crate::device::gpu_train::Refusal) -> StepFailure {
        use crate::device::gpu_train::Refusal;
        match refusal {
            Refusal::TooLarge(reason) => StepFailure::Allocation(reason),
            Refusal::Unsupported(reason) => StepFailure::Other(reason),
        }
    }
}

impl StepFailure {
    pub(crate) fn classify(message: String) -> StepFailure {
        if is_allocation_failure(&message) {
            StepFailure::Allocation(message)
        } else {
            StepFailure::Other(message)
        }
    }
}

/// How a layer-path step trains, besides its batch and learning rate.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepTrains {
    /// The key of the step's dropout masks ([`crate::rng`]).
    pub dropout: u32,
    /// Only the head trains (`--freeze-features`): the blocks' gradients are dropped.
    pub frozen: bool,
}

/// One training step. `net` and `optim` are not changed: the step returns the updated ones,
/// so a failed attempt leaves the loop with the state from before it. The gradient norm is
/// read back with a `try_` read (one sync per step), which surfaces allocation failures.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_step(
    net: &Net,
    optim: &ModuleOptimizer,
    batch: &ImageBatch,
    loss_fn: &burn::nn::loss::CrossEntropyLoss,
    settings: &TrainSettings,
    lr: f64,
    engine: &super::engine::Engine,
    trains: StepTrains,
) -> std::result::Result<Step, StepFailure> {
    let pass = engine.forward_step(net, batch.images.clone(), trains.dropout);
    let logits = pass.logits;
    let loss = loss_fn.forward(logits.clone(), batch.labels.clone());
    let correct = logits
        .argmax(1)
        .squeeze_dim::<1>(1)
        .equal(batch.labels.clone())
        .int()
        .sum();
    let mut grads = GradientsParams::from_grads(loss.backward(), net);
    if trains.frozen {
        drop_feature_grads(net, &mut grads);
    }
    drop_biases_before_batch_norm(net, &mut grads);
    let norm = clip_by_global_norm(net, &mut grads, settings.max_grad_norm);
    let mut optim = optim.clone();
    // The batch norms' running statistics are no parameters: the pass gave their new values.
    let updated = optim.step(lr, net.clone(), grads).with_norms(pass.norms);
    let norm = norm
        .try_into_scalar::<f32>()
        .map_err(|e| StepFailure::classify(e.to_string()))?;
    Ok(Step {
        net: updated,
        optim,
        loss: loss.inner(),
        correct: correct.inner(),
        norm,
    })
}

/// Drops the gradients of every parameter but the last layer's, so that the optimizer
/// leaves them as they are (`--freeze-features`).
fn drop_feature_grads(net: &Net, grads: &mut GradientsParams) {
    struct Freeze<'a>(&'a mut GradientsParams);
    impl ModuleVisitor for Freeze<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let _ = self.0.remove::<D>(param.id);
        }
    }
    if let Net::Cnn(cnn) = net {
        for conv in cnn.convs() {
            conv.visit(&mut Freeze(grads));
        }
        for norm in &cnn.norms {
            norm.visit(&mut Freeze(grads));
        }
    }
}

/// Drops the gradients of the conv biases a batch norm follows. The batch norm subtracts
/// the batch's mean, bias included, so their gradient is exactly 0; computed, it is float
/// noise (1e-9), which Adam scales up to steps of the learning rate's size in a direction each
/// backend draws differently. Dropped, those biases stay where they started, as exact
/// arithmetic keeps them, and the model's outputs are unchanged.
fn drop_biases_before_batch_norm(net: &Net, grads: &mut GradientsParams) {
    if let Net::Cnn(cnn) = net {
        for (conv, _) in cnn.convs().into_iter().zip(&cnn.norms) {
            if let Some(bias) = &conv.bias {
                let _ = grads.remove::<1>(bias.id);
            }
        }
    }
}

/// Scales all gradients together so that their global L2 norm is at most `max_norm`
/// (coefficient max_norm / (norm + 1e-6), capped at 1). Returns the norm before clipping.
/// Stays on the device: no read.
fn clip_by_global_norm(net: &Net, grads: &mut GradientsParams, max_norm: f32) -> Tensor<1> {
    struct SumOfSquares<'a> {
        grads: &'a GradientsParams,
        total: Option<Tensor<1>>,
    }
    impl ModuleVisitor for SumOfSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.get::<D>(param.id) {
                let squares = grad.square().sum();
                self.total = Some(match self.total.take() {
                    Some(total) => total + squares,
                    None => squares,
                });
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        coefficient: Tensor<1>,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.remove::<D>(param.id) {
                let scaled = grad * self.coefficient.clone().unsqueeze::<D>();
                self.grads.register::<D>(param.id, scaled);
            }
        }
    }

    let mut sum = SumOfSquares { grads, total: None };
    net.visit(&mut sum);
    let norm = sum.total.expect("both models have parameters").sqrt();
    let coefficient = norm
        .clone()
        .add_scalar(1e-6)
        .recip()
        .mul_scalar(max_norm)
        .clamp_max(1.0);
    net.visit(&mut Scale { grads, coefficient });
    norm
}
