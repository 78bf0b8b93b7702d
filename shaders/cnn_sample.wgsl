// cnn_sample: the CNN family's forward pass, cross-entropy and backward pass for one sample
// per workgroup, writing that sample's gradient of every parameter. Any input channel count
// and any widths of the family (1 to 4 blocks, each a 3x3 conv with padding 1 then a ReLU, a
// 2x2 max-pool between blocks, then the head: a global average pool and a linear layer, or
// any head of the family, see Head).
//
//   image (C, H, W) -> [conv 3x3 -> ReLU] (-> max-pool 2x2 -> [conv 3x3 -> ReLU])...
//         -> global average pool -> linear (last width -> C) -> logits -> cross-entropy
//
// Inputs:  images  array<f32>, N * C * H * W, channel-major per image.
//          labels  array<i32>, N class ids (unused in mode 0).
//          params  array<f32>, the flat parameters (a longer buffer is fine: the Adam state
//                  follows them there), src/model/flat.rs's layout: per block its weight
//                  (out, in, 3, 3) then its bias (out); then the classifier weight (last, C)
//                  and bias (C). Where each starts is in `dims`.
//          dims    uniform SampleDims (sample_common.wgsl): sizes, and per block its sizes and
//                  where its buffers and parameters start. src/device/gpu_train.rs computes
//                  them: the layout is written once, in Rust.
// Outputs: logits  array<f32>, N * C.
//          grads   array<f32>, G * P: row g is the gradient of the batch-mean loss summed
//                  over workgroup g's samples (mode 2).
//          stats   array<f32>: loss and correct (1.0 or 0.0) of sample n at 2n, 2n + 1.
//          scratch array<f32>: S values per workgroup, reused for each of its samples; per
//                  block, channels-last: its input with a zero border ((H+2) x (W+2) x in),
//                  its output after the ReLU (H x W x out), the winners of the max-pool that
//                  follows it (as 0.0 .. 3.0, or -1.0 where the pooled value is 0), its
//                  output's gradient with a zero border, and its input's gradient.
// Modes:   0 logits; 1 logits, loss and correct; 2 all of that and the gradients.
// Layout:  G workgroups (x + y * 65535); workgroup g takes samples g, g + G, ...; workgroup
//          size {{ workgroup_size }}; classes at most MAX_CLASSES, widths at most MAX_WIDTH.
//          Every loop bound and branch before a barrier comes from the uniform `dims`, so the
//          whole workgroup reaches every barrier.
// Lanes:   the three convolution phases are matrix products in which one operand is the
//          same for every invocation (a weight, or an output gradient) and the other differs
//          (an activation). Lane l (0 .. 7) of each subgroup loads the shared operand of
//          channel c0 + l and c0 + 8 + l, and subgroupBroadcast hands the sixteen values to
//          every lane, so one load serves eight channels. (In lavapipe a load whose address is
//          not a compile-time constant costs one scalar load per lane whatever the address,
//          so a weight read by every lane at once cost eight loads; this made the phases 2.5 to
//          4 times faster there.) It needs subgroups of at least 8 lanes
//          (src/device/gpu_train.rs checks the adapter) and every lane of a subgroup active
//          at a broadcast: those loops step the whole workgroup together, a lane past the end
//          repeats the last pixel or tap and writes nothing.
// Loops:   llvmpipe (lavapipe, the software Vulkan the tests run on) gives one shader
//          invocation 65535 loop iterations in all (gallivm's LP_MAX_TGSI_LOOP_ITERATIONS),
//          counting every iteration of every loop; past that each loop runs its first
//          iteration only, silently. The head's two long dot products (the hidden layer's
//          inputs, a feature's gradient) take eight terms an iteration, in order, so the
//          issue's network (32,64 on 28x28, flatten, hidden 128: 12,544 features) stays well
//          inside it; GPUs have no such cap.
// Exactness: the layers' arithmetic up to float summation order; max-pool keeps the first
//          maximum and ReLU passes gradient where its output is above 0, as burn's do.
// Head:    with dims.head.kind 1 (global average pool) or 2 (flatten, channel-major as
//          PyTorch's), the head runs from dims.head (src/device/gpu_head.rs): features ->
//          dropout -> [linear -> ReLU -> dropout] -> linear, each Linear's input kept in the
//          scratch. Dropout (mode 2 only) multiplies value i of sample n by 0 or 1 / (1 - p),
//          from uniform01(key, n * width + i) < p: src/model/head.rs's masks, to the bit.
//          In mode 2 the first Linear's weight gradient is left to head_gradient.wgsl: this
//          kernel writes each sample's input of that layer and its output gradient into
//          `grads` after the rows, and its other parameters' gradients into the rows.
// Batch norm: with dims.block[b].norm, a BatchNorm2d follows each convolution, before its
//          ReLU (src/model/norm.rs). In evaluation (modes 0, 1) it normalizes with the running
//          statistics, a sample at a time. A training step (mode 2) needs the batch's
//          statistics between phases, and WGSL has no barrier across workgroups, so it is
//          launched as one workgroup that runs the whole batch phase by phase (whole_batch),
//          each sample in its own scratch (sample n at n * stride): every sample's
//          convolution; the batch's mean and biased variance per channel (two passes, as
//          burn's batch_norm_train); every sample normalized (xhat kept), scaled, shifted,
//          ReLU'd and pooled; the head a sample at a time; then per block backward the sums
//          over the batch of the output gradient dy and of dy * xhat (beta's and gamma's
//          gradients), every sample's pre-norm gradient gamma / sigma * (dy - mean dy - xhat
//          mean(dy xhat)) (burn's batch_norm_train_backward), and the convolution's weight
//          and input gradients. Its single row gets, where the running statistics sit, their
//          new values (momentum, the variance unbiased, one more batch tracked, as
//          norm.rs), and 0 for the convolution's bias (frozen, see train_update.wgsl).

