//! Walking real image folders: one subfolder per class (sorted names are the classes), PNG,
//! JPEG or BMP files inside (any depth), grayscale or colour; a pre-split folder is walked
//! split folder by split folder (see [`layout`]). How the files become a data set is
//! [`super::load`].
//!
//! The walk never follows a link to a folder (a loop, or another class's files under this
//! class's name), reads each file once however many paths lead to it, and reads nothing
//! itself. The checkpoint records every file with its part and checksum (a [`DataManifest`]),
//! which [`recorded_test_set`] checks before reading the test part again.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::checksum::checksum;
use crate::data::layout::{self, Layout};
use crate::data::manifest::DataManifest;
use crate::data::split::Part;
use crate::data::{Color, ImageDataset, Normalization, Sample, decode, stats};
use crate::error::{Result, TrainerError};

/// File extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

pub use super::image_file::RESAMPLING;

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The file that marks a folder as a trainer run (an evidence pack, a bench or parity
/// report): safe for a later run to replace, and never read as data. The pack layer names it
/// `pack::MARKER`.
pub const PACK_MARKER: &str = ".trainer-run";

/// Why a link to a folder is skipped, as the skipped list says it.
pub const FOLDER_LINK: &str =
    "a link to a folder: not followed (it could loop, or bring files of another class or split)";

/// One image file the walk found.
#[derive(Clone, Debug)]
pub struct FoundFile {
    /// The path relative to the folder, `/`-separated; it starts with the class folder.
    pub id: String,
    pub label: usize,
    pub path: PathBuf,
}

/// What a walk of an image folder found: the classes, every image file once, and what it
/// skipped with the reason.
#[derive(Clone, Debug)]
pub struct Listing {
    pub classes: Vec<String>,
    pub files: Vec<FoundFile>,
    pub skipped: Vec<(String, String)>,
}

/// The id of `path` under `root`: relative, `/`-separated.
fn id_of(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// What an entry is, without following a link except to say what it points at.
enum Entry {
    Folder,
    /// A file, reached through a link to it or not, and what identifies the file itself.
    File {
        link: bool,
        identity: FileIdentity,
    },
    LinkToFolder,
    Broken,
    /// A name starting with a dot: editor and notebook copies (`.ipynb_checkpoints`), macOS
    /// metadata (`._photo.png`), version control.
    Hidden,
    /// A folder marked as a trainer run: an evidence pack, never data.
    Pack,
}

/// Why an entry that is not read is skipped, as the skipped list says it.
fn skip_reason(entry: &Entry) -> Option<&'static str> {
    match entry {
        Entry::Folder | Entry::File { .. } => None,
        Entry::LinkToFolder => Some(FOLDER_LINK),
        Entry::Broken => Some("a broken link or an unreadable entry"),
        Entry::Hidden => {
            Some("hidden (its name starts with a dot): copies and metadata live there")
        }
        Entry::Pack => Some("a trainer evidence pack (it has a .trainer-run marker), not data"),
    }
}

/// What `path` is, with one look at it (two for a link).
fn entry_kind(path: &Path) -> Entry {
    if path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    {
        return Entry::Hidden;
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => match fs::metadata(path) {
            Ok(target) if target.is_dir() => Entry::LinkToFolder,
            Ok(target) => Entry::File {
                link: true,
                identity: file_identity(&target, path),
            },
            Err(_) => Entry::Broken,
        },
        // Only a folder can be a pack: files cost no second look.
        Ok(m) if m.is_dir() && path.join(PACK_MARKER).is_file() => Entry::Pack,
        Ok(m) if m.is_dir() => Entry::Folder,
        Ok(m) => Entry::File {
            link: false,
            identity: file_identity(&m, path),
        },
        Err(_) => Entry::Broken,
    }
}

/// The entries of `dir`, sorted.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| TrainerError::io("reading folder", dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    Ok(entries)
}

/// A file the walk found: its path, whether it was reached through a link to it, and what
/// identifies the file itself.
struct Candidate {
    path: PathBuf,
    link: bool,
    identity: FileIdentity,
}

/// Every file under `dir` (links to files included, links to folders skipped), sorted.
fn files_under(
    dir: &Path,
    root: &Path,
    out: &mut Vec<Candidate>,
    skipped: &mut Vec<(String, String)>,
) -> Result<()> {
    for path in sorted_entries(dir)? {
        match entry_kind(&path) {
            Entry::Folder => files_under(&path, root, out, skipped)?,
            Entry::File { link, identity } => out.push(Candidate {
                link,
                identity,
                path,
            }),
            other => skipped.push((
                id_of(&path, root),
                skip_reason(&other).unwrap_or_default().to_string(),
            )),
        }
    }
    Ok(())
}

