//! How an image folder is laid out: one folder of class subfolders (`Flat`), or split the way
//! public datasets are downloaded, `train/` and `test/` (and optionally `val/`, `valid/` or
//! `validation/`) each holding the same class subfolders (`PreSplit`).
//!
//! The split folders are recognised by name, case-insensitively (`train`/`training`,
//! `test`/`testing`, `val`/`valid`/`validation`), so a downloaded folder never trains a
//! "train versus test" classifier by surprise.

use std::path::{Path, PathBuf};

use crate::error::{Result, TrainerError};

/// The folder names of each split, lower case.
const TRAIN_NAMES: [&str; 2] = ["train", "training"];
const TEST_NAMES: [&str; 2] = ["test", "testing"];
const VAL_NAMES: [&str; 3] = ["val", "valid", "validation"];

/// Where the images of a `--data` folder are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `root/<class>/...`: the split is drawn from all of it.
    Flat { root: PathBuf },
    /// `root/train/<class>/...`, `root/test/<class>/...`, maybe `root/val/<class>/...`: the
    /// splits are given (validation drawn from train when there is no val folder).
    PreSplit {
        train: PathBuf,
        val: Option<PathBuf>,
        test: PathBuf,
    },
}

impl Layout {
    /// Whether the folder comes split.
    pub fn is_pre_split(&self) -> bool {
        matches!(self, Layout::PreSplit { .. })
    }

    /// "train/ and test/ (validation drawn from train/)" or "one folder of class folders", for
    /// the console and the reports.
    pub fn describe(&self) -> String {
        match self {
            Layout::Flat { .. } => "one folder of class folders".to_string(),
            Layout::PreSplit { train, val, test } => match val {
                Some(val) => format!(
                    "pre-split: {}, {} and {}",
                    folder_name(train),
                    folder_name(val),
                    folder_name(test)
                ),
                None => format!(
                    "pre-split: {} and {} (validation drawn from {})",
                    folder_name(train),
                    folder_name(test),
                    folder_name(train)
                ),
            },
        }
    }
}

/// "train/": a split folder's name, for messages.
fn folder_name(path: &Path) -> String {
    format!(
        "{}/",
        path.file_name().unwrap_or_default().to_string_lossy()
    )
}

/// The subfolder of `root` whose lower-case name is one of `names` (the first in sorted
/// order when several are). Hidden names never match.
fn split_folder(root: &Path, names: &[&str]) -> Result<Option<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| TrainerError::io("reading folder", root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_real_folder(p))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| names.contains(&n.to_ascii_lowercase().as_str()))
        })
        .collect();
    found.sort();
    Ok(found.into_iter().next())
}

/// A folder that is not a link to one (links to folders are never followed).
fn is_real_folder(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir())
}

/// The class folder names of a split folder: its subfolders that are not hidden, not a
/// link, and not a trainer evidence pack, sorted.
pub fn class_names(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| TrainerError::io("reading folder", dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_real_folder(p) && !p.join(super::folder::PACK_MARKER).is_file())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names)
}

/// How `root` is laid out. A folder with `train/` and `test/` is pre-split, and every split
/// must hold the same class folders (exit 2 naming the classes that differ); `train/` with a
/// validation folder but no `test/` is refused too, since which part to test on is unclear.
pub fn detect(root: &Path) -> Result<Layout> {
    if !root.is_dir() {
        return Err(TrainerError::bad_input(format!(
            "--data '{}' is not a folder",
            root.display()
        )));
    }
    let train = split_folder(root, &TRAIN_NAMES)?;
    let test = split_folder(root, &TEST_NAMES)?;
    let val = split_folder(root, &VAL_NAMES)?;
    let (train, test) = match (train, test) {
        (Some(train), Some(test)) => (train, test),
        (Some(train), None) if val.is_some() => {
            return Err(TrainerError::bad_input(format!(
                "--data '{}' has {} and a validation folder but no test/ folder: rename the folder to test on to 'test' (validation is then drawn from train/, or kept when it is named val/)",
                root.display(),
                train.display()
            )));
        }
        (None, None) if val.is_none() => {
            return Ok(Layout::Flat {
                root: root.to_path_buf(),
            });
        }
        (train, test) => return Err(half_split(root, [&train, &val, &test])),
    };
    let layout = Layout::PreSplit { train, val, test };
    check_same_classes(&layout)?;
    Ok(layout)
}

