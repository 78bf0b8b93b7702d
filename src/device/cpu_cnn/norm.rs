//! `--batch-norm` in the fused CPU operation: the same blocks with a batch norm after each
//! convolution, before its ReLU, normalized with the batch's own statistics (a training
//! pass; evaluation folds the running statistics into the convolutions and takes the plain
//! operation, `train/engine.rs`).
//!
//! The batch's statistics tie the images together, so the pass goes block by block instead
//! of image by image: every image's convolution of a block (and its per-image moments), then
//! the block's statistics, then every image's normalization, ReLU and pool into the next
//! block's convolution. The backward pass likewise: every image's gradient at a block's
//! batch norm output and its per-image sums, then the batch's sums, then every image's
//! gradient through the batch norm, the convolution and the pool. Per-image values are
//! combined in image order (in f64), and gradient sums chunk by chunk in order, so the
//! result is deterministic whatever the thread count, as the plain operation's.
//!
//! The operation returns each block's batch mean and biased variance with the features; the
//! step moves the running statistics from them as the layers do
//! ([`crate::model::BatchNorm2d::stats_after`]). The conv bias before a batch norm gets a
//! gradient of exactly 0 (the batch mean subtracts it), as the layer path's step makes it.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::{Flex, FlexTensor};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, backend_extension};
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use rayon::prelude::*;

// WIDE and InstructionSet are named by the AVX-512/AVX2 variants only (x86_64).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
use super::simd::{
    NARROW, WIDE, block_conv, by_lanes, image_grad_of, input_grad, load_image, nonzero_pixels,
    per_instruction_set, pool, unpool, weight_grad,
};
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_imports))]
use super::{
    BackwardScratch, Block, BlockActs, CHUNK, CnnKernels, FeatureMap, GradSums, InstructionSet,
    KeptInner, Plan, Weights, conv_params, flat_param_grads, flex, host, kept_acts,
};
use crate::model::norm::BATCH_NORM_EPSILON;