/// The class folders of `root`: its subfolders, sorted. Hidden folders, evidence packs and
/// links to folders are skipped (and listed), as anywhere below.
fn class_folders(root: &Path, skipped: &mut Vec<(String, String)>) -> Result<Vec<PathBuf>> {
    let mut class_dirs = Vec::new();
    for path in sorted_entries(root)? {
        match entry_kind(&path) {
            Entry::Folder => class_dirs.push(path),
            Entry::File { .. } => {
                skipped.push((id_of(&path, root), "not inside a class folder".to_string()))
            }
            other => skipped.push((
                id_of(&path, root),
                skip_reason(&other).unwrap_or_default().to_string(),
            )),
        }
    }
    Ok(class_dirs)
}

/// What makes two paths the same file: the device and inode on Unix (hard links and links
/// alike), the canonical path elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum FileIdentity {
    #[cfg_attr(not(unix), allow(dead_code))]
    Inode(u64, u64),
    #[cfg_attr(unix, allow(dead_code))]
    Path(PathBuf),
}

/// The identity of the file at `path`, whose metadata (of the file itself, not of a link to
/// it) is `m`.
fn file_identity(m: &fs::Metadata, path: &Path) -> FileIdentity {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let _ = path;
        FileIdentity::Inode(m.dev(), m.ino())
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        FileIdentity::Path(fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
    }
}

/// Walks an image folder of class folders: its classes, and every image file once, with ids
/// relative to `root`. A link to a folder is never followed; two paths to one file of a class
/// are read once (one file under two classes is left to the duplicate check, which leaves it
/// out). Nothing is read yet.
pub fn list_folder(root: &Path) -> Result<Listing> {
    list_classes(root, root)
}

/// [`list_folder`] of `dir`, with ids relative to `ids_from` (the `--data` folder, of which
/// `dir` may be a split folder such as `train/`).
pub fn list_classes(dir: &Path, ids_from: &Path) -> Result<Listing> {
    if !dir.is_dir() {
        return Err(TrainerError::bad_input(format!(
            "--data '{}' is not a folder",
            dir.display()
        )));
    }
    let mut skipped = Vec::new();
    let class_dirs = class_folders(dir, &mut skipped)?;
    for entry in skipped.iter_mut() {
        entry.0 = id_of(&dir.join(&entry.0), ids_from);
    }
    let classes: Vec<String> = class_dirs
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    check_class_count(dir, &classes)?;
    // Every image file of every class, with what identifies the file itself.
    let mut found: Vec<(usize, Candidate, FileIdentity)> = Vec::new();
    for (label, class_dir) in class_dirs.iter().enumerate() {
        let mut candidates = Vec::new();
        files_under(class_dir, ids_from, &mut candidates, &mut skipped)?;
        for candidate in candidates {
            if !is_image(&candidate.path) {
                skipped.push((
                    id_of(&candidate.path, ids_from),
                    "not a PNG, JPEG or BMP file".to_string(),
                ));
                continue;
            }
            let identity = candidate.identity.clone();
            found.push((label, candidate, identity));
        }
    }
    // Which path reads each file of a class: the first that is not a link, else the first
    // link.
    let mut reader: HashMap<(&FileIdentity, usize), usize> = HashMap::new();
    for (i, (label, candidate, identity)) in found.iter().enumerate() {
        match reader.get(&(identity, *label)) {
            None => {
                reader.insert((identity, *label), i);
            }
            Some(&first) if found[first].1.link && !candidate.link => {
                reader.insert((identity, *label), i);
            }
            Some(_) => {}
        }
    }
    let mut files = Vec::new();
    for (i, (label, candidate, identity)) in found.iter().enumerate() {
        let id = id_of(&candidate.path, ids_from);
        let chosen = reader[&(identity, *label)];
        if chosen != i {
            let first = id_of(&found[chosen].1.path, ids_from);
            skipped.push((id, format!("the same file as '{first}' (read once)")));
            continue;
        }
        files.push(FoundFile {
            id,
            label: *label,
            path: candidate.path.clone(),
        });
    }
    Ok(Listing {
        classes,
        files,
        skipped,
    })
}

fn check_class_count(root: &Path, classes: &[String]) -> Result<()> {
    match classes.len() {
        0 => Err(TrainerError::bad_input(format!(
            "--data '{}' has no class folders: put each class's images in a subfolder named after the class",
            root.display()
        ))),
        1 => Err(TrainerError::bad_input(format!(
            "--data '{}' has one class folder ('{}'); a classifier needs at least two",
            root.display(),
            classes[0]
        ))),
        _ => Ok(()),
    }
}

/// How a folder's images are read, and why, for the console and run_info.json.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ColorChoice {
    /// 1 (gray) or 3 (rgb).
    pub channels: usize,
    pub why: String,
}

