//! The test set a checkpoint records, read again: the recorded files of an image folder (a
//! folder that changed since is refused, naming the files), or the stripe images its data
//! settings regenerate.

use std::path::{Path, PathBuf};

use super::Loaded;
use crate::data::{self, ImageDataset};
use crate::error::{Result, TrainerError};
use crate::model::checkpoint::CheckpointMeta;

/// What `trainer evaluate` scores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The test set the checkpoint records; its folder given again when it moved.
    Recorded { moved: Option<PathBuf> },
    /// A labelled folder of the user's (its test/ when it is split already).
    Folder(PathBuf),
}

/// What `--data` means for this checkpoint: none, or the folder it was trained on (as it was,
/// perhaps moved), is its recorded test set; any other folder is scored whole.
pub fn target(meta: &CheckpointMeta, data: Option<&Path>) -> Result<Target> {
    let Some(dir) = data else {
        return Ok(Target::Recorded { moved: None });
    };
    if !dir.is_dir() {
        return Err(TrainerError::bad_input(format!(
            "--data '{}' is not a folder",
            dir.display()
        )));
    }
    Ok(if is_recorded_folder(meta, dir) {
        Target::Recorded {
            moved: Some(dir.to_path_buf()),
        }
    } else {
        Target::Folder(dir.to_path_buf())
    })
}

/// Whether `dir` holds every file the checkpoint recorded, unchanged (its training folder,
/// moved or not, perhaps with files added or a `--max-per-class` run's unsampled ones).
fn is_recorded_folder(meta: &CheckpointMeta, dir: &Path) -> bool {
    match (&meta.data.folder, &meta.data_manifest) {
        (Some(_), Some(manifest)) => data::folder::folder_now(dir)
            .is_ok_and(|now| manifest.changes(&now).keeps_the_recorded_files()),
        _ => false,
    }
}

/// The recorded test set of the loaded checkpoint, from `moved` when its folder moved.
pub fn test_set(loaded: &mut Loaded, moved: Option<&Path>) -> Result<ImageDataset> {
    let meta = &mut loaded.meta;
    match (&meta.data.folder, moved) {
        (Some(_), Some(moved)) => meta.data.folder = Some(moved.to_path_buf()),
        (Some(folder), None) if !folder.is_dir() => {
            return Err(TrainerError::bad_input(format!(
                "the checkpoint was trained on the image folder '{}', which is gone; if it moved, give its new place with --data (predict classifies single images)",
                folder.display()
            )));
        }
        _ => {}
    }
    recorded(meta)
}

fn recorded(meta: &CheckpointMeta) -> Result<ImageDataset> {
    match (&meta.data.folder, &meta.data_manifest) {
        (Some(folder), Some(manifest)) => {
            if !manifest.is_consistent() {
                return Err(TrainerError::bad_input(
                    "the checkpoint's list of data files does not match its digest (edited or corrupted)",
                ));
            }
            data::folder::recorded_test_set(
                folder,
                manifest,
                &meta.classes,
                meta.image_size,
                &meta.normalization,
            )
        }
        // Written before checkpoints listed the files: the folder is split again as then.
        _ => Ok(data::load_splits(&meta.data)?.test),
    }
}
