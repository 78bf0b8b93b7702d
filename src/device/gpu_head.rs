//! The CNN's classifier head in the WGSL kernels: global average pool or flatten, an
//! optional hidden Linear + ReLU, and inverted dropout before each Linear while training
//! (`shaders/cnn_sample.wgsl`, "Head").
//!
//! The workshop's head (global average pool, one Linear, no dropout) keeps the sample
//! kernel's own classifier, whose gradient goes into each workgroup's row like every other
//! parameter's. Any other head's first Linear can be large (a flattened 14x14x64 map into 128
//! hidden units is 1.6 million weights), too large for a row per workgroup: the sample kernel
//! writes each sample's inputs of that layer (after dropout) and the gradient of its outputs,
//! and `shaders/head_gradient.wgsl` takes their product over the batch, once, into one dense
//! block after the rows. The update kernel reads that block for the layer's weight and sums
//! the rows for the rest. A step is then three launches.
//!
//! Dropout's masks are the layer path's (`model/head.rs`): the value of feature `f` of
//! sample `n` is dropped when `rng::uniform(key, n * features + f) < p`, kept ones scaled by
//! `1 / (1 - p)` (computed here, in f32, as the host computes it), with `key` the step's
//! dropout key mixed with the layer's number (1, then 2 for the Linear after the hidden
//! layer). The kernel computes the same 32-bit hashes, so the masks are the same bits.

use burn::backend::wgpu::CubeTensor;
use burn::cubecl::CubeCount;
use burn::cubecl::server::{Handle, KernelArguments};

use super::gpu_kernels::{kernel, uniform};

/// Invocations per workgroup of `head_gradient.wgsl`.
const GRADIENT_WORKGROUP: usize = 256;
/// Most workgroups a dispatch may have along one dimension.
const MAX_GROUPS: usize = 65_535;

/// The CNN's head as the kernels take it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelHead {
    /// The last block's map flattened (channel-major, as PyTorch's nn.Flatten) instead of
    /// averaged.
    pub flatten: bool,
    /// Units of the hidden Linear + ReLU (0: none).
    pub hidden: u32,
    /// The dropout probability's f32 bits (0: no dropout).
    dropout_bits: u32,
}

impl KernelHead {
    /// A head; a dropout of 0 or less is none.
    pub fn new(flatten: bool, hidden: usize, dropout: f32) -> KernelHead {
        KernelHead {
            flatten,
            hidden: hidden as u32,
            dropout_bits: if dropout > 0.0 { dropout.to_bits() } else { 0 },
        }
    }

    /// The dropout probability.
    pub fn dropout(&self) -> f32 {
        f32::from_bits(self.dropout_bits)
    }

    /// The workshop's head, which the sample kernel's own classifier runs.
    pub fn is_plain(&self) -> bool {
        *self == KernelHead::default()
    }

    /// [flatten, hidden, dropout bits]: the head's part of the model's numbers.
    pub(crate) fn arch(&self) -> [u32; 3] {
        [self.flatten as u32, self.hidden, self.dropout_bits]
    }

    pub(crate) fn from_arch(arch: [u32; 3]) -> KernelHead {
        KernelHead {
            flatten: arch[0] != 0,
            hidden: arch[1],
            dropout_bits: arch[2],
        }
    }
}

/// The keys of a step's two dropout masks from its dropout key (the layer path's
/// `rng::key(seed, DROPOUT, step)`), as `model/head.rs` mixes them.
pub fn mask_keys(step_key: u32) -> [u32; 2] {
    [1, 2].map(|layer| crate::model::head::mask_key(step_key, layer))
}

/// Where a non-plain head's values sit: parameter offsets of its Linears, the scratch of one
/// slot for its activations, and the sizes. `shaders/sample_common.wgsl`'s `HeadDims`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HeadLayout {
    /// 0: the plain head (none of the rest is used); 1: global average pool; 2: flatten.
    pub kind: usize,
    /// Inputs of the first Linear (F).
    pub features: usize,
    /// Hidden units (0: none).
    pub hidden: usize,
    /// Outputs of the first Linear (K: the hidden units, or the classes).
    pub first_outputs: usize,
    /// The first Linear's weight (F, K) and bias (K) in the parameters.
    pub w1: usize,
    pub b1: usize,
    /// The classifier after the hidden layer: weight (hidden, C) and bias (C).
    pub w2: usize,
    pub b2: usize,
    /// Values of the dense gradient block: F x K (0 for the plain head).
    pub dense: usize,
    /// Scratch offsets of a slot: the first Linear's input after dropout (F), the hidden
    /// layer's output after ReLU and dropout (hidden), the gradient of the first Linear's
    /// output (K).
    pub x: usize,
    pub y: usize,
    pub dz: usize,
    pub dropout: f32,
}

