//! `best_model.safetensors`: the model's weights under the names and layouts of the
//! equivalent PyTorch `nn.Sequential` ([`super::layout`]), written by burn-store's
//! safetensors store with its Burn-to-PyTorch adapter (linear weights transposed to
//! PyTorch's `(out, in)`), and the facts needed to use them as the file's metadata.

use burn::store::{BurnToPyTorchAdapter, KeyRemapper, ModuleSnapshot, SafetensorsStore};

use super::{ModelFacts, layout};
use crate::error::{Result, TrainerError};
use crate::model::Net;

fn failed(e: impl std::fmt::Display) -> TrainerError {
    TrainerError::Serialize(format!("safetensors export: {e}"))
}

/// The file's bytes.
pub fn encode(net: &Net, facts: &ModelFacts) -> Result<Vec<u8>> {
    let layers = facts.layers();
    let patterns: Vec<(String, String)> = layout::parameter_owners(&facts.spec, &layers)
        .into_iter()
        .map(|(module, index)| (format!(r"^{module}\.(weight|bias)$"), format!("{index}.$1")))
        .collect();
    let remapper = KeyRemapper::from_patterns(patterns).map_err(failed)?;
    let mut store = SafetensorsStore::from_bytes(None)
        .skip_enum_variants(true)
        .with_to_adapter(BurnToPyTorchAdapter)
        .remap(remapper);
    for (key, value) in facts.metadata() {
        store = store.metadata(key, value);
    }
    net.save_into(&mut store).map_err(failed)?;
    canonical(store.get_bytes().map_err(failed)?)
}

/// The same file with its JSON header's keys sorted: the safetensors crate writes the
/// metadata from a hash map, in a different order each run, and a rerun (or `trainer export`
/// of the same checkpoint) must give the same bytes. The header stays padded with spaces to
/// a multiple of 8 bytes, as the crate writes it; the tensors' offsets are relative to the
/// data, so they do not change.
fn canonical(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let size = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| failed("no header"))? as usize;
    let header = bytes
        .get(8..8 + size)
        .ok_or_else(|| failed("short header"))?;
    // serde_json's map is a BTreeMap: serializing sorts every object's keys.
    let value: serde_json::Value = serde_json::from_slice(header).map_err(failed)?;
    let mut text = serde_json::to_vec(&value).map_err(failed)?;
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + size..]);
    Ok(out)
}
