//! The training recipe besides the learning rate itself: the optimizer (Adam, AdamW, SGD with
//! momentum), the schedule of the rate (constant, cosine, one-cycle, step, with a linear
//! warm-up) and label smoothing. Plain values and arithmetic, shared by the settings, the
//! training loop and the kernels, so every path computes the same rate for the same step.

use serde::{Deserialize, Serialize};

/// Which optimizer updates the weights.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    /// Adam (the workshop's), no weight decay.
    #[default]
    Adam,
    /// Adam with decoupled weight decay (PyTorch's AdamW): w -= lr * weight_decay * w, then Adam.
    Adamw,
    /// Stochastic gradient descent, with --momentum (PyTorch's, no dampening), --nesterov,
    /// and --weight-decay as an L2 term added to the gradient.
    Sgd,
}

/// AdamW's weight decay when none is given: PyTorch's default (`torch.optim.AdamW`'s
/// `weight_decay=0.01`), so `--optimizer adamw` alone is AdamW, not Adam under another name.
pub const ADAMW_WEIGHT_DECAY: f64 = 0.01;

impl Optimizer {
    /// The weight decay of this optimizer when none is given: AdamW's
    /// [`ADAMW_WEIGHT_DECAY`], none for Adam and SGD (PyTorch's defaults).
    pub fn default_weight_decay(self) -> f64 {
        match self {
            Optimizer::Adamw => ADAMW_WEIGHT_DECAY,
            Optimizer::Adam | Optimizer::Sgd => 0.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Optimizer::Adam => "adam",
            Optimizer::Adamw => "adamw",
            Optimizer::Sgd => "sgd",
        }
    }
}

/// How the learning rate moves over the run, per step.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// The rate as given (after the warm-up, if any).
    #[default]
    Constant,
    /// Cosine decay to zero after the warm-up (PyTorch's CosineAnnealingLR, eta_min 0).
    Cosine,
    /// One cycle (PyTorch's OneCycleLR, cosine, without momentum cycling): from rate/25 up to
    /// the rate over the warm-up (30% of the run by default), then down to rate/250000.
    Onecycle,
    /// The rate divided by 10 at half and again at three quarters of the run, in steps
    /// rounded down (MultiStepLR).
    Step,
}

impl Schedule {
    pub fn as_str(self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::Cosine => "cosine",
            Schedule::Onecycle => "onecycle",
            Schedule::Step => "step",
        }
    }
}

/// One-cycle's defaults (PyTorch's): the share of the run spent rising, the start's divisor
/// and the end's further divisor.
pub const ONECYCLE_PCT_START: f64 = 0.3;
pub const ONECYCLE_DIV: f64 = 25.0;
pub const ONECYCLE_FINAL_DIV: f64 = 1e4;
/// `--schedule step`: where the rate drops (shares of the run) and by what factor.
pub const STEP_MILESTONES: [f64; 2] = [0.5, 0.75];
pub const STEP_GAMMA: f64 = 0.1;

/// Everything of the recipe a training run needs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recipe {
    pub optimizer: Optimizer,
    pub weight_decay: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub schedule: Schedule,
    /// Epochs of linear warm-up (for one-cycle: of its rising phase); 0 for none.
    pub warmup_epochs: f64,
    pub label_smoothing: f64,
}

impl Default for Recipe {
    /// The workshop's: Adam, a constant rate, no smoothing.
    fn default() -> Recipe {
        Recipe {
            optimizer: Optimizer::Adam,
            weight_decay: 0.0,
            momentum: 0.0,
            nesterov: false,
            schedule: Schedule::Constant,
            warmup_epochs: 0.0,
            label_smoothing: 0.0,
        }
    }
}

/// The lowest training loss label smoothing `epsilon` allows over `classes` classes: the
/// entropy of the smoothed target (1 - epsilon + epsilon / C on the label, epsilon / C on
/// each other class), which a perfect model's cross-entropy against it reaches and never
/// passes. 0 without smoothing; 0.1 over 3 classes: 0.2911.
pub fn smoothed_loss_floor(epsilon: f64, classes: usize) -> f64 {
    if epsilon <= 0.0 || classes < 2 {
        return 0.0;
    }
    let c = classes as f64;
    let on = 1.0 - epsilon + epsilon / c;
    let off = epsilon / c;
    -(on * on.ln()) - (c - 1.0) * off * off.ln()
}