const WG: u32 = {{ workgroup_size }}u;
// The most classes and the widest block, from src/device/gpu_train.rs.
const MAX_CLASSES: u32 = {{ max_classes }}u;
const MAX_WIDTH: u32 = {{ max_width }}u;

var<workgroup> feat: array<f32, MAX_WIDTH>;
var<workgroup> dfeat: array<f32, MAX_WIDTH>;
{{ sample_common }}
{{ rng }}

// Sample `n`, in workgroup `slot`'s scratch; `first` for the slot's first sample.
fn one_sample(t: u32, n: u32, slot: u32, first: bool) {
    // A batch-norm training step: one workgroup, the whole batch at once (see Batch norm).
    if (dims.mode == 2u && dims.block[0].norm != 0u) {
        if (first) {
            whole_batch(t);
        }
        return;
    }
    // The previous sample of this workgroup is done with the scratch and shared values.
    storageBarrier();
    workgroupBarrier();
    let base = slot * dims.stride;
    // This invocation's lane in its subgroup modulo 8 (every lane is active here, so the
    // count of lanes below it is its index).
    let lane = subgroupExclusiveAdd(1u) % 8u;
    load_image(t, n, base);
    for (var b = 0u; b < dims.blocks; b = b + 1u) {
        conv_forward(t, lane, dims.block[b], base);
        storageBarrier();
        if (dims.block[b].pool != 0u) {
            pool_forward(t, dims.block[b], dims.block[b + 1u], base);
            storageBarrier();
        }
    }
    let last = dims.block[dims.blocks - 1u];
    if (dims.head.kind == 0u) {
        classify(t, n, last, base);
    } else {
        head_forward(t, n, last, base);
    }
    if (!loss_and_gradient(t, n, dims.n, dims.c, dims.mode)) {
        return;
    }
    let g = slot * dims.p;
    if (dims.head.kind == 0u) {
        classifier_backward(t, last, g, first);
        workgroupBarrier();
        last_output_backward(t, n, last, base);
    } else {
        head_backward(t, n, last, base, g, first);
    }
    storageBarrier();
    for (var r = 0u; r < dims.blocks; r = r + 1u) {
        let b = dims.blocks - 1u - r;
        let k = dims.block[b];
        weight_backward(t, lane, k, base, g, first);
        if (b == 0u) {
            break;
        }
        input_backward(t, lane, k, base);
        storageBarrier();
        pool_backward(t, dims.block[b - 1u], k, base);
    }
}

// The image into block 0's input (channels-last, zero border); the later blocks' inputs get
// their zero border (the max-pools write the inside).
fn load_image(t: u32, n: u32, base: u32) {
    let k = dims.block[0];
    let iw = k.w + 2u;
    let plane = k.h * k.w;
    for (var e = t; e < (k.h + 2u) * iw * k.inputs; e = e + WG) {
        let c = e % k.inputs;
        let pixel = e / k.inputs;
        let y = pixel / iw;
        let x = pixel % iw;
        var v = 0.0;
        if (y >= 1u && y <= k.h && x >= 1u && x <= k.w) {
            v = images[(n * k.inputs + c) * plane + (y - 1u) * k.w + (x - 1u)];
        }
        scratch[base + k.input + e] = v;
    }
    for (var b = 1u; b < dims.blocks; b = b + 1u) {
        let kb = dims.block[b];
        let bw = kb.w + 2u;
        for (var e = t; e < (kb.h + 2u) * bw * kb.inputs; e = e + WG) {
            let pixel = e / kb.inputs;
            let y = pixel / bw;
            let x = pixel % bw;
            if (y == 0u || y == kb.h + 1u || x == 0u || x == kb.w + 1u) {
                scratch[base + kb.input + e] = 0.0;
            }
        }
    }
    storageBarrier();
}

