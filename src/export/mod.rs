//! Models that other tools open: the best model's weights as PyTorch names them
//! (`best_model.safetensors`, [`safetensors`]) and the whole model, normalization included,
//! as an ONNX graph (`best_model.onnx`, [`onnx`]). Both follow the equivalent PyTorch
//! `nn.Sequential` of [`layout`]. The pack writes both; `trainer export` writes either for
//! any checkpoint.

pub mod layout;
pub mod onnx;
mod onnx_proto;
pub mod safetensors;
pub mod snippets;

use burn::prelude::*;

use crate::data::Normalization;
use crate::error::{Result, TrainerError};
use crate::model::checkpoint::CheckpointMeta;
use crate::model::{ModelSpec, Net};
use layout::Layer;

/// The file names inside `checkpoints/`.
pub const SAFETENSORS_FILE: &str = "best_model.safetensors";
pub const ONNX_FILE: &str = "best_model.onnx";

/// Which file `trainer export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// ONNX (opset 13): raw pixels in [0, 1] to logits, normalization inside the graph.
    Onnx,
    /// safetensors: the weights under the PyTorch nn.Sequential's names, facts as metadata.
    Safetensors,
}

/// What the exports say of a model besides its weights.
#[derive(Clone, Debug)]
pub struct ModelFacts<'a> {
    pub spec: ModelSpec,
    pub image_size: usize,
    pub classes: &'a [String],
    /// Applied to values in [0, 1], per channel.
    pub normalization: &'a Normalization,
    pub test_accuracy: f64,
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The normalization with lists even for one channel (PyTorch code reads one shape).
#[derive(serde::Serialize)]
struct PerChannelLists<'a> {
    mean: &'a [f32],
    std: &'a [f32],
}

