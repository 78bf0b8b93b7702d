//! Checkpoints: the best model's parameters in burn's burnpack format
//! (`checkpoints/best_model.bpk`), and beside them `checkpoints/best_model.json`, which says
//! everything needed to rebuild and check the model from the checkpoint alone: format
//! version, model kind, classes, image size, data recipe, preprocessing, and the size and
//! checksum of the parameter file.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};
use serde::{Deserialize, Serialize};

pub use crate::checksum::checksum;
use crate::data::{DataConfig, DataManifest, Normalization};
use crate::error::{Result, TrainerError};
use crate::model::{CnnWidths, Head, HeadKind, ModelKind, ModelSpec, Net};

/// The format written by this version; loading refuses any other.
pub const FORMAT_VERSION: u32 = 1;
/// The tag every checkpoint description carries.
pub const FORMAT_TAG: &str = "trainer-checkpoint";
/// File names inside `checkpoints/`.
pub const PARAMS_FILE: &str = "best_model.bpk";
pub const META_FILE: &str = "best_model.json";

/// What `best_model.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CheckpointMeta {
    pub format: String,
    pub format_version: u32,
    pub model_name: String,
    pub model_kind: ModelKind,
    pub classes: Vec<String>,
    pub image_size: usize,
    /// The synthetic data recipe the model was trained on.
    pub data: DataConfig,
    /// What is done to an image before the model sees it, in words.
    pub preprocessing: String,
    /// The normalization applied to luminance values in [0, 1] (from the training part).
    pub normalization: Normalization,
    pub params_file: String,
    pub params_bytes: u64,
    /// FNV-1a 64-bit checksum of the parameter file, hex.
    pub params_checksum: String,
    /// FNV-1a 64-bit checksum of this description with this field empty, hex: an edited or
    /// corrupted description is refused instead of giving a silently wrong model.
    pub description_checksum: String,
    pub best_epoch: usize,
    pub test_accuracy: f64,
    pub trainer_version: String,
    /// For an image folder: every file with its part of the split and its checksum, so
    /// `evaluate` tests on the recorded test files and names any file that changed since.
    /// (Absent in checkpoints written before it existed, and for stripes.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_manifest: Option<DataManifest>,
    /// Input channels: 1 (grayscale) or 3 (RGB); absent means 1.
    #[serde(default = "one_channel", skip_serializing_if = "is_one_channel")]
    pub channels: usize,
    /// The CNN's widths, one per block; absent means the Tiny CNN's 8, 16.
    #[serde(default = "tiny_widths", skip_serializing_if = "is_tiny_widths")]
    pub cnn_widths: Vec<usize>,
    /// The CNN's head: gap or flatten; absent means gap (checkpoints before `--head`).
    #[serde(default, skip_serializing_if = "is_gap")]
    pub head: HeadKind,
    /// Units of the head's hidden layer; absent means 0 (none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hidden: usize,
    /// The head's training-time dropout; absent means 0.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub dropout: f64,
    /// BatchNorm after each convolution (`--batch-norm`); absent means none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub batch_norm: bool,
}

fn is_gap(head: &HeadKind) -> bool {
    *head == HeadKind::Gap
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_zero_f64(p: &f64) -> bool {
    *p == 0.0
}

fn one_channel() -> usize {
    1
}

fn is_one_channel(channels: &usize) -> bool {
    *channels == 1
}

fn tiny_widths() -> Vec<usize> {
    crate::model::spec::TINY_CNN_WIDTHS.to_vec()
}

fn is_tiny_widths(widths: &[usize]) -> bool {
    widths == crate::model::spec::TINY_CNN_WIDTHS
}

impl CheckpointMeta {
    /// The model's shape as the description records it, or why its widths are out of range.
    /// A normalization of another length than the channels (or a std that is not a positive
    /// number) is refused here too: preprocessing would index past it.
    pub fn spec(&self) -> std::result::Result<ModelSpec, String> {
        let widths = CnnWidths::new(&self.cnn_widths)?;
        let head = Head::new(self.head, self.hidden, self.dropout)?;
        let n = &self.normalization;
        if n.mean.0.len() != self.channels || n.std.0.len() != self.channels {
            return Err(format!(
                "its normalization has {} mean(s) and {} std(s) for {} channel(s)",
                n.mean.0.len(),
                n.std.0.len(),
                self.channels
            ));
        }
        if !n.mean.0.iter().all(|m| m.is_finite())
            || !n.std.0.iter().all(|s| s.is_finite() && *s > 0.0)
        {
            return Err("its normalization is not finite, or a std is not above 0".into());
        }
        Ok(ModelSpec {
            kind: self.model_kind,
            channels: self.channels,
            widths,
            head,
            batch_norm: self.batch_norm,
        })
    }
}

/// The checkpoint a run started from (`--init-from`), as its run_info records it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InitFrom {
    pub path: String,
    /// The checksum of its parameter file.
    pub params_checksum: String,
}

