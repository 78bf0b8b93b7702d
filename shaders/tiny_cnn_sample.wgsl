// tiny_cnn_sample: the Tiny CNN's forward pass, cross-entropy and backward pass for one sample
// per workgroup, writing that sample's gradient of every parameter.
//
//   image (H, W) -> conv1 3x3 pad 1 (1->8) -> ReLU -> max-pool 2x2 -> conv2 3x3 pad 1 (8->16)
//         -> ReLU -> global average pool -> linear 16->C -> logits -> cross-entropy
//
// Inputs:  images  array<f32>, N * H * W pixels, row-major per image.
//          labels  array<i32>, N class ids (unused in mode 0).
//          params  array<f32>, the flat parameters (a longer buffer is fine: the Adam state
//                  follows them there): conv1 weight (8,1,3,3) at 0, bias (8) at 72, conv2
//                  weight (16,8,3,3) at 80, bias (16) at 1232, linear weight (16,C) at 1248,
//                  bias (C) at 1248 + 16 C; P = 1248 + 17 C values.
//          dims    uniform SampleDims (sample_common.wgsl): N, H, W, C, P, mode, S, G
//                  (workgroups).
// Outputs: logits  array<f32>, N * C.
//          grads   array<f32>, G * P: row g is the gradient of the batch-mean loss summed
//                  over workgroup g's samples
//                  (mode 2 only).
//          stats   array<f32>: loss and correct (1.0 or 0.0) of sample n at 2n, 2n + 1
//                  (modes 1 and 2).
//          scratch array<f32>: S values per workgroup, reused for each of its samples: the image with a zero border
//                  (H+2, W+2); the pooled map with a zero border (Hp+2, Wp+2, 8); the argmax
//                  within each 2x2 window (Hp, Wp, 8, as 0.0 .. 3.0); conv2's output after
//                  ReLU, then its gradient, with a zero border (Hp+2, Wp+2, 16); the gradient
//                  at the pooled map (Hp, Wp, 8). Hp = H / 2, Wp = W / 2 (floor, as burn's
//                  pool). The borders make every 3x3 window read without a bounds check.
// Modes:   0 logits; 1 logits, loss and correct; 2 all of that and the gradients.
// Layout:  G workgroups (x + y * 65535); workgroup g takes samples g, g + G, ...; workgroup
//          size {{ workgroup_size }}; C at most MAX_CLASSES (256). Barriers are reached by the whole workgroup (n and the mode come
//          from the uniform `dims`).
//          Invocations take pixels (or weights), and each computes all channels of its own
//          in vec4 accumulators: the weights it reads are the same for every invocation at the
//          same time (one load, broadcast on a GPU and in lavapipe's SIMD), and only the
//          activations differ between invocations.
// Exactness: the layers' arithmetic up to float summation order; max-pool keeps the first
//          maximum and ReLU passes gradient where its output is above 0, as burn's do.

const WG: u32 = {{ workgroup_size }}u;
// The most classes (the logit arrays' size), from src/device/gpu_train.rs's MAX_CLASSES.
const MAX_CLASSES: u32 = {{ max_classes }}u;
const B1: u32 = 72u;
const W2: u32 = 80u;
const B2: u32 = 1232u;
const W3: u32 = 1248u;

var<workgroup> feat: array<f32, 16>;
var<workgroup> dmean: array<vec4<f32>, 4>;
{{ sample_common }}

// Four consecutive parameters `step` apart, from `at`.
fn params4(at: u32, step: u32) -> vec4<f32> {
    return vec4<f32>(params[at], params[at + step], params[at + 2u * step], params[at + 3u * step]);
}

// Four consecutive scratch values from `at`.
fn scratch4(at: u32) -> vec4<f32> {
    return vec4<f32>(scratch[at], scratch[at + 1u], scratch[at + 2u], scratch[at + 3u]);
}

fn store4(at: u32, v: vec4<f32>) {
    scratch[at] = v.x;
    scratch[at + 1u] = v.y;
    scratch[at + 2u] = v.z;
    scratch[at + 3u] = v.w;
}

// Whether (y, x) of a padded map with `hp` x `wp` inside lies on its border.
fn border(y: u32, x: u32, hp: u32, wp: u32) -> bool {
    return y == 0u || x == 0u || y > hp || x > wp;
}

// Max-pool's step: `value` replaces the best so far where it is larger (so the first maximum
// wins), and `k` is recorded as where it was.
fn pool_step(best: ptr<function, vec4<f32>>, at: ptr<function, vec4<f32>>, value: vec4<f32>, k: f32) {
    let larger = value > *best;
    *at = select(*at, vec4<f32>(k), larger);
    *best = select(*best, value, larger);
}

