// cnn_sample: the CNN family's forward pass, cross-entropy and backward pass for one sample
// per workgroup, writing that sample's gradient of every parameter. Any input channel count
// and any widths of the family (1 to 4 blocks, each a 3x3 conv with padding 1 then a ReLU, a
// 2x2 max-pool between blocks, then a global average pool and a linear layer).
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
//          whole workgroup reaches every barrier. Invocations take pixels (sixteen channels
//          at a time in four vec4s) or weights; the convolutions' weights are read at
//          addresses that depend on loop counters only, the same in every invocation at once.
// Exactness: the layers' arithmetic up to float summation order; max-pool keeps the first
//          maximum and ReLU passes gradient where its output is above 0, as burn's do.

const WG: u32 = {{ workgroup_size }}u;
// The most classes and the widest block, from src/device/gpu_train.rs.
const MAX_CLASSES: u32 = {{ max_classes }}u;
const MAX_WIDTH: u32 = {{ max_width }}u;

var<workgroup> feat: array<f32, MAX_WIDTH>;
var<workgroup> dfeat: array<f32, MAX_WIDTH>;
{{ sample_common }}

// Weight w[o][i][tap] of block `k`.
fn weight(k: BlockDims, o: u32, i: u32, tap: u32) -> f32 {
    return params[k.weight + (o * k.inputs + i) * 9u + tap];
}