// The values of `x` in lanes 0 .. 3 (lanes 4 .. 7 for `high`) of this subgroup.
fn lanes4(x: f32, high: bool) -> vec4<f32> {
    if (high) {
        return vec4<f32>(
            subgroupBroadcast(x, 4u),
            subgroupBroadcast(x, 5u),
            subgroupBroadcast(x, 6u),
            subgroupBroadcast(x, 7u)
        );
    }
    return vec4<f32>(
        subgroupBroadcast(x, 0u),
        subgroupBroadcast(x, 1u),
        subgroupBroadcast(x, 2u),
        subgroupBroadcast(x, 3u)
    );
}

// Sixteen channels' accumulators, c0 .. c0 + 15 in four vec4s.
struct Sixteen {
    a0: vec4<f32>,
    a1: vec4<f32>,
    a2: vec4<f32>,
    a3: vec4<f32>,
}

// acc + v * (the sixteen shared values of channels c0 .. c0 + 15, which lanes 0 .. 7 hold as
// `low` for c0 + lane and `high` for c0 + 8 + lane).
fn fma16(acc: Sixteen, v: f32, low: f32, high: f32) -> Sixteen {
    return Sixteen(
        acc.a0 + v * lanes4(low, false),
        acc.a1 + v * lanes4(low, true),
        acc.a2 + v * lanes4(high, false),
        acc.a3 + v * lanes4(high, true)
    );
}

// Value j (0 .. 15) of sixteen accumulators.
fn pick(acc: Sixteen, j: u32) -> f32 {
    var a = acc.a3;
    if (j < 4u) {
        a = acc.a0;
    } else if (j < 8u) {
        a = acc.a1;
    } else if (j < 12u) {
        a = acc.a2;
    }
    return a[j % 4u];
}

// out[p][o] = relu(bias[o] + sum over taps and i of input[p + tap][i] * w[o][i][tap]): an
// invocation per pixel, sixteen output channels at a time, so each activation read serves
// sixteen products; the weights come two loads a step through the lanes (see Lanes).
fn conv_forward(t: u32, lane: u32, k: BlockDims, base: u32) {
    let iw = k.w + 2u;
    let pixels = k.h * k.w;
    let stride = k.inputs * 9u;
    for (var p0 = 0u; p0 < pixels; p0 = p0 + WG) {
        let pixel = min(p0 + t, pixels - 1u);
        let window = base + k.input + ((pixel / k.w) * iw + pixel % k.w) * k.inputs;
        let out = base + k.output + pixel * k.outputs;
        for (var o0 = 0u; o0 < k.outputs; o0 = o0 + 16u) {
            let low = min(o0 + lane, k.outputs - 1u);
            let high = min(o0 + 8u + lane, k.outputs - 1u);
            var acc = fma16(Sixteen(), 1.0, params[k.bias + low], params[k.bias + high]);
            for (var tap = 0u; tap < 9u; tap = tap + 1u) {
                let at = window + ((tap / 3u) * iw + tap % 3u) * k.inputs;
                let wl = k.weight + low * stride + tap;
                let wh = k.weight + high * stride + tap;
                for (var i = 0u; i < k.inputs; i = i + 1u) {
                    acc = fma16(acc, scratch[at + i], params[wl + i * 9u], params[wh + i * 9u]);
                }
            }
            if (p0 + t < pixels) {
                for (var j = 0u; j < min(16u, k.outputs - o0); j = j + 1u) {
                    scratch[out + o0 + j] = activate(k, o0 + j, pick(acc, j));
                }
            }
        }
    }
}

// 2x2 max-pool (floor) of block `k`'s output into block `next`'s input: the first maximum of
// each window wins, as burn's; its index is kept, or -1 where the value is 0 (no gradient).
fn pool_forward(t: u32, k: BlockDims, next: BlockDims, base: u32) {
    let ph = k.h / 2u;
    let pw = k.w / 2u;
    for (var e = t; e < ph * pw * k.outputs; e = e + WG) {
        let c = e % k.outputs;
        let pooled = e / k.outputs;
        let y = pooled / pw;
        let x = pooled % pw;
        var best = -1.0e38;
        var won = 0.0;
        for (var q = 0u; q < 4u; q = q + 1u) {
            let p = (2u * y + q / 2u) * k.w + 2u * x + q % 2u;
            let v = scratch[base + k.output + p * k.outputs + c];
            if (v > best) {
                best = v;
                won = f32(q);
            }
        }
        scratch[base + next.input + ((y + 1u) * (pw + 2u) + x + 1u) * next.inputs + c] = best;
        scratch[base + k.winner + e] = select(-1.0, won, best > 0.0);
    }
}