/// The extension: the fused operation with batch norms.
#[backend_extension(Flex, Autodiff)]
pub trait CnnNormKernels: Backend {
    /// Images (N, C, H, W) to features (N, F) as [`super::CnnKernels::cnn_features`], with a
    /// batch norm after each conv; `norms` holds each block's batch norm weight, then its
    /// bias. The second output holds each block's batch mean, then its biased variance (no
    /// gradient).
    fn cnn_features_normed(
        images: FloatTensor<Self>,
        params: FloatTensor<Self>,
        norms: FloatTensor<Self>,
        shape: [u32; 6],
    ) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// One block's batch norm parameters.
pub struct NormParams {
    /// The scale (PyTorch's `weight`).
    pub weight: Tensor<1>,
    /// The shift (PyTorch's `bias`).
    pub bias: Tensor<1>,
}

/// One block's batch norm in evaluation, as a map `x x scale + shift` a channel.
pub struct EvalNorm {
    pub scale: Tensor<1>,
    pub shift: Tensor<1>,
}

/// The features of `images` through the blocks `convs`, each followed by the batch norm
/// `norms` in evaluation, by the plain fused operation: the map is folded into the conv
/// (weight x scale, bias x scale + shift, a channel each); `None` as for
/// [`super::cnn_features`].
pub fn cnn_features_folded(
    images: Tensor<4>,
    convs: &[&Conv2d],
    norms: &[EvalNorm],
    map: FeatureMap,
) -> Option<Tensor<2>> {
    if norms.len() != convs.len() {
        return None;
    }
    let (params, shape) = conv_params(images.dims()[1], convs, map)?;
    let mut parts = Vec::with_capacity(2 * convs.len());
    let mut at = 0;
    for (conv, norm) in convs.iter().zip(norms) {
        let [out, inp, _, _] = conv.weight.dims();
        let weight: Tensor<2> = params
            .clone()
            .slice(at..at + out * inp * 9)
            .reshape([out, inp * 9]);
        let bias = params
            .clone()
            .slice(at + out * inp * 9..at + out * inp * 9 + out);
        parts.push((weight * norm.scale.clone().unsqueeze_dim(1)).flatten(0, 1));
        parts.push(bias * norm.scale.clone() + norm.shift.clone());
        at += out * inp * 9 + out;
    }
    Some(Tensor::from_dispatch(Dispatch::cnn_features(
        images.into_dispatch(),
        Tensor::cat(parts, 0).into_dispatch(),
        shape,
    )))
}

/// One block's batch statistics in a training pass.
pub struct BatchStats {
    pub mean: Tensor<1>,
    /// The biased variance (the one that normalizes).
    pub variance: Tensor<1>,
    /// Values a channel's statistics are taken over (images x pixels).
    pub count: usize,
}

/// A training pass's features and each block's batch statistics.
pub struct NormedFeatures {
    pub features: Tensor<2>,
    pub stats: Vec<BatchStats>,
}

/// The features of `images` through the blocks `convs`, each followed by a batch norm of
/// `norms` on the batch's statistics, by the fused operation; `None` when a convolution is
/// not of its kind or the counts differ (the caller then uses the layers).
pub fn cnn_features_normed(
    images: Tensor<4>,
    convs: &[&Conv2d],
    norms: &[NormParams],
    map: FeatureMap,
) -> Option<NormedFeatures> {
    let [n, channels, mut h, mut w] = images.dims();
    if norms.len() != convs.len() {
        return None;
    }
    let (params, shape) = conv_params(channels, convs, map)?;
    let norm = Tensor::cat(
        norms
            .iter()
            .flat_map(|p| [p.weight.clone(), p.bias.clone()])
            .collect(),
        0,
    );
    let (features, stats) = Dispatch::cnn_features_normed(
        images.into_dispatch(),
        params.into_dispatch(),
        norm.into_dispatch(),
        shape,
    );
    let stats = Tensor::<1>::from_dispatch(stats);
    let mut at = 0;
    let mut out = Vec::with_capacity(convs.len());
    for conv in convs {
        let c = conv.weight.dims()[0];
        out.push(BatchStats {
            mean: stats.clone().slice(at..at + c),
            variance: stats.clone().slice(at + c..at + 2 * c),
            count: n * h * w,
        });
        at += 2 * c;
        (h, w) = (h / 2, w / 2);
    }
    Some(NormedFeatures {
        features: Tensor::from_dispatch(features),
        stats: out,
    })
}

impl CnnNormKernels for Flex {
    fn cnn_features_normed(
        images: FlexTensor,
        params: FlexTensor,
        norms: FlexTensor,
        shape: [u32; 6],
    ) -> (FlexTensor, FlexTensor) {
        let plan = Plan::of(&images, shape);
        let weights = Weights::new(&plan, &host(params));
        let pass = forward(&plan, &host(images), &weights, &host(norms));
        let stats = batch_stats(&pass.affines);
        let features = flex(pass.features, [plan.n, plan.features()]);
        let len = stats.len();
        (features, flex(stats, [len]))
    }
}

impl<C: CheckpointStrategy> CnnNormKernels for Autodiff<Flex, C> {
    fn cnn_features_normed(
        images: FloatTensor<Self>,
        params: FloatTensor<Self>,
        norms: FloatTensor<Self>,
        shape: [u32; 6],
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (images, images_node) = images.into_parts();
        let (params, params_node) = params.into_parts();
        let (norms, norms_node) = norms.into_parts();
        let plan = Plan::of(&images, shape);
        let weights = Weights::new(&plan, &host(params));
        let pass = forward(&plan, &host(images), &weights, &host(norms));
        let stats = batch_stats(&pass.affines);
        let len = stats.len();
        let stats = <Self as AutodiffBackend>::from_inner(flex(stats, [len]));
        let features = flex(pass.features, [plan.n, plan.features()]);
        let kept = KeptNormed(Arc::new(NormedInner {
            kept: KeptInner {
                plan,
                weights,
                samples: pass.samples,
            },
            affines: pass.affines,
        }));
        let features = match NormedBackward
            .prepare::<C>([images_node, params_node, norms_node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(kept, features),
            OpsKind::UnTracked(prep) => prep.finish(features),
        };
        (features, stats)
    }
}

/// Each block's batch mean, then its biased variance, flat.
fn batch_stats(affines: &[Affine]) -> Vec<f32> {
    affines
        .iter()
        .flat_map(|a| a.batch_mean.iter().chain(&a.batch_variance).copied())
        .collect()
}

/// The backward step of [`CnnNormKernels::cnn_features_normed`].
#[derive(Debug)]
struct NormedBackward;

/// What the forward pass keeps for the backward pass: the plain operation's (its
/// activations, recycled when dropped), with each block's conv output before its batch
/// norm in place of the one after the ReLU, and each block's statistics.
#[derive(Clone)]
struct KeptNormed(Arc<NormedInner>);

struct NormedInner {
    kept: KeptInner,
    affines: Vec<Affine>,
}

impl std::fmt::Debug for KeptNormed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeptNormed({:?})", self.0.kept.plan)
    }
}

