// train_update: the optimizer in one kernel. Sums the per-sample gradients over the batch,
// takes their global L2 norm, clips them to it and applies the optimizer (Adam, AdamW or SGD
// with momentum, as burn's) to every parameter at once; also sums the batch's loss and
// correct predictions. The optimizer and its numbers are the step's inputs: one compiled
// kernel serves every recipe and every rate of a schedule.
//
// Inputs:  grads   array<f32>, G rows of R values, each a sample kernel workgroup's sum of
//                  its samples' gradients of every parameter but the head's dense block
//                  (R = P without one); then that block, the whole batch's gradient of the
//                  head's first Linear weight (head_gradient's output, D values).
//          state   array<f32>, 3 P + 1: a model's flat parameters, Adam's first moments (SGD's
//                  velocity), second moments, and a flag that is 1.0 once a step diverged
//                  (the state then stays as it is).
//          samples array<f32>: loss and correct of sample n at 2n and 2n + 1.
//          args    UpdateArgs: G, P, mode (0 Adam step, 1 gradients only), N; then lr,
//                  sqrt(1 - beta2^t) / (1 - beta1^t), epsilon * sqrt(1 - beta2^t), beta1,
//                  1 - beta1, beta2, 1 - beta2, max norm, divergence norm; the optimizer
//                  (0 Adam, 1 AdamW, 2 SGD), AdamW's 1 - lr * decay or SGD's L2 term, SGD's
//                  momentum, Nesterov (1) or not (0), AdamW's 1 - beta1^t, 1 - beta2^t and
//                  epsilon, and the label smoothing (the sample kernel's); then where the
//                  dense block's parameters start, its length D (0: none), R, and where
//                  the block starts in `grads` (G * R); then, per CNN block with a batch
//                  norm (zeros otherwise), where its convolution's bias starts and its
//                  length, where its norm's running statistics start and their length
//                  (see Untrained). A storage buffer,
//                  not a uniform: no barrier here depends on it (the trees' bounds are
//                  constants), and lavapipe ran this kernel 60x slower reading a uniform
//                  (0.19 ms against 12 ms a step at batch 32, cubecl's profiling log).
// Outputs: next    array<f32>, 3 P + 1: the state after the step (mode 0), or the summed,
//                  unclipped gradients in its first P values (mode 1).
//          stats   array<f32>: mean loss, correct count, gradient norm before clipping, flag.
// Untrained: a convolution's bias before a batch norm is frozen (the norm takes its mean
//          out, and the layer path drops its gradient): it and its moments are carried over.
//          A batch norm's running statistics are no parameters: the sample kernel writes
//          their new values where their gradient would be (one row, the whole batch's), and
//          they are copied into the next state, outside the norm, moments carried over.
// Layout:  one workgroup of {{ workgroup_size }} invocations; invocation t owns parameters
//          t, t + {{ workgroup_size }}, ... in both passes.
// Loops:   llvmpipe (lavapipe) gives one invocation 65535 loop laps in all, then runs each
//          loop's first lap only, silently (cnn_sample.wgsl's Loops). One workgroup takes
//          every parameter, so each lap takes eight parameters and four rows (the same values
//          in the same order as one a lap), kind_of has no loop, and the kernel ends by
//          poisoning the step's loss and norm if its loops were cut all the same (one
//          parameter a lap, the issue's 1.6M-parameter network passed the cap and its last
//          parameters were left as stale memory).
// Exactness: rows are summed in order, losses and the norm's squares in fixed trees, so reruns are
//          identical; the clip coefficient min(max / (norm + 1e-6), 1) and the Adam update are
//          burn's expressions in burn's order.

@group(0) @binding(0) var<storage, read_write> grads: array<f32>;
@group(0) @binding(1) var<storage, read_write> state: array<f32>;
@group(0) @binding(2) var<storage, read_write> samples: array<f32>;
@group(0) @binding(3) var<storage, read_write> next: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> args: UpdateArgs;

// Every barrier below is outside the loops these bound, so the whole workgroup reaches it.
struct UpdateArgs {
    rows: u32,
    p_total: u32,
    mode: u32,
    n_total: u32,
    lr: f32,
    combined: f32,
    epsilon: f32,
    beta_1: f32,
    one_minus_beta_1: f32,
    beta_2: f32,
    one_minus_beta_2: f32,
    max_norm: f32,
    diverged_norm: f32,
    kind: f32,
    decay: f32,
    momentum: f32,
    nesterov: f32,
    correction_1: f32,
    correction_2: f32,
    epsilon_w: f32,
    smoothing: f32,
    dense_param: u32,
    dense_len: u32,
    row_len: u32,
    dense_at: u32,
    untrained: array<u32, 16>,
}