// The global average pool into `feat`, then the logits into logit[] and logits_out.
fn classify(t: u32, n: u32, last: BlockDims, base: u32) {
    let count = f32(last.h * last.w);
    for (var c = t; c < last.outputs; c = c + WG) {
        var sum = 0.0;
        for (var p = 0u; p < last.h * last.w; p = p + 1u) {
            sum = sum + scratch[base + last.output + p * last.outputs + c];
        }
        feat[c] = sum / count;
    }
    workgroupBarrier();
    let bias = dims.classifier + last.outputs * dims.c;
    for (var c = t; c < dims.c; c = c + WG) {
        var z = params[bias + c];
        for (var o = 0u; o < last.outputs; o = o + 1u) {
            z = z + feat[o] * params[dims.classifier + o * dims.c + c];
        }
        logit[c] = z;
        logits_out[n * dims.c + c] = z;
    }
}

// The classifier's gradients, and the features' into dfeat.
fn classifier_backward(t: u32, last: BlockDims, g: u32, first: bool) {
    let bias = dims.classifier + last.outputs * dims.c;
    for (var j = t; j < last.outputs * dims.c; j = j + WG) {
        put(g + dims.classifier + j, feat[j / dims.c] * dlogit[j % dims.c], first);
    }
    for (var c = t; c < dims.c; c = c + WG) {
        put(g + bias + c, dlogit[c], first);
    }
    for (var o = t; o < last.outputs; o = o + WG) {
        var s = 0.0;
        for (var c = 0u; c < dims.c; c = c + 1u) {
            s = s + dlogit[c] * params[dims.classifier + o * dims.c + c];
        }
        dfeat[o] = s;
    }
}

// The last block's output gradient (zero border) where the ReLU passed: dfeat / (H * W)
// after the global average pool; under a flatten head, the gradient of feature
// c * H * W + p at pixel p of channel c.
fn last_output_backward(t: u32, n: u32, last: BlockDims, base: u32) {
    let pixels = last.h * last.w;
    let count = f32(pixels);
    let bw = last.w + 2u;
    for (var e = t; e < (last.h + 2u) * bw * last.outputs; e = e + WG) {
        let c = e % last.outputs;
        let pixel = e / last.outputs;
        let y = pixel / bw;
        let x = pixel % bw;
        var v = 0.0;
        if (y >= 1u && y <= last.h && x >= 1u && x <= last.w) {
            let p = (y - 1u) * last.w + x - 1u;
            if (scratch[base + last.output + p * last.outputs + c] > 0.0) {
                if (dims.head.kind == 2u) {
                    v = feature_gradient(c * pixels + p, n, base);
                } else {
                    v = dfeat[c] / count;
                }
            }
        }
        scratch[base + last.dout + e] = v;
    }
}

// Block `k`'s weight and bias gradients, w[o][i][tap] += sum over pixels p of
// input[p + tap][i] * dout[p][o]: an invocation per (i, tap), sixteen outputs at a time, each
// summing its pixels in order; the output gradients come through the lanes (see Lanes). A
// subgroup with no (i, tap) left skips the pass whole. Then an invocation per output its bias.
fn weight_backward(t: u32, lane: u32, k: BlockDims, base: u32, g: u32, first: bool) {
    let iw = k.w + 2u;
    let taps = k.inputs * 9u;
    // Output gradients have a zero border: pixel (y, x) is at (y + 1, x + 1).
    let inside = base + k.dout + (iw + 1u) * k.outputs;
    for (var o0 = 0u; o0 < k.outputs; o0 = o0 + 16u) {
        let low = inside + min(o0 + lane, k.outputs - 1u);
        let high = inside + min(o0 + 8u + lane, k.outputs - 1u);
        for (var j0 = 0u; j0 < taps; j0 = j0 + WG) {
            if (!subgroupAny(j0 + t < taps)) {
                continue;
            }
            let j = min(j0 + t, taps - 1u);
            let tap = j % 9u;
            let at = base + k.input + ((tap / 3u) * iw + tap % 3u) * k.inputs + j / 9u;
            var acc = Sixteen();
            for (var y = 0u; y < k.h; y = y + 1u) {
                for (var x = 0u; x < k.w; x = x + 1u) {
                    let q = y * iw + x;
                    acc = fma16(
                        acc,
                        scratch[at + q * k.inputs],
                        scratch[low + q * k.outputs],
                        scratch[high + q * k.outputs]
                    );
                }
            }
            if (j0 + t < taps) {
                for (var q = 0u; q < min(16u, k.outputs - o0); q = q + 1u) {
                    put(g + k.weight + (o0 + q) * taps + j, pick(acc, q), first);
                }
            }
        }
    }
    // A bias before a batch norm is frozen (its gradient is 0: whole_batch writes it).
    for (var o = t; o < select(k.outputs, 0u, k.norm != 0u); o = o + WG) {
        var s = 0.0;
        for (var y = 0u; y < k.h; y = y + 1u) {
            for (var x = 0u; x < k.w; x = x + 1u) {
                s = s + scratch[inside + (y * iw + x) * k.outputs + o];
            }
        }
        put(g + k.bias + o, s, first);
    }
}