impl Backward<Flex, 3> for NormedBackward {
    type State = KeptNormed;

    fn backward(self, ops: Ops<KeptNormed, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [images_node, params_node, norms_node] = ops.parents;
        let grad = host(grads.consume::<Flex>(&ops.node));
        let kept = &ops.state.0;
        let out = backward(kept, &grad, images_node.is_some());
        let p = &kept.kept.plan;
        if let Some(node) = images_node {
            grads.register::<Flex>(node.id, flex(out.images, [p.n, p.channels, p.h, p.w]));
        }
        if let Some(node) = params_node {
            let len = out.params.len();
            grads.register::<Flex>(node.id, flex(out.params, [len]));
        }
        if let Some(node) = norms_node {
            let len = out.norms.len();
            grads.register::<Flex>(node.id, flex(out.norms, [len]));
        }
    }
}

/// One block's batch statistics and the affine map they make with its batch norm:
/// `a = z x scale + shift` (the vectors are a stride long; lanes past the outputs are 0, so
/// padding lanes stay 0).
#[derive(Clone)]
pub(super) struct Affine {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    gamma: Vec<f32>,
    scale: Vec<f32>,
    shift: Vec<f32>,
    /// The batch's mean and biased variance, a value per output channel.
    batch_mean: Vec<f32>,
    batch_variance: Vec<f32>,
    /// Values a channel's statistics are taken over.
    count: f64,
}

/// One image's per-channel sum over a block's pixels and the sum of squared deviations from
/// its own mean (a stride long).
pub(super) struct Moments {
    sum: Vec<f32>,
    m2: Vec<f32>,
}

impl Moments {
    #[inline(always)]
    fn of(block: &Block, z: &[f32]) -> Moments {
        let stride = block.out_stride;
        let mut sum = vec![0.0f32; stride];
        for pixel in z.chunks_exact(stride) {
            for (s, v) in sum.iter_mut().zip(pixel) {
                *s += v;
            }
        }
        let pixels = (block.h * block.w) as f32;
        let mean: Vec<f32> = sum.iter().map(|s| s / pixels).collect();
        let mut m2 = vec![0.0f32; stride];
        for pixel in z.chunks_exact(stride) {
            for ((m, v), mu) in m2.iter_mut().zip(pixel).zip(&mean) {
                let d = v - mu;
                *m += d * d;
            }
        }
        Moments { sum, m2 }
    }
}

impl Affine {
    /// The batch's statistics from every image's moments (in image order, in f64: Chan's
    /// combination of per-image means and deviations), and the map with `gamma` and `beta`.
    fn of(block: &Block, moments: &[Moments], gamma: &[f32], beta: &[f32]) -> Affine {
        let stride = block.out_stride;
        let pixels = (block.h * block.w) as f64;
        let count = pixels * moments.len() as f64;
        let zeros = || vec![0.0f32; stride];
        let mut a = Affine {
            mean: zeros(),
            inv_std: zeros(),
            gamma: zeros(),
            scale: zeros(),
            shift: zeros(),
            batch_mean: vec![0.0; block.outputs],
            batch_variance: vec![0.0; block.outputs],
            count,
        };
        for c in 0..block.outputs {
            let mean = moments.iter().map(|m| m.sum[c] as f64).sum::<f64>() / count;
            let m2: f64 = moments
                .iter()
                .map(|m| {
                    let d = m.sum[c] as f64 / pixels - mean;
                    m.m2[c] as f64 + pixels * d * d
                })
                .sum();
            let variance = m2 / count;
            let inv_std = 1.0 / (variance + BATCH_NORM_EPSILON).sqrt();
            let g = gamma[c] as f64;
            a.mean[c] = mean as f32;
            a.inv_std[c] = inv_std as f32;
            a.gamma[c] = gamma[c];
            a.scale[c] = (g * inv_std) as f32;
            a.shift[c] = (beta[c] as f64 - mean * g * inv_std) as f32;
            a.batch_mean[c] = mean as f32;
            a.batch_variance[c] = variance as f32;
        }
        a
    }