/// The refusal of a folder with some split folders but not both train/ and test/: it is
/// neither pre-split nor a folder of classes (a "test versus val" classifier otherwise).
fn half_split(root: &Path, found: [&Option<PathBuf>; 3]) -> TrainerError {
    let names = |want: bool| -> Vec<&str> {
        ["train/", "val/", "test/"]
            .into_iter()
            .zip(found)
            .filter(|(_, f)| f.is_some() == want)
            .map(|(n, _)| n)
            .filter(|n| want || *n != "val/")
            .collect()
    };
    let present: Vec<String> = found
        .iter()
        .filter_map(|f| f.as_ref().map(|p| folder_name(p)))
        .collect();
    TrainerError::bad_input(format!(
        "--data '{}' has {} but no {}: a pre-split folder needs train/ and test/ (val/ optional), each holding the class folders; a folder of class folders has no folder named like a split (train, training, val, valid, validation, test, testing)",
        root.display(),
        present.join(" and "),
        names(false).join(" or ")
    ))
}

/// The top-level folders of a pre-split folder that are not its splits (not hidden, not a
/// link, not an evidence pack): never read, so each is named in a warning.
pub fn stray_folders(layout: &Layout) -> Result<Vec<String>> {
    let Layout::PreSplit { train, val, test } = layout else {
        return Ok(Vec::new());
    };
    let root = train.parent().unwrap_or(train.as_path());
    let splits = [Some(train), val.as_ref(), Some(test)];
    Ok(class_names(root)?
        .into_iter()
        .filter(|n| !splits.iter().flatten().any(|s| s.ends_with(n)))
        .collect())
}

/// Every split of a pre-split folder holds the same class folders.
fn check_same_classes(layout: &Layout) -> Result<()> {
    let Layout::PreSplit { train, val, test } = layout else {
        return Ok(());
    };
    let reference = class_names(train)?;
    for other in std::iter::once(test).chain(val.as_ref()) {
        let classes = class_names(other)?;
        if classes == reference {
            continue;
        }
        let missing: Vec<&str> = reference
            .iter()
            .filter(|c| !classes.contains(c))
            .map(|c| c.as_str())
            .collect();
        let extra: Vec<&str> = classes
            .iter()
            .filter(|c| !reference.contains(c))
            .map(|c| c.as_str())
            .collect();
        let mut why = Vec::new();
        if !missing.is_empty() {
            why.push(format!(
                "{} lacks {}",
                folder_name(other),
                missing.join(", ")
            ));
        }
        if !extra.is_empty() {
            why.push(format!(
                "{} has {} that {} lacks",
                folder_name(other),
                extra.join(", "),
                folder_name(train)
            ));
        }
        return Err(TrainerError::bad_input(format!(
            "the splits of '{}' hold different class folders: {}; each split needs the same classes (train/: {})",
            train.parent().unwrap_or(train.as_path()).display(),
            why.join("; "),
            reference.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder under the temporary folder holding `dirs`.
    fn folder(name: &str, dirs: &[&str]) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("trainer-layout-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in dirs {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        root
    }

    #[test]
    fn class_folders_are_flat() {
        let root = folder("flat", &["cat", "dog"]);
        assert!(!detect(&root).unwrap().is_pre_split());
    }

    #[test]
    fn train_and_test_are_splits_with_an_optional_validation_folder() {
        let root = folder("split", &["train/a", "train/b", "test/a", "test/b"]);
        match detect(&root).unwrap() {
            Layout::PreSplit { val: None, .. } => {}
            other => panic!("{other:?}"),
        }
        let root = folder(
            "val",
            &[
                "Train/a", "Train/b", "Test/a", "Test/b", "valid/a", "valid/b",
            ],
        );
        match detect(&root).unwrap() {
            Layout::PreSplit { val: Some(v), .. } => assert!(v.ends_with("valid")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn different_class_sets_are_refused_naming_the_classes() {
        let root = folder("differ", &["train/a", "train/b", "test/a", "test/c"]);
        let err = detect(&root).unwrap_err().to_string();
        assert!(err.contains("test/ lacks b"), "{err}");
        assert!(err.contains("test/ has c"), "{err}");
    }

    #[test]
    fn some_split_folders_without_train_and_test_are_refused() {
        let root = folder("valtest", &["val/a", "val/b", "test/a", "test/b"]);
        let err = detect(&root).unwrap_err().to_string();
        assert!(err.contains("has val/ and test/ but no train/"), "{err}");
        let root = folder("trainonly", &["train/a", "train/b"]);
        let err = detect(&root).unwrap_err().to_string();
        assert!(err.contains("has train/ but no test/"), "{err}");
        assert!(
            err.contains("pre-split folder needs train/ and test/"),
            "{err}"
        );
        let root = folder("mixed", &["cat", "dog", "Testing"]);
        let err = detect(&root).unwrap_err().to_string();
        assert!(err.contains("has Testing/ but no train/"), "{err}");
    }

    #[test]
    fn a_folder_beside_the_splits_is_named() {
        let root = folder("stray", &["train/a", "test/a", "extra/a", ".git"]);
        let layout = detect(&root).unwrap();
        assert_eq!(stray_folders(&layout).unwrap(), ["extra"]);
    }
}
