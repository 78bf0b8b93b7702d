//! A counter-based random generator: every value is a pure function of (seed, stream, item,
//! counter). Nothing carries state from one call to the next, so the same sample comes out on
//! every backend, in every run, in any order, and inside a WGSL kernel: the arithmetic is 32-bit
//! integer mixing only (WGSL has no 64-bit integers), and the floats it produces are exact.

/// Streams keep the independent uses of one seed apart.
pub mod stream {
    /// The pixels and stripe parameters of one synthetic image (item = class << 20 | index).
    pub const IMAGE: u32 = 1;
    /// The train/val/test split permutation.
    pub const SPLIT: u32 = 2;
    /// Initial parameters of a model (item = model id << 8 | parameter index).
    pub const INIT: u32 = 3;
    /// Training-time augmentation (item = the augmented sample's running number).
    pub const AUGMENT: u32 = 4;
    /// The head's dropout masks (item = the training step's running number).
    pub const DROPOUT: u32 = 5;
}

/// A 32-bit integer hash with good avalanche (Chris Wellons' "lowbias32").
pub fn mix32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The key of one (seed, stream, item): the starting point of its counter sequence.
pub fn key(seed: u64, stream: u32, item: u32) -> u32 {
    let lo = seed as u32;
    let hi = (seed >> 32) as u32;
    let k = mix32(lo ^ 0x9e37_79b9);
    let k = mix32(k ^ hi);
    let k = mix32(k ^ stream.wrapping_mul(0x85eb_ca6b));
    mix32(k ^ item)
}

/// The `counter`-th 32 random bits of a key.
pub fn bits(key: u32, counter: u32) -> u32 {
    mix32(key ^ mix32(counter.wrapping_add(0x632b_e5ab)))
}

/// A uniform float in [0, 1) with 24 bits of resolution (exact in f32).
pub fn uniform(key: u32, counter: u32) -> f32 {
    (bits(key, counter) >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// `out[j] = if uniform(key, first + j) < p { below } else { above }`: the same values as
/// that scalar expression, computed with the widest vector instructions the CPU has (integer
/// mixing and exact conversions only, so every instruction set gives the same bits).
pub fn fill_threshold(out: &mut [f32], key: u32, first: u32, p: f32, below: f32, above: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512dq,avx2")]
        unsafe fn avx512(out: &mut [f32], key: u32, first: u32, p: f32, below: f32, above: f32) {
            threshold_body(out, key, first, p, below, above)
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(out: &mut [f32], key: u32, first: u32, p: f32, below: f32, above: f32) {
            threshold_body(out, key, first, p, below, above)
        }
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512dq") {
            // SAFETY: the CPU has AVX-512F and DQ (and so AVX2).
            return unsafe { avx512(out, key, first, p, below, above) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { avx2(out, key, first, p, below, above) };
        }
    }
    threshold_body(out, key, first, p, below, above)
}

#[inline(always)]
fn threshold_body(out: &mut [f32], key: u32, first: u32, p: f32, below: f32, above: f32) {
    for (j, v) in out.iter_mut().enumerate() {
        let u = uniform(key, first.wrapping_add(j as u32));
        *v = if u < p { below } else { above };
    }
}

/// An integer in [low, high) (high > low).
pub fn below(key: u32, counter: u32, low: i32, high: i32) -> i32 {
    let span = (high - low) as u32;
    low + (bits(key, counter) % span) as i32
}

/// An approximately standard normal value: the Irwin-Hall sum of twelve 20-bit uniforms,
/// minus six. The sum is an integer below 2^24, so its conversion to f32 is exact, and the
/// scaling by 2^-20 and the subtraction are exact too: the host and a GPU kernel agree to the
/// bit. (Its tails stop at +-6 sigma, which is irrelevant for image noise.) Uses counters
/// `first .. first + 12`.
pub fn normal(key: u32, first: u32) -> f32 {
    let mut sum: u32 = 0;
    for i in 0..12 {
        sum += bits(key, first + i) >> 12;
    }
    sum as f32 * (1.0 / 1_048_576.0) - 6.0
}

/// A permutation of 0..n, by Fisher-Yates driven by the key.
pub fn permutation(n: usize, key: u32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (bits(key, i as u32) % (i as u32 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_stays_in_range_and_looks_uniform() {
        let k = key(42, stream::IMAGE, 7);
        let values: Vec<f32> = (0..10_000).map(|c| uniform(k, c)).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let mean = values.iter().sum::<f32>() / values.len() as f32;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn normal_has_unit_variance() {
        let k = key(1, stream::IMAGE, 0);
        let values: Vec<f64> = (0..5_000).map(|c| normal(k, c * 12) as f64).collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.08, "var {var}");
    }

    #[test]
    fn permutation_is_a_permutation_and_depends_on_the_key() {
        let a = permutation(100, key(42, stream::SPLIT, 0));
        let b = permutation(100, key(43, stream::SPLIT, 0));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(a, b);
    }
}