    /// `out = max(z x scale + shift, 0)` over a block's map.
    #[inline(always)]
    fn normalize(&self, z: &[f32], out: &mut [f32]) {
        let stride = self.scale.len();
        for (o, z) in out.chunks_exact_mut(stride).zip(z.chunks_exact(stride)) {
            for c in 0..stride {
                o[c] = (z[c] * self.scale[c] + self.shift[c]).max(0.0);
            }
        }
    }
}

/// What a training pass computes.
struct Pass {
    features: Vec<f32>,
    affines: Vec<Affine>,
    /// Each image's activations; each block's `output` is its conv output before the norm.
    samples: Vec<Vec<BlockActs>>,
}

/// The training pass, block by block over the batch (`norms`: each block's weight, then its
/// bias).
fn forward(plan: &Plan, images: &[f32], weights: &Weights, norms: &[f32]) -> Pass {
    let image_len = (plan.channels * plan.h * plan.w).max(1);
    let mut samples: Vec<Vec<BlockActs>> = (0..plan.n).map(|_| kept_acts(plan)).collect();
    let mut affines: Vec<Affine> = Vec::with_capacity(plan.blocks.len());
    let mut at = 0;
    for (b, block) in plan.blocks.iter().enumerate() {
        let prev = affines.last();
        let scratch = b.checked_sub(1).map_or(0, |p| plan.blocks[p].output_len());
        let moments: Vec<Moments> = samples
            .par_iter_mut()
            .zip(images.par_chunks(image_len))
            .map_init(
                || vec![0.0f32; scratch],
                |scratch, (acts, image)| {
                    forward_block(plan, b, image, weights, prev, acts, scratch)
                },
            )
            .collect();
        let outputs = block.outputs;
        let (gamma, beta) = (
            &norms[at..at + outputs],
            &norms[at + outputs..at + 2 * outputs],
        );
        at += 2 * outputs;
        affines.push(Affine::of(block, &moments, gamma, beta));
    }
    let last = plan.blocks.len() - 1;
    let features = samples
        .par_iter()
        .flat_map_iter(|acts| features_of(plan, &acts[last].output, &affines[last]))
        .collect();
    Pass {
        features,
        affines,
        samples,
    }
}

/// One image's features from the last block's conv output: normalized, ReLU, then
/// flattened channel-major or averaged.
fn features_of(plan: &Plan, z: &[f32], affine: &Affine) -> Vec<f32> {
    let last = plan.blocks[plan.blocks.len() - 1];
    let pixels = last.h * last.w;
    let mut features = vec![0.0f32; plan.features()];
    for (p, z) in z.chunks_exact(last.out_stride).enumerate() {
        for c in 0..last.outputs {
            let a = (z[c] * affine.scale[c] + affine.shift[c]).max(0.0);
            match plan.flatten {
                true => features[c * pixels + p] = a,
                false => features[c] += a,
            }
        }
    }
    if !plan.flatten {
        features.iter_mut().for_each(|f| *f /= pixels as f32);
    }
    features
}

per_instruction_set! {
    /// Block `b` of one image: the previous block's map normalized, ReLU and pooled into
    /// this block's input (the image itself for the first), then this block's convolution;
    /// returns its moments.
    fn forward_block(
        plan: &Plan,
        b: usize,
        image: &[f32],
        w: &Weights,
        prev: Option<&Affine>,
        acts: &mut [BlockActs],
        scratch: &mut [f32]
    ) -> Moments = forward_block_body
}