impl ColorChoice {
    /// "rgb (3 channels): 48 of 72 training images have colour (--color auto)", for the
    /// console and reports.
    pub fn describe(&self) -> String {
        let channels = match self.channels {
            1 => "gray (1 channel)",
            _ => "rgb (3 channels)",
        };
        format!("{channels}: {}", self.why)
    }

    /// The stripe images: one channel.
    pub fn stripes() -> ColorChoice {
        ColorChoice {
            channels: 1,
            why: "the stripe images are grayscale".into(),
        }
    }

    /// The channels `color` asks for; under `auto`, rgb when any of the `train` training
    /// images (`coloured` of them) has colour.
    pub fn choose(color: Color, coloured: usize, train: usize) -> ColorChoice {
        let (channels, why) = match color {
            Color::Gray => (
                1,
                "asked for (--color gray, or color = \"gray\" in a config)".to_string(),
            ),
            Color::Rgb => (
                3,
                "asked for (--color rgb, or color = \"rgb\" in a config)".to_string(),
            ),
            Color::Auto => match coloured {
                0 => (
                    1,
                    format!("no training image has colour (--color auto, {train} images)"),
                ),
                n => (
                    3,
                    format!("{n} of {train} training images have colour (--color auto)"),
                ),
            },
        };
        ColorChoice { channels, why }
    }
}

/// Every image file of `root` as the loader walks it (each split folder of a pre-split
/// folder, or the class folders), with ids relative to `root`.
pub fn walk(layout: &Layout) -> Result<Vec<Listing>> {
    match layout {
        Layout::Flat { root } => Ok(vec![list_folder(root)?]),
        Layout::PreSplit { train, val, test } => {
            let root = train.parent().unwrap_or(train.as_path());
            std::iter::once(train)
                .chain(val.as_ref())
                .chain(std::iter::once(test))
                .map(|dir| list_classes(dir, root))
                .collect()
        }
    }
}

/// The checksum of every image file the walk reads from the folder as it is now, by path
/// (read in parallel; "unreadable" for a file that cannot be read).
pub fn folder_now(root: &Path) -> Result<BTreeMap<String, String>> {
    let files: Vec<FoundFile> = walk(&layout::detect(root)?)?
        .into_iter()
        .flat_map(|l| l.files)
        .collect();
    Ok(files
        .par_iter()
        .map(|f| {
            let sum = fs::read(&f.path)
                .map(|b| checksum(&b))
                .unwrap_or_else(|_| "unreadable".to_string());
            (f.id.clone(), sum)
        })
        .collect())
}

/// The class of a recorded file: its first folder, or its second in a pre-split folder.
fn class_of(file: &str, pre_split: bool) -> &str {
    let mut parts = file.split('/');
    if pre_split {
        parts.next();
    }
    parts.next().unwrap_or_default()
}

/// The test part a folder run recorded, read again from `root` after checking that the
/// folder is what the run read: a changed folder is a bad input naming the files.
pub fn recorded_test_set(
    root: &Path,
    manifest: &DataManifest,
    classes: &[String],
    image_size: usize,
    normalization: &Normalization,
) -> Result<ImageDataset> {
    let channels = normalization.channels();
    let changes = manifest.changes(&folder_now(root)?);
    if !changes.keeps_the_recorded_files() {
        return Err(TrainerError::bad_input(format!(
            "the data folder '{}' changed since training: {}; evaluate tests the model on exactly the files training recorded, so it needs the folder as it was (or train again; predict classifies single images)",
            root.display(),
            changes.describe(5)
        )));
    }
    let pre_split = layout::detect(root)?.is_pre_split();
    let files: Vec<&crate::data::manifest::ManifestFile> = manifest.part(Part::Test).collect();
    let samples = files
        .par_iter()
        .map(|file| {
            let class = class_of(&file.file, pre_split);
            let label = classes.iter().position(|c| c == class).ok_or_else(|| {
                TrainerError::bad_input(format!(
                    "the recorded test file '{}' is not in a class of the checkpoint",
                    file.file
                ))
            })?;
            let path = root.join(&file.file);
            let unreadable = |e: String| {
                TrainerError::bad_input(format!(
                    "cannot read image '{}': {e} (remove or replace the file)",
                    path.display()
                ))
            };
            let bytes = fs::read(&path).map_err(|e| unreadable(e.to_string()))?;
            let decoded = decode::decode(&bytes, image_size).map_err(unreadable)?;
            let pixels = decoded.pixels.into_channels(channels);
            Ok(Sample {
                image: stats::normalized(&pixels, normalization).into(),
                label,
                sample_id: file.file.clone(),
                recipe: None,
            })
        })
        .collect::<Result<Vec<Sample>>>()?;
    Ok(ImageDataset {
        samples,
        image_size,
        channels,
    })
}
