//! The few lines of Python that use the exports, written for one model: the pack's README
//! carries them, so a reader copies working code rather than adapting an example.

use super::{ModelFacts, ONNX_FILE, SAFETENSORS_FILE, layout, onnx};

/// "[0.4]" / "[0.48, 0.45, 0.41]": a list Python reads.
fn list(values: &[f32]) -> String {
    let items: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[{}]", items.join(", "))
}

/// Markdown: the PyTorch and onnxruntime snippets for the files in `checkpoints` (a path as
/// the reader will type it).
pub fn markdown(facts: &ModelFacts, checkpoints: &str) -> String {
    let c = facts.spec.channels;
    let size = facts.image_size;
    let sequential = layout::python_sequential(&facts.layers());
    format!(
        "`{checkpoints}/{SAFETENSORS_FILE}` holds the weights under the names of this PyTorch \
Sequential (metadata: classes, normalization, the Sequential itself); `{checkpoints}/{ONNX_FILE}` \
is the whole model, normalization inside, from raw pixels in [0, 1] of shape (N, {c}, {size}, \
{size}) to logits over the classes {classes:?}.\n\n\
```python\nimport torch\nfrom torch import nn\nfrom safetensors.torch import load_file\n\n\
model = {sequential}\nmodel.load_state_dict(load_file(\"{checkpoints}/{SAFETENSORS_FILE}\"))\n\
model.eval()\nmean = torch.tensor({mean}).view(1, {c}, 1, 1)\nstd = torch.tensor({std}).view(1, {c}, 1, 1)\n\
# images: a float tensor (N, {c}, {size}, {size}) of pixels in [0, 1], already {size}x{size}\n\
# (trainer resizes other sizes with a triangle filter; another resize differs slightly)\n\
with torch.no_grad():\n    logits = model((images - mean) / std)\n```\n\n\
```python\nimport numpy as np\nimport onnxruntime as ort\n\n\
session = ort.InferenceSession(\"{checkpoints}/{ONNX_FILE}\")\n\
# images: a float32 array (N, {c}, {size}, {size}) of pixels in [0, 1]\n\
logits = session.run([\"{output}\"], {{\"{input}\": images.astype(np.float32)}})[0]\n```\n",
        classes = facts.classes,
        mean = list(&facts.normalization.mean.0),
        std = list(&facts.normalization.std.0),
        output = onnx::OUTPUT,
        input = onnx::INPUT,
    )
}
