// sample_common: what the *_sample.wgsl kernels share, pasted into them where their template
// names it (src/device/gpu_kernels.rs fills it in; the template fills placeholders in one
// pass, so this file has none). Declares the bindings every sample kernel gets, in the
// order src/device/gpu_train.rs's launch_samples binds them; uses the including kernel's
// workgroup size WG and its MAX_CLASSES, and calls its one_sample(t, n, slot, first).
//
// The entry point hands each workgroup its samples; `put` sums a sample's gradient into the
// workgroup's row. A kernel fills logit[0 .. C) with one sample's logits, then calls, from
// uniform control flow, loss_and_gradient: sample_loss (the loss and correct prediction of
// sample n into stats[2n], stats[2n+1]) and, when training, loss_gradient (dlogit = (softmax -
// one-hot) / N, the gradient of the batch-mean loss; with label smoothing e the one-hot is
// (1 - e) one-hot + e / C, as PyTorch's CrossEntropyLoss). The prediction is the first maximum, as
// burn's argmax.

@group(0) @binding(0) var<storage, read_write> images: array<f32>;
@group(0) @binding(1) var<storage, read_write> labels: array<i32>;
@group(0) @binding(2) var<storage, read_write> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> logits_out: array<f32>;
@group(0) @binding(4) var<storage, read_write> grads: array<f32>;
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;
@group(0) @binding(7) var<uniform> dims: SampleDims;

// The launch's sizes: a uniform, so every value read from it (the sample loop's bounds, the
// mode, the blocks' sizes) is provably the same in the whole workgroup, and so is every
// barrier after it. src/device/gpu_train.rs (Layout::uniform) fills it, field for field.
struct SampleDims {
    n: u32,
    h: u32,
    w: u32,
    c: u32,
    p: u32,
    mode: u32,
    stride: u32,
    slots: u32,
    channels: u32,
    blocks: u32,
    classifier: u32,
    // The training loss's label smoothing, an f32's bits (0: none).
    smoothing: u32,
    // Batch norm's momentum and epsilon, f32 bits (src/model/norm.rs's constants).
    momentum: u32,
    epsilon: u32,
    pad0: u32,
    pad1: u32,
    block: array<BlockDims, 4>,
    head: HeadDims,
}

// The CNN's head other than the workshop's (kind 0: the kernel's own classifier, and none
// of the rest is read): 1 global average pool, 2 flatten; F features into the first
// Linear, `hidden` units (0: none), K outputs of the first Linear (hidden, or classes).
// Parameter offsets of the first Linear (w1, b1) and of the classifier after a hidden layer
// (w2, b2), and the positions in a gradient row of those after the dense block (rb1, rw2,
// rb2); scratch offsets of the first Linear's input (x), the hidden layer's output (y) and
// the first Linear's output gradient (dz); dropout p and 1 / (1 - p) as f32 bits and the
// two masks' keys; where the dense block, each sample's x and each sample's dz start in
// `grads`. src/device/gpu_head.rs (HeadLayout::uniform) fills it.
struct HeadDims {
    kind: u32,
    features: u32,
    hidden: u32,
    outputs: u32,
    w1: u32,
    b1: u32,
    w2: u32,
    b2: u32,
    rb1: u32,
    rw2: u32,
    rb2: u32,
    x: u32,
    y: u32,
    dz: u32,
    dropout: u32,
    keep: u32,
    key1: u32,
    key2: u32,
    dense_at: u32,
    xs_at: u32,
    dys_at: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}


// One CNN block: its sizes, where its scratch buffers start within a slot (input, output,
// pool winners, output gradient, input gradient) and where its weight and bias start in the
// parameters; `pool` is 1 when a max-pool follows it. `norm` is 1 when a batch norm follows
// its convolution: its weight, bias, running mean and running variance (`outputs` each) and
// batches tracked (one) start at `gamma` in the parameters, each sample's normalized
// pre-activation at `xhat` in the scratch.
struct BlockDims {
    inputs: u32,
    outputs: u32,
    h: u32,
    w: u32,
    input: u32,
    output: u32,
    winner: u32,
    dout: u32,
    din: u32,
    weight: u32,
    bias: u32,
    pool: u32,
    norm: u32,
    gamma: u32,
    xhat: u32,
    pad: u32,
}

