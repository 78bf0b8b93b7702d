//! What an image-folder run was trained on: every file with its part of the split and a
//! checksum of its bytes. The checkpoint records it, so `evaluate` tests the model on the
//! files it was tested on, and says which files changed when the folder is no longer what
//! it was (instead of blaming the model for a different test set).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::checksum::checksum;
use crate::data::split::Part;

/// One file of the folder (path relative to it, `/`-separated, starting with the class).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub file: String,
    pub part: Part,
    /// FNV-1a 64-bit of the file's bytes, hex.
    pub checksum: String,
}

/// A file of the folder that the run left out (an unreadable file skipped, a copy merged or
/// with conflicting labels): recorded so that the folder as it was still matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeftOutFile {
    pub file: String,
    /// FNV-1a 64-bit of the file's bytes, hex ("unreadable" when it could not be read).
    pub checksum: String,
}

/// Every file a folder run read, sorted by path, and a digest of the whole list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataManifest {
    /// FNV-1a 64-bit over every "part checksum file" line of `files` (then every
    /// "left_out checksum file" line of `left_out`), hex.
    pub digest: String,
    pub files: Vec<ManifestFile>,
    /// Files walked but not used, sorted by path (none in manifests written before them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<LeftOutFile>,
}

/// How a folder differs from the manifest of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FolderChanges {
    pub removed: Vec<String>,
    pub added: Vec<String>,
    pub changed: Vec<String>,
}

impl FolderChanges {
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty() && self.changed.is_empty()
    }

    /// Whether every recorded file is still there, unchanged: files added since (or left out
    /// by `--max-per-class`, which the manifest does not list) do not touch the recorded parts.
    pub fn keeps_the_recorded_files(&self) -> bool {
        self.removed.is_empty() && self.changed.is_empty()
    }

    /// "2 removed (a/1.png, a/2.png), 1 changed (b/3.png)": at most `shown` names a kind.
    pub fn describe(&self, shown: usize) -> String {
        let mut parts = Vec::new();
        for (what, files) in [
            ("removed", &self.removed),
            ("added", &self.added),
            ("changed", &self.changed),
        ] {
            if files.is_empty() {
                continue;
            }
            let mut names: Vec<&str> = files.iter().take(shown).map(|f| f.as_str()).collect();
            let more = files.len().saturating_sub(shown);
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            names.sort();
            parts.push(format!(
                "{} {what} ({}{tail})",
                files.len(),
                names.join(", ")
            ));
        }
        parts.join(", ")
    }
}

impl DataManifest {
    /// The manifest of `files`, sorted by path.
    pub fn new(files: Vec<ManifestFile>) -> DataManifest {
        DataManifest::with_left_out(files, Vec::new())
    }

    /// The manifest of `files` and of the files `left_out`, each sorted by path.
    pub fn with_left_out(
        mut files: Vec<ManifestFile>,
        mut left_out: Vec<LeftOutFile>,
    ) -> DataManifest {
        files.sort_by(|a, b| a.file.cmp(&b.file));
        left_out.sort_by(|a, b| a.file.cmp(&b.file));
        DataManifest {
            digest: digest(&files, &left_out),
            files,
            left_out,
        }
    }

    /// Whether the digest still matches the list (an edited manifest does not).
    pub fn is_consistent(&self) -> bool {
        digest(&self.files, &self.left_out) == self.digest
    }

    /// The files of one part, in path order.
    pub fn part(&self, part: Part) -> impl Iterator<Item = &ManifestFile> {
        self.files.iter().filter(move |f| f.part == part)
    }

    /// The checksums of the files the run trained or validated on (every part but test): an
    /// image with one of them is no test of a model that started from the run.
    pub fn trained_checksums(&self) -> std::collections::HashSet<&str> {
        self.files
            .iter()
            .filter(|f| f.part != Part::Test)
            .map(|f| f.checksum.as_str())
            .collect()
    }

    /// How many of this run's test files are byte-identical to a file `earlier` trained or
    /// validated on.
    pub fn tests_trained_by(&self, earlier: &DataManifest) -> usize {
        let seen = earlier.trained_checksums();
        self.part(Part::Test)
            .filter(|f| seen.contains(f.checksum.as_str()))
            .count()
    }

    /// How `now` (path -> checksum of the folder as it is) differs from this manifest.
    pub fn changes(&self, now: &BTreeMap<String, String>) -> FolderChanges {
        let mut changes = FolderChanges::default();
        for file in &self.files {
            match now.get(&file.file) {
                None => changes.removed.push(file.file.clone()),
                Some(sum) if *sum != file.checksum => changes.changed.push(file.file.clone()),
                Some(_) => {}
            }
        }
        let recorded: std::collections::HashSet<&str> = self
            .files
            .iter()
            .map(|f| f.file.as_str())
            .chain(self.left_out.iter().map(|f| f.file.as_str()))
            .collect();
        changes.added = now
            .keys()
            .filter(|k| !recorded.contains(k.as_str()))
            .cloned()
            .collect();
        changes
    }
}

fn digest(files: &[ManifestFile], left_out: &[LeftOutFile]) -> String {
    let mut text = String::new();
    for f in files {
        let part = match f.part {
            Part::Train => "train",
            Part::Val => "val",
            Part::Test => "test",
        };
        text.push_str(&format!("{part} {} {}\n", f.checksum, f.file));
    }
    for f in left_out {
        text.push_str(&format!("left_out {} {}\n", f.checksum, f.file));
    }
    checksum(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, part: Part, sum: &str) -> ManifestFile {
        ManifestFile {
            file: name.into(),
            part,
            checksum: sum.into(),
        }
    }

    #[test]
    fn changes_name_removed_added_and_changed_files() {
        let manifest = DataManifest::new(vec![
            file("a/1.png", Part::Train, "1"),
            file("a/2.png", Part::Test, "2"),
            file("b/3.png", Part::Val, "3"),
        ]);
        assert!(manifest.is_consistent());
        let now: BTreeMap<String, String> = [("a/1.png", "1"), ("b/3.png", "x"), ("b/4.png", "4")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let changes = manifest.changes(&now);
        assert_eq!(changes.removed, ["a/2.png"]);
        assert_eq!(changes.added, ["b/4.png"]);
        assert_eq!(changes.changed, ["b/3.png"]);
        assert_eq!(
            changes.describe(5),
            "1 removed (a/2.png), 1 added (b/4.png), 1 changed (b/3.png)"
        );
    }
}
