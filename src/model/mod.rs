//! Models: the workshop's Flatten+Linear baseline and a CNN family whose default is its Tiny
//! CNN, behind one [`Net`] enum so that the training loop, evaluation and checkpoints are
//! written once. A [`ModelSpec`] says which model, on how many channels, of which widths.
//!
//! Initial parameters are drawn on the host from the seed (PyTorch's default ranges:
//! U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for every weight and bias) and then moved to the
//! device, so every backend starts from the same numbers.

pub mod checkpoint;
pub mod flat;
pub mod init_from;
pub mod norm;
pub mod spec;

pub mod head;

pub use norm::{BatchNorm2d, NormStats};
pub use spec::{CnnWidths, Head, HeadKind, ModelSpec};

use burn::module::{Param, ParamId};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::rng;

/// Which of the two models.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// The Flatten + Linear baseline.
    Baseline,
    /// The CNN: the Tiny CNN, or the shape --cnn-widths gives.
    Cnn,
}

impl ModelKind {
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

    fn init_stream_id(self) -> u32 {
        match self {
            ModelKind::Baseline => 1,
            ModelKind::Cnn => 2,
        }
    }
}

/// Flatten + Linear(channels x pixels -> classes).
#[derive(Module, Debug)]
pub struct FlattenBaseline {
    pub linear: Linear,
}

/// The CNN family: one block per width (3x3 conv with padding 1, then ReLU), a 2x2 max-pool
/// between blocks, then the head ([`Head`]): global average pool (or flatten), an optional
/// hidden linear + ReLU, linear, with dropout before each linear while training. The Tiny CNN is widths 8, 16: conv 1->8,
/// ReLU, max-pool, conv 8->16, ReLU, global average pool, linear 16->classes. The blocks
/// are `conv1` to `conv4` (the later ones absent for fewer blocks), so a Tiny CNN's
/// checkpoint names its parameters as it always did.
#[derive(Module, Debug)]
pub struct Cnn {
    pub conv1: Conv2d,
    pub pool: MaxPool2d,
    pub conv2: Option<Conv2d>,
    pub conv3: Option<Conv2d>,
    pub conv4: Option<Conv2d>,
    pub global_pool: AdaptiveAvgPool2d,
    /// With `--batch-norm`, one BatchNorm per block (after its conv, before its ReLU); empty
    /// otherwise, so checkpoints without batch norm name their parameters as before.
    pub norms: Vec<BatchNorm2d>,
    /// The head's hidden linear layer (before its ReLU), when `--hidden` is above 0.
    pub hidden: Option<Linear>,
    pub classifier: Linear,
    /// The head's shape: not parameters, so not in the checkpoint's parameter file (its
    /// description records it).
    #[module(skip)]
    pub head: Head,
}

impl Cnn {
    /// The blocks' convolutions, in order.
    pub fn convs(&self) -> Vec<&Conv2d> {
        std::iter::once(&self.conv1)
            .chain(
                [&self.conv2, &self.conv3, &self.conv4]
                    .into_iter()
                    .flatten(),
            )
            .collect()
    }
}

/// Either model; everything above the model layer works with this.
#[derive(Module, Debug)]
pub enum Net {
    Baseline(FlattenBaseline),
    Cnn(Cnn),
}

