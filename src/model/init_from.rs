//! `--init-from`: a model starts from a checkpoint's weights instead of fresh ones
//! (fine-tuning). The shape must be the checkpoint's; another class count, or other class
//! names, keeps everything but the last layer, which starts fresh.

use std::collections::HashSet;
use std::path::Path;

use burn::tensor::Device;

use super::checkpoint::{self, CheckpointMeta, InitFrom};
use super::{ModelKind, Net};
use crate::data::Splits;
use crate::error::{Result, TrainerError};

/// A model started from a checkpoint.
#[derive(Debug)]
pub struct Started {
    pub net: Net,
    /// Set when the last layer was re-initialised (another class count), in words.
    pub note: Option<String>,
    pub from: InitFrom,
}

/// Reads the checkpoint at `path` (its description, its parameters, their checksums).
pub fn read(path: &Path, device: &Device) -> Result<(Net, CheckpointMeta)> {
    checkpoint::load(path, device)
}

/// What a run trains on, as `--init-from` checks a checkpoint against it.
pub struct RunData<'a> {
    pub image_size: usize,
    pub channels: usize,
    /// The class names, in the order of the model's outputs.
    pub classes: &'a [String],
}

/// `fresh` (a new model of the run) with the weights of the checkpoint `loaded`: refused
/// (bad input, naming the difference) when the shapes differ; with another class count, or
/// the same count under other names (the checkpoint's output rows would answer for classes
/// they never learned), the last layer stays `fresh`'s.
pub fn start_from(
    fresh: Net,
    loaded: Net,
    meta: &CheckpointMeta,
    path: &Path,
    run: RunData,
) -> Result<Started> {
    let (image_size, channels) = (run.image_size, run.channels);
    let loaded = with_run_dropout(loaded, &fresh);
    let (want, have) = (fresh.spec(channels), loaded.spec(meta.channels));
    if want != have || meta.image_size != image_size {
        return Err(TrainerError::bad_input(format!(
            "--init-from '{}': the checkpoint is a {} on {} channel(s) of {s}x{s} images; this run trains a {} on {} channel(s) of {i}x{i}: the model's shape must be the same",
            path.display(),
            have.display_name(),
            have.channels,
            want.display_name(),
            want.channels,
            s = meta.image_size,
            i = image_size,
        )));
    }
    let from = described(path, meta);
    let classes = fresh.classes();
    let why = if loaded.classes() != classes {
        format!(
            "the checkpoint has {} classes and this run {classes}",
            loaded.classes()
        )
    } else if meta.classes.as_slice() != run.classes {
        format!(
            "the checkpoint's classes are {} and this run's {}",
            listed(&meta.classes),
            listed(run.classes)
        )
    } else {
        return Ok(Started {
            net: loaded,
            note: None,
            from,
        });
    };
    let note = format!(
        "--init-from: {why}: {}'s last layer starts fresh, the rest from the checkpoint",
        want.display_name()
    );
    let net = match (loaded, fresh) {
        (Net::Cnn(mut kept), Net::Cnn(new)) => {
            kept.classifier = new.classifier;
            Net::Cnn(kept)
        }
        // The baseline is only its last layer.
        (_, new) => new,
    };
    Ok(Started {
        net,
        note: Some(note),
        from,
    })
}

/// `loaded` with the run's head dropout: dropout has no parameters, so a checkpoint trained
/// with another (or none) fine-tunes with the run's `--dropout`.
fn with_run_dropout(loaded: Net, fresh: &Net) -> Net {
    match (loaded, fresh) {
        (Net::Cnn(mut kept), Net::Cnn(new))
            if kept.head.kind == new.head.kind && kept.head.hidden == new.head.hidden =>
        {
            kept.head = new.head;
            Net::Cnn(kept)
        }
        (loaded, _) => loaded,
    }
}

/// The checkpoint at `path`, as the run records it: its absolute path and its parameters'
/// checksum.
pub fn described(path: &Path, meta: &CheckpointMeta) -> InitFrom {
    InitFrom {
        path: std::path::absolute(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string(),
        params_checksum: meta.params_checksum.clone(),
    }
}

/// Whether a run's model of `kind` starts from a checkpoint of `meta`'s kind.
pub fn applies(meta: &CheckpointMeta, kind: ModelKind) -> bool {
    meta.model_kind == kind
}

/// How many of a run's test images the checkpoint it starts from trained or validated on:
/// those make the run's test accuracy overstate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TestOverlap {
    /// Test images the checkpoint trained or validated on.
    pub seen: usize,
    /// The run's test images.
    pub test: usize,
}

/// The run's test images (of `splits`) that the checkpoint `meta` trained or validated on:
/// byte-identical files for image folders (the checkpoint's list of files), the same
/// generated images for stripes (its data settings, regenerated). None where it cannot be
/// known (a folder checkpoint written before checkpoints listed their files).
pub fn test_overlap(meta: &CheckpointMeta, splits: &Splits) -> Result<Option<TestOverlap>> {
    let test = splits.test.len();
    let seen = match (&splits.manifest, &meta.data_manifest, &meta.data.folder) {
        (Some(run), Some(theirs), _) => run.tests_trained_by(theirs),
        (Some(_), None, None) | (None, Some(_), _) => 0,
        (None, None, None) => {
            let theirs = crate::data::load_splits(&meta.data)?;
            let trained: HashSet<(u64, u32, u32)> = [&theirs.train, &theirs.val]
                .iter()
                .flat_map(|part| part.samples.iter())
                .filter_map(|s| s.recipe.map(|r| (r.seed, r.class, r.index)))
                .collect();
            splits
                .test
                .samples
                .iter()
                .filter_map(|s| s.recipe)
                .filter(|r| trained.contains(&(r.seed, r.class, r.index)))
                .count()
        }
        (_, None, Some(_)) => return Ok(None),
    };
    Ok(Some(TestOverlap { seen, test }))
}

/// Refuses (bad input) a run whose test images the checkpoint at `path` trained or
/// validated on, unless `allowed` (`--allow-test-overlap`): its test accuracy would
/// overstate how the model does on new images.
pub fn check_test_overlap(overlap: Option<TestOverlap>, path: &Path, allowed: bool) -> Result<()> {
    match overlap {
        Some(o) if o.seen > 0 && !allowed => Err(TrainerError::bad_input(format!(
            "--init-from '{}': {} of this run's {} test images were the checkpoint's training or validation images, so its test accuracy would overstate; fine-tune on images the checkpoint never saw, keep the checkpoint's own split (the same folder, --seed, --split and --max-per-class), or give --allow-test-overlap to accept it",
            path.display(),
            o.seen,
            o.test
        ))),
        _ => Ok(()),
    }
}

/// Up to four class names, then how many more.
fn listed(classes: &[String]) -> String {
    let shown: Vec<&str> = classes.iter().take(4).map(String::as_str).collect();
    match classes.len().saturating_sub(4) {
        0 => shown.join(", "),
        more => format!("{}, ... ({more} more)", shown.join(", ")),
    }
}