impl<'a> ModelFacts<'a> {
    /// The facts a checkpoint's description records.
    pub fn from_meta(meta: &'a CheckpointMeta) -> std::result::Result<ModelFacts<'a>, String> {
        Ok(ModelFacts {
            spec: meta.spec()?,
            image_size: meta.image_size,
            classes: &meta.classes,
            normalization: &meta.normalization,
            test_accuracy: meta.test_accuracy,
        })
    }

    /// The layers of the equivalent PyTorch Sequential.
    pub fn layers(&self) -> Vec<Layer> {
        layout::sequential(&self.spec, self.image_size, self.classes.len())
    }

    /// Both files' metadata: key and text (JSON for lists).
    pub fn metadata(&self) -> Vec<(String, String)> {
        let widths = match self.spec.kind {
            crate::model::ModelKind::Cnn => self.spec.widths.get(),
            crate::model::ModelKind::Baseline => Vec::new(),
        };
        [
            // safetensors' convention for weights in PyTorch's layouts.
            ("format", "pt".to_string()),
            ("model", self.spec.display_name()),
            ("model_kind", self.spec.kind.slug().to_string()),
            ("classes", json(self.classes)),
            ("channels", self.spec.channels.to_string()),
            ("image_size", self.image_size.to_string()),
            ("cnn_widths", json(&widths)),
            ("head", json(&self.spec.head)),
            ("batch_norm", self.spec.batch_norm.to_string()),
            (
                "normalization",
                json(&PerChannelLists {
                    mean: &self.normalization.mean.0,
                    std: &self.normalization.std.0,
                }),
            ),
            (
                "input",
                "raw pixels in [0, 1], (N, C, H, W); normalize as recorded".into(),
            ),
            ("test_accuracy", self.test_accuracy.to_string()),
            (
                "torch_sequential",
                layout::python_sequential(&self.layers()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// One layer's parameters on the host, in burn's layouts: a convolution's weight
/// `(out, in, 3, 3)`, a linear's `(in, out)`.
pub struct LayerWeights {
    pub weight: Vec<f32>,
    pub weight_dims: Vec<usize>,
    pub bias: Vec<f32>,
    /// A batch norm's running mean and variance (none for other layers).
    pub running: Option<[Vec<f32>; 2]>,
}

/// The model's layers and the parameters of those that have them, by layer index.
pub struct Weights {
    pub layers: Vec<Layer>,
    params: Vec<(usize, LayerWeights)>,
}

fn host<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| TrainerError::Serialize(format!("reading a parameter: {e:?}")))
}

fn layer_weights<const D: usize>(
    weight: Tensor<D>,
    bias: Option<Tensor<1>>,
) -> Result<LayerWeights> {
    let weight_dims = weight.dims().to_vec();
    let outputs = match D {
        2 => weight_dims[1],
        _ => weight_dims[0],
    };
    Ok(LayerWeights {
        weight: host(weight)?,
        weight_dims,
        bias: match bias {
            Some(b) => host(b)?,
            None => vec![0.0; outputs],
        },
        running: None,
    })
}

fn norm_weights(norm: &crate::model::BatchNorm2d) -> Result<LayerWeights> {
    Ok(LayerWeights {
        weight: host(norm.weight.val())?,
        weight_dims: vec![norm.features()],
        bias: host(norm.bias.val())?,
        running: Some([
            host(norm.running_mean.value())?,
            host(norm.running_var.value())?,
        ]),
    })
}

impl Weights {
    /// Copies the parameters of `net` to the host.
    pub fn of_net(net: &Net, facts: &ModelFacts) -> Result<Weights> {
        let layers = facts.layers();
        let mut params = Vec::new();
        for (index, layer) in layers.iter().enumerate() {
            let found = match (net, layer) {
                (Net::Baseline(m), Layer::Linear { .. }) => Some(layer_weights(
                    m.linear.weight.val(),
                    m.linear.bias.as_ref().map(|b| b.val()),
                )?),
                (Net::Cnn(m), Layer::Linear { hidden, .. }) => {
                    let linear = match (hidden, &m.hidden) {
                        (true, Some(h)) => h,
                        _ => &m.classifier,
                    };
                    Some(layer_weights(
                        linear.weight.val(),
                        linear.bias.as_ref().map(|b| b.val()),
                    )?)
                }
                (Net::Cnn(m), Layer::BatchNorm { block, .. }) => {
                    m.norms.get(*block).map(norm_weights).transpose()?
                }
                (Net::Cnn(m), Layer::Conv { block, .. }) => match m.convs().get(*block) {
                    Some(conv) => Some(layer_weights(
                        conv.weight.val(),
                        conv.bias.as_ref().map(|b| b.val()),
                    )?),
                    None => None,
                },
                _ => None,
            };
            if let Some(w) = found {
                params.push((index, w));
            }
        }
        Ok(Weights { layers, params })
    }

    /// The parameters of layer `index`.
    pub fn of(&self, index: usize) -> Result<&LayerWeights> {
        self.params
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, w)| w)
            .ok_or_else(|| {
                TrainerError::Serialize(format!(
                    "the model has no parameters for layer {index} ({:?})",
                    self.layers.get(index)
                ))
            })
    }
}

/// Both exports of a model.
pub struct Exports {
    pub safetensors: Vec<u8>,
    pub onnx: Vec<u8>,
}

/// The bytes of one export.
pub fn encode(net: &Net, facts: &ModelFacts, format: ExportFormat) -> Result<Vec<u8>> {
    match format {
        ExportFormat::Safetensors => safetensors::encode(net, facts),
        ExportFormat::Onnx => onnx::encode(&Weights::of_net(net, facts)?, facts),
    }
}

/// The bytes of both exports.
pub fn encode_all(net: &Net, facts: &ModelFacts) -> Result<Exports> {
    Ok(Exports {
        safetensors: encode(net, facts, ExportFormat::Safetensors)?,
        onnx: encode(net, facts, ExportFormat::Onnx)?,
    })
}