// Block `k`'s input gradient: the transposed, flipped convolution of its output's gradient,
// din[p][i] = sum over taps and o of dout[p + tap][o] * w[o][i][8 - tap]: an invocation per
// pixel, sixteen input channels at a time, the weights through the lanes (as conv_forward).
fn input_backward(t: u32, lane: u32, k: BlockDims, base: u32) {
    let iw = k.w + 2u;
    let pixels = k.h * k.w;
    let stride = k.inputs * 9u;
    for (var p0 = 0u; p0 < pixels; p0 = p0 + WG) {
        let pixel = min(p0 + t, pixels - 1u);
        let window = base + k.dout + ((pixel / k.w) * iw + pixel % k.w) * k.outputs;
        let out = base + k.din + pixel * k.inputs;
        for (var i0 = 0u; i0 < k.inputs; i0 = i0 + 16u) {
            let low = k.weight + min(i0 + lane, k.inputs - 1u) * 9u;
            let high = k.weight + min(i0 + 8u + lane, k.inputs - 1u) * 9u;
            var acc = Sixteen();
            for (var tap = 0u; tap < 9u; tap = tap + 1u) {
                let at = window + ((tap / 3u) * iw + tap % 3u) * k.outputs;
                let flipped = 8u - tap;
                for (var o = 0u; o < k.outputs; o = o + 1u) {
                    let wo = o * stride + flipped;
                    acc = fma16(acc, scratch[at + o], params[low + wo], params[high + wo]);
                }
            }
            if (p0 + t < pixels) {
                for (var j = 0u; j < min(16u, k.inputs - i0); j = j + 1u) {
                    scratch[out + i0 + j] = pick(acc, j);
                }
            }
        }
    }
}

// Block `k`'s input gradient, through the previous block's max-pool (to the winners) and
// ReLU (winners are positive), into the previous block's output gradient (zero border).
fn pool_backward(t: u32, prev: BlockDims, k: BlockDims, base: u32) {
    let bw = prev.w + 2u;
    for (var e = t; e < (prev.h + 2u) * bw * prev.outputs; e = e + WG) {
        scratch[base + prev.dout + e] = 0.0;
    }
    storageBarrier();
    let pw = prev.w / 2u;
    for (var e = t; e < (prev.h / 2u) * pw * prev.outputs; e = e + WG) {
        let won = scratch[base + prev.winner + e];
        if (won >= 0.0) {
            let q = u32(won);
            let c = e % prev.outputs;
            let pooled = e / prev.outputs;
            let y = 2u * (pooled / pw) + q / 2u;
            let x = 2u * (pooled % pw) + q % 2u;
            scratch[base + prev.dout + ((y + 1u) * bw + x + 1u) * prev.outputs + c] =
                scratch[base + k.din + pooled * k.inputs + c];
        }
    }
    storageBarrier();
}

// Dropout's factor for value `counter` of the mask of `key`: 0 or 1 / (1 - p) while training
// (mode 2), 1 in evaluation or without dropout.
fn dropout_factor(key: u32, counter: u32) -> f32 {
    let p = bitcast<f32>(dims.head.dropout);
    if (dims.mode != 2u || p <= 0.0) {
        return 1.0;
    }
    return select(bitcast<f32>(dims.head.keep), 0.0, uniform01(key, counter) < p);
}

// The head's forward pass (see Head): the features after dropout into the scratch (x), the
// hidden layer after ReLU and dropout (y), then the logits into logit[] and logits_out.
fn head_forward(t: u32, n: u32, last: BlockDims, base: u32) {
    let hd = dims.head;
    let pixels = last.h * last.w;
    for (var f = t; f < hd.features; f = f + WG) {
        var v = 0.0;
        if (hd.kind == 1u) {
            for (var p = 0u; p < pixels; p = p + 1u) {
                v = v + scratch[base + last.output + p * last.outputs + f];
            }
            v = v / f32(pixels);
        } else {
            v = scratch[base + last.output + (f % pixels) * last.outputs + f / pixels];
        }
        scratch[base + hd.x + f] = v * dropout_factor(hd.key1, n * hd.features + f);
    }
    storageBarrier();
    if (hd.hidden > 0u) {
        for (var j = t; j < hd.hidden; j = j + WG) {
            // Eight terms an iteration, in order (software adapters cap an invocation's
            // loop iterations; see the header's Loops).
            var z = params[hd.b1 + j];
            let x = base + hd.x;
            let w = hd.w1 + j;
            var f = 0u;
            for (; f + 8u <= hd.features; f = f + 8u) {
                z = z + scratch[x + f] * params[w + f * hd.hidden];
                z = z + scratch[x + f + 1u] * params[w + (f + 1u) * hd.hidden];
                z = z + scratch[x + f + 2u] * params[w + (f + 2u) * hd.hidden];
                z = z + scratch[x + f + 3u] * params[w + (f + 3u) * hd.hidden];
                z = z + scratch[x + f + 4u] * params[w + (f + 4u) * hd.hidden];
                z = z + scratch[x + f + 5u] * params[w + (f + 5u) * hd.hidden];
                z = z + scratch[x + f + 6u] * params[w + (f + 6u) * hd.hidden];
                z = z + scratch[x + f + 7u] * params[w + (f + 7u) * hd.hidden];
            }
            for (; f < hd.features; f = f + 1u) {
                z = z + scratch[x + f] * params[w + f * hd.hidden];
            }
            scratch[base + hd.y + j] = max(z, 0.0) * dropout_factor(hd.key2, n * hd.hidden + j);
        }
        storageBarrier();
        linear_logits(t, n, base + hd.y, hd.hidden, hd.w2, hd.b2);
    } else {
        linear_logits(t, n, base + hd.x, hd.features, hd.w1, hd.b1);
    }
}