/// `end + (start - end) / 2 * (cos(pi * pct) + 1)`: PyTorch's cosine annealing.
fn annealing_cos(start: f64, end: f64, pct: f64) -> f64 {
    end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0)
}

impl Recipe {
    /// Whether this is the workshop's recipe (every path then runs exactly as before).
    pub fn is_default(&self) -> bool {
        *self == Recipe::default()
    }

    /// The recipe in words, for run_info.json and the pack's README: "AdamW (beta1 0.9, beta2
    /// 0.999, eps 1e-8, decoupled weight decay 0.01); cosine schedule, 1 warm-up epoch(s);
    /// label smoothing 0.1".
    pub fn describe(&self, betas: (f32, f32), epsilon: f32) -> String {
        let adam = format!("beta1 {}, beta2 {}, eps {epsilon:e}", betas.0, betas.1);
        let optimizer = match self.optimizer {
            Optimizer::Adam => format!("Adam ({adam})"),
            Optimizer::Adamw => format!(
                "AdamW ({adam}, decoupled weight decay {})",
                self.weight_decay
            ),
            Optimizer::Sgd => format!(
                "SGD (momentum {}{}, L2 weight decay {})",
                self.momentum,
                if self.nesterov { ", Nesterov" } else { "" },
                self.weight_decay
            ),
        };
        let mut text = format!("{optimizer}; {} rate", self.schedule.as_str());
        if self.warmup_epochs > 0.0 {
            text.push_str(&format!(", {} warm-up epoch(s)", self.warmup_epochs));
        }
        if self.label_smoothing > 0.0 {
            text.push_str(&format!("; label smoothing {}", self.label_smoothing));
        }
        text
    }

    /// Whether the rate changes during a run (a schedule other than constant, or a warm-up).
    pub fn moves_rate(&self) -> bool {
        self.schedule != Schedule::Constant || self.warmup_epochs > 0.0
    }

