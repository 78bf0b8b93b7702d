//! `--batch-norm`: PyTorch's `nn.BatchNorm2d` after each convolution of the CNN, before its
//! ReLU. While training it normalizes with the batch's own statistics (per channel, over the
//! batch and the pixels) and moves the running statistics towards them (momentum
//! [`BATCH_NORM_MOMENTUM`], the variance unbiased, as PyTorch does); in evaluation it
//! normalizes with the running statistics. Its parameters and buffers carry PyTorch's names
//! (`weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`), so the
//! checkpoint and the safetensors export name them as PyTorch does.
//!
//! The running statistics are never written in place: a training pass returns the new ones
//! ([`NormStats`]) and the step puts them into the updated model ([`super::Net::with_norms`]),
//! so a step that fails leaves the model as it was, as for every other parameter.

use burn::module::{Param, ParamId, RunningState};
use burn::prelude::*;

/// The momentum of the running statistics (PyTorch's nn.BatchNorm2d default: running =
/// (1 - momentum) x running + momentum x batch, the variance unbiased).
pub const BATCH_NORM_MOMENTUM: f64 = 0.1;
/// The epsilon under the square root (PyTorch's default).
pub const BATCH_NORM_EPSILON: f64 = 1e-5;

/// One BatchNorm over `features` channels.
#[derive(Module, Debug)]
pub struct BatchNorm2d {
    /// The learnt scale (PyTorch's `weight`, burn's `gamma`): starts at 1.
    pub weight: Param<Tensor<1>>,
    /// The learnt shift (PyTorch's `bias`, burn's `beta`): starts at 0.
    pub bias: Param<Tensor<1>>,
    /// The running mean: starts at 0.
    pub running_mean: RunningState<Tensor<1>>,
    /// The running (unbiased) variance: starts at 1.
    pub running_var: RunningState<Tensor<1>>,
    /// Training passes taken, one value (PyTorch's is an int64 scalar; the safetensors
    /// export writes it so).
    pub num_batches_tracked: RunningState<Tensor<1>>,
}

/// The running statistics a training pass leaves for one BatchNorm.
#[derive(Clone, Debug)]
pub struct NormStats {
    pub running_mean: Tensor<1>,
    pub running_var: Tensor<1>,
    pub num_batches_tracked: Tensor<1>,
}

impl BatchNorm2d {
    /// A fresh BatchNorm of `features` channels (PyTorch's initial values). `ids` gives its
    /// five parameters' ids in order, so that reruns write identical checkpoints.
    pub fn new(features: usize, mut ids: impl FnMut() -> ParamId, device: &Device) -> Self {
        let mut param = |tensor: Tensor<1>| {
            let mut param = Param::from_tensor(tensor);
            param.id = ids();
            param
        };
        let weight = param(Tensor::ones([features], device));
        let bias = param(Tensor::zeros([features], device));
        BatchNorm2d {
            weight,
            bias,
            running_mean: RunningState::with_id(ids(), Tensor::zeros([features], device)),
            running_var: RunningState::with_id(ids(), Tensor::ones([features], device)),
            num_batches_tracked: RunningState::with_id(ids(), Tensor::zeros([1], device)),
        }
    }

    /// Number of channels.
    pub fn features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Evaluation: normalized with the running statistics.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let (mean, var) = (like(&self.running_mean, &x), like(&self.running_var, &x));
        burn::tensor::module::batch_norm(
            x,
            self.weight.val(),
            self.bias.val(),
            mean,
            var,
            BATCH_NORM_EPSILON,
        )
    }

    /// Evaluation's map as `x x scale + shift` a channel (the running statistics folded
    /// into the weight and bias): `(scale, shift)`, for kernels that fold it into the conv
    /// before it.
    pub fn eval_affine(&self) -> (Tensor<1>, Tensor<1>) {
        let weight = self.weight.val();
        let mean = like(&self.running_mean, &weight);
        let var = like(&self.running_var, &weight);
        let scale = weight / var.add_scalar(BATCH_NORM_EPSILON).sqrt();
        let shift = self.bias.val() - mean * scale.clone();
        (scale, shift)
    }

    /// Training: normalized with the batch's statistics (gradients through them), and the
    /// running statistics this pass moves to.
    pub fn forward_train(&self, x: Tensor<4>) -> (Tensor<4>, NormStats) {
        let [batch, _, h, w] = x.dims();
        let out = burn::tensor::module::batch_norm_train(
            x,
            self.weight.val(),
            self.bias.val(),
            BATCH_NORM_EPSILON,
        );
        let stats = self.stats_after(out.mean, out.variance, batch * h * w);
        (out.output, stats)
    }

    /// The running statistics after a training pass whose batch had this per-channel `mean`
    /// and (biased) `variance` over `count` values a channel. The fused CPU operation
    /// computes the batch's statistics itself and comes here too.
    pub fn stats_after(&self, mean: Tensor<1>, variance: Tensor<1>, count: usize) -> NormStats {
        let running_mean = like(&self.running_mean, &mean);
        let running_var = like(&self.running_var, &mean);
        let batches = like(&self.num_batches_tracked, &mean);
        // PyTorch's running variance is the unbiased one: n / (n - 1) of the batch's.
        let n = count as f64;
        let unbiased = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
        let m = BATCH_NORM_MOMENTUM;
        NormStats {
            running_mean: (running_mean.mul_scalar(1.0 - m) + mean.detach().mul_scalar(m)).detach(),
            running_var: (running_var.mul_scalar(1.0 - m)
                + variance.detach().mul_scalar(m * unbiased))
            .detach(),
            num_batches_tracked: batches.add_scalar(1.0).detach(),
        }
    }

    /// This BatchNorm with the running statistics of a training pass (same ids).
    pub fn with_stats(mut self, stats: NormStats) -> Self {
        let keep = |state: &RunningState<Tensor<1>>, value: Tensor<1>| {
            RunningState::with_id(state_id(state), value)
        };
        self.running_mean = keep(&self.running_mean, stats.running_mean);
        self.running_var = keep(&self.running_var, stats.running_var);
        self.num_batches_tracked = keep(&self.num_batches_tracked, stats.num_batches_tracked);
        self
    }
}