// logit[c] = bias[c] + sum over i of input[i] * weight[i][c], into logit[] and logits_out.
fn linear_logits(t: u32, n: u32, input: u32, inputs: u32, weight: u32, bias: u32) {
    for (var c = t; c < dims.c; c = c + WG) {
        var z = params[bias + c];
        for (var i = 0u; i < inputs; i = i + 1u) {
            z = z + scratch[input + i] * params[weight + i * dims.c + c];
        }
        logit[c] = z;
        logits_out[n * dims.c + c] = z;
    }
}

// The head's backward pass: the classifier's gradients after a hidden layer, the first
// Linear's output gradient (dz, through dropout and ReLU), its bias gradient, the sample's
// x and dz for head_gradient.wgsl, and the last block's output gradient.
fn head_backward(t: u32, n: u32, last: BlockDims, base: u32, g: u32, first: bool) {
    let hd = dims.head;
    if (hd.hidden > 0u) {
        for (var j = t; j < hd.hidden * dims.c; j = j + WG) {
            put(g + hd.rw2 + j, scratch[base + hd.y + j / dims.c] * dlogit[j % dims.c], first);
        }
        for (var c = t; c < dims.c; c = c + WG) {
            put(g + hd.rb2 + c, dlogit[c], first);
        }
        // A kept unit's factor is the same for all (y > 0 only where ReLU and mask kept it).
        let scale = select(1.0, bitcast<f32>(hd.keep), bitcast<f32>(hd.dropout) > 0.0);
        for (var j = t; j < hd.hidden; j = j + WG) {
            var s = 0.0;
            for (var c = 0u; c < dims.c; c = c + 1u) {
                s = s + dlogit[c] * params[hd.w2 + j * dims.c + c];
            }
            scratch[base + hd.dz + j] = select(0.0, s * scale, scratch[base + hd.y + j] > 0.0);
        }
    } else {
        for (var c = t; c < dims.c; c = c + WG) {
            scratch[base + hd.dz + c] = dlogit[c];
        }
    }
    storageBarrier();
    for (var k = t; k < hd.outputs; k = k + WG) {
        let dz = scratch[base + hd.dz + k];
        put(g + hd.rb1 + k, dz, first);
        grads[hd.dys_at + n * hd.outputs + k] = dz;
    }
    for (var f = t; f < hd.features; f = f + WG) {
        grads[hd.xs_at + n * hd.features + f] = scratch[base + hd.x + f];
    }
    if (hd.kind == 1u) {
        for (var o = t; o < last.outputs; o = o + WG) {
            dfeat[o] = feature_gradient(o, n, base);
        }
        workgroupBarrier();
    }
    last_output_backward(t, n, last, base);
}

// The gradient of feature f (before dropout): the first Linear's input gradient times the
// mask's factor.
fn feature_gradient(f: u32, n: u32, base: u32) -> f32 {
    let hd = dims.head;
    // Eight terms an iteration, in order (see the header's Loops).
    var s = 0.0;
    let dz = base + hd.dz;
    let w = hd.w1 + f * hd.outputs;
    var k = 0u;
    for (; k + 8u <= hd.outputs; k = k + 8u) {
        s = s + scratch[dz + k] * params[w + k];
        s = s + scratch[dz + k + 1u] * params[w + k + 1u];
        s = s + scratch[dz + k + 2u] * params[w + k + 2u];
        s = s + scratch[dz + k + 3u] * params[w + k + 3u];
        s = s + scratch[dz + k + 4u] * params[w + k + 4u];
        s = s + scratch[dz + k + 5u] * params[w + k + 5u];
        s = s + scratch[dz + k + 6u] * params[w + k + 6u];
        s = s + scratch[dz + k + 7u] * params[w + k + 7u];
    }
    for (; k < hd.outputs; k = k + 1u) {
        s = s + scratch[dz + k] * params[w + k];
    }
    return s * dropout_factor(hd.key1, n * hd.features + f);
}

