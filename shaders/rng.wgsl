// rng: src/rng.rs's counter-based generator in 32-bit integer arithmetic, to the bit: mix32,
// the counter's bits and a uniform float in [0, 1) with 24 bits (exact in f32). Pasted by the
// template where a kernel names it (src/device/gpu_kernels.rs), so the kernels share one copy.

fn mix32(v: u32) -> u32 {
    var x = v;
    x = x ^ (x >> 16u);
    x = x * 0x7feb352du;
    x = x ^ (x >> 15u);
    x = x * 0x846ca68bu;
    x = x ^ (x >> 16u);
    return x;
}

fn bits(k: u32, counter: u32) -> u32 {
    return mix32(k ^ mix32(counter + 0x632be5abu));
}

fn uniform01(k: u32, counter: u32) -> f32 {
    return f32(bits(k, counter) >> 8u) * (1.0 / 16777216.0);
}
