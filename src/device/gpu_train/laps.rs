//! How many loop laps one invocation of a training step's kernels runs, counted on the host
//! from the shaders' loops as the launch's sizes bound them: `shaders/cnn_sample.wgsl` (the
//! busiest invocation: the first of its workgroup, which takes every strided loop's extra
//! lap) and, for a step, `shaders/train_update.wgsl` (one workgroup over every parameter).
//! llvmpipe stops an invocation's loops after [`SOFTWARE_LOOP_CAP`] laps in all (the
//! shaders' "Loops"), so on a software adapter a model whose step would pass it takes burn's
//! layers from the start ([`super::past_software_loop_cap`]); the kernels' own checks
//! (`poison_if_loops_were_cut`) stay the last word.
//!
//! How llvmpipe counts (gallivm's SoA loops, Mesa 22.3; each rule was measured laps for laps
//! on lavapipe, by a loop at a kernel's end that runs out the laps left; tests/gpu_kernels.rs
//! runs shapes on both sides of the cap against the count): the lanes of a SIMD vector run a loop
//! together and the vector has one limiter, taken down by one at every pass through the
//! loop's end, so
//! - a loop of `n` iterations costs `n + 1` laps: the last pass, where every lane breaks
//!   out, counts too ([`lp`]);
//! - branches do not jump: code in an `if` that no lane takes, and the body on that last
//!   pass, still run with every lane masked, so each loop in them costs one lap (the
//!   `S_*` constants: the loops a function holds, nested ones included);
//! - the busiest lane of the vector sets the count, so a loop inside a data-dependent branch
//!   is counted in full (the count is then high, never low);
//! - a loop of constant length may be unrolled (no laps): counted as a loop, it is high.
//!
//! Before this, the count left out the last passes, the masked branches and the update
//! kernel: the update kernel of a hidden layer of 600 units on the network (7.5
//! million parameters, eight a lap, each lap passing sixteen masked loops) passed the cap
//! (its gradient loop alone ran 62,785 laps, the optimizer's loop 3,687 more), while the
//! sample kernel, the only one counted (55,417), ran 52,722. Measured against this count:
//! the update kernel's is exact but a lap; the sample kernel's is high by 500 to 1,700 laps
//! on the shapes measured (the pool's loop of four values is unrolled) and a few thousand
//! on a batch-norm step (its trees too).

use super::{BlockLayout, Layout, SAMPLE_WORKGROUP};

/// llvmpipe's LP_MAX_TGSI_LOOP_ITERATIONS: loop laps one shader invocation may run in all.
pub const SOFTWARE_LOOP_CAP: u64 = 65_535;

/// The most laps a count may give for the kernels to be used on a software adapter: fifteen
/// sixteenths of the cap. The count is exact or high on every shape measured (see the
/// module's doc), the margin is for another llvmpipe compiling a loop differently; the
/// kernels' own checks stay the last word.
pub const SOFTWARE_LOOP_BUDGET: u64 = SOFTWARE_LOOP_CAP * 15 / 16;

const WG: u64 = SAMPLE_WORKGROUP as u64;
/// Laps of the fixed tree of a workgroup's sums (`norm_sums`): log2 of the workgroup.
const TREE: u64 = SAMPLE_WORKGROUP.trailing_zeros() as u64;

/// Laps of `for (var e = t; e < count; e = e + WG)` for invocation 0.
fn strided(count: usize) -> u64 {
    (count as u64).div_ceil(WG)
}

fn n(v: usize) -> u64 {
    v as u64
}

/// A loop of `iterations`, each running `body` laps of the loops inside it, whose body holds
/// `inner` loops: a lap per iteration, and the last pass (every lane breaking out) runs the
/// body masked: one lap, and one for each loop inside.
fn lp(iterations: u64, body: u64, inner: u64) -> u64 {
    iterations * (1 + body) + 1 + inner
}

/// [`lp`] for a loop whose iterations differ: `bodies` laps in all.
fn lp_each(iterations: u64, bodies: u64, inner: u64) -> u64 {
    iterations + bodies + 1 + inner
}