    /// The rate of the step that starts at `step` of `total` steps (a fraction of the run in
    /// steps: a step is one batch of the requested size, so a halved batch keeps the
    /// schedule), for a base rate `lr` and `steps_per_epoch`. As PyTorch's schedulers
    /// stepped once a batch.
    pub fn lr_at(&self, lr: f64, step: f64, total: f64, steps_per_epoch: f64) -> f64 {
        let warmup = (self.warmup_epochs * steps_per_epoch).min(total);
        match self.schedule {
            Schedule::Onecycle => {
                let pct = match self.warmup_epochs {
                    w if w > 0.0 => warmup / total.max(1.0),
                    _ => ONECYCLE_PCT_START,
                };
                let initial = lr / ONECYCLE_DIV;
                let last = initial / ONECYCLE_FINAL_DIV;
                let rise_end = (pct * total - 1.0).max(0.0);
                let end = (total - 1.0).max(rise_end + 1.0);
                if step <= rise_end && rise_end > 0.0 {
                    annealing_cos(initial, lr, step / rise_end)
                } else {
                    annealing_cos(lr, last, ((step - rise_end) / (end - rise_end)).min(1.0))
                }
            }
            // Capped: a warm-up of a fraction of a step must not push the rate past `lr`.
            _ if step < warmup => lr * ((step + 1.0) / warmup).min(1.0),
            Schedule::Constant => lr,
            Schedule::Cosine => {
                let span = (total - warmup).max(1.0);
                annealing_cos(lr, 0.0, ((step - warmup) / span).min(1.0))
            }
            Schedule::Step => {
                let drops = STEP_MILESTONES
                    .iter()
                    .filter(|m| step >= (*m * total).floor())
                    .count();
                lr * STEP_GAMMA.powi(drops as i32)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(schedule: Schedule, warmup_epochs: f64) -> Recipe {
        Recipe {
            schedule,
            warmup_epochs,
            ..Recipe::default()
        }
    }

    /// The floor is where a model that puts its softmax exactly on the smoothed target
    /// lands: PyTorch's `CrossEntropyLoss(label_smoothing=0.1)` of logits log(target) over
    /// 3 classes gives 0.29114 (-(0.9333 ln 0.9333 + 2 * 0.0333 ln 0.0333)).
    #[test]
    fn the_smoothed_loss_floor_is_the_targets_entropy() {
        assert_eq!(smoothed_loss_floor(0.0, 3), 0.0);
        assert!(
            (smoothed_loss_floor(0.1, 3) - 0.291_14).abs() < 1e-5,
            "{}",
            smoothed_loss_floor(0.1, 3)
        );
        // Uniform targets: ln C.
        assert!((smoothed_loss_floor(1.0, 4) - 4f64.ln()).abs() < 1e-12);
        assert!(smoothed_loss_floor(0.2, 3) > smoothed_loss_floor(0.1, 3));
    }

    #[test]
    fn schedules_follow_pytorchs_formulas() {
        // 10 epochs of 4 steps, base 0.1.
        let at = |r: &Recipe, s: f64| r.lr_at(0.1, s, 40.0, 4.0);
        let constant = recipe(Schedule::Constant, 0.0);
        assert_eq!(at(&constant, 0.0), 0.1);
        assert_eq!(at(&constant, 39.0), 0.1);
        // Warm-up: (step + 1) / warm-up steps of the rate.
        // A warm-up shorter than a step never exceeds the rate.
        let tiny = recipe(Schedule::Constant, 1e-9);
        assert_eq!(at(&tiny, 0.0), 0.1);
        let warm = recipe(Schedule::Constant, 1.0);
        assert!((at(&warm, 0.0) - 0.025).abs() < 1e-12);
        assert!((at(&warm, 3.0) - 0.1).abs() < 1e-12);
        assert_eq!(at(&warm, 4.0), 0.1);
        // Cosine: CosineAnnealingLR(T_max = 40): half way is half the rate, as a linear decay
        // would be too; a quarter of the way in it is 0.05 * (1 + cos(pi / 4)) = 0.0854
        // (linear: 0.075), three quarters 0.0146 (linear: 0.025).
        let cosine = recipe(Schedule::Cosine, 0.0);
        assert!((at(&cosine, 20.0) - 0.05).abs() < 1e-12);
        assert!((at(&cosine, 0.0) - 0.1).abs() < 1e-12);
        let quarter = 0.05 * (1.0 + (std::f64::consts::PI / 4.0).cos());
        assert!(
            (at(&cosine, 10.0) - quarter).abs() < 1e-12,
            "{}",
            at(&cosine, 10.0)
        );
        assert!((at(&cosine, 30.0) - (0.1 - quarter)).abs() < 1e-12);
        // After a warm-up of 1 epoch (4 steps) the cosine spans the 36 steps left.
        let warm_cosine = recipe(Schedule::Cosine, 1.0);
        assert!((at(&warm_cosine, 13.0) - quarter).abs() < 1e-12);
        // Step: /10 at step 20 and again at 30.
        let step = recipe(Schedule::Step, 0.0);
        assert!((at(&step, 19.0) - 0.1).abs() < 1e-12);
        assert!((at(&step, 20.0) - 0.01).abs() < 1e-12);
        assert!((at(&step, 30.0) - 0.001).abs() < 1e-12);
        // One-cycle: OneCycleLR(max_lr 0.1, total_steps 40): starts at 0.1/25, peaks at step
        // 0.3 * 40 - 1 = 11, ends at 0.1/25/1e4 on step 39.
        let one = recipe(Schedule::Onecycle, 0.0);
        assert!((at(&one, 0.0) - 0.004).abs() < 1e-12);
        assert!((at(&one, 11.0) - 0.1).abs() < 1e-12);
        assert!((at(&one, 39.0) - 0.004 / 1e4).abs() < 1e-15);
        // Its rising half is a cosine too: half way up (step 5.5) the mean of start and peak,
        // a quarter of the way up 0.004 + 0.096 * (1 - cos(pi / 4)) / 2 (linear: 0.028).
        assert!((at(&one, 5.5) - 0.052).abs() < 1e-12);
        let rising = 0.004 + 0.096 * (1.0 - (std::f64::consts::PI / 4.0).cos()) / 2.0;
        assert!(
            (at(&one, 2.75) - rising).abs() < 1e-12,
            "{}",
            at(&one, 2.75)
        );
        // And so is its falling part: a quarter of the way down from step 11 to 39 (step 18).
        let falling =
            0.1 * 4e-6 + (0.1 - 0.1 * 4e-6) / 2.0 * (1.0 + (std::f64::consts::PI / 4.0).cos());
        assert!(
            (at(&one, 18.0) - falling).abs() < 1e-12,
            "{}",
            at(&one, 18.0)
        );
    }
}
