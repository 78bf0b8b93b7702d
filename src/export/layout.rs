//! The PyTorch `nn.Sequential` equivalent to a model: its layers in order, so that the
//! safetensors export names each parameter by the index PyTorch gives it and the ONNX graph
//! and the Python snippet follow the same layers.
//!
//! The CNN family is, per block, `Conv2d(in, width, 3, padding=1)` and `ReLU`, with a
//! `MaxPool2d(2)` between blocks, then `AdaptiveAvgPool2d(1)`, `Flatten()` and
//! `Linear(last, classes)`: the Tiny CNN's parameters are `0.*`, `3.*` and `7.*`. The
//! baseline is `Flatten()` then `Linear(channels x pixels, classes)`: `1.*`.
//!
//! Other heads ([`crate::model::Head`]): `--head flatten` drops the `AdaptiveAvgPool2d(1)`;
//! `--hidden N` adds `Linear(features, N)` and `ReLU` before the last `Linear`; `--dropout P`
//! adds `Dropout(P)` before each `Linear` of the head. A 32,64 CNN on 28x28 images with
//! `--head flatten --hidden 128 --dropout 0.25`: `0.*` conv, `3.*` conv, `5` Flatten,
//! `6` Dropout, `7.*` Linear(12544, 128), `8` ReLU, `9` Dropout, `10.*` Linear(128, C).
//!
//! `--batch-norm` puts `BatchNorm2d(width)` between each conv and its ReLU: the Tiny CNN's
//! parameters are then `0.*` conv, `1.*` batch norm, `4.*` conv, `5.*` batch norm, `9.*`.

use crate::model::{HeadKind, ModelKind, ModelSpec};

/// One layer of the Sequential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layer {
    /// A 3x3 convolution with padding 1: the `block`-th of the model (0-based).
    Conv {
        block: usize,
        inputs: usize,
        outputs: usize,
    },
    /// PyTorch's `BatchNorm2d(features)` after the `block`-th conv.
    BatchNorm {
        block: usize,
        features: usize,
    },
    Relu,
    /// A 2x2 max-pool with stride 2.
    MaxPool,
    /// Global average pool to 1x1.
    AvgPool,
    Flatten,
    /// Dropout with probability `f64::from_bits(bits)`: the identity in evaluation.
    Dropout {
        bits: u64,
    },
    Linear {
        inputs: usize,
        outputs: usize,
        /// The head's hidden layer (burn's `hidden`), not its last (`classifier`).
        hidden: bool,
    },
}

impl Layer {
    /// The PyTorch constructor, as Python text.
    pub fn python(&self) -> String {
        match self {
            Layer::Conv {
                inputs, outputs, ..
            } => {
                format!("nn.Conv2d({inputs}, {outputs}, 3, padding=1)")
            }
            Layer::BatchNorm { features, .. } => format!("nn.BatchNorm2d({features})"),
            Layer::Relu => "nn.ReLU()".into(),
            Layer::MaxPool => "nn.MaxPool2d(2)".into(),
            Layer::AvgPool => "nn.AdaptiveAvgPool2d(1)".into(),
            Layer::Flatten => "nn.Flatten()".into(),
            Layer::Dropout { bits } => format!("nn.Dropout({})", f64::from_bits(*bits)),
            Layer::Linear {
                inputs, outputs, ..
            } => format!("nn.Linear({inputs}, {outputs})"),
        }
    }

    /// The burn module (a field of the model) whose parameters this layer holds.
    pub fn burn_module(&self) -> Option<&'static str> {
        const CONVS: [&str; 4] = ["conv1", "conv2", "conv3", "conv4"];
        const NORMS: [&str; 4] = ["norms.0", "norms.1", "norms.2", "norms.3"];
        match self {
            Layer::Conv { block, .. } => CONVS.get(*block).copied(),
            Layer::BatchNorm { block, .. } => NORMS.get(*block).copied(),
            Layer::Linear { hidden: true, .. } => Some("hidden"),
            Layer::Linear { .. } => Some("classifier"),
            _ => None,
        }
    }
}

/// The layers of the model `spec` for images of `image_size` squared and `classes` outputs.
pub fn sequential(spec: &ModelSpec, image_size: usize, classes: usize) -> Vec<Layer> {
    match spec.kind {
        ModelKind::Baseline => vec![
            Layer::Flatten,
            Layer::Linear {
                inputs: spec.channels * image_size * image_size,
                outputs: classes,
                hidden: false,
            },
        ],
        ModelKind::Cnn => {
            let mut layers = Vec::new();
            let mut inputs = spec.channels;
            for (block, width) in spec.widths.get().into_iter().enumerate() {
                if block > 0 {
                    layers.push(Layer::MaxPool);
                }
                layers.push(Layer::Conv {
                    block,
                    inputs,
                    outputs: width,
                });
                if spec.batch_norm {
                    layers.push(Layer::BatchNorm {
                        block,
                        features: width,
                    });
                }
                layers.push(Layer::Relu);
                inputs = width;
            }
            layers.extend(head(spec, image_size, classes));
            layers
        }
    }
}

