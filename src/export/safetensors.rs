//! `best_model.safetensors`: the model's weights under the names and layouts of the
//! equivalent PyTorch `nn.Sequential` ([`super::layout`]), written by burn-store's
//! safetensors store with its Burn-to-PyTorch adapter (linear weights transposed to
//! PyTorch's `(out, in)`), and the facts needed to use them as the file's metadata. A batch
//! norm's `num_batches_tracked`, one float in burn, is written as PyTorch keeps it: an int64
//! scalar.

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
        .map(|(module, index)| {
            (
                format!(
                    r"^{}\.(weight|bias|running_mean|running_var|num_batches_tracked)$",
                    module.replace('.', r"\.")
                ),
                format!("{index}.$1"),
            )
        })
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
    canonical(int64_counters(store.get_bytes().map_err(failed)?)?)
}

/// A file's JSON header (its length prefix read) and the data after it.
fn split(bytes: &[u8]) -> Result<(serde_json::Value, &[u8])> {
    let size = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| failed("no header"))? as usize;
    let header = bytes
        .get(8..8 + size)
        .ok_or_else(|| failed("short header"))?;
    let value = serde_json::from_slice(header).map_err(failed)?;
    Ok((value, &bytes[8 + size..]))
}

/// The file with every `num_batches_tracked` (burn: one F32) as PyTorch's int64 scalar (shape
/// `[]`); the other tensors keep their bytes, in their order, at new offsets.
fn int64_counters(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let (mut header, data) = split(&bytes)?;
    let Some(entries) = header.as_object_mut() else {
        return Err(failed("the header is not an object"));
    };
    if !entries.keys().any(|k| k.ends_with(".num_batches_tracked")) {
        return Ok(bytes);
    }
    let offsets = |entry: &serde_json::Value| -> Option<(usize, usize)> {
        let o = entry.get("data_offsets")?.as_array()?;
        Some((o.first()?.as_u64()? as usize, o.get(1)?.as_u64()? as usize))
    };
    let mut tensors: Vec<(String, usize, usize)> = Vec::new();
    for (name, entry) in entries.iter() {
        if name == "__metadata__" {
            continue;
        }
        let (start, end) = offsets(entry).ok_or_else(|| failed(format!("{name}: no offsets")))?;
        tensors.push((name.clone(), start, end));
    }
    tensors.sort_by_key(|t| t.1);
    let mut out_data = Vec::with_capacity(data.len());
    for (name, start, end) in tensors {
        let mut part = data
            .get(start..end)
            .ok_or_else(|| failed(format!("{name}: offsets past the data")))?
            .to_vec();
        let entry = &mut entries[&name];
        if name.ends_with(".num_batches_tracked") {
            let value = f32::from_le_bytes(
                part.as_slice()
                    .try_into()
                    .map_err(|_| failed(format!("{name}: not one f32")))?,
            );
            part = (value as i64).to_le_bytes().to_vec();
            entry["dtype"] = "I64".into();
            entry["shape"] = serde_json::json!([]);
        }
        let at = out_data.len();
        out_data.extend_from_slice(&part);
        entry["data_offsets"] = serde_json::json!([at, out_data.len()]);
    }
    with_header(&header, &out_data)
}

/// The same file with its JSON header's keys sorted: the safetensors crate writes the
/// metadata from a hash map, in a different order each run, and a rerun (or `trainer export`
/// of the same checkpoint) must give the same bytes. The header stays padded with spaces to
/// a multiple of 8 bytes, as the crate writes it; the tensors' offsets are relative to the
/// data, so they do not change.
fn canonical(bytes: Vec<u8>) -> Result<Vec<u8>> {
    // serde_json's map is a BTreeMap: serializing sorts every object's keys.
    let (value, data) = split(&bytes)?;
    with_header(&value, data)
}

/// A file of `header` (padded with spaces to a multiple of 8 bytes) and `data`.
fn with_header(header: &serde_json::Value, data: &[u8]) -> Result<Vec<u8>> {
    let mut text = serde_json::to_vec(header).map_err(failed)?;
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + text.len() + data.len());
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    Ok(out)
}
