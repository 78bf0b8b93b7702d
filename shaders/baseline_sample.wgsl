// baseline_sample: the Flatten + Linear baseline's forward pass, cross-entropy and backward pass
// for one sample per workgroup, writing that sample's gradient of every parameter. The same
// bindings and modes as tiny_cnn_sample.wgsl, so the same update kernel follows it.
//
//   image (H, W) -> flatten (H*W) -> linear H*W -> C -> logits -> cross-entropy
//
// Inputs:  images  array<f32>, N * H * W pixels, row-major per image.
//          labels  array<i32>, N class ids (unused in mode 0).
//          params  array<f32>, the flat parameters (a longer buffer is fine): the linear
//                  weight (H*W, C) at 0 (burn's [input, output] order), bias (C) at H*W*C;
//                  P = (H*W + 1) * C values.
//          dims    uniform SampleDims (sample_common.wgsl): N, H, W, C, P, mode, S (unused),
//                  G (workgroups).
// Outputs: logits  array<f32>, N * C.
//          grads   array<f32>, G * P: row g is the gradient of the batch-mean loss summed over
//                  workgroup g's samples (mode 2).
//          scratch array<f32>: unused (the model keeps no activations).
//          stats   array<f32>: loss and correct (1.0 or 0.0) of sample n at 2n, 2n + 1
//                  (modes 1 and 2).
// Modes:   0 logits; 1 logits, loss and correct; 2 all of that and the gradients.
// Layout:  G workgroups (x + y * 65535); workgroup g takes samples g, g + G, ...; size {{ workgroup_size }};
//          invocation c computes logit c (C at most 256), invocations split the gradient.
// Exactness: the layer's arithmetic up to float summation order.

const WG: u32 = {{ workgroup_size }}u;
// The most classes (the logit arrays' size), from src/device/gpu_train.rs's MAX_CLASSES.
const MAX_CLASSES: u32 = {{ max_classes }}u;

{{ sample_common }}

// Sample `n`, in workgroup `slot`'s scratch; `first` for the slot's first sample.
fn one_sample(t: u32, n: u32, slot: u32, first: bool) {
    // The previous sample of this workgroup is done with the scratch and shared values.
    storageBarrier();
    workgroupBarrier();
    let n_total = dims.n;
    let pixels = dims.h * dims.w;
    let c_total = dims.c;
    let p_total = dims.p;
    let mode = dims.mode;
    // Every binding must be used, or the pipeline's layout would not match the bind group;
    // this model needs no scratch (S is 0), so this never writes.
    if (dims.stride > 0u) {
        scratch[0] = 0.0;
    }
    let image = n * pixels;
    let bias = pixels * c_total;

    // Linear: the logits, pixels in order.
    for (var c = t; c < c_total; c = c + WG) {
        var z = params[bias + c];
        for (var i = 0u; i < pixels; i = i + 1u) {
            z = z + images[image + i] * params[i * c_total + c];
        }
        logit[c] = z;
        logits_out[n * c_total + c] = z;
    }
    // Cross-entropy and its gradient (shaders/sample_common.wgsl), as far as the mode asks.
    if (!loss_and_gradient(t, n, n_total, c_total, mode)) {
        return;
    }

    // Backward: the loss (mean over the batch), then the weight as an outer product.
    let g = slot * p_total;
    for (var j = t; j < p_total; j = j + WG) {
        if (j < bias) {
            put(g + j, images[image + j / c_total] * dlogit[j % c_total], first);
        } else {
            put(g + j, dlogit[j - bias], first);
        }
    }
}
