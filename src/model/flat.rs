//! A model's parameters as one flat tensor, the layout the wgpu kernels read, each parameter in
//! burn's row-major order:
//!
//! - Flatten baseline: linear weight (pixels, C), linear bias (C);
//! - Tiny CNN: conv1 weight (8,1,3,3), conv1 bias (8), conv2 weight (16,8,3,3), conv2 bias
//!   (16), classifier weight (16,C), classifier bias (C).
//!
//! Converting back keeps every parameter's id, so checkpoints do not change.

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;

use super::{ModelKind, Net, TinyCnn};

/// Number of parameters of the model for images of `pixels` pixels and `classes` classes.
pub fn len(kind: ModelKind, pixels: usize, classes: usize) -> usize {
    crate::device::gpu_train::params_len(kind.kernel(), pixels, classes)
}

/// The parameters of `net` in the flat order: each one's name and number of values (their
/// sum is [`len`]). Tests compare kernels and layers tensor by tensor with it.
pub fn segments(net: &Net) -> Vec<(&'static str, usize)> {
    let linear = |name: [&'static str; 2], linear: &Linear| {
        let [inputs, outputs] = linear.weight.dims();
        [(name[0], inputs * outputs), (name[1], outputs)]
    };
    match net {
        Net::Baseline(model) => linear(["linear.weight", "linear.bias"], &model.linear).to_vec(),
        Net::Cnn(model) => {
            let mut parts = vec![
                ("conv1.weight", model.conv1.weight.dims().iter().product()),
                ("conv1.bias", model.conv1.weight.dims()[0]),
                ("conv2.weight", model.conv2.weight.dims().iter().product()),
                ("conv2.bias", model.conv2.weight.dims()[0]),
            ];
            parts.extend(linear(
                ["classifier.weight", "classifier.bias"],
                &model.classifier,
            ));
            parts
        }
    }
}

/// The parameters of `net`, flat, in the kernels' order.
pub fn to_flat(net: &Net) -> Tensor<1> {
    let parts = match net {
        Net::Baseline(model) => linear_parts(&model.linear),
        Net::Cnn(model) => {
            let mut parts = vec![
                model.conv1.weight.val().flatten(0, 3),
                bias(&model.conv1.bias),
                model.conv2.weight.val().flatten(0, 3),
                bias(&model.conv2.bias),
            ];
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
            let mut model: TinyCnn = model.clone();
            model.conv1.weight = model.conv1.weight.map(|_| take(72).reshape([8, 1, 3, 3]));
            model.conv1.bias = model.conv1.bias.map(|b| b.map(|_| take(8)));
            model.conv2.weight = model
                .conv2
                .weight
                .map(|_| take(1152).reshape([16, 8, 3, 3]));
            model.conv2.bias = model.conv2.bias.map(|b| b.map(|_| take(16)));
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

fn linear_from(linear: &Linear, take: &mut impl FnMut(usize) -> Tensor<1>) -> Linear {
    let [inputs, outputs] = linear.weight.dims();
    let mut linear = linear.clone();
    linear.weight = linear
        .weight
        .map(|_| take(inputs * outputs).reshape([inputs, outputs]));
    linear.bias = linear.bias.map(|b| b.map(|_| take(outputs)));
    linear
}