// conv2's input for weight column j at output pixel (y, x): the pooled map's channel and tap
// of column j < 72, 1 for the bias column 72 (and anything past it, which is not written).
fn column(j: u32, pool: u32, pw: u32, y: u32, x: u32) -> f32 {
    if (j >= 72u) {
        return 1.0;
    }
    let ky = (j % 9u) / 3u;
    let kx = j % 3u;
    return scratch[pool + ((y + ky) * pw + x + kx) * 8u + j / 9u];
}

// conv2's gradient of column j (a weight column, or the bias for j = 72), 16 output channels.
fn put_conv2(g: u32, j: u32, a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>, first: bool) {
    var at = g + W2 + j;
    var step = 72u;
    if (j == 72u) {
        at = g + B2;
        step = 1u;
    }
    for (var c = 0u; c < 4u; c = c + 1u) {
        let a = select(select(a0, a1, c == 1u), select(a2, a3, c == 3u), c >= 2u);
        put(at + (4u * c) * step, a.x, first);
        put(at + (4u * c + 1u) * step, a.y, first);
        put(at + (4u * c + 2u) * step, a.z, first);
        put(at + (4u * c + 3u) * step, a.w, first);
    }
}

// Sample `n`, in workgroup `slot`'s scratch; `first` for the slot's first sample.
fn one_sample(t: u32, n: u32, slot: u32, first: bool) {
    // The previous sample of this workgroup is done with the scratch and shared values.
    storageBarrier();
    workgroupBarrier();
    let n_total = dims.n;
    let h = dims.h;
    let w = dims.w;
    let c_total = dims.c;
    let p_total = dims.p;
    let mode = dims.mode;
    let stride = dims.stride;
    let hp = h / 2u;
    let wp = w / 2u;
    let cells = hp * wp;
    let iw = w + 2u;            // padded image row
    let pw = wp + 2u;           // padded pooled row
    let padded = (hp + 2u) * pw;
    let img = slot * stride;
    let pool = img + (h + 2u) * iw;
    let argmax = pool + 8u * padded;
    let dz = argmax + 8u * cells;
    let dpool = dz + 16u * padded;
    let b3 = W3 + 16u * c_total;
    let zero = vec4<f32>(0.0);

    // The image with its zero border; the borders of the pooled map and of conv2's map.
    for (var i = t; i < (h + 2u) * iw; i = i + WG) {
        let y = i / iw;
        let x = i % iw;
        var v = 0.0;
        if (!border(y, x, h, w)) {
            v = images[n * h * w + (y - 1u) * w + (x - 1u)];
        }
        scratch[img + i] = v;
    }
    for (var i = t; i < padded; i = i + WG) {
        if (border(i / pw, i % pw, hp, wp)) {
            store4(pool + i * 8u, zero);
            store4(pool + i * 8u + 4u, zero);
            for (var c = 0u; c < 16u; c = c + 4u) {
                store4(dz + i * 16u + c, zero);
            }
        }
    }
    storageBarrier();

    // conv1 + ReLU + max-pool: invocation per pooled cell, all 8 channels of the 2x2 window's
    // four pixels (each weight read serves all four); the first maximum of the window wins.
    for (var cell = t; cell < cells; cell = cell + WG) {
        // conv1's window for output pixel (2y + k / 2, 2x + k % 2) starts there in the padded
        // image.
        let corner = img + 2u * (cell / wp) * iw + 2u * (cell % wp);
        var a0 = params4(B1, 1u);
        var a1 = params4(B1 + 4u, 1u);
        var b0 = a0;
        var b1 = a1;
        var c0 = a0;
        var c1 = a1;
        var d0 = a0;
        var d1 = a1;
        for (var ky = 0u; ky < 3u; ky = ky + 1u) {
            for (var kx = 0u; kx < 3u; kx = kx + 1u) {
                let at = corner + ky * iw + kx;
                let w0 = params4(ky * 3u + kx, 9u);
                let w1 = params4(36u + ky * 3u + kx, 9u);
                let p0 = scratch[at];
                let p1 = scratch[at + 1u];
                let p2 = scratch[at + iw];
                let p3 = scratch[at + iw + 1u];
                a0 = a0 + p0 * w0;
                a1 = a1 + p0 * w1;
                b0 = b0 + p1 * w0;
                b1 = b1 + p1 * w1;
                c0 = c0 + p2 * w0;
                c1 = c1 + p2 * w1;
                d0 = d0 + p3 * w0;
                d1 = d1 + p3 * w1;
            }
        }
        // ReLU, then the window's first maximum and where it was (0 .. 3, row-major).
        var best0 = max(a0, zero);
        var best1 = max(a1, zero);
        var at0 = zero;
        var at1 = zero;
        pool_step(&best0, &at0, max(b0, zero), 1.0);
        pool_step(&best1, &at1, max(b1, zero), 1.0);
        pool_step(&best0, &at0, max(c0, zero), 2.0);
        pool_step(&best1, &at1, max(c1, zero), 2.0);
        pool_step(&best0, &at0, max(d0, zero), 3.0);
        pool_step(&best1, &at1, max(d1, zero), 3.0);
        let at = pool + ((cell / wp + 1u) * pw + cell % wp + 1u) * 8u;
        store4(at, best0);
        store4(at + 4u, best1);
        store4(argmax + cell * 8u, at0);
        store4(argmax + cell * 8u + 4u, at1);
    }
    storageBarrier();

    // conv2 + ReLU: invocation per two pixels (cell and cell + half), all 16 channels, written
    // inside conv2's padded map. Each weight read serves both pixels.
    let half = (cells + 1u) / 2u;
    for (var cell = t; cell < half; cell = cell + WG) {
        let other = min(cell + half, cells - 1u);
        let at0 = pool + ((cell / wp) * pw + cell % wp) * 8u;
        let at1 = pool + ((other / wp) * pw + other % wp) * 8u;
        var a0 = params4(B2, 1u);
        var a1 = params4(B2 + 4u, 1u);
        var a2 = params4(B2 + 8u, 1u);
        var a3 = params4(B2 + 12u, 1u);
        var b0 = a0;
        var b1 = a1;
        var b2 = a2;
        var b3 = a3;
        for (var ky = 0u; ky < 3u; ky = ky + 1u) {
            for (var kx = 0u; kx < 3u; kx = kx + 1u) {
                let tap = (ky * pw + kx) * 8u;
                for (var ci = 0u; ci < 8u; ci = ci + 1u) {
                    let u = scratch[at0 + tap + ci];
                    let v = scratch[at1 + tap + ci];
                    let o = W2 + ci * 9u + ky * 3u + kx;
                    let w0 = params4(o, 72u);
                    let w1 = params4(o + 288u, 72u);
                    let w2 = params4(o + 576u, 72u);
                    let w3 = params4(o + 864u, 72u);
                    a0 = a0 + u * w0;
                    a1 = a1 + u * w1;
                    a2 = a2 + u * w2;
                    a3 = a3 + u * w3;
                    b0 = b0 + v * w0;
                    b1 = b1 + v * w1;
                    b2 = b2 + v * w2;
                    b3 = b3 + v * w3;
                }
            }
        }
        let out0 = dz + ((cell / wp + 1u) * pw + cell % wp + 1u) * 16u;
        store4(out0, max(a0, zero));
        store4(out0 + 4u, max(a1, zero));
        store4(out0 + 8u, max(a2, zero));
        store4(out0 + 12u, max(a3, zero));
        if (cell + half < cells) {
            let out1 = dz + ((other / wp + 1u) * pw + other % wp + 1u) * 16u;
            store4(out1, max(b0, zero));
            store4(out1 + 4u, max(b1, zero));
            store4(out1 + 8u, max(b2, zero));
            store4(out1 + 12u, max(b3, zero));
        }
    }
    storageBarrier();

    // Global average pool: invocation per channel, pixels in order.
    if (t < 16u) {
        var s = 0.0;
        for (var y = 0u; y < hp; y = y + 1u) {
            for (var x = 0u; x < wp; x = x + 1u) {
                s = s + scratch[dz + ((y + 1u) * pw + x + 1u) * 16u + t];
            }
        }
        feat[t] = s / f32(cells);
    }
    workgroupBarrier();

    // Linear: the logits.
    for (var c = t; c < c_total; c = c + WG) {
        var z = params[b3 + c];
        for (var i = 0u; i < 16u; i = i + 1u) {
            z = z + feat[i] * params[W3 + i * c_total + c];
        }
        logit[c] = z;
        logits_out[n * c_total + c] = z;
    }
    // Cross-entropy and its gradient (shaders/sample_common.wgsl), as far as the mode asks.
    if (!loss_and_gradient(t, n, n_total, c_total, mode)) {
        return;
    }

    // Backward through the loss (mean over the batch) and the linear layer.
    if (t < 4u) {
        var d = zero;
        for (var c = 0u; c < c_total; c = c + 1u) {
            d = d + params4(W3 + 4u * t * c_total + c, c_total) * dlogit[c];
        }
        dmean[t] = d / f32(cells);
    }
    workgroupBarrier();
    let g = slot * p_total;
    for (var j = t; j < 17u * c_total; j = j + WG) {
        if (j < 16u * c_total) {
            put(g + W3 + j, feat[j / c_total] * dlogit[j % c_total], first);
        } else {
            put(g + W3 + j, dlogit[j - 16u * c_total], first);
        }
    }

    // conv2's gradient at its pre-activation: the pool's share where ReLU passed it (each
    // value is read and written by the invocation of its pixel).
    for (var cell = t; cell < cells; cell = cell + WG) {
        let at = dz + ((cell / wp + 1u) * pw + cell % wp + 1u) * 16u;
        for (var c = 0u; c < 4u; c = c + 1u) {
            store4(at + 4u * c, select(zero, dmean[c], scratch4(at + 4u * c) > zero));
        }
    }
    storageBarrier();

    // conv2's weights and bias: 73 columns (72 of (input channel, tap), then the bias), all 16
    // output channels each; an invocation takes columns j and j + 37, so each read of conv2's
    // gradient serves both.
    for (var j = t; j < 37u; j = j + WG) {
        let k = j + 37u;
        var a0 = zero;
        var a1 = zero;
        var a2 = zero;
        var a3 = zero;
        var b0 = zero;
        var b1 = zero;
        var b2 = zero;
        var b3 = zero;
        for (var y = 0u; y < hp; y = y + 1u) {
            for (var x = 0u; x < wp; x = x + 1u) {
                let u = column(j, pool, pw, y, x);
                let v = column(k, pool, pw, y, x);
                let at = dz + ((y + 1u) * pw + x + 1u) * 16u;
                let d0 = scratch4(at);
                let d1 = scratch4(at + 4u);
                let d2 = scratch4(at + 8u);
                let d3 = scratch4(at + 12u);
                a0 = a0 + u * d0;
                a1 = a1 + u * d1;
                a2 = a2 + u * d2;
                a3 = a3 + u * d3;
                b0 = b0 + v * d0;
                b1 = b1 + v * d1;
                b2 = b2 + v * d2;
                b3 = b3 + v * d3;
            }
        }
        put_conv2(g, j, a0, a1, a2, a3, first);
        if (k < 73u) {
            put_conv2(g, k, b0, b1, b2, b3, first);
        }
    }

    // The gradient at the pooled map (conv2 transposed): an invocation per two pixels (cell
    // and cell + half), all 8 input channels; each weight read serves both.
    for (var cell = t; cell < half; cell = cell + WG) {
        let other = min(cell + half, cells - 1u);
        // conv2's output (y + 1 - ky, x + 1 - kx) in padded coordinates is
        // (y + 2 - ky, x + 2 - kx): from (y, x), minus the tap.
        let at0 = dz + ((cell / wp + 2u) * pw + cell % wp + 2u) * 16u;
        let at1 = dz + ((other / wp + 2u) * pw + other % wp + 2u) * 16u;
        var d0 = zero;
        var d1 = zero;
        var e0 = zero;
        var e1 = zero;
        for (var ky = 0u; ky < 3u; ky = ky + 1u) {
            for (var kx = 0u; kx < 3u; kx = kx + 1u) {
                let tap = (ky * pw + kx) * 16u;
                for (var c = 0u; c < 16u; c = c + 1u) {
                    let u = scratch[at0 - tap + c];
                    let v = scratch[at1 - tap + c];
                    let o = W2 + c * 72u + ky * 3u + kx;
                    let w0 = params4(o, 9u);
                    let w1 = params4(o + 36u, 9u);
                    d0 = d0 + u * w0;
                    d1 = d1 + u * w1;
                    e0 = e0 + v * w0;
                    e1 = e1 + v * w1;
                }
            }
        }
        store4(dpool + cell * 8u, d0);
        store4(dpool + cell * 8u + 4u, d1);
        if (cell + half < cells) {
            store4(dpool + other * 8u, e0);
            store4(dpool + other * 8u + 4u, e1);
        }
    }
    storageBarrier();

    // conv1's weights and bias: the gradient reaches the window's maximum where it was
    // above 0.
    for (var j = t; j < 80u; j = j + WG) {
        var d = 0.0;
        let c = select(j / 9u, j - 72u, j >= 72u);
        let ky = (j % 9u) / 3u;
        let kx = j % 3u;
        for (var y = 0u; y < hp; y = y + 1u) {
            for (var x = 0u; x < wp; x = x + 1u) {
                let i = (y * wp + x) * 8u + c;
                let passed = scratch[pool + ((y + 1u) * pw + x + 1u) * 8u + c] > 0.0;
                let at = u32(scratch[argmax + i]);
                // conv1's output pixel (2y + at / 2, 2x + at % 2); its window starts there in
                // the padded image.
                let corner = img + (2u * y + at / 2u + ky) * iw + 2u * x + at % 2u + kx;
                let input = select(scratch[corner], 1.0, j >= 72u);
                d = d + select(0.0, scratch[dpool + i] * input, passed);
            }
        }
        put(g + j, d, first);
    }
}
