//! How many loop laps one invocation of `shaders/cnn_sample.wgsl` runs, counted from the
//! shader's loops as the launch's sizes bound them (the busiest invocation: the first of its
//! workgroup, which takes every strided loop's extra lap). llvmpipe stops an invocation's
//! loops after [`SOFTWARE_LOOP_CAP`] laps in all (the shader's "Loops"), so on a software
//! adapter a model whose step would pass it takes burn's layers from the start
//! ([`super::past_software_loop_cap`]); the kernel's own check (`poison_if_loops_were_cut`)
//! stays the last word. Every loop counts, those of constant length too (the compiler may
//! unroll them: the count is then a little high, never low). tests/gpu_kernels.rs runs
//! shapes on both sides of the cap against this count.

use super::{BlockLayout, Layout, SAMPLE_WORKGROUP};

/// llvmpipe's LP_MAX_TGSI_LOOP_ITERATIONS: loop laps one shader invocation may run in all.
pub const SOFTWARE_LOOP_CAP: u64 = 65_535;

/// The most laps a count may give for the kernel to be used on a software adapter: four
/// fifths of the cap. The count is close, not exact: with a wide hidden layer the kernel ran
/// more laps than counted (hidden 600 on the 32,64 28x28 network was counted 55,417
/// and was cut short on lavapipe, 10 classes, batch 32), so the margin keeps such shapes on
/// burn's layers; the kernel's own check stays the last word.
pub const SOFTWARE_LOOP_BUDGET: u64 = SOFTWARE_LOOP_CAP * 4 / 5;

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

/// The launch a count is for: a batch of `batch` samples on `slots` workgroups in `mode`
/// (0 logits, 1 losses, 2 gradients), `classes` classes.
pub(super) struct Launch {
    pub batch: usize,
    pub slots: usize,
    pub mode: u32,
    pub classes: usize,
    pub whole_batch: bool,
}

/// The laps of the busiest invocation of the launch.
pub(super) fn sample_kernel(layout: &Layout, launch: &Launch) -> u64 {
    let poison = 2;
    if launch.whole_batch {
        return whole_batch(layout, launch) + poison;
    }
    let samples = n(launch.batch.div_ceil(launch.slots.max(1)));
    samples * (1 + one_sample(layout, launch)) + poison
}

/// `one_sample`: load, forward, head, loss and (mode 2) backward.
fn one_sample(layout: &Layout, launch: &Launch) -> u64 {
    let blocks = &layout.blocks;
    let mut laps = load_image(blocks);
    for (b, k) in blocks.iter().enumerate() {
        laps += 1 + conv_forward(k) + pool_forward(k, b + 1 < blocks.len());
    }
    laps += head_forward(layout, launch.classes) + loss(launch);
    if launch.mode == 2 {
        laps += head_backward(layout, launch.classes);
        for (b, k) in blocks.iter().enumerate().rev() {
            laps += 1 + weight_backward(k);
            if b > 0 {
                laps += input_backward(k) + pool_backward(&blocks[b - 1]);
            }
        }
    }
    laps
}

/// `whole_batch`: a batch-norm training step, every phase over every sample in turn.
fn whole_batch(layout: &Layout, launch: &Launch) -> u64 {
    let (blocks, batch) = (&layout.blocks, n(launch.batch));
    let mut laps = batch * (1 + load_image(blocks));
    for (b, k) in blocks.iter().enumerate() {
        let pooled = b + 1 < blocks.len();
        laps += 1 + batch * (1 + conv_forward(k)) + norm_statistics(k, launch.batch);
        laps += batch * (1 + strided(k.h * k.w * k.outputs));
        laps += batch * (1 + pool_forward(k, pooled));
    }
    laps += batch
        * (1 + head_forward(layout, launch.classes)
            + loss(launch)
            + head_backward(layout, launch.classes));
    for (b, k) in blocks.iter().enumerate().rev() {
        laps += 1 + norm_backward(k, launch.batch) + batch * (1 + weight_backward(k));
        if b > 0 {
            laps += batch * (1 + input_backward(k) + pool_backward(&blocks[b - 1]));
        }
    }
    laps
}

/// `load_image`: the first block's input, then every later block's border.
fn load_image(blocks: &[BlockLayout]) -> u64 {
    let bordered = |k: &BlockLayout| strided((k.h + 2) * (k.w + 2) * k.inputs);
    blocks.first().map_or(0, bordered) + blocks.iter().skip(1).map(|k| 1 + bordered(k)).sum::<u64>()
}