var<workgroup> logit: array<f32, MAX_CLASSES>;
var<workgroup> dlogit: array<f32, MAX_CLASSES>;
var<workgroup> lse: f32;

fn sample_loss(t: u32, n: u32, c_total: u32, label: u32) {
    if (t == 0u) {
        var top = logit[0];
        var best = 0u;
        for (var c = 1u; c < c_total; c = c + 1u) {
            if (logit[c] > top) {
                top = logit[c];
                best = c;
            }
        }
        var total = 0.0;
        for (var c = 0u; c < c_total; c = c + 1u) {
            total = total + exp(logit[c] - top);
        }
        lse = top + log(total);
        let smoothing = bitcast<f32>(dims.smoothing);
        if (smoothing == 0.0) {
            stats[2u * n] = lse - logit[label];
        } else {
            // PyTorch's: (1 - e) * (lse - z_label) + e * (lse - mean z).
            var sum = 0.0;
            for (var c = 0u; c < c_total; c = c + 1u) {
                sum = sum + logit[c];
            }
            stats[2u * n] = (1.0 - smoothing) * (lse - logit[label]) + smoothing * (lse - sum / f32(c_total));
        }
        stats[2u * n + 1u] = select(0.0, 1.0, best == label);
    }
    workgroupBarrier();
}

fn loss_gradient(t: u32, n_total: u32, c_total: u32, label: u32) {
    let smoothing = bitcast<f32>(dims.smoothing);
    for (var c = t; c < c_total; c = c + WG) {
        if (smoothing == 0.0) {
            dlogit[c] = (exp(logit[c] - lse) - select(0.0, 1.0, c == label)) / f32(n_total);
        } else {
            // The smoothed target: 1 - e + e / C for the label, e / C for the others.
            let wanted = select(0.0, 1.0 - smoothing, c == label) + smoothing / f32(c_total);
            dlogit[c] = (exp(logit[c] - lse) - wanted) / f32(n_total);
        }
    }
    workgroupBarrier();
}

// After logit[] is filled: nothing more in mode 0; the loss and prediction of sample n in
// mode 1; and dlogit in mode 2, where it returns true so the kernel goes on backward.
fn loss_and_gradient(t: u32, n: u32, n_total: u32, c_total: u32, mode: u32) -> bool {
    workgroupBarrier();
    if (mode == 0u) {
        return false;
    }
    let label = u32(labels[n]);
    sample_loss(t, n, c_total, label);
    if (mode == 1u) {
        return false;
    }
    loss_gradient(t, n_total, c_total, label);
    return true;
}

@compute
@workgroup_size(WG, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    // Workgroup `slot` takes samples slot, slot + G, slot + 2G, ... and sums their gradients
    // into its own row of `grads` (each value has one owning invocation, so in order).
    let slot = group.x + group.y * groups.x;
    let slots = dims.slots;
    if (slot >= slots) {
        return;
    }
    for (var n = slot; n < dims.n; n = n + slots) {
        one_sample(t, n, slot, n == slot);
    }
    poison_if_loops_were_cut(slot);
}

// The gradient value at `i` of this workgroup's row: written by the first sample, added to
// by the next ones.
fn put(i: u32, v: f32, first: bool) {
    if (first) {
        grads[i] = v;
    } else {
        grads[i] = grads[i] + v;
    }
}

// llvmpipe's cap on one invocation's loop iterations (cnn_sample.wgsl's Loops): a two-lap
// loop that ran one lap means this invocation's loops were cut short, so its slot's first
// sample gets a NaN logit and gradient and a loss of -1e30, which no sample can have (the
// host reads it as this failure: src/train/weights.rs), instead of results that are silently
// wrong. Call it last, outside every loop.
fn poison_if_loops_were_cut(slot: u32) {
    // Two laps, from the uniform (a constant count would be unrolled into no loop at all).
    let two = min(dims.n, 1u) + 1u;
    var laps = 0u;
    for (var i = 0u; i < two; i = i + 1u) {
        laps = laps + 1u;
    }
    if (laps != 2u && slot < dims.n) {
        let nan = bitcast<f32>(0x7fc00000u);
        logits_out[slot * dims.c] = nan;
        stats[2u * slot] = -1.0e30;
        if (dims.mode == 2u) {
            grads[slot * dims.p] = nan;
        }
    }
}