/// A running statistic on `x`'s device, with autodiff as `x` has it (the state may have been
/// moved to the training device, where it has autodiff but no gradient).
fn like<const D: usize>(state: &RunningState<Tensor<1>>, x: &Tensor<D>) -> Tensor<1> {
    let value = state.value().to_device(&x.device());
    match x.is_autodiff() {
        true => value.autodiff(),
        false => value.without_autodiff(),
    }
}

/// The id of a running state (burn exposes it only to visitors).
fn state_id(state: &RunningState<Tensor<1>>) -> ParamId {
    struct Id(Option<ParamId>);
    impl burn::module::ModuleVisitor for Id {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 = Some(param.id);
        }
    }
    let mut id = Id(None);
    state.visit(&mut id);
    id.0.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: Tensor<1>) -> Vec<f32> {
        t.into_data().try_to_vec_as::<f32>().unwrap()
    }

    /// A training pass normalizes with the batch's statistics and moves the running ones as
    /// PyTorch does (momentum 0.1, unbiased variance, one more batch tracked); evaluation
    /// normalizes with the running ones; the ids stay.
    #[test]
    fn batch_statistics_train_running_statistics_evaluate() {
        let device = Device::default();
        let mut next = 0u64;
        let norm = BatchNorm2d::new(
            2,
            || {
                next += 1;
                ParamId::from(next)
            },
            &device,
        );
        // Channel 0: 1, 2, 3, 4 (mean 2.5, biased variance 1.25, unbiased 5/3); channel 1: 0.
        let x = Tensor::<4>::from_data(
            TensorData::new(
                vec![1.0f32, 2.0, 0.0, 0.0, 3.0, 4.0, 0.0, 0.0],
                [2, 2, 1, 2],
            ),
            &device,
        );
        let (y, stats) = norm.forward_train(x.clone());
        let y: Vec<f32> = y.into_data().try_to_vec_as().unwrap();
        let scale = 1.0 / (1.25f32 + 1e-5).sqrt();
        assert!((y[0] - (1.0 - 2.5) * scale).abs() < 1e-5, "{y:?}");
        assert!((y[5] - (4.0 - 2.5) * scale).abs() < 1e-5, "{y:?}");
        let mean = values(stats.running_mean.clone());
        let var = values(stats.running_var.clone());
        assert!(
            (mean[0] - 0.25).abs() < 1e-6 && mean[1].abs() < 1e-6,
            "{mean:?}"
        );
        assert!((var[0] - (0.9 + 0.1 * 5.0 / 3.0)).abs() < 1e-6, "{var:?}");
        assert!((var[1] - 0.9).abs() < 1e-6, "{var:?}");
        let trained = norm.clone().with_stats(stats);
        assert_eq!(values(trained.num_batches_tracked.value()), vec![1.0]);
        assert_eq!(state_id(&trained.running_var), state_id(&norm.running_var));
        // Evaluation: (x - 0.25) / sqrt(var + eps), not the batch's statistics.
        let y: Vec<f32> = trained.forward(x).into_data().try_to_vec_as().unwrap();
        let want = (1.0 - 0.25) / (var[0] + 1e-5).sqrt();
        assert!((y[0] - want).abs() < 1e-5, "{y:?} against {want}");
        // The fresh one is unchanged: nothing was written in place.
        assert_eq!(values(norm.running_var.value()), vec![1.0, 1.0]);
    }
}