/// `conv_forward`: pixels by 64, outputs by 16, nine taps of every input, sixteen stores.
fn conv_forward(k: &BlockLayout) -> u64 {
    let (pixels, outputs) = (strided(k.h * k.w), n(k.outputs.div_ceil(16)));
    pixels * (1 + outputs * (1 + 9 + 9 * n(k.inputs) + 16))
}

/// `pool_forward`: the pooled map by 64, four window values each.
fn pool_forward(k: &BlockLayout, pooled: bool) -> u64 {
    match pooled {
        true => strided((k.h / 2) * (k.w / 2) * k.outputs) * (1 + 4),
        false => 0,
    }
}

/// The head forward: `classify` (the workshop's head) or `head_forward`.
fn head_forward(layout: &Layout, classes: usize) -> u64 {
    let (hd, last) = (
        &layout.head,
        layout.blocks.last().copied().unwrap_or_default(),
    );
    let (pixels, classes) = (n(last.h * last.w), strided(classes));
    if hd.kind == 0 {
        return strided(last.outputs) * (1 + pixels) + classes * (1 + n(last.outputs));
    }
    let features = strided(hd.features) * (1 + if hd.kind == 1 { pixels } else { 0 });
    // The logits' loop (classes by 64, as many laps each as the layer's inputs).
    let logits = |inputs: usize| (1 + n(inputs)) * classes;
    match hd.hidden {
        0 => features + logits(hd.features),
        hidden => features + strided(hidden) * (1 + eighths(hd.features)) + logits(hidden),
    }
}

/// A dot product of `len` terms taken eight a lap, then the rest one a lap.
fn eighths(len: usize) -> u64 {
    n(len / 8 + len % 8)
}

/// `loss_and_gradient`: the first invocation's three loops over the classes, then the
/// gradient's.
fn loss(launch: &Launch) -> u64 {
    let classes = n(launch.classes);
    match launch.mode {
        0 => 0,
        1 => 3 * classes,
        _ => 3 * classes + strided(launch.classes),
    }
}

/// The head backward down to the last block's output gradient.
fn head_backward(layout: &Layout, classes: usize) -> u64 {
    let (hd, last) = (
        &layout.head,
        layout.blocks.last().copied().unwrap_or_default(),
    );
    let bordered = strided((last.h + 2) * (last.w + 2) * last.outputs);
    if hd.kind == 0 {
        let c = n(classes);
        return strided(last.outputs * classes)
            + strided(classes)
            + strided(last.outputs) * (1 + c)
            + bordered;
    }
    let feature_gradient = 1 + eighths(hd.first_outputs);
    let mut laps = match hd.hidden {
        0 => strided(classes),
        hidden => strided(hidden * classes) + strided(classes) + strided(hidden) * (1 + n(classes)),
    };
    laps += strided(hd.first_outputs) + strided(hd.features);
    match hd.kind {
        1 => laps + strided(last.outputs) * feature_gradient + bordered,
        _ => laps + bordered * feature_gradient,
    }
}

/// `weight_backward`: outputs by 16, taps by 64, every pixel; then the bias.
fn weight_backward(k: &BlockLayout) -> u64 {
    let pixels = n(k.h) * (1 + n(k.w));
    let outputs = n(k.outputs.div_ceil(16));
    let weights = outputs * (1 + strided(9 * k.inputs) * (1 + pixels + 16));
    let bias = match k.norm {
        0 => strided(k.outputs) * (1 + pixels),
        _ => 0,
    };
    weights + bias
}

/// `input_backward`: pixels by 64, inputs by 16, nine taps of every output.
fn input_backward(k: &BlockLayout) -> u64 {
    let (pixels, inputs) = (strided(k.h * k.w), n(k.inputs.div_ceil(16)));
    pixels * (1 + inputs * (1 + 9 + 9 * n(k.outputs) + 16))
}

/// `pool_backward` into block `prev`'s output gradient.
fn pool_backward(prev: &BlockLayout) -> u64 {
    strided((prev.h + 2) * (prev.w + 2) * prev.outputs)
        + strided((prev.h / 2) * (prev.w / 2) * prev.outputs)
}

/// `norm_statistics`: per channel, two passes over the batch's values and two trees.
fn norm_statistics(k: &BlockLayout, batch: usize) -> u64 {
    n(k.outputs) * (1 + 2 * strided(batch * k.h * k.w) + 2 * TREE)
}

/// `norm_backward`: per channel, two passes over the batch's values and one tree.
fn norm_backward(k: &BlockLayout, batch: usize) -> u64 {
    n(k.outputs) * (1 + 2 * strided(batch * k.h * k.w) + TREE)
}