/// What a model was trained on, as its checkpoint records it.
#[derive(Clone, Copy, Debug)]
pub struct TrainedOn<'a> {
    pub classes: &'a [String],
    pub data: &'a DataConfig,
    /// The normalization applied to values in [0, 1], per channel.
    pub normalization: &'a Normalization,
    /// The folder's files (none for stripes).
    pub manifest: Option<&'a DataManifest>,
}

/// The parameter file and the description of a checkpoint of `net`.
pub fn encode(
    net: &Net,
    on: TrainedOn,
    channels: usize,
    best_epoch: usize,
    test_accuracy: f64,
) -> Result<(Vec<u8>, String)> {
    let spec = net.spec(channels);
    let TrainedOn {
        classes,
        data,
        normalization,
        manifest,
    } = on;
    let params = net
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| TrainerError::Serialize(format!("the checkpoint: {e}")))?
        .to_vec();
    let mut meta = CheckpointMeta {
        format: FORMAT_TAG.to_string(),
        format_version: FORMAT_VERSION,
        model_name: spec.display_name(),
        model_kind: spec.kind,
        classes: classes.to_vec(),
        image_size: data.image_size,
        data: data.clone(),
        preprocessing: preprocessing(data, normalization),
        normalization: normalization.clone(),
        params_file: PARAMS_FILE.to_string(),
        params_bytes: params.len() as u64,
        params_checksum: checksum(&params),
        description_checksum: String::new(),
        best_epoch,
        test_accuracy,
        trainer_version: env!("CARGO_PKG_VERSION").to_string(),
        data_manifest: manifest.cloned(),
        channels: spec.channels,
        cnn_widths: spec.widths.get(),
        head: spec.head.kind,
        hidden: spec.head.hidden,
        dropout: spec.head.dropout(),
        batch_norm: spec.batch_norm,
    };
    meta.description_checksum = description_checksum(&meta)?;
    let description =
        serde_json::to_string_pretty(&meta).map_err(|e| TrainerError::Serialize(e.to_string()))?;
    Ok((params, description))
}

/// The preprocessing of a data set, in words.
pub fn preprocessing(data: &DataConfig, n: &Normalization) -> String {
    let (mean, std) = n.describe();
    let formula = match n.channels() {
        1 => format!("(x - {mean}) / {std}"),
        _ => format!("(x - [{mean}]) / [{std}] per channel"),
    };
    match &data.folder {
        Some(_) => format!(
            "{} in [0, 1], resized to {s}x{s} ({}), then {formula} (mean and std of the training part)",
            match n.channels() {
                1 => "grayscale luminance",
                _ => "red, green, blue",
            },
            crate::data::image_file::RESAMPLING,
            s = data.image_size
        ),
        None => format!(
            "generated stripe values are the input; an image file is read as grayscale luminance in [0, 1], resized to {s}x{s}, then (x - {}) / {}",
            n.mean.0[0],
            n.std.0[0],
            s = data.image_size
        ),
    }
}

/// The checksum of a description, computed with its own checksum field empty.
pub fn description_checksum(meta: &CheckpointMeta) -> Result<String> {
    let mut blank = meta.clone();
    blank.description_checksum = String::new();
    let text = serde_json::to_string(&blank).map_err(|e| TrainerError::Serialize(e.to_string()))?;
    Ok(checksum(text.as_bytes()))
}