// The loops each function of cnn_sample.wgsl holds (after inlining, nested ones included):
// what it costs where every lane is masked (an untaken branch, a loop's last pass).
const S_LOAD_IMAGE: u64 = 3;
const S_CONV_FORWARD: u64 = 5;
const S_POOL_FORWARD: u64 = 2;
const S_CLASSIFY: u64 = 4;
const S_CLASSIFIER_BACKWARD: u64 = 4;
const S_FEATURE_GRADIENT: u64 = 2;
const S_LAST_OUTPUT_BACKWARD: u64 = 1 + S_FEATURE_GRADIENT;
const S_WEIGHT_BACKWARD: u64 = 8;
const S_INPUT_BACKWARD: u64 = 5;
const S_POOL_BACKWARD: u64 = 2;
/// f{p}, j{eighths, rest}, and linear_logits c{i} in each branch.
const S_HEAD_FORWARD: u64 = 2 + 3 + 2 + 2;
/// j, c, j{c}, else c, k, f, o{feature_gradient}, last_output_backward.
const S_HEAD_BACKWARD: u64 = 4 + 1 + 2 + 1 + S_FEATURE_GRADIENT + S_LAST_OUTPUT_BACKWARD;
/// sample_loss's three, loss_gradient's one.
const S_LOSS: u64 = 4;
const S_NORM_SUMS: u64 = 1;
const S_NORM_STATISTICS: u64 = 1 + 2 + 2 * S_NORM_SUMS;
const S_NORMALIZE: u64 = 1;
const S_NORM_BACKWARD: u64 = 1 + 2 + S_NORM_SUMS;
const S_BATCH_HEAD: u64 = S_CLASSIFY
    + S_HEAD_FORWARD
    + S_LOSS
    + S_CLASSIFIER_BACKWARD
    + S_LAST_OUTPUT_BACKWARD
    + S_HEAD_BACKWARD;
/// The backward loop's body of `one_sample`.
const S_BACKWARD_BLOCK: u64 = S_WEIGHT_BACKWARD + S_INPUT_BACKWARD + S_POOL_BACKWARD;
const S_WHOLE_BATCH: u64 = (1 + S_LOAD_IMAGE)
    + (1 + (1 + S_CONV_FORWARD) + S_NORM_STATISTICS + (1 + S_NORMALIZE) + (1 + S_POOL_FORWARD))
    + (1 + S_BATCH_HEAD)
    + (1 + S_NORM_BACKWARD + (1 + S_WEIGHT_BACKWARD) + (1 + S_INPUT_BACKWARD + S_POOL_BACKWARD));
/// `one_sample` after the batch-norm branch (whole_batch's call and return).
const S_SAMPLE_REST: u64 = S_LOAD_IMAGE
    + (1 + S_CONV_FORWARD + S_POOL_FORWARD)
    + S_CLASSIFY
    + S_HEAD_FORWARD
    + S_LOSS
    + S_CLASSIFIER_BACKWARD
    + S_LAST_OUTPUT_BACKWARD
    + S_HEAD_BACKWARD
    + (1 + S_BACKWARD_BLOCK);
const S_ONE_SAMPLE: u64 = S_WHOLE_BATCH + S_SAMPLE_REST;

/// The launch a count is for: a batch of `batch` samples on `slots` workgroups in `mode`
/// (0 logits, 1 losses, 2 gradients), `classes` classes.
pub(super) struct Launch {
    pub batch: usize,
    pub slots: usize,
    pub mode: u32,
    pub classes: usize,
    pub whole_batch: bool,
}

/// The laps of the busiest invocation of the sample kernel for the launch, up to its check
/// (whose loop of two laps must run whole: the count is within the cap exactly when the
/// kernel is not cut short).
pub(super) fn sample_kernel(layout: &Layout, launch: &Launch) -> u64 {
    let poison = 2;
    let samples = n(launch.batch.div_ceil(launch.slots.max(1)));
    let laps = match launch.whole_batch {
        // Slot 0 takes every sample: the first runs whole_batch, the others only pass
        // through one_sample masked.
        true => {
            (1 + whole_batch(layout, launch) + S_SAMPLE_REST)
                + samples.saturating_sub(1) * (1 + S_ONE_SAMPLE)
                + 1
                + S_ONE_SAMPLE
        }
        false => lp(samples, one_sample(layout, launch), S_ONE_SAMPLE),
    };
    laps + poison
}