#[inline(always)]
fn forward_block_body<const L: usize>(
    plan: &Plan,
    b: usize,
    image: &[f32],
    w: &Weights,
    prev: Option<&Affine>,
    acts: &mut [BlockActs],
    scratch: &mut [f32],
) -> Moments {
    let block = &plan.blocks[b];
    match prev {
        Some(affine) if b > 0 => {
            let before = &plan.blocks[b - 1];
            let (done, next) = acts.split_at_mut(b);
            let act = &mut done[b - 1];
            affine.normalize(&act.output, scratch);
            let next_stride = block.in_stride;
            by_lanes!(
                before.outputs,
                pool::<L>(
                    before,
                    scratch,
                    &mut act.winner,
                    &mut next[0].input,
                    next_stride
                )
            );
        }
        _ => load_image(plan, image, &mut acts[0].input),
    }
    let act = &mut acts[b];
    block_conv::<L>(block, &w.0[b], act);
    Moments::of(block, &act.output)
}

/// One image's sums over a block's pixels of the gradient at its batch norm's output `da`
/// and of `da` times the normalized value (a stride long).
pub(super) struct GradMoments {
    sum: Vec<f32>,
    dot: Vec<f32>,
}

impl GradMoments {
    /// From the bordered gradient `d` and the conv output `z`.
    #[inline(always)]
    fn of(block: &Block, z: &[f32], affine: &Affine, d: &[f32]) -> GradMoments {
        let stride = block.out_stride;
        let mut sum = vec![0.0f32; stride];
        let mut dot = vec![0.0f32; stride];
        for y in 0..block.h {
            let row = (y + 1) * (block.w + 2) + 1;
            let d = &d[row * stride..(row + block.w) * stride];
            let z = &z[y * block.w * stride..(y + 1) * block.w * stride];
            for (d, z) in d.chunks_exact(stride).zip(z.chunks_exact(stride)) {
                for c in 0..stride {
                    sum[c] += d[c];
                    dot[c] += d[c] * ((z[c] - affine.mean[c]) * affine.inv_std[c]);
                }
            }
        }
        GradMoments { sum, dot }
    }
}

