//! `best_model.onnx`: raw pixels in `[0, 1]`, shape `(N, C, H, W)`, to logits `(N, classes)`,
//! with the recorded normalization inside the graph (`Sub`, `Div`), then the layers of
//! [`super::layout`] as ONNX operators (opset 13). A user feeds images as they are. The graph
//! is the evaluation one: no dropout, and a batch norm is `BatchNormalization` with its
//! running statistics.

use prost::Message;

use super::onnx_proto::*;
use super::{ModelFacts, Weights, layout::Layer};
use crate::error::Result;

/// The opset the graph is written for, and the IR version that goes with it.
pub const OPSET: i64 = 13;
const IR_VERSION: i64 = 7;
/// The graph's input and output names.
pub const INPUT: &str = "images";
pub const OUTPUT: &str = "logits";

/// The graph under construction: nodes, initializers, and the name of the last output.
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    last: String,
}

impl Graph {
    fn node(&mut self, op: &str, extra_inputs: &[String], attributes: Vec<AttributeProto>) {
        let index = self.nodes.len();
        let output = format!("{}_{index}", op.to_lowercase());
        let mut input = vec![self.last.clone()];
        input.extend_from_slice(extra_inputs);
        self.nodes.push(NodeProto {
            input,
            output: vec![output.clone()],
            name: format!("{op}_{index}"),
            op_type: op.into(),
            attribute: attributes,
        });
        self.last = output;
    }

    fn constant(&mut self, name: String, dims: &[usize], values: &[f32]) -> String {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|d| *d as i64).collect(),
            data_type: FLOAT,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name
    }
}

fn ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: values.to_vec(),
        r#type: ATTRIBUTE_INTS,
        ..Default::default()
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: value,
        r#type: ATTRIBUTE_INT,
        ..Default::default()
    }
}

fn tensor_info(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            dim_value: d.map(|v| v as i64),
            dim_param: d.is_none().then(|| "batch".to_string()),
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
    }
}

/// The normalization, then one operator (and its weights) per layer.
fn build_graph(weights: &Weights, facts: &ModelFacts) -> Result<Graph> {
    let channels = facts.spec.channels;
    let mut graph = Graph {
        nodes: Vec::new(),
        initializers: Vec::new(),
        last: INPUT.into(),
    };
    let mean = graph.constant(
        "mean".into(),
        &[1, channels, 1, 1],
        &facts.normalization.mean.0,
    );
    graph.node("Sub", &[mean], vec![]);
    let std = graph.constant(
        "std".into(),
        &[1, channels, 1, 1],
        &facts.normalization.std.0,
    );
    graph.node("Div", &[std], vec![]);
    for (index, layer) in weights.layers.iter().enumerate() {
        match layer {
            Layer::Conv { .. } | Layer::Linear { .. } => {
                let tensors = weights.of(index)?;
                let w = graph.constant(
                    format!("{index}.weight"),
                    &tensors.weight_dims,
                    &tensors.weight,
                );
                let b = graph.constant(
                    format!("{index}.bias"),
                    &[tensors.bias.len()],
                    &tensors.bias,
                );
                match layer {
                    Layer::Conv { .. } => graph.node(
                        "Conv",
                        &[w, b],
                        vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 1, 1])],
                    ),
                    _ => graph.node("Gemm", &[w, b], vec![]),
                }
            }
            Layer::BatchNorm { .. } => batch_norm(&mut graph, index, weights.of(index)?)?,
            Layer::Relu => graph.node("Relu", &[], vec![]),
            Layer::MaxPool => graph.node(
                "MaxPool",
                &[],
                vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
            ),
            Layer::AvgPool => graph.node("GlobalAveragePool", &[], vec![]),
            Layer::Flatten => graph.node("Flatten", &[], vec![int("axis", 1)]),
            // The evaluation graph: dropout is the identity.
            Layer::Dropout { .. } => {}
        }
    }
    if let Some(last) = graph.nodes.last_mut() {
        last.output = vec![OUTPUT.into()];
    }
    Ok(graph)
}

/// A batch norm in evaluation: `BatchNormalization` (training_mode 0) with its scale, shift,
/// running mean and running variance, and the trainer's epsilon.
fn batch_norm(graph: &mut Graph, index: usize, tensors: &super::LayerWeights) -> Result<()> {
    let Some([mean, var]) = &tensors.running else {
        return Err(crate::error::TrainerError::Serialize(format!(
            "layer {index} is a batch norm without running statistics"
        )));
    };
    let n = [tensors.weight.len()];
    let inputs = [
        graph.constant(format!("{index}.weight"), &n, &tensors.weight),
        graph.constant(format!("{index}.bias"), &n, &tensors.bias),
        graph.constant(format!("{index}.running_mean"), &n, mean),
        graph.constant(format!("{index}.running_var"), &n, var),
    ];
    let epsilon = AttributeProto {
        name: "epsilon".into(),
        f: crate::model::norm::BATCH_NORM_EPSILON as f32,
        r#type: ATTRIBUTE_FLOAT,
        ..Default::default()
    };
    graph.node("BatchNormalization", &inputs, vec![epsilon]);
    Ok(())
}

/// The file's bytes: an ONNX model (IR 7, opset 13) whose metadata carries the model's name,
/// classes and normalization.
pub fn encode(weights: &Weights, facts: &ModelFacts) -> Result<Vec<u8>> {
    let graph = build_graph(weights, facts)?;
    let size = Some(facts.image_size);
    let model = ModelProto {
        ir_version: IR_VERSION,
        producer_name: "trainer".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!(
            "{}: raw pixels in [0, 1], (N, {}, {}, {}), to logits over {} classes",
            facts.spec.display_name(),
            facts.spec.channels,
            facts.image_size,
            facts.image_size,
            facts.classes.len()
        ),
        graph: Some(GraphProto {
            node: graph.nodes,
            name: facts.spec.slug(),
            initializer: graph.initializers,
            input: vec![tensor_info(
                INPUT,
                &[None, Some(facts.spec.channels), size, size],
            )],
            output: vec![tensor_info(OUTPUT, &[None, Some(facts.classes.len())])],
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        metadata_props: facts
            .metadata()
            .into_iter()
            .map(|(key, value)| StringStringEntryProto { key, value })
            .collect(),
    };
    Ok(model.encode_to_vec())
}