impl HeadLayout {
    /// The layout of `head` after a last block of `width` channels on `h` x `w`, taking its
    /// parameters from `param` and its scratch from `scratch` (both advanced).
    pub fn of(
        head: KernelHead,
        (width, h, w): (usize, usize, usize),
        classes: usize,
        param: &mut usize,
        scratch: &mut usize,
    ) -> HeadLayout {
        let take = |n: usize, at: &mut usize| {
            let start = *at;
            *at += n;
            start
        };
        let features = if head.flatten { width * h * w } else { width };
        let hidden = head.hidden as usize;
        let first_outputs = if hidden > 0 { hidden } else { classes };
        let w1 = take(features * first_outputs, param);
        let b1 = take(first_outputs, param);
        let (w2, b2) = if hidden > 0 {
            (take(hidden * classes, param), take(classes, param))
        } else {
            (0, 0)
        };
        HeadLayout {
            kind: if head.flatten { 2 } else { 1 },
            features,
            hidden,
            first_outputs,
            w1,
            b1,
            w2,
            b2,
            dense: features * first_outputs,
            x: take(features, scratch),
            y: take(hidden, scratch),
            dz: take(first_outputs, scratch),
            dropout: head.dropout(),
        }
    }

    /// Values a training launch keeps per sample outside the scratch: the first Linear's
    /// input and output gradient, for `head_gradient.wgsl`.
    pub fn per_sample(&self) -> usize {
        if self.kind == 0 {
            0
        } else {
            self.features + self.first_outputs
        }
    }

    /// The gradient buffer of a training launch: `slots` rows of `row` values, then the
    /// dense block, then each sample's first-Linear input (F) and output gradient (K).
    pub fn gradient_values(&self, slots: usize, row: usize, n: usize) -> usize {
        slots * row + self.dense + n * self.per_sample()
    }

    /// `HeadDims` of a launch for `n` samples in `slots` rows of `row` values, with the
    /// step's mask keys: 24 values.
    pub fn uniform(&self, (slots, row, n): (usize, usize, usize), keys: [u32; 2]) -> Vec<u32> {
        // A row holds every parameter but the dense block: those after it move down.
        let in_row = |at: usize| at.saturating_sub(self.dense) as u32;
        let dense_at = slots * row;
        let xs_at = dense_at + self.dense;
        let dys_at = xs_at + n * self.features;
        let keep = 1.0f32 / (1.0 - self.dropout);
        let mut values = vec![
            self.kind as u32,
            self.features as u32,
            self.hidden as u32,
            self.first_outputs as u32,
            self.w1 as u32,
            self.b1 as u32,
            self.w2 as u32,
            self.b2 as u32,
            in_row(self.b1),
            in_row(self.w2),
            in_row(self.b2),
            self.x as u32,
            self.y as u32,
            self.dz as u32,
            self.dropout.to_bits(),
            keep.to_bits(),
            keys[0],
            keys[1],
            dense_at as u32,
            xs_at as u32,
            dys_at as u32,
        ];
        values.resize(24, 0);
        values
    }
}

/// Launches `head_gradient.wgsl`: the first Linear's weight gradient, the product over the
/// batch of each sample's input and output gradient, into the dense block of `grads`.
pub(crate) fn launch_gradient(
    images: &CubeTensor,
    grads: &Handle,
    head: &HeadLayout,
    (slots, row, n): (usize, usize, usize),
) {
    let dense_at = slots * row;
    let xs_at = dense_at + head.dense;
    let dys_at = xs_at + n * head.features;
    let groups = head.dense.div_ceil(GRADIENT_WORKGROUP).max(1);
    let count = CubeCount::Static(
        groups.min(MAX_GROUPS) as u32,
        groups.div_ceil(MAX_GROUPS) as u32,
        1,
    );
    images.client.launch(
        kernel(
            "head_gradient",
            include_str!("../../shaders/head_gradient.wgsl"),
        ),
        count,
        KernelArguments::new()
            .with_buffers(vec![grads.clone().binding()])
            .with_info(uniform(&[
                dense_at as u32,
                xs_at as u32,
                dys_at as u32,
                head.features as u32,
                head.first_outputs as u32,
                n as u32,
            ])),
    );
}