/// A block's gradient through its batch norm: `dz = a x da + b x (z - mean) + c` with the
/// batch's sums (each a stride long), and the batch norm's own gradients.
pub(super) struct NormGrad {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    mean: Vec<f32>,
    /// The gradients of the batch norm's weight and bias, a value per output channel.
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl NormGrad {
    /// From every image's sums (in image order, in f64).
    fn of(block: &Block, affine: &Affine, moments: &[GradMoments]) -> NormGrad {
        let stride = block.out_stride;
        let zeros = || vec![0.0f32; stride];
        let mut g = NormGrad {
            a: zeros(),
            b: zeros(),
            c: zeros(),
            mean: affine.mean.clone(),
            weight: vec![0.0; block.outputs],
            bias: vec![0.0; block.outputs],
        };
        let n = affine.count;
        for ch in 0..block.outputs {
            let dbeta: f64 = moments.iter().map(|m| m.sum[ch] as f64).sum();
            let dgamma: f64 = moments.iter().map(|m| m.dot[ch] as f64).sum();
            let (gamma, inv_std) = (affine.gamma[ch] as f64, affine.inv_std[ch] as f64);
            // dz = gamma inv_std (da - dbeta / n - xhat dgamma / n), xhat = (z - mean) inv_std.
            g.a[ch] = (gamma * inv_std) as f32;
            g.b[ch] = (-gamma * inv_std * inv_std * dgamma / n) as f32;
            g.c[ch] = (-gamma * inv_std * dbeta / n) as f32;
            g.weight[ch] = dgamma as f32;
            g.bias[ch] = dbeta as f32;
        }
        g
    }

    /// `d` (bordered, the gradient at the batch norm's output) to the conv output's.
    #[inline(always)]
    fn apply(&self, block: &Block, z: &[f32], d: &mut [f32]) {
        let stride = block.out_stride;
        for y in 0..block.h {
            let row = (y + 1) * (block.w + 2) + 1;
            let d = &mut d[row * stride..(row + block.w) * stride];
            let z = &z[y * block.w * stride..(y + 1) * block.w * stride];
            for (d, z) in d.chunks_exact_mut(stride).zip(z.chunks_exact(stride)) {
                for c in 0..stride {
                    d[c] = self.a[c] * d[c] + self.b[c] * (z[c] - self.mean[c]) + self.c[c];
                }
            }
        }
    }
}

/// The gradient at the last block's batch norm output of one image, from the features'
/// (`grad`): through the flatten or the average pool and the ReLU, into the bordered `d`.
fn last_grad(plan: &Plan, z: &[f32], affine: &Affine, grad: &[f32], d: &mut [f32]) -> GradMoments {
    let last = &plan.blocks[plan.blocks.len() - 1];
    let (pixels, stride) = (last.h * last.w, last.out_stride);
    d.fill(0.0);
    // A run of pixels at a time, so that the channel-major gradient is read a row at a time.
    const RUN: usize = 16;
    for p0 in (0..pixels).step_by(RUN) {
        for c in 0..last.outputs {
            for p in p0..pixels.min(p0 + RUN) {
                let to = ((p / last.w + 1) * (last.w + 2) + p % last.w + 1) * stride;
                if z[p * stride + c] * affine.scale[c] + affine.shift[c] > 0.0 {
                    d[to + c] = match plan.flatten {
                        true => grad[c * pixels + p],
                        false => grad[c] / pixels as f32,
                    };
                }
            }
        }
    }
    GradMoments::of(last, z, affine, d)
}

per_instruction_set! {
    /// Block `b` of one image backward: `d[b]` (its batch norm output's gradient) through
    /// the batch norm (`grad`); the block's weight gradients added to `sums`; the gradient
    /// carried to the image (when asked, at the first block) or through the previous
    /// block's pool and ReLU into `d[b - 1]`, whose moments it returns.
    fn backward_block(
        plan: &Plan,
        b: usize,
        acts: &[BlockActs],
        w: &Weights,
        grad: &NormGrad,
        affines: &[Affine],
        d: &mut [Vec<f32>],
        scratch: &mut BackwardScratch,
        sums: &mut GradSums,
        image_grad: Option<&mut [f32]>
    ) -> Option<GradMoments> = backward_block_body
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_block_body<const L: usize>(
    plan: &Plan,
    b: usize,
    acts: &[BlockActs],
    w: &Weights,
    grad: &NormGrad,
    affines: &[Affine],
    d: &mut [Vec<f32>],
    scratch: &mut BackwardScratch,
    sums: &mut GradSums,
    image_grad: Option<&mut [f32]>,
) -> Option<GradMoments> {
    let block = &plan.blocks[b];
    grad.apply(block, &acts[b].output, &mut d[b]);
    nonzero_pixels(&d[b], block, &mut scratch.pixels);
    let (dw, db) = &mut sums.0[b];
    by_lanes!(
        block.outputs,
        weight_grad::<L>(
            &acts[b].input,
            &d[b],
            block,
            &w.0[b],
            &scratch.pixels,
            [dw, db]
        )
    );
    if b == 0 && image_grad.is_none() {
        return None;
    }
    input_grad::<L>(block, &d[b], &w.0[b], &mut scratch.d_input[b]);
    if let Some(image) = image_grad {
        image_grad_of(plan, &scratch.d_input[0], image);
        return None;
    }
    let prev = &plan.blocks[b - 1];
    let (before, _) = d.split_at_mut(b);
    unpool(
        prev,
        block,
        &acts[b - 1].winner,
        &scratch.d_input[b],
        &mut before[b - 1],
    );
    Some(GradMoments::of(
        prev,
        &acts[b - 1].output,
        &affines[b - 1],
        &before[b - 1],
    ))
}

/// The backward pass's gradients, in the inputs' layouts.
struct Grads {
    images: Vec<f32>,
    params: Vec<f32>,
    norms: Vec<f32>,
}

/// The backward pass: `grad` is d(loss)/d(features), N x F.
fn backward(kept: &NormedInner, grad: &[f32], want_images: bool) -> Grads {
    let plan = &kept.kept.plan;
    let samples = &kept.kept.samples;
    let blocks = plan.blocks.len();
    let features = plan.features().max(1);
    // Each image's bordered gradient at each block's batch norm output.
    let mut d = grad_sets(plan);
    let last = &kept.affines[blocks - 1];
    let mut moments: Vec<GradMoments> = d
        .par_iter_mut()
        .zip(samples.par_iter())
        .zip(grad.par_chunks(features))
        .map(|((d, acts), g)| {
            last_grad(plan, &acts[blocks - 1].output, last, g, &mut d[blocks - 1])
        })
        .collect();
    let mut total = GradSums::zero(plan);
    let mut images = Vec::new();
    let mut norms = vec![Vec::new(); blocks];
    for b in (0..blocks).rev() {
        let norm_grad = NormGrad::of(&plan.blocks[b], &kept.affines[b], &moments);
        let stage = BlockStage {
            kept,
            b,
            grad: &norm_grad,
            want_images: want_images && b == 0,
        };
        moments = Vec::new();
        for (sums, chunk_images, next) in stage.run(&mut d) {
            total.add(&sums);
            images.extend_from_slice(&chunk_images);
            moments.extend(next);
        }
        norms[b] = [norm_grad.weight, norm_grad.bias].concat();
    }
    if let Ok(mut sets) = GRAD_SETS.lock() {
        *sets = d;
    }
    // The conv biases before a batch norm: exactly 0 (the batch mean subtracts them).
    total.0.iter_mut().for_each(|(_, bias)| bias.fill(0.0));
    Grads {
        images,
        params: flat_param_grads(plan, &total),
        norms: norms.concat(),
    }
}

/// A step's per-image gradient buffers go back here for the next step (fresh ones cost
/// page faults: 46 MB a step at batch 256, 28x28, widths 32,64). A reused buffer needs no
/// zeroing: the last block's is filled, the others are written whole by the unpooling, and
/// the batch norm's step rewrites only the insides.
static GRAD_SETS: std::sync::Mutex<Vec<Vec<Vec<f32>>>> = std::sync::Mutex::new(Vec::new());

/// A bordered gradient buffer a block for each of the plan's images: recycled ones of the
/// same lengths, else fresh.
fn grad_sets(plan: &Plan) -> Vec<Vec<Vec<f32>>> {
    let lens: Vec<usize> = plan.blocks.iter().map(Block::grad_len).collect();
    let mut sets = GRAD_SETS
        .lock()
        .map(|mut sets| std::mem::take(&mut *sets))
        .unwrap_or_default();
    sets.retain(|set| set.iter().map(Vec::len).eq(lens.iter().copied()));
    sets.truncate(plan.n);
    while sets.len() < plan.n {
        sets.push(lens.iter().map(|&len| vec![0.0; len]).collect());
    }
    sets
}

/// One block's backward stage over the batch.
struct BlockStage<'a> {
    kept: &'a NormedInner,
    b: usize,
    grad: &'a NormGrad,
    want_images: bool,
}

impl BlockStage<'_> {
    /// Per chunk of [`CHUNK`] images, in order: its weight gradient sums, its images'
    /// gradients (at the first block, when asked) and the previous block's moments.
    fn run(&self, d: &mut [Vec<Vec<f32>>]) -> Vec<(GradSums, Vec<f32>, Vec<GradMoments>)> {
        let kept = &self.kept.kept;
        let plan = &kept.plan;
        let image_len = plan.channels * plan.h * plan.w;
        d.par_chunks_mut(CHUNK)
            .zip(kept.samples.par_chunks(CHUNK))
            .map_init(
                || BackwardScratch::new(plan),
                |scratch, (d, samples)| {
                    let mut sums = GradSums::zero(plan);
                    let len = if self.want_images {
                        samples.len() * image_len
                    } else {
                        0
                    };
                    let mut images = vec![0.0f32; len];
                    let mut next = Vec::with_capacity(samples.len());
                    let mut slots = images.chunks_mut(image_len.max(1));
                    for (d, acts) in d.iter_mut().zip(samples) {
                        let image = if self.want_images { slots.next() } else { None };
                        next.extend(backward_block(
                            plan,
                            self.b,
                            acts,
                            &kept.weights,
                            self.grad,
                            &self.kept.affines,
                            d,
                            scratch,
                            &mut sums,
                            image,
                        ));
                    }
                    (sums, images, next)
                },
            )
            .collect()
    }
}
