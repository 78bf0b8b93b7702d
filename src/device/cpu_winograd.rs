//! Winograd's F(2x2, 3x3) convolution for the fused CPU operation ([`super::cpu_cnn`]): the
//! same 3x3, stride-1 convolution of a zero-bordered, channels-last map, with 16 multiplies
//! for each 2x2 block of outputs instead of 36 (Lavin and Gray, 2016). The wide layers'
//! forward convolution and input gradient (32 -> 64 channels at 14x14: most of a step's
//! arithmetic) run through it.
//!
//! ```text
//! V = B^T d B        each 4x4 input tile d (overlapping by 2), per input channel
//! U = G g G^T        each 3x3 kernel g, per (input, output) pair, once per step
//! M[p] = V[p] . U[p] for each of the 16 positions p: a matrix product over the inputs
//! Y = A^T M A + bias the 2x2 outputs of the tile
//! ```
//!
//! Every value is computed in one fixed order whatever the instruction set (products added
//! from the first input up, no FMA, transforms written out term by term), so the AVX-512,
//! AVX2 and portable variants give the same bits; the lane width only changes which values
//! are computed together. The result is the direct convolution's up to float rounding.

/// Positions of a transformed tile.
const POS: usize = 16;

/// `f::<L, G, T>(args)` for a run of `t` tiles or pixels (1 to 14); the direct convolution
/// ([`super::cpu_cnn`]) uses it too.
macro_rules! by_run {
    ($t:expr, $f:ident::<$l:ident, $g:literal>($($arg:expr),* $(,)?)) => {
        match $t {
            1 => $f::<$l, $g, 1>($($arg),*),
            2 => $f::<$l, $g, 2>($($arg),*),
            3 => $f::<$l, $g, 3>($($arg),*),
            4 => $f::<$l, $g, 4>($($arg),*),
            5 => $f::<$l, $g, 5>($($arg),*),
            6 => $f::<$l, $g, 6>($($arg),*),
            7 => $f::<$l, $g, 7>($($arg),*),
            8 => $f::<$l, $g, 8>($($arg),*),
            9 => $f::<$l, $g, 9>($($arg),*),
            10 => $f::<$l, $g, 10>($($arg),*),
            11 => $f::<$l, $g, 11>($($arg),*),
            12 => $f::<$l, $g, 12>($($arg),*),
            13 => $f::<$l, $g, 13>($($arg),*),
            _ => $f::<$l, $g, 14>($($arg),*),
        }
    };
}
pub(crate) use by_run;

/// Whether a convolution of `inputs` channels (stored `in_stride` apart) to `outputs` over
/// an `h` x `w` map goes through Winograd: even sides (whole 2x2 tiles) and at least 16
/// channels each side (fewer leave the transforms a large share of the work).
pub(crate) fn applies(h: usize, w: usize, inputs: usize, in_stride: usize, outputs: usize) -> bool {
    h % 2 == 0 && w % 2 == 0 && inputs >= 16 && outputs >= 16 && in_stride % 16 == 0
}

/// The transformed kernels `U[p][i][o]` (`out_stride` apart, padding lanes zero) of a
/// tap-major weight `wt[tap][i][o]` with the same strides.
pub(crate) fn transform_weights(wt: &[f32], inputs: usize, out_stride: usize) -> Vec<f32> {
    let mut u = vec![0.0f32; POS * inputs * out_stride];
    for i in 0..inputs {
        for o in 0..out_stride {
            let g: [f32; 9] = std::array::from_fn(|tap| wt[(tap * inputs + i) * out_stride + o]);
            // G g: 4 rows of 3.
            let mut gg = [[0.0f32; 3]; 4];
            for c in 0..3 {
                let (g0, g1, g2) = (g[c], g[3 + c], g[6 + c]);
                gg[0][c] = g0;
                gg[1][c] = (g0 + g1 + g2) * 0.5;
                gg[2][c] = (g0 - g1 + g2) * 0.5;
                gg[3][c] = g2;
            }
            // (G g) G^T: 4 x 4.
            for (r, row) in gg.iter().enumerate() {
                let t = [
                    row[0],
                    (row[0] + row[1] + row[2]) * 0.5,
                    (row[0] - row[1] + row[2]) * 0.5,
                    row[2],
                ];
                for (c, v) in t.into_iter().enumerate() {
                    u[((r * 4 + c) * inputs + i) * out_stride + o] = v;
                }
            }
        }
    }
    u
}