// Convolution output z of channel o as block k keeps it: after the ReLU; with a batch norm,
// first normalized with the running statistics (evaluation), or kept as it is while training
// (whole_batch normalizes once the batch's statistics are known).
fn activate(k: BlockDims, o: u32, z: f32) -> f32 {
    if (k.norm == 0u) {
        return max(z, 0.0);
    }
    if (dims.mode == 2u) {
        return z;
    }
    let w = k.outputs;
    let mean = params[k.gamma + 2u * w + o];
    let variance = params[k.gamma + 3u * w + o];
    let y = (z - mean) / sqrt(variance + bitcast<f32>(dims.epsilon)) * params[k.gamma + o]
        + params[k.gamma + w + o];
    return max(y, 0.0);
}

// Each block's 1 / sqrt(variance + epsilon) of the batch, per channel (block b at b * MAX_WIDTH),
// and the current block's batch mean.
var<workgroup> norm_inv: array<f32, 4u * MAX_WIDTH>;
var<workgroup> norm_mean: array<f32, MAX_WIDTH>;

// A batch-norm model's training step, the whole batch in this workgroup (see Batch norm).
fn whole_batch(t: u32) {
    storageBarrier();
    workgroupBarrier();
    let lane = subgroupExclusiveAdd(1u) % 8u;
    let stride = dims.stride;
    for (var n = 0u; n < dims.n; n = n + 1u) {
        load_image(t, n, n * stride);
    }
    for (var b = 0u; b < dims.blocks; b = b + 1u) {
        let k = dims.block[b];
        for (var n = 0u; n < dims.n; n = n + 1u) {
            conv_forward(t, lane, k, n * stride);
        }
        storageBarrier();
        norm_statistics(t, b, k);
        workgroupBarrier();
        for (var n = 0u; n < dims.n; n = n + 1u) {
            normalize(t, b, k, n * stride);
        }
        storageBarrier();
        if (k.pool != 0u) {
            for (var n = 0u; n < dims.n; n = n + 1u) {
                pool_forward(t, k, dims.block[b + 1u], n * stride);
            }
            storageBarrier();
        }
    }
    let last = dims.block[dims.blocks - 1u];
    for (var n = 0u; n < dims.n; n = n + 1u) {
        batch_head(t, n, last, n * stride);
    }
    storageBarrier();
    for (var r = 0u; r < dims.blocks; r = r + 1u) {
        let b = dims.blocks - 1u - r;
        let k = dims.block[b];
        norm_backward(t, b, k);
        storageBarrier();
        for (var n = 0u; n < dims.n; n = n + 1u) {
            weight_backward(t, lane, k, n * stride, 0u, n == 0u);
        }
        if (b == 0u) {
            break;
        }
        for (var n = 0u; n < dims.n; n = n + 1u) {
            input_backward(t, lane, k, n * stride);
            storageBarrier();
            pool_backward(t, dims.block[b - 1u], k, n * stride);
        }
    }
}

// Sample n's head, forward, loss and backward, into the single row (whole_batch): the last
// block's output gradient in its scratch.
fn batch_head(t: u32, n: u32, last: BlockDims, base: u32) {
    storageBarrier();
    workgroupBarrier();
    let first = n == 0u;
    if (dims.head.kind == 0u) {
        classify(t, n, last, base);
    } else {
        head_forward(t, n, last, base);
    }
    _ = loss_and_gradient(t, n, dims.n, dims.c, 2u);
    if (dims.head.kind == 0u) {
        classifier_backward(t, last, 0u, first);
        workgroupBarrier();
        last_output_backward(t, n, last, base);
    } else {
        head_backward(t, n, last, base, 0u, first);
    }
}

// Each invocation's part of a sum over the batch, then the tree that adds them (norm_sums).
var<workgroup> part_a: array<f32, WG>;
var<workgroup> part_b: array<f32, WG>;

// Kahan's compensated sum: (sum, compensation) plus v.
fn kahan(acc: vec2<f32>, v: f32) -> vec2<f32> {
    let y = v - acc.y;
    let s = acc.x + y;
    return vec2<f32>(s, (s - acc.x) - y);
}

// The workgroup's totals of each invocation's (a, b), in a fixed tree; every invocation gets
// them (call from uniform control flow).
fn norm_sums(t: u32, a: f32, b: f32) -> vec2<f32> {
    workgroupBarrier();
    part_a[t] = a;
    part_b[t] = b;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (t < half) {
            part_a[t] = part_a[t] + part_a[t + half];
            part_b[t] = part_b[t] + part_b[t + half];
        }
        workgroupBarrier();
    }
    return vec2<f32>(part_a[0], part_b[0]);
}

