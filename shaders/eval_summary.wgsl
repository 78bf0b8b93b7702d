// eval_summary: turns a batch of logits into what evaluation reads back, in one pass.
//
// Inputs:  logits    array<f32>, N * C values, row-major (one row of C logits per sample).
//          labels    array<i32>, N class ids.
//          params    uniform SummaryParams: N, C.
// Outputs: summary   array<f32>, 3 per sample: softmax confidence of the top class, the
//                    predicted class (first maximum), and 1.0 when it equals the label.
//          confusion array<atomic<i32>>, C * C counts, row = actual, column = predicted; must
//                    start at zero.
// Layout:  one invocation per sample, 1-D; workgroup size {{ workgroup_size }}; the grid is
//          ceil(N / {{ workgroup_size }}) workgroups, and invocations past N return.
// Exactness: the confidence is exp(0) / sum(exp(l - max)) summed in class order, as burn's
//          softmax computes it; predictions and counts are exact.

@group(0) @binding(0) var<storage, read_write> logits: array<{{ elem }}>;
@group(0) @binding(1) var<storage, read_write> labels: array<i32>;
@group(0) @binding(2) var<storage, read_write> summary: array<{{ elem }}>;
@group(0) @binding(3) var<storage, read_write> confusion: array<atomic<i32>>;
@group(0) @binding(4) var<uniform> params: SummaryParams;

struct SummaryParams {
    n: u32,
    c: u32,
    unused_0: u32,
    unused_1: u32,
}

@compute
@workgroup_size({{ workgroup_size }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = params.n;
    let c = params.c;
    let i = gid.x;
    if (i >= n) {
        return;
    }
    let row = i * c;
    var best = 0u;
    var top = logits[row];
    for (var j = 1u; j < c; j = j + 1u) {
        if (logits[row + j] > top) {
            top = logits[row + j];
            best = j;
        }
    }
    var total = 0.0;
    for (var j = 0u; j < c; j = j + 1u) {
        total = total + exp(logits[row + j] - top);
    }
    let actual = labels[i];
    summary[3u * i] = 1.0 / total;
    summary[3u * i + 1u] = f32(best);
    summary[3u * i + 2u] = select(0.0, 1.0, u32(actual) == best);
    atomicAdd(&confusion[u32(actual) * c + best], 1);
}