/// The sizes one convolution's steps share.
pub(crate) struct Conv {
    /// The map's sides (the output's; the input is bordered by one).
    pub h: usize,
    pub w: usize,
    pub inputs: usize,
    pub in_stride: usize,
    pub out_stride: usize,
}

impl Conv {
    fn tiles(&self) -> usize {
        (self.h / 2) * (self.w / 2)
    }
}

thread_local! {
    /// Each worker's transformed input and products, reused image to image (every value
    /// read is written first).
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    /// Each worker's transformed weight gradient of one image ([`weight_grad`]).
    static GRAD_SCRATCH: std::cell::RefCell<Vec<f32>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `out[y][x][o] = bias[o] + (input * kernel)[y][x][o]` for the H x W map, from the bordered
/// channels-last `input` and the transformed kernels `u` ([`transform_weights`]).
#[inline(always)]
pub(crate) fn conv<const L: usize>(
    input: &[f32],
    geo: &Conv,
    u: &[f32],
    bias: &[f32],
    out: &mut [f32],
) {
    let tiles = geo.tiles();
    assert!(geo.in_stride % L == 0 && geo.out_stride % L == 0);
    assert!(u.len() >= POS * geo.inputs * geo.out_stride && bias.len() >= geo.out_stride);
    assert!(input.len() >= (geo.h + 2) * (geo.w + 2) * geo.in_stride);
    assert!(out.len() >= geo.h * geo.w * geo.out_stride);
    // Taken out of the thread's slot and put back, so that the work runs in this function
    // (compiled for the caller's instruction set), not in a closure.
    let (mut v, mut m) = SCRATCH.with(|scratch| scratch.take());
    let (v_len, m_len) = (POS * tiles * geo.in_stride, POS * tiles * geo.out_stride);
    if v.len() < v_len {
        v.resize(v_len, 0.0);
    }
    if m.len() < m_len {
        m.resize(m_len, 0.0);
    }
    transform_input::<L>(input, geo, &mut v);
    for p in 0..POS {
        products::<L>(
            &v[p * tiles * geo.in_stride..][..tiles * geo.in_stride],
            geo,
            &u[p * geo.inputs * geo.out_stride..][..geo.inputs * geo.out_stride],
            &mut m[p * tiles * geo.out_stride..][..tiles * geo.out_stride],
        );
    }
    transform_output::<L>(&m, geo, bias, out);
    SCRATCH.with(|scratch| scratch.replace((v, m)));
}

/// `V[p][tile][i]` (tiles row-major, `in_stride` apart) from the bordered input.
#[inline(always)]
fn transform_input<const L: usize>(input: &[f32], geo: &Conv, v: &mut [f32]) {
    let (tw, tiles, s) = (geo.w / 2, geo.tiles(), geo.in_stride);
    let row = (geo.w + 2) * s;
    for t in 0..tiles {
        let (ty, tx) = (t / tw, t % tw);
        let corner = 2 * ty * row + 2 * tx * s;
        for cb in (0..s).step_by(L) {
            let mut d = [[[0.0f32; L]; 4]; 4];
            for (r, d) in d.iter_mut().enumerate() {
                for (c, d) in d.iter_mut().enumerate() {
                    *d = lanes::<L>(&input[corner + r * row + c * s + cb..]);
                }
            }
            // B^T d, then (B^T d) B.
            let mut bd = [[[0.0f32; L]; 4]; 4];
            for c in 0..4 {
                for l in 0..L {
                    let (d0, d1, d2, d3) = (d[0][c][l], d[1][c][l], d[2][c][l], d[3][c][l]);
                    bd[0][c][l] = d0 - d2;
                    bd[1][c][l] = d1 + d2;
                    bd[2][c][l] = d2 - d1;
                    bd[3][c][l] = d1 - d3;
                }
            }
            for (r, b) in bd.iter().enumerate() {
                let mut t4 = [[0.0f32; L]; 4];
                for l in 0..L {
                    t4[0][l] = b[0][l] - b[2][l];
                    t4[1][l] = b[1][l] + b[2][l];
                    t4[2][l] = b[2][l] - b[1][l];
                    t4[3][l] = b[1][l] - b[3][l];
                }
                for (c, t4) in t4.iter().enumerate() {
                    let at = ((r * 4 + c) * tiles + t) * s + cb;
                    v[at..at + L].copy_from_slice(t4);
                }
            }
        }
    }
}

/// The 2x2 outputs of each tile, `A^T M A + bias`, into the channels-last `out`.
#[inline(always)]
fn transform_output<const L: usize>(m: &[f32], geo: &Conv, bias: &[f32], out: &mut [f32]) {
    let (tw, tiles, s) = (geo.w / 2, geo.tiles(), geo.out_stride);
    for t in 0..tiles {
        let (ty, tx) = (t / tw, t % tw);
        for ob in (0..s).step_by(L) {
            let mut mv = [[0.0f32; L]; POS];
            for (p, mv) in mv.iter_mut().enumerate() {
                *mv = lanes::<L>(&m[(p * tiles + t) * s + ob..]);
            }
            // A^T M: 2 rows of 4.
            let mut am = [[[0.0f32; L]; 4]; 2];
            for c in 0..4 {
                for l in 0..L {
                    let (m0, m1, m2, m3) = (mv[c][l], mv[4 + c][l], mv[8 + c][l], mv[12 + c][l]);
                    am[0][c][l] = m0 + m1 + m2;
                    am[1][c][l] = m1 - m2 - m3;
                }
            }
            let b = lanes::<L>(&bias[ob..]);
            for (r, a) in am.iter().enumerate() {
                let mut y = [[0.0f32; L]; 2];
                for l in 0..L {
                    y[0][l] = b[l] + (a[0][l] + a[1][l] + a[2][l]);
                    y[1][l] = b[l] + (a[1][l] - a[2][l] - a[3][l]);
                }
                for (c, y) in y.iter().enumerate() {
                    let at = ((2 * ty + r) * geo.w + 2 * tx + c) * s + ob;
                    out[at..at + L].copy_from_slice(y);
                }
            }
        }
    }
}

/// The weight gradient of one image, `dw[tap][i][o] += sum over pixels of input[p + tap][i] *
/// d[p][o]`, from the bordered channels-last `input` and output gradient `d`: with `V` the
/// input's transformed tiles and `D = A dY A^T` each 2x2 gradient tile's, `dU[p] = sum over
/// tiles of V[p]^T D[p]` (16 matrix products, tiles in order), then `G^T dU G` per (input,
/// output) pair: 2.25 times fewer multiplies than the direct sum over pixels and taps.
#[inline(always)]
pub(crate) fn weight_grad<const L: usize>(input: &[f32], d: &[f32], geo: &Conv, dw: &mut [f32]) {
    let (tiles, is, os) = (geo.tiles(), geo.in_stride, geo.out_stride);
    assert!(is % L == 0 && os % L == 0 && geo.inputs <= is);
    assert!(input.len() >= (geo.h + 2) * (geo.w + 2) * is);
    assert!(d.len() >= (geo.h + 2) * (geo.w + 2) * os);
    assert!(dw.len() >= 9 * geo.inputs * os);
    // Taken out of the thread's slots and put back, as in [`conv`].
    let (mut v, mut m) = SCRATCH.with(|scratch| scratch.take());
    let mut du = GRAD_SCRATCH.with(|scratch| scratch.take());
    for (buf, len) in [
        (&mut v, POS * tiles * is),
        (&mut m, POS * tiles * os),
        (&mut du, POS * is * os),
    ] {
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
    }
    transform_input::<L>(input, geo, &mut v);
    transform_grad::<L>(d, geo, &mut m);
    for p in 0..POS {
        grad_products::<L>(
            &v[p * tiles * is..][..tiles * is],
            &m[p * tiles * os..][..tiles * os],
            geo,
            &mut du[p * is * os..][..is * os],
        );
    }
    transform_weight_grad::<L>(&du, geo, dw);
    SCRATCH.with(|scratch| scratch.replace((v, m)));
    GRAD_SCRATCH.with(|scratch| scratch.replace(du));
}

/// `D[p][tile][o]`, `A dY A^T` of each 2x2 tile of the bordered output gradient `d`.
#[inline(always)]
fn transform_grad<const L: usize>(d: &[f32], geo: &Conv, m: &mut [f32]) {
    let (tw, tiles, s) = (geo.w / 2, geo.tiles(), geo.out_stride);
    let row = (geo.w + 2) * s;
    for t in 0..tiles {
        let (ty, tx) = (t / tw, t % tw);
        let corner = (2 * ty + 1) * row + (2 * tx + 1) * s;
        for ob in (0..s).step_by(L) {
            let y: [[[f32; L]; 2]; 2] = std::array::from_fn(|r| {
                std::array::from_fn(|c| lanes::<L>(&d[corner + r * row + c * s + ob..]))
            });
            // A dY: 4 rows of 2.
            let mut a = [[[0.0f32; L]; 2]; 4];
            for c in 0..2 {
                for l in 0..L {
                    let (y0, y1) = (y[0][c][l], y[1][c][l]);
                    a[0][c][l] = y0;
                    a[1][c][l] = y0 + y1;
                    a[2][c][l] = y0 - y1;
                    a[3][c][l] = -y1;
                }
            }
            // (A dY) A^T: 4 x 4.
            for (r, a) in a.iter().enumerate() {
                let mut t4 = [[0.0f32; L]; 4];
                for l in 0..L {
                    t4[0][l] = a[0][l];
                    t4[1][l] = a[0][l] + a[1][l];
                    t4[2][l] = a[0][l] - a[1][l];
                    t4[3][l] = -a[1][l];
                }
                for (c, t4) in t4.iter().enumerate() {
                    let at = ((r * 4 + c) * tiles + t) * s + ob;
                    m[at..at + L].copy_from_slice(t4);
                }
            }
        }
    }
}

/// `dw[tap][i][o] += (G^T dU[.][i][o] G)[tap]` for the block's inputs and every output lane.
#[inline(always)]
fn transform_weight_grad<const L: usize>(du: &[f32], geo: &Conv, dw: &mut [f32]) {
    let (is, os, inputs) = (geo.in_stride, geo.out_stride, geo.inputs);
    // G^T x for a column (or row) x of 4: 3 values.
    fn gt<const L: usize>(x: [&[f32; L]; 4]) -> [[f32; L]; 3] {
        let mut h = [[0.0f32; L]; 3];
        for l in 0..L {
            h[0][l] = x[0][l] + (x[1][l] + x[2][l]) * 0.5;
            h[1][l] = (x[1][l] - x[2][l]) * 0.5;
            h[2][l] = (x[1][l] + x[2][l]) * 0.5 + x[3][l];
        }
        h
    }
    for i in 0..inputs {
        for ob in (0..os).step_by(L) {
            let u: [[f32; L]; POS] =
                std::array::from_fn(|p| lanes::<L>(&du[(p * is + i) * os + ob..]));
            // G^T dU: 3 rows of 4 (each column c of dU transformed).
            let cols: [[[f32; L]; 3]; 4] =
                std::array::from_fn(|c| gt::<L>([&u[c], &u[4 + c], &u[8 + c], &u[12 + c]]));
            for ky in 0..3 {
                let row = gt::<L>([&cols[0][ky], &cols[1][ky], &cols[2][ky], &cols[3][ky]]);
                for (kx, value) in row.iter().enumerate() {
                    let at = ((ky * 3 + kx) * inputs + i) * os + ob;
                    for (to, v) in dw[at..at + L].iter_mut().zip(value) {
                        *to += v;
                    }
                }
            }
        }
    }
}

/// Inputs of a weight-gradient product tile ([`grad_run`]); in strides are whole multiples.
const GRAD_K: usize = 4;

/// `dU[i][o] = sum over tiles of V[tile][i] * D[tile][o]` for one position, the tiles in
/// order, for every input lane (padding lanes give zeros).
#[inline(always)]
fn grad_products<const L: usize>(v: &[f32], d: &[f32], geo: &Conv, du: &mut [f32]) {
    let os = geo.out_stride;
    let wide = if L == 16 { 4 } else { 2 };
    let mut ob = 0;
    while ob < os {
        let left = (os - ob) / L;
        if left >= wide && wide == 4 {
            grad_run::<L, 4>(v, d, geo, ob, du);
            ob += 4 * L;
        } else if left >= 2 {
            grad_run::<L, 2>(v, d, geo, ob, du);
            ob += 2 * L;
        } else {
            grad_run::<L, 1>(v, d, geo, ob, du);
            ob += L;
        }
    }
}

/// [`grad_products`] for `G` lane blocks of outputs from `ob`: [`GRAD_K`] inputs by `G`
/// lane blocks in registers while the tiles stream past.
#[inline(always)]
fn grad_run<const L: usize, const G: usize>(
    v: &[f32],
    d: &[f32],
    geo: &Conv,
    ob: usize,
    du: &mut [f32],
) {
    let (tiles, is, os) = (geo.tiles(), geo.in_stride, geo.out_stride);
    // Every access below is inside these bounds, checked once here.
    assert!(is % GRAD_K == 0 && tiles * is <= v.len() && tiles * os <= d.len());
    assert!(ob + G * L <= os && is * os <= du.len());
    #[cfg(target_arch = "x86_64")]
    if L == 16 {
        // SAFETY: 16 lanes run only in the AVX-512 variant of the fused operation's kernels;
        // every access is within the bounds checked above.
        unsafe { x86::grad_run512::<G>([v, d], geo, ob, du) };
        return;
    }
    for ib in (0..is).step_by(GRAD_K) {
        let mut acc = [[[0.0f32; L]; G]; GRAD_K];
        for t in 0..tiles {
            let g: [[f32; L]; G] = std::array::from_fn(|j| lanes::<L>(&d[t * os + ob + j * L..]));
            for (k, acc) in acc.iter_mut().enumerate() {
                // SAFETY: within the bounds checked above.
                let x = unsafe { *v.get_unchecked(t * is + ib + k) };
                add_products(acc, x, &g);
            }
        }
        for (k, acc) in acc.iter().enumerate() {
            for (j, acc) in acc.iter().enumerate() {
                du[(ib + k) * os + ob + j * L..][..L].copy_from_slice(acc);
            }
        }
    }
}

/// The most tiles a run of [`products`] keeps in registers with `L` lanes and two lane
/// blocks of outputs: 28 of AVX-512's 32 registers hold sums, 12 of AVX2's 16.
const fn run_max<const L: usize>() -> usize {
    if L == 16 { 14 } else { 6 }
}

/// `M[tile][o] = sum over i of V[tile][i] * U[i][o]` for one position, the inputs in order.
#[inline(always)]
fn products<const L: usize>(v: &[f32], geo: &Conv, u: &[f32], m: &mut [f32]) {
    let tiles = geo.tiles();
    let runs = tiles.div_ceil(run_max::<L>());
    let mut t0 = 0;
    for r in 0..runs {
        let t = (tiles - t0) / (runs - r);
        let mut ob = 0;
        while ob < geo.out_stride {
            if geo.out_stride - ob >= 2 * L {
                by_run!(t, run::<L, 2>(v, geo, u, t0, ob, m));
                ob += 2 * L;
            } else {
                by_run!(t, run::<L, 1>(v, geo, u, t0, ob, m));
                ob += L;
            }
        }
        t0 += t;
    }
}

/// `T` tiles from `t0` by `G` lane blocks of outputs from `ob`, in registers.
#[inline(always)]
fn run<const L: usize, const G: usize, const T: usize>(
    v: &[f32],
    geo: &Conv,
    u: &[f32],
    t0: usize,
    ob: usize,
    m: &mut [f32],
) {
    let (inputs, is, os) = (geo.inputs, geo.in_stride, geo.out_stride);
    // Every access below is inside these bounds, checked once here.
    assert!(inputs > 0 && (t0 + T) * is <= v.len() && (t0 + T) * os <= m.len());
    assert!((inputs - 1) * os + ob + G * L <= u.len());
    #[cfg(target_arch = "x86_64")]
    if L == 16 {
        // SAFETY: 16 lanes run only in the AVX-512 variant of the fused operation's kernels;
        // every access is within the bounds checked above.
        unsafe { x86::run512::<G, T>(v, geo, u, [t0, ob], m) };
        return;
    }
    let mut acc = [[[0.0f32; L]; G]; T];
    for i in 0..inputs {
        let mut wv = [[0.0f32; L]; G];
        for (g, wv) in wv.iter_mut().enumerate() {
            *wv = lanes::<L>(&u[i * os + ob + g * L..]);
        }
        for (t, acc) in acc.iter_mut().enumerate() {
            // SAFETY: within the bounds checked above.
            let x = unsafe { *v.get_unchecked((t0 + t) * is + i) };
            add_products(acc, x, &wv);
        }
    }
    for (t, acc) in acc.iter().enumerate() {
        for (g, acc) in acc.iter().enumerate() {
            m[(t0 + t) * os + ob + g * L..][..L].copy_from_slice(acc);
        }
    }
}

/// `acc[g][l] += x * w[g][l]`: a product rounded, then added (no FMA), as every variant does.
#[inline(always)]
fn add_products<const L: usize, const G: usize>(
    acc: &mut [[f32; L]; G],
    x: f32,
    w: &[[f32; L]; G],
) {
    for (acc, w) in acc.iter_mut().zip(w) {
        for l in 0..L {
            acc[l] += x * w[l];
        }
    }
}

/// A lane block of values.
#[inline(always)]
fn lanes<const L: usize>(values: &[f32]) -> [f32; L] {
    let mut out = [0.0; L];
    out.copy_from_slice(&values[..L]);
    out
}

/// [`run`] with AVX-512 intrinsics: the same products, added in the same order.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Conv, GRAD_K};

    /// # Safety
    /// The CPU has AVX-512F; the accesses of [`super::run`] are in bounds.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn run512<const G: usize, const T: usize>(
        v: &[f32],
        geo: &Conv,
        u: &[f32],
        [t0, ob]: [usize; 2],
        m: &mut [f32],
    ) {
        let (inputs, is, os) = (geo.inputs, geo.in_stride, geo.out_stride);
        // SAFETY (every pointer below): within the caller's bounds.
        unsafe {
            let (vp, up) = (v.as_ptr().add(t0 * is), u.as_ptr().add(ob));
            let mut acc = [[_mm512_setzero_ps(); G]; T];
            for i in 0..inputs {
                let mut wv = [_mm512_setzero_ps(); G];
                for (g, wv) in wv.iter_mut().enumerate() {
                    *wv = _mm512_loadu_ps(up.add(i * os + g * 16));
                }
                for (t, acc) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*vp.add(t * is + i));
                    for (acc, wv) in acc.iter_mut().zip(&wv) {
                        *acc = _mm512_add_ps(*acc, _mm512_mul_ps(x, *wv));
                    }
                }
            }
            let mp = m.as_mut_ptr().add(t0 * os + ob);
            for (t, acc) in acc.iter().enumerate() {
                for (g, acc) in acc.iter().enumerate() {
                    _mm512_storeu_ps(mp.add(t * os + g * 16), *acc);
                }
            }
        }
    }

    /// [`super::grad_run`] with 16 lanes: the same products, added in the same order.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the accesses of [`super::grad_run`] are in bounds.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn grad_run512<const G: usize>(
        [v, d]: [&[f32]; 2],
        geo: &Conv,
        ob: usize,
        du: &mut [f32],
    ) {
        let (tiles, is, os) = (geo.tiles(), geo.in_stride, geo.out_stride);
        // SAFETY (every pointer below): within the caller's bounds.
        unsafe {
            let (vp, dp) = (v.as_ptr(), d.as_ptr().add(ob));
            for ib in (0..is).step_by(GRAD_K) {
                let mut acc = [[_mm512_setzero_ps(); G]; GRAD_K];
                for t in 0..tiles {
                    let mut g = [_mm512_setzero_ps(); G];
                    for (j, g) in g.iter_mut().enumerate() {
                        *g = _mm512_loadu_ps(dp.add(t * os + j * 16));
                    }
                    for (k, acc) in acc.iter_mut().enumerate() {
                        let x = _mm512_set1_ps(*vp.add(t * is + ib + k));
                        for (acc, g) in acc.iter_mut().zip(&g) {
                            *acc = _mm512_add_ps(*acc, _mm512_mul_ps(x, *g));
                        }
                    }
                }
                let up = du.as_mut_ptr().add(ob);
                for (k, acc) in acc.iter().enumerate() {
                    for (j, acc) in acc.iter().enumerate() {
                        _mm512_storeu_ps(up.add((ib + k) * os + j * 16), *acc);
                    }
                }
            }
        }
    }
}