// Where value e (0 .. N * pixels) of channel c of block k sits: sample e / pixels, pixel
// e % pixels, at `at` within the sample's scratch (channels-last, `w` channels; `iw` 0 for
// an unbordered map, else the bordered row width).
fn norm_at(k: BlockDims, e: u32, c: u32, at: u32, bordered: bool) -> u32 {
    let pixels = k.h * k.w;
    let p = e % pixels;
    var q = p;
    if (bordered) {
        q = (p / k.w + 1u) * (k.w + 2u) + p % k.w + 1u;
    }
    return (e / pixels) * dims.stride + at + q * k.outputs + c;
}

// Block b's batch mean and biased variance per channel over every sample's convolution
// output (mean first, then the mean of squared deviations, as burn's batch_norm_train; each
// a compensated sum per invocation, then a tree); the running statistics' new values into
// the row (see Batch norm).
fn norm_statistics(t: u32, b: u32, k: BlockDims) {
    let w = k.outputs;
    let total = dims.n * k.h * k.w;
    let count = f32(total);
    let momentum = bitcast<f32>(dims.momentum);
    for (var c = 0u; c < w; c = c + 1u) {
        var acc = vec2<f32>(0.0, 0.0);
        for (var e = t; e < total; e = e + WG) {
            acc = kahan(acc, scratch[norm_at(k, e, c, k.output, false)]);
        }
        let mean = norm_sums(t, acc.x, 0.0).x / count;
        acc = vec2<f32>(0.0, 0.0);
        for (var e = t; e < total; e = e + WG) {
            let d = scratch[norm_at(k, e, c, k.output, false)] - mean;
            acc = kahan(acc, d * d);
        }
        let variance = norm_sums(t, acc.x, 0.0).x / count;
        if (t == 0u) {
            norm_mean[c] = mean;
            norm_inv[b * MAX_WIDTH + c] = 1.0 / sqrt(variance + bitcast<f32>(dims.epsilon));
            // PyTorch's running variance is the unbiased one: count / (count - 1) of the
            // batch's.
            let unbiased = select(1.0, count / (count - 1.0), count > 1.0);
            let running = k.gamma + 2u * w + c;
            grads[running] = params[running] * (1.0 - momentum) + mean * momentum;
            grads[running + w] = params[running + w] * (1.0 - momentum)
                + variance * (momentum * unbiased);
            grads[k.bias + c] = 0.0;
            if (c == 0u) {
                grads[k.gamma + 4u * w] = params[k.gamma + 4u * w] + 1.0;
            }
        }
    }
}

// Sample `base`'s block output normalized with the batch's statistics (xhat kept), scaled,
// shifted and ReLU'd in place.
fn normalize(t: u32, b: u32, k: BlockDims, base: u32) {
    let w = k.outputs;
    for (var e = t; e < k.h * k.w * w; e = e + WG) {
        let c = e % w;
        let xhat = (scratch[base + k.output + e] - norm_mean[c]) * norm_inv[b * MAX_WIDTH + c];
        scratch[base + k.xhat + e] = xhat;
        scratch[base + k.output + e] = max(xhat * params[k.gamma + c] + params[k.gamma + w + c], 0.0);
    }
}

// Block b's batch norm backward: its output gradient dy (in dout, zero border) summed over
// the batch per channel, and dy * xhat (beta's and gamma's gradients, into the row; summed
// as norm_statistics); then every sample's dy replaced by the gradient before the norm
// (burn's expressions).
fn norm_backward(t: u32, b: u32, k: BlockDims) {
    let w = k.outputs;
    let total = dims.n * k.h * k.w;
    let count = f32(total);
    for (var c = 0u; c < w; c = c + 1u) {
        var dy_acc = vec2<f32>(0.0, 0.0);
        var projected_acc = vec2<f32>(0.0, 0.0);
        for (var e = t; e < total; e = e + WG) {
            let dy = scratch[norm_at(k, e, c, k.dout, true)];
            dy_acc = kahan(dy_acc, dy);
            projected_acc = kahan(projected_acc, dy * scratch[norm_at(k, e, c, k.xhat, false)]);
        }
        let sums = norm_sums(t, dy_acc.x, projected_acc.x);
        if (t == 0u) {
            grads[k.gamma + c] = sums.y;
            grads[k.gamma + w + c] = sums.x;
        }
        let mean_dy = sums.x / count;
        let mean_projected = sums.y / count;
        let scale = params[k.gamma + c] * norm_inv[b * MAX_WIDTH + c];
        for (var e = t; e < total; e = e + WG) {
            let at = norm_at(k, e, c, k.dout, true);
            let xhat = scratch[norm_at(k, e, c, k.xhat, false)];
            scratch[at] = scale * ((scratch[at] - mean_dy) - xhat * mean_projected);
        }
    }
}