/// `one_sample` without batch norm: load, forward, head, loss and (mode 2) backward.
fn one_sample(layout: &Layout, launch: &Launch) -> u64 {
    let blocks = &layout.blocks;
    let mut laps = S_WHOLE_BATCH + load_image(blocks);
    let forward: u64 = blocks
        .iter()
        .enumerate()
        .map(|(b, k)| conv_forward(k) + pool_forward(k, b + 1 < blocks.len()))
        .sum();
    laps += lp_each(n(blocks.len()), forward, S_CONV_FORWARD + S_POOL_FORWARD);
    laps += head_forward(layout, launch.classes) + loss(launch.mode, launch.classes);
    if launch.mode != 2 {
        let rest = S_CLASSIFIER_BACKWARD + S_LAST_OUTPUT_BACKWARD + S_HEAD_BACKWARD;
        return laps + rest + 1 + S_BACKWARD_BLOCK;
    }
    laps += head_backward(layout, launch.classes);
    // The loop leaves by its `break` at block 0: no pass after the last lap.
    for (b, k) in blocks.iter().enumerate() {
        laps += 1 + weight_backward(k);
        laps += match b {
            0 => S_INPUT_BACKWARD + S_POOL_BACKWARD,
            _ => input_backward(k) + pool_backward(&blocks[b - 1]),
        };
    }
    laps
}

/// `whole_batch`: a batch-norm training step, every phase over every sample in turn.
fn whole_batch(layout: &Layout, launch: &Launch) -> u64 {
    let (blocks, batch) = (&layout.blocks, n(launch.batch));
    let mut laps = lp(batch, load_image(blocks), S_LOAD_IMAGE);
    let mut forward = 0;
    for (b, k) in blocks.iter().enumerate() {
        forward += lp(batch, conv_forward(k), S_CONV_FORWARD) + norm_statistics(k, launch.batch);
        forward += lp(batch, lp(strided(k.h * k.w * k.outputs), 0, 0), S_NORMALIZE);
        forward += match b + 1 < blocks.len() {
            true => lp(batch, pool_forward(k, true), S_POOL_FORWARD),
            false => 1 + S_POOL_FORWARD,
        };
    }
    let s_block = 1 + S_CONV_FORWARD + S_NORM_STATISTICS + 1 + S_NORMALIZE + 1 + S_POOL_FORWARD;
    laps += lp_each(n(blocks.len()), forward, s_block);
    laps += lp(batch, batch_head(layout, launch.classes), S_BATCH_HEAD);
    // The loop leaves by its `break` at block 0: no pass after the last lap.
    for (b, k) in blocks.iter().enumerate() {
        laps += 1 + norm_backward(k, launch.batch);
        laps += lp(batch, weight_backward(k), S_WEIGHT_BACKWARD);
        let s_input = S_INPUT_BACKWARD + S_POOL_BACKWARD;
        laps += match b {
            0 => 1 + s_input,
            _ => lp(
                batch,
                input_backward(k) + pool_backward(&blocks[b - 1]),
                s_input,
            ),
        };
    }
    laps
}

/// `batch_head`: one sample's head forward, loss and head backward.
fn batch_head(layout: &Layout, classes: usize) -> u64 {
    head_forward(layout, classes) + loss(2, classes) + head_backward(layout, classes)
}

/// `load_image`: the first block's input, then every later block's border.
fn load_image(blocks: &[BlockLayout]) -> u64 {
    let bordered = |k: &BlockLayout| lp(strided((k.h + 2) * (k.w + 2) * k.inputs), 0, 0);
    let later: u64 = blocks.iter().skip(1).map(bordered).sum();
    blocks.first().map_or(0, bordered) + lp(n(blocks.len().max(1) - 1), 0, 1) + later
}

/// `conv_forward`: pixels by 64, outputs by 16, nine taps of every input, sixteen stores.
fn conv_forward(k: &BlockLayout) -> u64 {
    let taps = lp(9, lp(n(k.inputs), 0, 0), 1);
    lp(strided(k.h * k.w), by16(k.outputs, taps, 3), 4)
}

/// A loop over `total` channels sixteen a lap, each lap running `body` laps, then storing
/// its channels (up to sixteen) in a loop of their own; `inner` loops in its body.
fn by16(total: usize, body: u64, inner: u64) -> u64 {
    let laps = n(total.div_ceil(16));
    laps * (1 + body + 1) + n(total) + 1 + inner
}

/// `pool_forward` (masked after the last block): the pooled map by 64, four window values
/// each.
fn pool_forward(k: &BlockLayout, pooled: bool) -> u64 {
    match pooled {
        true => lp(strided((k.h / 2) * (k.w / 2) * k.outputs), lp(4, 0, 0), 1),
        false => S_POOL_FORWARD,
    }
}

