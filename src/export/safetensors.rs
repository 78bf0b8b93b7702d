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
    store.get_bytes().map_err(failed)
}
