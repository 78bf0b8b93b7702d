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
    let description = checkpoint::meta_path(&args.checkpoint);
    let params = description
        .parent()
        .unwrap_or(Path::new("."))
        .join(&meta.params_file);
    for own in [&description, &params] {
        if same_file(&args.out, own) {
            return Err(TrainerError::bad_input(format!(
                "--out '{}' is the checkpoint's own '{}': writing there would destroy it; choose another file",
                args.out.display(),
                own.display()
            )));
        }
    }
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
                "; the Sequential is in the file's metadata (torch_sequential), normalization mean {:?} std {:?}",
                meta.normalization.mean.0, meta.normalization.std.0
            ),
            ExportFormat::Onnx => String::new(),
        }
    ));
    Ok(())
}

/// Whether `a` and `b` are one file: the same device and inode on Unix (also through links
/// and `..`), the same canonical path elsewhere (links resolved).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// An existing regular file is replaced only with --force; a folder, a device or a pipe
/// never; a path under a file is refused.
fn check_out(out: &Path, force: bool) -> Result<()> {
    if out.is_dir() {
        let shown = out.display().to_string();
        return Err(TrainerError::bad_input(format!(
            "--out '{shown}' is a folder: give the file to write (for example {}/{})",
            shown.trim_end_matches('/'),
            export::ONNX_FILE
        )));
    }
    if let Some(file) = out
        .ancestors()
        .skip(1)
        .find(|a| !a.as_os_str().is_empty() && a.exists() && !a.is_dir())
    {
        return Err(TrainerError::bad_input(format!(
            "--out '{}': '{}' is a file, not a folder",
            out.display(),
            file.display()
        )));
    }
    match std::fs::metadata(out) {
        Ok(m) if !m.is_file() => Err(TrainerError::bad_input(format!(
            "--out '{}' exists and is not a regular file (a device or a pipe): it is never replaced",
            out.display()
        ))),
        Ok(_) if !force => Err(TrainerError::bad_input(format!(
            "--out '{}' exists: add --force to replace it",
            out.display()
        ))),
        _ => Ok(()),
    }
}