// Sample `n`, in workgroup `slot`'s scratch; `first` for the slot's first sample.
fn one_sample(t: u32, n: u32, slot: u32, first: bool) {
    // The previous sample of this workgroup is done with the scratch and shared values.
    storageBarrier();
    workgroupBarrier();
    let base = slot * dims.stride;
    load_image(t, n, base);
    for (var b = 0u; b < dims.blocks; b = b + 1u) {
        conv_forward(t, dims.block[b], base);
        storageBarrier();
        if (dims.block[b].pool != 0u) {
            pool_forward(t, dims.block[b], dims.block[b + 1u], base);
            storageBarrier();
        }
    }
    let last = dims.block[dims.blocks - 1u];
    classify(t, n, last, base);
    if (!loss_and_gradient(t, n, dims.n, dims.c, dims.mode)) {
        return;
    }
    let g = slot * dims.p;
    classifier_backward(t, last, g, first);
    workgroupBarrier();
    average_backward(t, last, base);
    storageBarrier();
    for (var r = 0u; r < dims.blocks; r = r + 1u) {
        let b = dims.blocks - 1u - r;
        let k = dims.block[b];
        weight_backward(t, k, base, g, first);
        if (b == 0u) {
            break;
        }
        input_backward(t, k, base);
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

// Where the weights of outputs o0 + 4 v .. o0 + 4 v + 3 lie from output o0's: `step` apart,
// the last live one repeated past `live` (those lanes are computed and dropped), so every
// load is unconditional.
fn spread_from(v: u32, live: u32, step: u32) -> vec4<u32> {
    let last = live - 1u;
    let first = 4u * v;
    return vec4<u32>(
        min(first, last),
        min(first + 1u, last),
        min(first + 2u, last),
        min(first + 3u, last)
    ) * step;
}

fn spread(live: u32, step: u32) -> vec4<u32> {
    return spread_from(0u, live, step);
}

// Value j (0 .. 15) of four vec4s taken as one run of sixteen.
fn lane(a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>, j: u32) -> f32 {
    var a = a3;
    if (j < 4u) {
        a = a0;
    } else if (j < 8u) {
        a = a1;
    } else if (j < 12u) {
        a = a2;
    }
    return a[j % 4u];
}

// Four parameters at `at` plus each of `offsets`.
fn params_at(at: u32, offsets: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(
        params[at + offsets.x],
        params[at + offsets.y],
        params[at + offsets.z],
        params[at + offsets.w]
    );
}

// out[p][o] = relu(bias[o] + sum over taps and i of input[p + tap][i] * w[o][i][tap]): an
// invocation per pixel, sixteen output channels at a time, so each activation read serves
// sixteen products. A weight's address depends on loop counters only, so every invocation
// reads the same weight at once (one load in lavapipe's SIMD, a broadcast on a GPU); only
// the activations differ between invocations.
fn conv_forward(t: u32, k: BlockDims, base: u32) {
    let iw = k.w + 2u;
    let pixels = k.h * k.w;
    for (var pixel = t; pixel < pixels; pixel = pixel + WG) {
        let window = base + k.input + ((pixel / k.w) * iw + pixel % k.w) * k.inputs;
        let out = base + k.output + pixel * k.outputs;
        for (var o0 = 0u; o0 < k.outputs; o0 = o0 + 16u) {
            let live = min(16u, k.outputs - o0);
            let stride = k.inputs * 9u;
            let s0 = spread_from(0u, live, stride);
            let s1 = spread_from(1u, live, stride);
            let s2 = spread_from(2u, live, stride);
            let s3 = spread_from(3u, live, stride);
            var a0 = params_at(k.bias + o0, spread_from(0u, live, 1u));
            var a1 = params_at(k.bias + o0, spread_from(1u, live, 1u));
            var a2 = params_at(k.bias + o0, spread_from(2u, live, 1u));
            var a3 = params_at(k.bias + o0, spread_from(3u, live, 1u));
            for (var tap = 0u; tap < 9u; tap = tap + 1u) {
                let at = window + ((tap / 3u) * iw + tap % 3u) * k.inputs;
                let w0 = k.weight + o0 * stride + tap;
                for (var i = 0u; i < k.inputs; i = i + 1u) {
                    let v = scratch[at + i];
                    let wi = w0 + i * 9u;
                    a0 = a0 + v * params_at(wi, s0);
                    a1 = a1 + v * params_at(wi, s1);
                    a2 = a2 + v * params_at(wi, s2);
                    a3 = a3 + v * params_at(wi, s3);
                }
            }
            for (var j = 0u; j < live; j = j + 1u) {
                scratch[out + o0 + j] = max(lane(a0, a1, a2, a3, j), 0.0);
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

// The last block's output gradient (zero border): dfeat / (H * W) where the ReLU passed.
fn average_backward(t: u32, last: BlockDims, base: u32) {
    let count = f32(last.h * last.w);
    let bw = last.w + 2u;
    for (var e = t; e < (last.h + 2u) * bw * last.outputs; e = e + WG) {
        let c = e % last.outputs;
        let pixel = e / last.outputs;
        let y = pixel / bw;
        let x = pixel % bw;
        var v = 0.0;
        if (y >= 1u && y <= last.h && x >= 1u && x <= last.w) {
            let out = scratch[base + last.output + ((y - 1u) * last.w + x - 1u) * last.outputs + c];
            v = select(0.0, dfeat[c] / count, out > 0.0);
        }
        scratch[base + last.dout + e] = v;
    }
}

// Block `k`'s weight and bias gradients: an invocation per (input, four outputs) sums the
// nine taps of each over the pixels, w[o][i][tap] += sum input[p + tap][i] * dout[p][o]
// (each value by its one invocation, pixels in order); then an invocation per output its
// bias.
fn weight_backward(t: u32, k: BlockDims, base: u32, g: u32, first: bool) {
    let iw = k.w + 2u;
    let groups = (k.outputs + 3u) / 4u;
    for (var j = t; j < groups * k.inputs; j = j + WG) {
        let o0 = (j / k.inputs) * 4u;
        let i = j % k.inputs;
        let live = min(4u, k.outputs - o0);
        let outs = spread(live, 1u);
        var s: array<vec4<f32>, 9>;
        for (var tap = 0u; tap < 9u; tap = tap + 1u) {
            s[tap] = vec4<f32>(0.0);
        }
        for (var y = 0u; y < k.h; y = y + 1u) {
            for (var x = 0u; x < k.w; x = x + 1u) {
                let da = base + k.dout + ((y + 1u) * iw + x + 1u) * k.outputs + o0;
                let d = vec4<f32>(
                    scratch[da + outs.x],
                    scratch[da + outs.y],
                    scratch[da + outs.z],
                    scratch[da + outs.w]
                );
                let at = base + k.input + (y * iw + x) * k.inputs + i;
                for (var tap = 0u; tap < 9u; tap = tap + 1u) {
                    s[tap] = s[tap] + scratch[at + ((tap / 3u) * iw + tap % 3u) * k.inputs] * d;
                }
            }
        }
        for (var q = 0u; q < live; q = q + 1u) {
            let row = g + k.weight + ((o0 + q) * k.inputs + i) * 9u;
            for (var tap = 0u; tap < 9u; tap = tap + 1u) {
                put(row + tap, s[tap][q], first);
            }
        }
    }
    for (var o = t; o < k.outputs; o = o + WG) {
        var s = 0.0;
        for (var y = 0u; y < k.h; y = y + 1u) {
            for (var x = 0u; x < k.w; x = x + 1u) {
                s = s + scratch[base + k.dout + ((y + 1u) * iw + x + 1u) * k.outputs + o];
            }
        }
        put(g + k.bias + o, s, first);
    }
}

// Block `k`'s input gradient: the transposed, flipped convolution of its output's gradient,
// din[p][i] = sum over taps and o of dout[p + tap][o] * w[o][i][8 - tap]: an invocation per
// pixel, sixteen input channels at a time, the weights read at addresses that depend on loop
// counters only (as in conv_forward).
fn input_backward(t: u32, k: BlockDims, base: u32) {
    let iw = k.w + 2u;
    let pixels = k.h * k.w;
    let stride = k.inputs * 9u;
    for (var pixel = t; pixel < pixels; pixel = pixel + WG) {
        let window = base + k.dout + ((pixel / k.w) * iw + pixel % k.w) * k.outputs;
        let out = base + k.din + pixel * k.inputs;
        for (var i0 = 0u; i0 < k.inputs; i0 = i0 + 16u) {
            let live = min(16u, k.inputs - i0);
            let s0 = spread_from(0u, live, 9u);
            let s1 = spread_from(1u, live, 9u);
            let s2 = spread_from(2u, live, 9u);
            let s3 = spread_from(3u, live, 9u);
            var a0 = vec4<f32>(0.0);
            var a1 = vec4<f32>(0.0);
            var a2 = vec4<f32>(0.0);
            var a3 = vec4<f32>(0.0);
            for (var tap = 0u; tap < 9u; tap = tap + 1u) {
                let at = window + ((tap / 3u) * iw + tap % 3u) * k.outputs;
                let w0 = k.weight + i0 * 9u + 8u - tap;
                for (var o = 0u; o < k.outputs; o = o + 1u) {
                    let d = scratch[at + o];
                    let wo = w0 + o * stride;
                    a0 = a0 + d * params_at(wo, s0);
                    a1 = a1 + d * params_at(wo, s1);
                    a2 = a2 + d * params_at(wo, s2);
                    a3 = a3 + d * params_at(wo, s3);
                }
            }
            for (var j = 0u; j < live; j = j + 1u) {
                scratch[out + i0 + j] = lane(a0, a1, a2, a3, j);
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