// 0 for a trained parameter, 1 for a frozen one, 2 for a running statistic (see Untrained).
// The four blocks' ranges written out, not looped: see Loops.
fn kind_of(p: u32) -> u32 {
    let k0 = kind_in(p, 0u);
    let k1 = kind_in(p, 1u);
    let k2 = kind_in(p, 2u);
    let k3 = kind_in(p, 3u);
    // The first block whose ranges hold p (they do not overlap).
    return select(select(select(k3, k2, k2 != 0u), k1, k1 != 0u), k0, k0 != 0u);
}

// Parameter p's kind in block b's ranges: 1 frozen, 2 a running statistic, 0 neither.
fn kind_in(p: u32, b: u32) -> u32 {
    if (p - args.untrained[4u * b] < args.untrained[4u * b + 1u]) {
        return 1u;
    }
    if (p - args.untrained[4u * b + 2u] < args.untrained[4u * b + 3u]) {
        return 2u;
    }
    return 0u;
}

const WG: u32 = {{ workgroup_size }}u;

var<workgroup> squares: array<f32, {{ workgroup_size }}>;
var<workgroup> losses: array<f32, {{ workgroup_size }}>;
var<workgroup> corrects: array<f32, {{ workgroup_size }}>;

@compute
@workgroup_size({{ workgroup_size }}, 1, 1)
fn main(@builtin(local_invocation_index) t: u32) {
    let p_total = args.p_total;
    let mode = args.mode;
    let n_total = args.n_total;

    // The batch's gradient, parameter by parameter (kept in `next` until the update), eight
    // parameters a lap (t, t + WG, ... in order, as one a lap would: see Loops).
    var sq = 0.0;
    for (var p0 = t; p0 < p_total; p0 = p0 + 8u * WG) {
        sq = sum_gradient(p0, sq);
        sq = sum_gradient(p0 + WG, sq);
        sq = sum_gradient(p0 + 2u * WG, sq);
        sq = sum_gradient(p0 + 3u * WG, sq);
        sq = sum_gradient(p0 + 4u * WG, sq);
        sq = sum_gradient(p0 + 5u * WG, sq);
        sq = sum_gradient(p0 + 6u * WG, sq);
        sq = sum_gradient(p0 + 7u * WG, sq);
    }

    // The batch's loss and correct count: strided sums, then a fixed tree.
    var loss = 0.0;
    var correct = 0.0;
    for (var n = t; n < n_total; n = n + WG) {
        loss = loss + samples[2u * n];
        correct = correct + samples[2u * n + 1u];
    }
    losses[t] = loss;
    corrects[t] = correct;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (t < half) {
            losses[t] = losses[t] + losses[t + half];
            corrects[t] = corrects[t] + corrects[t + half];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        stats[0] = losses[0] / f32(n_total);
        stats[1] = corrects[0];
    }

    // The global norm: a fixed tree over the invocations' sums of squares.
    squares[t] = sq;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (t < half) {
            squares[t] = squares[t] + squares[t + half];
        }
        workgroupBarrier();
    }
    let norm = sqrt(squares[0]);
    let flag_at = 3u * p_total;
    let stopped = state[flag_at] != 0.0;
    let diverged = stopped || !(norm <= args.diverged_norm);
    if (t == 0u) {
        stats[2] = norm;
        stats[3] = select(0.0, 1.0, diverged);
    }
    if (mode == 1u) {
        poison_if_loops_were_cut();
        return;
    }

    // Clip and the optimizer; a state that already diverged is carried over unchanged.
    let coefficient = min(args.max_norm * (1.0 / (norm + 1e-6)), 1.0);
    for (var p0 = t; p0 < p_total; p0 = p0 + 8u * WG) {
        for_parameter(p0, coefficient, stopped);
        for_parameter(p0 + WG, coefficient, stopped);
        for_parameter(p0 + 2u * WG, coefficient, stopped);
        for_parameter(p0 + 3u * WG, coefficient, stopped);
        for_parameter(p0 + 4u * WG, coefficient, stopped);
        for_parameter(p0 + 5u * WG, coefficient, stopped);
        for_parameter(p0 + 6u * WG, coefficient, stopped);
        for_parameter(p0 + 7u * WG, coefficient, stopped);
    }
    poison_if_loops_were_cut();
    if (t == 0u) {
        next[flag_at] = select(0.0, 1.0, diverged);
    }
}