/// The head forward: `classify` (the workshop's head) or `head_forward`, the other masked.
fn head_forward(layout: &Layout, classes: usize) -> u64 {
    let (hd, last) = (
        &layout.head,
        layout.blocks.last().copied().unwrap_or_default(),
    );
    let pixels = n(last.h * last.w);
    if hd.kind == 0 {
        let features = lp(strided(last.outputs), lp(pixels, 0, 0), 1);
        return features + lp(strided(classes), lp(n(last.outputs), 0, 0), 1) + S_HEAD_FORWARD;
    }
    let average = match hd.kind {
        1 => lp(pixels, 0, 0),
        _ => 1,
    };
    let features = lp(strided(hd.features), average, 1);
    // The logits' loop: classes by 64, a lap for each of the layer's inputs.
    let logits = |inputs: usize| lp(strided(classes), lp(n(inputs), 0, 0), 1);
    let head = match hd.hidden {
        0 => 3 + logits(hd.features) + 2,
        hidden => lp(strided(hidden), eighths(hd.features), 2) + logits(hidden) + 2,
    };
    S_CLASSIFY + features + head
}

/// A dot product of `len` terms: eight a lap, then the rest one a lap.
fn eighths(len: usize) -> u64 {
    lp(n(len / 8), 0, 0) + lp(n(len % 8), 0, 0)
}

/// `loss_and_gradient` for invocation 0 (which alone runs sample_loss's three loops over the
/// classes, the label smoothing's counted), then the gradient's; masked past the mode.
fn loss(mode: u32, classes: usize) -> u64 {
    let c = n(classes);
    let sample_loss = c + (c + 1) + (c + 1);
    match mode {
        0 => S_LOSS,
        1 => sample_loss + 1,
        _ => sample_loss + lp(strided(classes), 0, 0),
    }
}

/// The head backward down to the last block's output gradient (`classifier_backward` and
/// `last_output_backward`, or `head_backward`; the other masked).
fn head_backward(layout: &Layout, classes: usize) -> u64 {
    let (hd, last) = (
        &layout.head,
        layout.blocks.last().copied().unwrap_or_default(),
    );
    // The flatten head's feature gradient, counted in full at every lap (it runs where any
    // lane of the vector has a live pixel).
    let feature_gradient = match hd.kind {
        2 => eighths(hd.first_outputs),
        _ => S_FEATURE_GRADIENT,
    };
    let last_output = last_output_backward(&last, feature_gradient);
    if hd.kind == 0 {
        let c = n(classes);
        return lp(strided(last.outputs * classes), 0, 0)
            + lp(strided(classes), 0, 0)
            + lp(strided(last.outputs), lp(c, 0, 0), 1)
            + last_output
            + S_HEAD_BACKWARD;
    }
    let mut laps = S_CLASSIFIER_BACKWARD + S_LAST_OUTPUT_BACKWARD;
    laps += match hd.hidden {
        0 => 4 + lp(strided(classes), 0, 0),
        hidden => {
            lp(strided(hidden * classes), 0, 0)
                + lp(strided(classes), 0, 0)
                + lp(strided(hidden), lp(n(classes), 0, 0), 1)
                + 1
        }
    };
    laps += lp(strided(hd.first_outputs), 0, 0) + lp(strided(hd.features), 0, 0);
    laps += match hd.kind {
        1 => lp(
            strided(last.outputs),
            eighths(hd.first_outputs),
            S_FEATURE_GRADIENT,
        ),
        _ => 1 + S_FEATURE_GRADIENT,
    };
    laps + last_output
}

/// `last_output_backward` over the last block's bordered output gradient, a pixel's
/// feature gradient costing `feature_gradient` laps: in full on every lap that holds an
/// inside pixel (where one lane of the vector has a live pixel it runs whole), masked on a
/// lap of border pixels only (every lap of the workgroup's 64 values, whatever the vector's
/// width).
fn last_output_backward(last: &BlockLayout, feature_gradient: u64) -> u64 {
    let (bw, channels) = (last.w + 2, last.outputs.max(1));
    let total = (last.h + 2) * bw * channels;
    let inside = |pixel: usize| {
        let (y, x) = (pixel / bw, pixel % bw);
        (1..=last.h).contains(&y) && (1..=last.w).contains(&x)
    };
    let laps = strided(total);
    let full = (0..laps as usize)
        .filter(|&i| {
            let (first, end) = (i * WG as usize, ((i + 1) * WG as usize).min(total));
            (first / channels..=(end - 1) / channels).any(inside)
        })
        .count() as u64;
    let masked = laps - full;
    full * (1 + feature_gradient) + masked * (1 + S_FEATURE_GRADIENT) + 1 + S_FEATURE_GRADIENT
}

