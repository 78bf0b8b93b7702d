//! `trainer export`: the ONNX or safetensors file of any checkpoint, older packs included
//! (the pack writes both for its best model; this writes either for a checkpoint alone).

use std::path::Path;

use crate::cli::ExportArgs;
use crate::console::say;
use crate::device::{self, BackendChoice};
use crate::error::{Result, TrainerError};
use crate::export::{self, ExportFormat, ModelFacts};
use crate::model::checkpoint;
use crate::pack::write_atomic;

/// Checks the target, loads and checks the checkpoint, writes the file whole or not at all.
pub fn main(args: ExportArgs) -> Result<()> {
    check_out(&args.out, args.force)?;
    let opened = device::open(BackendChoice::Cpu)?;
    let (net, meta) = checkpoint::load(&args.checkpoint, &opened.device)?;
    let facts = ModelFacts::from_meta(&meta).map_err(|reason| TrainerError::Checkpoint {
        path: args.checkpoint.clone(),
        reason,
    })?;
    let bytes = export::encode(&net, &facts, args.format)?;
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| TrainerError::io("creating", parent, e))?;
    }
    write_atomic(&args.out, &bytes)?;
    say(&format!(
        "wrote {} ({}, {} bytes): {} on {} channel(s) at {}x{}, {} classes{}",
        args.out.display(),
        match args.format {
            ExportFormat::Onnx => "ONNX opset 13, raw pixels in [0, 1] to logits",
            ExportFormat::Safetensors => "safetensors, PyTorch nn.Sequential names",
        },
        bytes.len(),
        facts.spec.display_name(),
        facts.spec.channels,
        meta.image_size,
        meta.image_size,
        meta.classes.len(),
        match args.format {
            ExportFormat::Safetensors => format!(
                "; the Sequential is in the file's metadata (torch_sequential), normalization {}",
                serde_json::to_string(&meta.normalization).unwrap_or_default()
            ),
            ExportFormat::Onnx => String::new(),
        }
    ));
    Ok(())
}

/// An existing file is replaced only with --force; a folder never.
fn check_out(out: &Path, force: bool) -> Result<()> {
    if out.is_dir() {
        return Err(TrainerError::bad_input(format!(
            "--out '{}' is a folder: give the file to write (for example {}/{})",
            out.display(),
            out.display(),
            export::ONNX_FILE
        )));
    }
    if out.exists() && !force {
        return Err(TrainerError::bad_input(format!(
            "--out '{}' exists: add --force to replace it",
            out.display()
        )));
    }
    Ok(())
}