// Parameter p's gradient over the batch into next[p] (the dense block's as it is, every
// other parameter's summed over the rows, four rows a lap, in order; the parameters after
// the block sit D values earlier in a row), and `sq` plus its square if it is trained.
fn sum_gradient(p: u32, sq: f32) -> f32 {
    let p_total = args.p_total;
    if (p >= p_total) {
        return sq;
    }
    let dense_param = args.dense_param;
    let dense_len = args.dense_len;
    let row_len = args.row_len;
    var g = 0.0;
    if (p >= dense_param && p - dense_param < dense_len) {
        g = grads[args.dense_at + p - dense_param];
    } else {
        let q = select(p, p - dense_len, p >= dense_param);
        let rows = args.rows;
        var r = 0u;
        for (; r + 4u <= rows; r = r + 4u) {
            g = g + grads[r * row_len + q];
            g = g + grads[(r + 1u) * row_len + q];
            g = g + grads[(r + 2u) * row_len + q];
            g = g + grads[(r + 3u) * row_len + q];
        }
        for (; r < rows; r = r + 1u) {
            g = g + grads[r * row_len + q];
        }
    }
    next[p] = g;
    if (kind_of(p) == 0u) {
        return sq + g * g;
    }
    return sq;
}

// Parameter p's clipped update by the optimizer (its gradient in next[p]).
fn for_parameter(p: u32, coefficient: f32, stopped: bool) {
    let p_total = args.p_total;
    if (p >= p_total) {
        return;
    }
    let param = state[p];
    let m = state[p_total + p];
    let v = state[2u * p_total + p];
    let kind = kind_of(p);
    if (kind != 0u) {
        // A frozen parameter stays; a running statistic takes its new value (in next[p]),
        // unless the state diverged.
        if (kind == 1u || stopped) {
            next[p] = param;
        }
        next[p_total + p] = m;
        next[2u * p_total + p] = v;
    } else if (stopped) {
        next[p] = param;
        next[p_total + p] = m;
        next[2u * p_total + p] = v;
    } else if (args.kind == 2.0) {
        // SGD as burn's Sgd: the L2 term, then momentum without dampening (the velocity
        // starts at 0, so the first step's is the gradient), then Nesterov's look-ahead.
        var d = next[p] * coefficient;
        if (args.decay > 0.0) {
            d = param * args.decay + d;
        }
        var velocity = m;
        if (args.momentum > 0.0) {
            velocity = d + m * args.momentum;
            d = select(velocity, velocity * args.momentum + d, args.nesterov == 1.0);
        }
        next[p] = param - d * args.lr;
        next[p_total + p] = velocity;
        next[2u * p_total + p] = v;
    } else {
        let g = next[p] * coefficient;
        let m1 = m * args.beta_1 + g * args.one_minus_beta_1;
        let v1 = v * args.beta_2 + (g * g) * args.one_minus_beta_2;
        if (args.kind == 1.0) {
            // AdamW as burn's: the decayed parameter, less the bias-corrected step.
            let update = (m1 / args.correction_1) / (sqrt(v1 / args.correction_2) + args.epsilon_w);
            next[p] = param * args.decay - update * args.lr;
        } else {
            let update = (m1 * args.combined) / (sqrt(v1) + args.epsilon);
            next[p] = param - update * args.lr;
        }
        next[p_total + p] = m1;
        next[2u * p_total + p] = v1;
    }
}

// llvmpipe's cap on an invocation's loop laps (cnn_sample.wgsl's Loops): a two-lap loop that
// ran one lap means this invocation's loops were cut short; the step's loss becomes -1e30 and
// its norm NaN, which the host reads as that failure (src/train/weights.rs) instead of a
// state that is silently wrong. Call it last, outside every loop.
fn poison_if_loops_were_cut() {
    // Two laps, from the arguments (a constant count would be unrolled into no loop at all).
    let two = min(args.p_total, 1u) + 1u;
    var laps = 0u;
    for (var i = 0u; i < two; i = i + 1u) {
        laps = laps + 1u;
    }
    if (laps != 2u) {
        stats[0] = -1.0e30;
        stats[2] = bitcast<f32>(0x7fc00000u);
    }
}
