//! Models: the workshop's Flatten+Linear baseline and its Tiny CNN, behind one [`Net`] enum
//! so that the training loop, evaluation and checkpoints are written once.
//!
//! Initial parameters are drawn on the host from the seed (PyTorch's default ranges:
//! U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for every weight and bias) and then moved to the
//! device, so every backend starts from the same numbers.

pub mod checkpoint;
pub mod flat;

use burn::module::{Param, ParamId};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::rng;

/// Which of the two models.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// The Flatten + Linear baseline.
    Baseline,
    /// The Tiny CNN.
    Cnn,
}

impl ModelKind {
    /// Both, in the order the workshop trains them.
    pub const ALL: [ModelKind; 2] = [ModelKind::Baseline, ModelKind::Cnn];

    /// The display name used in every evidence file (the workshop's names).
    pub fn display_name(self) -> &'static str {
        match self {
            ModelKind::Baseline => "Flatten baseline",
            ModelKind::Cnn => "Tiny CNN",
        }
    }

    /// A short name for flags and file names.
    pub fn slug(self) -> &'static str {
        match self {
            ModelKind::Baseline => "baseline",
            ModelKind::Cnn => "cnn",
        }
    }

    /// Looks a model up by its display name.
    pub fn from_display_name(name: &str) -> Option<ModelKind> {
        ModelKind::ALL
            .into_iter()
            .find(|k| k.display_name() == name)
    }

    /// The name the wgpu kernels know this model by.
    pub fn kernel(self) -> crate::device::gpu_train::Model {
        match self {
            ModelKind::Baseline => crate::device::gpu_train::Model::Baseline,
            ModelKind::Cnn => crate::device::gpu_train::Model::TinyCnn,
        }
    }

    fn init_stream_id(self) -> u32 {
        match self {
            ModelKind::Baseline => 1,
            ModelKind::Cnn => 2,
        }
    }
}

/// Flatten + Linear(pixels -> classes).
#[derive(Module, Debug)]
pub struct FlattenBaseline {
    pub linear: Linear,
}

/// Conv 1->8 3x3 pad 1, ReLU, MaxPool 2, Conv 8->16 3x3 pad 1, ReLU, global average pool,
/// Linear 16->classes.
#[derive(Module, Debug)]
pub struct TinyCnn {
    pub conv1: Conv2d,
    pub pool: MaxPool2d,
    pub conv2: Conv2d,
    pub global_pool: AdaptiveAvgPool2d,
    pub classifier: Linear,
}

/// Either model; everything above the model layer works with this.
#[derive(Module, Debug)]
pub enum Net {
    Baseline(FlattenBaseline),
    Cnn(TinyCnn),
}

impl Net {
    /// Builds a model with host-drawn initial parameters on `device`.
    pub fn init(
        kind: ModelKind,
        image_size: usize,
        classes: usize,
        seed: u64,
        device: &Device,
    ) -> Net {
        let mut init = HostInit::new(seed, kind);
        match kind {
            ModelKind::Baseline => {
                let pixels = image_size * image_size;
                Net::Baseline(FlattenBaseline {
                    linear: init.linear(LinearConfig::new(pixels, classes).init(device), device),
                })
            }
            ModelKind::Cnn => {
                let conv = |channels: [usize; 2]| {
                    Conv2dConfig::new(channels, [3, 3])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .init(device)
                };
                let conv1 = init.conv(conv([1, 8]), device);
                let conv2 = init.conv(conv([8, 16]), device);
                let classifier = init.linear(LinearConfig::new(16, classes).init(device), device);
                Net::Cnn(TinyCnn {
                    conv1,
                    pool: MaxPool2dConfig::new([2, 2]).init(),
                    conv2,
                    global_pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
                    classifier,
                })
            }
        }
    }

    /// Number of classes (outputs).
    pub fn classes(&self) -> usize {
        match self {
            Net::Baseline(model) => model.linear.weight.dims()[1],
            Net::Cnn(model) => model.classifier.weight.dims()[1],
        }
    }

    /// Which model this is.
    pub fn kind(&self) -> ModelKind {
        match self {
            Net::Baseline(_) => ModelKind::Baseline,
            Net::Cnn(_) => ModelKind::Cnn,
        }
    }

