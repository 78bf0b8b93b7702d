// stripe_synth: writes a batch of the workshop's stripe images straight into device memory.
//
// Inputs:  spec   array<i32>, 2 per image: class (0 vertical, 1 horizontal, 2 diagonal) and
//                 index within the class; the image is a pure function of (seed, class, index).
//          params uniform SynthParams: seed low 32 bits, seed high 32 bits, image size S,
//                 image count N.
// Output:  images array<f32>, N * S * S values, image-major then row-major: the (N, 1, S, S)
//          tensor the models take.
// Layout:  one invocation per pixel, 1-D; workgroup size {{ workgroup_size }}; the grid is
//          ceil(N * S * S / {{ workgroup_size }}) workgroups along x (and y when that is more
//          than 65535), and invocations past the end return.
// Exactness: the generator of src/rng.rs in 32-bit integer arithmetic; the noise is an
//          Irwin-Hall sum whose conversion and scaling are exact in f32, and every other step
//          is one correctly rounded f32 operation in the host's order, so the images equal the
//          host's bit for bit.

@group(0) @binding(0) var<storage, read_write> spec: array<i32>;
@group(0) @binding(1) var<storage, read_write> images: array<{{ elem }}>;
@group(0) @binding(2) var<uniform> params: SynthParams;

struct SynthParams {
    seed_lo: u32,
    seed_hi: u32,
    size: u32,
    count: u32,
}

const STREAM_IMAGE: u32 = 1u;

{{ rng }}

fn key(lo: u32, hi: u32, stream: u32, item: u32) -> u32 {
    var k = mix32(lo ^ 0x9e3779b9u);
    k = mix32(k ^ hi);
    k = mix32(k ^ (stream * 0x85ebca6bu));
    return mix32(k ^ item);
}

fn below(k: u32, counter: u32, low: i32, high: i32) -> i32 {
    let span = u32(high - low);
    return low + i32(bits(k, counter) % span);
}

fn normal(k: u32, first: u32) -> f32 {
    var sum = 0u;
    for (var i = 0u; i < 12u; i = i + 1u) {
        sum = sum + (bits(k, first + i) >> 12u);
    }
    return f32(sum) * (1.0 / 1048576.0) - 6.0;
}

@compute
@workgroup_size({{ workgroup_size }}, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let s = params.size;
    let n = params.count;
    let id = gid.x + gid.y * groups.x * {{ workgroup_size }}u;
    if (id >= n * s * s) {
        return;
    }
    let image = id / (s * s);
    let pixel = id % (s * s);
    let row = i32(pixel / s);
    let col = i32(pixel % s);
    let si = i32(s);
    let kind = spec[2u * image];
    let index = u32(spec[2u * image + 1u]);
    let k = key(params.seed_lo, params.seed_hi, STREAM_IMAGE, (u32(kind) << 20u) | index);

    var value = normal(k, 16u + 12u * pixel) * 0.2;
    if (kind == 0) {
        let c = below(k, 0u, 1, si - 2);
        if (col == c || col == c + 1) {
            value = value + 1.0;
        }
    } else if (kind == 1) {
        let r = below(k, 0u, 1, si - 2);
        if (row == r || row == r + 1) {
            value = value + 1.0;
        }
    } else {
        let offset = below(k, 0u, -3, 4);
        let c = row + offset;
        if (c >= 0 && c < si && col == c) {
            value = value + 1.1;
        }
        // The seed script's Python indexing: a negative column wraps to the right edge.
        let next = ((c + 1) % si + si) % si;
        if (c + 1 < si && col == next) {
            value = value + 0.8;
        }
    }
    if (uniform01(k, 1u) < 0.18) {
        let top = below(k, 2u, 0, si - 4);
        let left = below(k, 3u, 0, si - 4);
        if (row >= top && row < top + 4 && col >= left && col < left + 4) {
            value = value * 0.25;
        }
    }
    images[id] = clamp(value, -1.0, 1.5);
}
