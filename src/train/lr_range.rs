//! The learning-rate range test (Smith; fastai's `lr_find`): from a fresh model, one step a
//! batch at a rate rising exponentially from `start` to `end`, the loss smoothed as it goes;
//! the test stops when the smoothed loss diverges. The suggestion is the rate where the
//! loss falls fastest against log(lr) (fastai's "steepest" point).

use super::engine::EngineChoice;
use super::{Context, StepFailure, TrainSettings, device_error};
use crate::data::ImageDataset;
use crate::error::{Result, TrainerError};
use crate::interrupt;
use crate::model::Net;

/// The smoothing of the loss (an exponential moving average, debiased).
pub const SMOOTHING: f64 = 0.98;
/// The test stops once the smoothed loss is this many times its lowest.
pub const DIVERGED_FACTOR: f64 = 4.0;

/// The range to sweep.
#[derive(Clone, Copy, Debug)]
pub struct LrRange {
    pub start: f64,
    pub end: f64,
    pub steps: usize,
}

/// One step of the test.
#[derive(Clone, Copy, Debug)]
pub struct LrPoint {
    pub step: usize,
    pub lr: f64,
    pub loss: f64,
    pub smoothed: f64,
}

/// What the test found.
#[derive(Clone, Debug)]
pub struct LrFound {
    pub points: Vec<LrPoint>,
    /// Why it ended before `steps`, if it did.
    pub stopped: Option<String>,
    /// The suggested rate and the step it was read at, when there were enough points.
    pub suggestion: Option<(f64, usize)>,
}

/// The rate of step `i` of the range.
fn rate(range: &LrRange, i: usize) -> f64 {
    let t = i as f64 / (range.steps.max(2) - 1) as f64;
    range.start * (range.end / range.start).powf(t)
}

/// Runs the test on `train` with `choice`'s engine; `settings` gives the batch size,
/// shuffling and the recipe (its schedule is not used: the range is the schedule).
pub fn run(
    net: Net,
    train: &ImageDataset,
    choice: &EngineChoice,
    settings: &TrainSettings,
    range: &LrRange,
    ctx: &Context,
) -> Result<LrFound> {
    let mut weights = choice.engine.weights(net, ctx.device, &settings.recipe);
    let feed = crate::train::feed::Feed {
        shuffle_seed: Some(settings.shuffle_seed),
        augment: settings.augment.seeded(settings.shuffle_seed),
        stripes_on_device: choice.stripes_on_device(),
    };
    let device = weights.batch_device(ctx.device);
    let loader = crate::train::feed::loader(train, settings.batch_size, feed, &device);
    let (mut points, mut average, mut best) = (Vec::new(), 0.0, f64::INFINITY);
    let mut stopped = None;
    ctx.progress.start("lr-find", range.steps as u64);
    'epochs: loop {
        // An epoch without a batch (an empty training part) would loop here for ever.
        let before = points.len();
        for batch in loader.clone().iter() {
            let batch = batch.map_err(|e| TrainerError::bad_input(format!("reading data: {e}")))?;
            if interrupt::requested() {
                return Err(TrainerError::Interrupted);
            }
            let i = points.len();
            let lr = rate(range, i);
            // No halving here: a step that fails ends the test, as the loop's reads do.
            let fail = |f: StepFailure| match f {
                StepFailure::Allocation(r) | StepFailure::Other(r) => device_error(ctx, &r),
            };
            let done = weights.step(&batch, settings, lr).map_err(fail)?;
            let loss = weights.read_loss(&done).map_err(fail)? as f64;
            average = SMOOTHING * average + (1.0 - SMOOTHING) * loss;
            let smoothed = average / (1.0 - SMOOTHING.powi(i as i32 + 1));
            points.push(LrPoint {
                step: i + 1,
                lr,
                loss,
                smoothed,
            });
            ctx.progress
                .advance(1, &format!("lr-find step {} lr {lr:.2e}", i + 1));
            best = best.min(smoothed);
            if !smoothed.is_finite() || smoothed > DIVERGED_FACTOR * best {
                stopped = Some(format!(
                    "the smoothed loss diverged at lr {lr:.3e} (step {}): above {DIVERGED_FACTOR}x its lowest",
                    i + 1
                ));
                break 'epochs;
            }
            if points.len() == range.steps {
                break 'epochs;
            }
        }
        if points.len() == before {
            return Err(TrainerError::bad_input(
                "the training part has no batch to train on: check --data and --split",
            ));
        }
    }
    ctx.progress.finish();
    let suggestion = steepest(&points);
    Ok(LrFound {
        points,
        stopped,
        suggestion,
    })
}

/// The rate where the loss falls fastest against log(lr), on a centred moving average of the
/// raw losses (the running average the stop watches lags by tens of steps, which would put
/// the suggestion late, near the divergence), searched between the first tenth of the
/// points and the lowest average: the descent is over by then.
pub fn steepest(points: &[LrPoint]) -> Option<(f64, usize)> {
    let half = (points.len() / 40).max(2);
    if points.len() < 2 * half + 5 {
        return None;
    }
    let average: Vec<f64> = (half..points.len() - half)
        .map(|i| {
            let window = &points[i - half..=i + half];
            window.iter().map(|p| p.loss).sum::<f64>() / window.len() as f64
        })
        .collect();
    // average[j] is centred on point j + half.
    let lowest = average
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_finite())
        .min_by(|a, b| a.1.total_cmp(b.1))?
        .0;
    let first = (points.len() / 10).saturating_sub(half).max(1);
    (first..lowest)
        .filter_map(|j| {
            let (a, b) = (&points[j - 1 + half], &points[j + 1 + half]);
            let slope = (average[j + 1] - average[j - 1]) / (b.lr.ln() - a.lr.ln());
            slope.is_finite().then_some((slope, j + half))
        })
        .min_by(|x, y| x.0.total_cmp(&y.0))
        .map(|(_, i)| (points[i].lr, points[i].step))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steepest_descent_is_found() {
        // A loss that falls fastest around lr 1e-2 (a logistic in log lr).
        let range = LrRange {
            start: 1e-5,
            end: 1.0,
            steps: 101,
        };
        let points: Vec<LrPoint> = (0..101)
            .map(|i| {
                let lr = rate(&range, i);
                let x = lr.log10() + 2.0;
                let smoothed = 1.0 / (1.0 + (3.0 * x).exp());
                LrPoint {
                    step: i + 1,
                    lr,
                    loss: smoothed,
                    smoothed,
                }
            })
            .collect();
        assert!((rate(&range, 0) - 1e-5).abs() < 1e-18);
        assert!((rate(&range, 100) - 1.0).abs() < 1e-12);
        let (lr, _) = steepest(&points).unwrap();
        assert!((lr.log10() + 2.0).abs() < 0.06, "{lr}");
        assert!(steepest(&points[..5]).is_none());
    }
}