impl Net {
    /// Builds a model with host-drawn initial parameters on `device`, for images of
    /// `image_size` squared with the spec's channels.
    pub fn init(
        spec: impl Into<ModelSpec>,
        image_size: usize,
        classes: usize,
        seed: u64,
        device: &Device,
    ) -> Net {
        let spec = spec.into();
        let mut init = HostInit::new(seed, spec.kind);
        match spec.kind {
            ModelKind::Baseline => {
                let inputs = spec.channels * image_size * image_size;
                Net::Baseline(FlattenBaseline {
                    linear: init.linear(LinearConfig::new(inputs, classes).init(device), device),
                })
            }
            ModelKind::Cnn => {
                let conv = |channels: [usize; 2]| {
                    Conv2dConfig::new(channels, [3, 3])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .init(device)
                };
                let widths = spec.widths.get();
                let mut inputs = spec.channels;
                let mut convs = Vec::new();
                let mut norms = Vec::new();
                for &width in &widths {
                    convs.push(init.conv(conv([inputs, width]), device));
                    if spec.batch_norm {
                        norms.push(init.norm(width, device));
                    }
                    inputs = width;
                }
                let features = spec.head.features(&spec.widths, image_size);
                let hidden = (spec.head.hidden > 0).then(|| {
                    init.linear(
                        LinearConfig::new(features, spec.head.hidden).init(device),
                        device,
                    )
                });
                let last = if spec.head.hidden > 0 {
                    spec.head.hidden
                } else {
                    features
                };
                let classifier = init.linear(LinearConfig::new(last, classes).init(device), device);
                let mut convs = convs.into_iter();
                let conv1 = convs.next().unwrap_or_else(|| conv([spec.channels, 1]));
                Net::Cnn(Cnn {
                    conv1,
                    pool: MaxPool2dConfig::new([2, 2]).init(),
                    conv2: convs.next(),
                    conv3: convs.next(),
                    conv4: convs.next(),
                    global_pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
                    norms,
                    hidden,
                    classifier,
                    head: spec.head,
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

    /// Which model, on how many channels, of which widths. The baseline's channels are not
    /// in its layers: give them.
    pub fn spec(&self, channels: usize) -> ModelSpec {
        match self {
            Net::Baseline(_) => ModelSpec {
                kind: ModelKind::Baseline,
                channels,
                widths: CnnWidths::tiny(),
                head: Head::default(),
                batch_norm: false,
            },
            Net::Cnn(model) => {
                let widths: Vec<usize> = model.convs().iter().map(|c| c.weight.dims()[0]).collect();
                ModelSpec {
                    kind: ModelKind::Cnn,
                    channels: model.conv1.weight.dims()[1],
                    widths: CnnWidths::new(&widths).unwrap_or_default(),
                    head: model.head,
                    batch_norm: !model.norms.is_empty(),
                }
            }
        }
    }

    /// Images (batch, channels, h, w) to logits (batch, classes), layer by layer. The
    /// training engine (`train/engine.rs`) runs the kernels where they apply.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_traced(images, &mut |_, _| {})
    }

    /// [`Net::forward`], calling `trace(layer, shape)` with the output shape of each layer:
    /// the shape trace of the evidence pack comes from here, so it shows real shapes.
    pub fn forward_traced(
        &self,
        images: Tensor<4>,
        trace: &mut dyn FnMut(&str, Vec<usize>),
    ) -> Tensor<2> {
        self.forward_with(images, None, None, trace)
    }

    /// [`Net::forward`] while training: the head's dropout masks are drawn from `dropout`
    /// (a key of [`crate::rng`]; none for evaluation, where dropout is the identity, and the
    /// batch norms use their running statistics). A training step takes
    /// [`Net::forward_step`], which also gives the batch norms' new running statistics.
    pub fn forward_train(&self, images: Tensor<4>, dropout: Option<u32>) -> Tensor<2> {
        match dropout {
            Some(key) => self.forward_step(images, key).logits,
            None => self.forward(images),
        }
    }

    /// One training pass: dropout masks from `dropout`, batch norms on the batch's own
    /// statistics; the logits and the running statistics to put in the stepped model
    /// ([`Net::with_norms`]).
    pub fn forward_step(&self, images: Tensor<4>, dropout: u32) -> TrainPass {
        let mut norms = Vec::new();
        let logits = self.forward_with(images, Some(dropout), Some(&mut norms), &mut |_, _| {});
        TrainPass { logits, norms }
    }

    /// This model with the batch norms' running statistics of a training pass (unchanged
    /// without batch norm or statistics).
    pub fn with_norms(self, stats: Vec<NormStats>) -> Net {
        match self {
            Net::Cnn(mut model) if !stats.is_empty() => {
                model.norms = std::mem::take(&mut model.norms)
                    .into_iter()
                    .zip(stats)
                    .map(|(norm, stats)| norm.with_stats(stats))
                    .collect();
                Net::Cnn(model)
            }
            net => net,
        }
    }

    /// `norms` collects the batch norms' new running statistics while training; none for
    /// evaluation (running statistics).
    fn forward_with(
        &self,
        images: Tensor<4>,
        dropout: Option<u32>,
        mut norms: Option<&mut Vec<NormStats>>,
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
                let mut x = images;
                for (i, conv) in model.convs().into_iter().enumerate() {
                    if i > 0 {
                        x = model.pool.forward(x);
                        trace("maxpool 2x2", x.dims().to_vec());
                    }
                    x = conv.forward(x);
                    let layer = match model.norms.get(i) {
                        Some(norm) => {
                            x = match norms.as_deref_mut() {
                                Some(stats) => {
                                    let (y, s) = norm.forward_train(x);
                                    stats.push(s);
                                    y
                                }
                                None => norm.forward(x),
                            };
                            format!("conv{} 3x3 + batchnorm + relu", i + 1)
                        }
                        None => format!("conv{} 3x3 + relu", i + 1),
                    };
                    x = relu(x);
                    trace(&layer, x.dims().to_vec());
                }
                let x = match model.head.kind {
                    HeadKind::Gap => {
                        let x = model.global_pool.forward(x);
                        trace("adaptive avg pool 1x1", x.dims().to_vec());
                        x
                    }
                    HeadKind::Flatten => x,
                };
                let x: Tensor<2> = x.flatten(1, 3);
                trace("flatten", x.dims().to_vec());
                model.head_forward(x, dropout, trace)
            }
        }
    }
}

/// A training pass's outcome ([`Net::forward_step`]).
pub struct TrainPass {
    pub logits: Tensor<2>,
    /// Each batch norm's new running statistics, in order (empty without batch norm).
    pub norms: Vec<NormStats>,
}

/// Draws each parameter of one model from its own counter stream.
struct HostInit {
    seed: u64,
    model: u32,
    next_param: u32,
    /// Parameters of batch norms made (their values are constants: no draw).
    next_norm_param: u32,
}

impl HostInit {
    fn new(seed: u64, kind: ModelKind) -> Self {
        HostInit {
            seed,
            model: kind.init_stream_id(),
            next_param: 0,
            next_norm_param: 0,
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

    /// A batch norm of `features` channels (PyTorch's initial values, drawing nothing, so
    /// the other parameters are drawn as without batch norm), ids in their own range.
    fn norm(&mut self, features: usize, device: &Device) -> BatchNorm2d {
        let model = self.model as u64;
        let next = &mut self.next_norm_param;
        BatchNorm2d::new(
            features,
            || {
                *next += 1;
                ParamId::from((model << 32) | (1 << 31) | *next as u64)
            },
            device,
        )
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

/// Every value of every parameter moved by one unit in the last place (its lowest mantissa
/// bit flipped): a start that differs by a rounding's size, for measuring how far training
/// carries one (`trainer parity`).
pub fn nudge_every_parameter(net: Net) -> Net {
    struct Nudge;
    impl burn::module::ModuleMapper for Nudge {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|tensor| {
                let dims = tensor.dims();
                let device = tensor.device();
                let values: Vec<f32> = match tensor.clone().into_data().try_to_vec::<f32>() {
                    Ok(values) => values,
                    Err(_) => return tensor,
                };
                let nudged = values
                    .into_iter()
                    .map(|v| f32::from_bits(v.to_bits() ^ 1))
                    .collect::<Vec<_>>();
                Tensor::from_data(TensorData::new(nudged, dims), &device)
            })
        }
    }
    net.map(&mut Nudge)
}
