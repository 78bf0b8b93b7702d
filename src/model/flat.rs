//! A model's parameters as one flat tensor, the layout the wgpu kernels read, each parameter in
//! burn's row-major order:
//!
//! - Flatten baseline: linear weight (inputs, C), linear bias (C);
//! - CNN: for each block its conv weight (width, inputs, 3, 3) and bias (width), with
//!   `--batch-norm` then its norm's weight, bias, running mean, running variance (width each)
//!   and batches tracked (one: the running statistics ride along untrained, so the kernels'
//!   state carries them and a checkpoint of it has them), then the
//!   head's hidden layer weight (features, hidden) and bias (hidden) when it has one, then
//!   the classifier weight (last width, features or hidden, C) and bias (C). The Tiny CNN: conv1 weight (8,1,3,3),
//!   conv1 bias (8), conv2 weight (16,8,3,3), conv2 bias (16), classifier (16,C), (C).
//!
//! Converting back keeps every parameter's id, so checkpoints do not change.

use burn::module::Param;
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

use super::norm::{BatchNorm2d, NormStats};
use super::{Cnn, ModelKind, ModelSpec, Net};

/// Number of parameters of a model of `spec` for images of `pixels` pixels (per channel) and
/// `classes` classes.
pub fn len(spec: ModelSpec, pixels: usize, classes: usize) -> usize {
    match spec.kind {
        ModelKind::Baseline => (spec.channels * pixels + 1) * classes,
        ModelKind::Cnn => {
            let mut inputs = spec.channels;
            let mut total = 0;
            for width in spec.widths.get() {
                total += width * inputs * 9 + width;
                if spec.batch_norm {
                    total += 4 * width + 1;
                }
                inputs = width;
            }
            let head = spec.head;
            let features = head.features(&spec.widths, pixels.isqrt());
            total
                + match head.hidden {
                    0 => (features + 1) * classes,
                    hidden => (features + 1) * hidden + (hidden + 1) * classes,
                }
        }
    }
}

/// The parameters of `net` in the flat order: each one's name and number of values (their
/// sum is [`len`]). Tests compare kernels and layers tensor by tensor with it.
pub fn segments(net: &Net) -> Vec<(String, usize)> {
    let linear = |name: &str, linear: &Linear| {
        let [inputs, outputs] = linear.weight.dims();
        [
            (format!("{name}.weight"), inputs * outputs),
            (format!("{name}.bias"), outputs),
        ]
    };
    match net {
        Net::Baseline(model) => linear("linear", &model.linear).to_vec(),
        Net::Cnn(model) => {
            let mut parts = Vec::new();
            for (i, conv) in model.convs().into_iter().enumerate() {
                parts.push((
                    format!("conv{}.weight", i + 1),
                    conv.weight.dims().iter().product(),
                ));
                let width = conv.weight.dims()[0];
                parts.push((format!("conv{}.bias", i + 1), width));
                if i < model.norms.len() {
                    for (name, len) in NORM_PARTS.iter().zip([width, width, width, width, 1]) {
                        parts.push((format!("norms.{i}.{name}"), len));
                    }
                }
            }
            if let Some(hidden) = &model.hidden {
                parts.extend(linear("hidden", hidden));
            }
            parts.extend(linear("classifier", &model.classifier));
            parts
        }
    }
}

/// The parameters of `net`, flat, in the kernels' order.
pub fn to_flat(net: &Net) -> Tensor<1> {
    let parts = match net {
        Net::Baseline(model) => linear_parts(&model.linear),
        Net::Cnn(model) => {
            let mut parts = Vec::new();
            for (i, conv) in model.convs().into_iter().enumerate() {
                parts.push(conv.weight.val().flatten(0, 3));
                parts.push(bias(&conv.bias));
                if let Some(norm) = model.norms.get(i) {
                    parts.extend([
                        norm.weight.val(),
                        norm.bias.val(),
                        norm.running_mean.value(),
                        norm.running_var.value(),
                        norm.num_batches_tracked.value(),
                    ]);
                }
            }
            if let Some(hidden) = &model.hidden {
                parts.extend(linear_parts(hidden));
            }
            parts.extend(linear_parts(&model.classifier));
            parts
        }
    };
    Tensor::cat(parts, 0)
}

/// `net` with its parameters replaced by the first values of `flat` (same ids).
pub fn from_flat(net: &Net, flat: Tensor<1>) -> Net {
    let mut at = 0;
    let mut take = |len: usize| {
        let part = flat.clone().narrow(0, at, len);
        at += len;
        part
    };
    match net {
        Net::Baseline(model) => {
            let mut model = model.clone();
            model.linear = linear_from(&model.linear, &mut take);
            Net::Baseline(model)
        }
        Net::Cnn(model) => {
            let mut model: Cnn = model.clone();
            let mut norms = std::mem::take(&mut model.norms).into_iter();
            let mut normed = Vec::new();
            let mut block = |conv: &Conv2d, take: &mut dyn FnMut(usize) -> Tensor<1>| {
                let conv = conv_from(conv, take);
                if let Some(norm) = norms.next() {
                    normed.push(norm_from(norm, take));
                }
                conv
            };
            model.conv1 = block(&model.conv1, &mut take);
            for conv in [&mut model.conv2, &mut model.conv3, &mut model.conv4]
                .into_iter()
                .flatten()
            {
                *conv = block(conv, &mut take);
            }
            model.norms = normed;
            if let Some(hidden) = &mut model.hidden {
                *hidden = linear_from(hidden, &mut take);
            }
            model.classifier = linear_from(&model.classifier, &mut take);
            Net::Cnn(model)
        }
    }
}

fn bias(bias: &Option<Param<Tensor<1>>>) -> Tensor<1> {
    bias.as_ref()
        .map(|b| b.val())
        .expect("the models' layers have biases")
}

fn linear_parts(linear: &Linear) -> Vec<Tensor<1>> {
    vec![linear.weight.val().flatten(0, 1), bias(&linear.bias)]
}

/// A batch norm's values in the flat order, by PyTorch's names.
const NORM_PARTS: [&str; 5] = [
    "weight",
    "bias",
    "running_mean",
    "running_var",
    "num_batches_tracked",
];

/// `norm` with its values (parameters and running statistics) from `take` (same ids).
fn norm_from(norm: BatchNorm2d, take: &mut dyn FnMut(usize) -> Tensor<1>) -> BatchNorm2d {
    let width = norm.features();
    let mut norm = norm;
    norm.weight = norm.weight.map(|_| take(width));
    norm.bias = norm.bias.map(|_| take(width));
    let stats = NormStats {
        running_mean: take(width),
        running_var: take(width),
        num_batches_tracked: take(1),
    };
    norm.with_stats(stats)
}

fn conv_from(conv: &Conv2d, take: &mut dyn FnMut(usize) -> Tensor<1>) -> Conv2d {
    let dims = conv.weight.dims();
    let mut conv = conv.clone();
    conv.weight = conv
        .weight
        .map(|_| take(dims.iter().product()).reshape(dims));
    conv.bias = conv.bias.map(|b| b.map(|_| take(dims[0])));
    conv
}

fn linear_from(linear: &Linear, take: &mut dyn FnMut(usize) -> Tensor<1>) -> Linear {
    let [inputs, outputs] = linear.weight.dims();
    let mut linear = linear.clone();
    linear.weight = linear
        .weight
        .map(|_| take(inputs * outputs).reshape([inputs, outputs]));
    linear.bias = linear.bias.map(|b| b.map(|_| take(outputs)));
    linear
}