/// `weight_backward`: outputs by 16, taps by 64, every pixel, sixteen stores; then the bias
/// (no lap but the last pass before a batch norm).
fn weight_backward(k: &BlockLayout) -> u64 {
    let pixels = lp(n(k.h), lp(n(k.w), 0, 0), 1);
    let taps = strided(9 * k.inputs);
    let weights: u64 = (0..k.outputs)
        .step_by(16)
        .map(|o0| 1 + lp(taps, pixels + lp(n(16.min(k.outputs - o0)), 0, 0), 3))
        .sum::<u64>()
        + 1
        + 4;
    let biases = match k.norm {
        0 => strided(k.outputs),
        _ => 0,
    };
    weights + lp(biases, pixels, 2)
}

/// `input_backward`: pixels by 64, inputs by 16, nine taps of every output, sixteen stores.
fn input_backward(k: &BlockLayout) -> u64 {
    let taps = lp(9, lp(n(k.outputs), 0, 0), 1);
    lp(strided(k.h * k.w), by16(k.inputs, taps, 3), 4)
}

/// `pool_backward` into block `prev`'s output gradient.
fn pool_backward(prev: &BlockLayout) -> u64 {
    lp(strided((prev.h + 2) * (prev.w + 2) * prev.outputs), 0, 0)
        + lp(strided((prev.h / 2) * (prev.w / 2) * prev.outputs), 0, 0)
}

/// `norm_statistics`: per channel, two passes over the batch's values and two trees.
fn norm_statistics(k: &BlockLayout, batch: usize) -> u64 {
    let pass = lp(strided(batch * k.h * k.w), 0, 0);
    lp(
        n(k.outputs),
        2 * pass + 2 * lp(TREE, 0, 0),
        S_NORM_STATISTICS - 1,
    )
}

/// `norm_backward`: per channel, two passes over the batch's values and one tree.
fn norm_backward(k: &BlockLayout, batch: usize) -> u64 {
    let pass = lp(strided(batch * k.h * k.w), 0, 0);
    lp(n(k.outputs), 2 * pass + lp(TREE, 0, 0), S_NORM_BACKWARD - 1)
}

/// The update kernel's laps (`shaders/train_update.wgsl`, one workgroup of `workgroup`
/// invocations over every parameter; invocation 0, up to its check) for a step whose sample
/// kernel wrote `rows` gradient rows for a batch of `batch`: the gradient's loop (eight
/// parameters a lap, each summing the rows in a loop of four a lap and a loop of the rest,
/// masked for the head's dense block and past the end), the losses, two trees of the
/// workgroup, and the optimizer's loop (eight parameters a lap, no loop inside).
pub(super) fn update_kernel(layout: &Layout, rows: usize, batch: usize, workgroup: u32) -> u64 {
    let wg = workgroup as usize;
    let (params, dense) = (
        layout.params,
        layout.head.w1..layout.head.w1 + layout.head.dense,
    );
    let laps = n(params.div_ceil(8 * wg));
    // The groups of `wg` parameters (one call of sum_gradient each) that hold one summed
    // over the rows (the dense block's are read as they are).
    let summed = (0..params.div_ceil(wg))
        .filter(|g| {
            let (start, end) = (g * wg, ((g + 1) * wg).min(params));
            start < dense.start || end > dense.end || dense.is_empty()
        })
        .count();
    let row_laps = n(rows / 4 + rows % 4);
    let gradient = lp(laps, 8 * S_ROWS, 8 * S_ROWS) + n(summed) * row_laps;
    let losses = lp(n(batch.div_ceil(wg)), 0, 0);
    let trees = 2 * lp(n(wg.trailing_zeros() as usize), 0, 0);
    // The gradients-only branch's check, masked; then the optimizer's loop.
    let optimizer = 1 + lp(laps, 0, 0);
    // One lap more than the loops account for, measured on some models (those of a few
    // thousand parameters, a 16,32,64 one of 288,266), never fewer.
    let unexplained = 1;
    gradient + losses + trees + optimizer + 2 + unexplained
}

/// The loops of `sum_gradient`: the rows four a lap, then the rest.
const S_ROWS: u64 = 2;