    /// Images (batch, 1, h, w) to logits (batch, classes).
    ///
    /// On the CPU backend the Tiny CNN's convolutions, pooling and ReLUs run as one fused
    /// operation ([`crate::device::cpu_kernels`]); on wgpu without autodiff, either model's
    /// forward pass is one kernel ([`crate::device::gpu_train`]); everywhere else, and for the
    /// shape trace, layer by layer.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let device = images.device();
        let classes = self.classes();
        if !device.is_autodiff() && crate::device::gpu_train::available(&device, classes) {
            return crate::device::gpu_train::logits(
                self.kind().kernel(),
                images,
                flat::to_flat(self),
                classes,
            );
        }
        if let Net::Cnn(model) = self
            && crate::device::cpu_kernels::available(&images.device())
            && let Some(features) = crate::device::cpu_kernels::tiny_cnn_features(
                images.clone(),
                &model.conv1,
                &model.conv2,
            )
        {
            return model.classifier.forward(features);
        }
        self.forward_traced(images, &mut |_, _| {})
    }

    /// [`Net::forward`], calling `trace(layer, shape)` with the output shape of each layer:
    /// the shape trace of the evidence pack comes from here, so it shows real shapes.
    pub fn forward_traced(
        &self,
        images: Tensor<4>,
        trace: &mut dyn FnMut(&str, Vec<usize>),
    ) -> Tensor<2> {
        match self {
            Net::Baseline(model) => {
                let x: Tensor<2> = images.flatten(1, 3);
                trace("flatten", x.dims().to_vec());
                let logits = model.linear.forward(x);
                trace("linear (logits)", logits.dims().to_vec());
                logits
            }
            Net::Cnn(model) => {
                let x = relu(model.conv1.forward(images));
                trace("conv1 3x3 + relu", x.dims().to_vec());
                let x = model.pool.forward(x);
                trace("maxpool 2x2", x.dims().to_vec());
                let x = relu(model.conv2.forward(x));
                trace("conv2 3x3 + relu", x.dims().to_vec());
                let x = model.global_pool.forward(x);
                trace("adaptive avg pool 1x1", x.dims().to_vec());
                let x: Tensor<2> = x.flatten(1, 3);
                trace("flatten", x.dims().to_vec());
                let logits = model.classifier.forward(x);
                trace("linear (logits)", logits.dims().to_vec());
                logits
            }
        }
    }
}

/// Draws each parameter of one model from its own counter stream.
struct HostInit {
    seed: u64,
    model: u32,
    next_param: u32,
}

impl HostInit {
    fn new(seed: u64, kind: ModelKind) -> Self {
        HostInit {
            seed,
            model: kind.init_stream_id(),
            next_param: 0,
        }
    }

    /// A tensor of `shape` with values in U(-bound, bound).
    fn uniform<const D: usize>(
        &mut self,
        shape: [usize; D],
        bound: f32,
        device: &Device,
    ) -> Tensor<D> {
        let key = rng::key(
            self.seed,
            rng::stream::INIT,
            (self.model << 8) | self.next_param,
        );
        self.next_param += 1;
        let count: usize = shape.iter().product();
        let values: Vec<f32> = (0..count as u32)
            .map(|i| (rng::uniform(key, i) * 2.0 - 1.0) * bound)
            .collect();
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    /// A parameter drawn as [`Self::uniform`] draws it. Its id comes from the model and the
    /// parameter's position instead of burn's random ids, so two identical runs write
    /// byte-identical checkpoints.
    fn param<const D: usize>(
        &mut self,
        shape: [usize; D],
        bound: f32,
        device: &Device,
    ) -> Param<Tensor<D>> {
        let id = ParamId::from(((self.model as u64) << 32) | (self.next_param as u64 + 1));
        let mut param = Param::from_tensor(self.uniform(shape, bound, device));
        param.id = id;
        param
    }

    fn linear(&mut self, mut layer: Linear, device: &Device) -> Linear {
        let [fan_in, fan_out] = layer.weight.dims();
        let bound = 1.0 / (fan_in as f32).sqrt();
        layer.weight = self.param([fan_in, fan_out], bound, device);
        layer.bias = Some(self.param([fan_out], bound, device));
        layer
    }

    fn conv(&mut self, mut layer: Conv2d, device: &Device) -> Conv2d {
        let [out, inp, kh, kw] = layer.weight.dims();
        let bound = 1.0 / ((inp * kh * kw) as f32).sqrt();
        layer.weight = self.param([out, inp, kh, kw], bound, device);
        layer.bias = Some(self.param([out], bound, device));
        layer
    }
}

/// Collects every parameter as (path, shape, values), in module order; parity compares them.
pub fn parameters(net: &Net) -> Result<Vec<(String, Vec<usize>, Vec<f32>)>, String> {
    struct Collect {
        path: Vec<String>,
        tensors: Vec<(String, Tensor<1>, Vec<usize>)>,
    }
    impl burn::module::ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let tensor = param.val();
            let shape = tensor.dims().to_vec();
            self.tensors
                .push((self.path.join("."), tensor.flatten(0, D - 1), shape));
        }
    }
    let mut collect = Collect {
        path: Vec::new(),
        tensors: Vec::new(),
    };
    net.visit(&mut collect);
    collect
        .tensors
        .into_iter()
        .map(|(path, tensor, shape)| {
            let values = tensor
                .try_into_data()
                .map_err(|e| e.to_string())?
                .try_to_vec_as::<f32>()
                .map_err(|e| format!("{e:?}"))?;
            Ok((path, shape, values))
        })
        .collect()
}

/// Adds `epsilon` to the first value of the first parameter: a deliberate difference, for
/// testing that parity can fail.
pub fn perturb_first_parameter(net: Net, epsilon: f32) -> Net {
    struct Perturb {
        epsilon: f32,
        done: bool,
    }
    impl burn::module::ModuleMapper for Perturb {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if self.done {
                return param;
            }
            self.done = true;
            let epsilon = self.epsilon;
            param.map(|tensor| {
                let dims = tensor.dims();
                let mut delta = vec![0.0f32; dims.iter().product()];
                delta[0] = epsilon;
                let device = tensor.device();
                tensor + Tensor::from_data(TensorData::new(delta, dims), &device)
            })
        }
    }
    net.map(&mut Perturb {
        epsilon,
        done: false,
    })
}
