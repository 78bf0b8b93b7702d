//! A model's parameters as one flat tensor, the layout the wgpu kernels read, each parameter in
//! burn's row-major order:
//!
//! - Flatten baseline: linear weight (inputs, C), linear bias (C);
//! - CNN: for each block its conv weight (width, inputs, 3, 3) and bias (width), then the
//!   head's hidden layer weight (features, hidden) and bias (hidden) when it has one, then
//!   the classifier weight (last width, features or hidden, C) and bias (C). The Tiny CNN: conv1 weight (8,1,3,3),
//!   conv1 bias (8), conv2 weight (16,8,3,3), conv2 bias (16), classifier (16,C), (C).
//!
//! Converting back keeps every parameter's id, so checkpoints do not change.

use burn::module::Param;
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

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
                parts.push((format!("conv{}.bias", i + 1), conv.weight.dims()[0]));
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
            for conv in model.convs() {
                parts.push(conv.weight.val().flatten(0, 3));
                parts.push(bias(&conv.bias));
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
            model.conv1 = conv_from(&model.conv1, &mut take);
            for conv in [&mut model.conv2, &mut model.conv3, &mut model.conv4]
                .into_iter()
                .flatten()
            {
                *conv = conv_from(conv, &mut take);
            }
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

fn conv_from(conv: &Conv2d, take: &mut impl FnMut(usize) -> Tensor<1>) -> Conv2d {
    let dims = conv.weight.dims();
    let mut conv = conv.clone();
    conv.weight = conv
        .weight
        .map(|_| take(dims.iter().product()).reshape(dims));
    conv.bias = conv.bias.map(|b| b.map(|_| take(dims[0])));
    conv
}

fn linear_from(linear: &Linear, take: &mut impl FnMut(usize) -> Tensor<1>) -> Linear {
    let [inputs, outputs] = linear.weight.dims();
    let mut linear = linear.clone();
    linear.weight = linear
        .weight
        .map(|_| take(inputs * outputs).reshape([inputs, outputs]));
    linear.bias = linear.bias.map(|b| b.map(|_| take(outputs)));
    linear
}