/// The CNN's head after its last block, as PyTorch's layers.
fn head(spec: &ModelSpec, image_size: usize, classes: usize) -> Vec<Layer> {
    let head = spec.head;
    let mut layers = match head.kind {
        HeadKind::Gap => vec![Layer::AvgPool, Layer::Flatten],
        HeadKind::Flatten => vec![Layer::Flatten],
    };
    let dropout = Layer::Dropout {
        bits: head.dropout().to_bits(),
    };
    let mut features = head.features(&spec.widths, image_size);
    if head.hidden > 0 {
        if head.dropout() > 0.0 {
            layers.push(dropout);
        }
        layers.push(Layer::Linear {
            inputs: features,
            outputs: head.hidden,
            hidden: true,
        });
        layers.push(Layer::Relu);
        features = head.hidden;
    }
    if head.dropout() > 0.0 {
        layers.push(dropout);
    }
    layers.push(Layer::Linear {
        inputs: features,
        outputs: classes,
        hidden: false,
    });
    layers
}

/// `(burn module, PyTorch index)` for every layer with parameters: `("conv1", 0)`, ...
/// The baseline's linear is burn's `linear`.
pub fn parameter_owners(spec: &ModelSpec, layers: &[Layer]) -> Vec<(&'static str, usize)> {
    layers
        .iter()
        .enumerate()
        .filter_map(|(index, layer)| {
            let module = match (spec.kind, layer) {
                (ModelKind::Baseline, Layer::Linear { .. }) => Some("linear"),
                _ => layer.burn_module(),
            };
            module.map(|m| (m, index))
        })
        .collect()
}

/// The Python that builds the Sequential (`nn` is `torch.nn`).
pub fn python_sequential(layers: &[Layer]) -> String {
    let body: Vec<String> = layers
        .iter()
        .map(|l| format!("    {},", l.python()))
        .collect();
    format!("nn.Sequential(\n{}\n)", body.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_cnn_parameters_sit_where_the_workshop_puts_them() {
        let spec = ModelSpec::from(ModelKind::Cnn);
        let layers = sequential(&spec, 16, 4);
        assert_eq!(layers.len(), 8);
        assert_eq!(
            parameter_owners(&spec, &layers),
            vec![("conv1", 0), ("conv2", 3), ("classifier", 7)]
        );
        let baseline = ModelSpec::from(ModelKind::Baseline);
        let layers = sequential(&baseline, 16, 4);
        assert_eq!(parameter_owners(&baseline, &layers), vec![("linear", 1)]);
        assert!(python_sequential(&layers).contains("nn.Linear(256, 4)"));
    }

    #[test]
    fn the_classic_head_sits_where_pytorch_puts_it() {
        let spec = ModelSpec {
            widths: crate::model::CnnWidths::new(&[32, 64]).unwrap(),
            head: crate::model::Head::new(HeadKind::Flatten, 128, 0.25).unwrap(),
            ..ModelSpec::from(ModelKind::Cnn)
        };
        let layers = sequential(&spec, 28, 10);
        assert_eq!(
            parameter_owners(&spec, &layers),
            vec![
                ("conv1", 0),
                ("conv2", 3),
                ("hidden", 7),
                ("classifier", 10)
            ]
        );
        let python = python_sequential(&layers);
        for layer in [
            "nn.Flatten()",
            "nn.Dropout(0.25)",
            "nn.Linear(12544, 128)",
            "nn.Linear(128, 10)",
        ] {
            assert!(python.contains(layer), "{python}");
        }
        assert!(!python.contains("AdaptiveAvgPool2d"), "{python}");
    }

    #[test]
    fn batch_norm_sits_between_each_conv_and_its_relu() {
        let spec = ModelSpec {
            batch_norm: true,
            ..ModelSpec::from(ModelKind::Cnn)
        };
        let layers = sequential(&spec, 16, 4);
        assert_eq!(
            parameter_owners(&spec, &layers),
            vec![
                ("conv1", 0),
                ("norms.0", 1),
                ("conv2", 4),
                ("norms.1", 5),
                ("classifier", 9)
            ]
        );
        assert_eq!(layers[2], Layer::Relu);
        assert!(python_sequential(&layers).contains("nn.BatchNorm2d(16),"));
    }
}
