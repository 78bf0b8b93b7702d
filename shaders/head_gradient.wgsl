// head_gradient: the batch's gradient of the CNN head's first Linear weight (src/device/
// gpu_head.rs), dW[f][k] = sum over samples n of x[n][f] * dz[n][k], where x is the layer's
// input after dropout and dz the gradient of its output, both written by cnn_sample in
// training mode. One product over the batch instead of a row per sample kernel workgroup,
// which a flattened map's weight (a million values and more) would not fit.
//
// Inputs:  grads  array<f32>: x (N x F) at xs_at, dz (N x K) at dys_at.
//          dims   uniform HeadGradientDims: where those start, where the output goes, F, K, N.
// Outputs: grads  array<f32>: dW (F x K, burn's Linear weight layout) at dense_at.
// Layout:  an invocation per weight (x + y * 65535 workgroups of {{ workgroup_size }}); each
//          sums its samples in order, so reruns are identical.

@group(0) @binding(0) var<storage, read_write> grads: array<f32>;
@group(0) @binding(1) var<uniform> dims: HeadGradientDims;

struct HeadGradientDims {
    dense_at: u32,
    xs_at: u32,
    dys_at: u32,
    features: u32,
    outputs: u32,
    n: u32,
}

const WG: u32 = {{ workgroup_size }}u;

@compute
@workgroup_size({{ workgroup_size }}, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let e = (group.x + group.y * groups.x) * WG + t;
    let k_total = dims.outputs;
    let f_total = dims.features;
    if (e >= f_total * k_total) {
        return;
    }
    let f = e / k_total;
    let k = e % k_total;
    var s = 0.0;
    for (var n = 0u; n < dims.n; n = n + 1u) {
        s = s + grads[dims.xs_at + n * f_total + f] * grads[dims.dys_at + n * k_total + k];
    }
    grads[dims.dense_at + e] = s;
}