/// Where the checkpoint's description is, for a path naming the `.json`, the `.bpk`, the
/// `checkpoints/` folder or the pack folder.
/// The description file a `--checkpoint` path means (the `.json` itself, its `.bpk`, or a
/// pack folder).
pub fn meta_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        let inside = path.join(META_FILE);
        if inside.exists() {
            return inside;
        }
        return path.join("checkpoints").join(META_FILE);
    }
    if path.extension().is_some_and(|e| e == "bpk") {
        return path.with_extension("json");
    }
    path.to_path_buf()
}

/// Loads a checkpoint and rebuilds its model on `device`. Every problem (missing, truncated,
/// corrupted, wrong version, wrong model) is a [`TrainerError::Checkpoint`] naming it.
pub fn load(path: &Path, device: &Device) -> Result<(Net, CheckpointMeta)> {
    let meta_file = meta_path(path);
    let fail = |reason: String| TrainerError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let text = fs::read_to_string(&meta_file).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => fail(format!(
            "'{}' is not a checkpoint description (JSON text): give checkpoints/{META_FILE}",
            meta_file.display()
        )),
        _ => fail(format!("cannot read '{}': {e}", meta_file.display())),
    })?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| fail(format!("'{}' is not valid JSON: {e}", meta_file.display())))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT_TAG) {
        return Err(fail(format!(
            "'{}' is not a trainer checkpoint description",
            meta_file.display()
        )));
    }
    let version = value.get("format_version").and_then(|v| v.as_u64());
    if version != Some(FORMAT_VERSION as u64) {
        return Err(fail(format!(
            "format version {} is not supported (this trainer reads version {FORMAT_VERSION})",
            version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "missing".into())
        )));
    }
    let meta: CheckpointMeta = serde_json::from_value(value)
        .map_err(|e| fail(format!("description is incomplete: {e}")))?;
    if description_checksum(&meta)? != meta.description_checksum {
        return Err(fail(format!(
            "'{}' does not match its checksum (edited or corrupted)",
            meta_file.display()
        )));
    }
    let spec = meta
        .spec()
        .map_err(|e| fail(format!("its model shape is out of range: {e}")))?;
    if !(meta.channels == 1 || meta.channels == 3) {
        return Err(fail(format!(
            "{} input channels (1 or 3 are read)",
            meta.channels
        )));
    }
    if !spec.is_named(&meta.model_name) {
        return Err(fail(format!(
            "model name '{}' does not match its shape ({})",
            meta.model_name,
            spec.display_name()
        )));
    }
    if meta.classes.len() < 2 {
        return Err(fail("it names fewer than two classes".into()));
    }
    // The bounds training checks, so that every checkpoint training writes loads.
    meta.data
        .validate()
        .map_err(|e| fail(format!("its data settings are out of range: {e}")))?;
    if meta.image_size != meta.data.image_size {
        return Err(fail(format!(
            "image size {} does not match the data's {}",
            meta.image_size, meta.data.image_size
        )));
    }
    let folder = meta_file.parent().unwrap_or(Path::new("."));
    let params_file = folder.join(&meta.params_file);
    let bytes = fs::read(&params_file).map_err(|e| {
        fail(format!(
            "cannot read '{}', the parameter file its description names: {e}",
            params_file.display()
        ))
    })?;
    if bytes.len() as u64 != meta.params_bytes {
        return Err(fail(format!(
            "'{}' has {} bytes, the description says {} (truncated or replaced)",
            params_file.display(),
            bytes.len(),
            meta.params_bytes
        )));
    }
    if checksum(&bytes) != meta.params_checksum {
        return Err(fail(format!(
            "'{}' does not match its checksum (corrupted)",
            params_file.display()
        )));
    }
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| fail(format!("parameters cannot be decoded: {e}")))?;
    let template = Net::init(spec, meta.image_size, meta.classes.len(), 0, device);
    let net = template
        .try_load_record(record)
        .map_err(|e| fail(format!("parameters do not fit a {}: {e}", meta.model_name)))?;
    Ok((net, meta))
}
