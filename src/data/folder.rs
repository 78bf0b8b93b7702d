//! Real image folders: one subfolder per class (sorted names are the classes), PNG, JPEG or
//! BMP files inside (any depth), grayscale or colour.
//!
//! Each image becomes one luminance channel or three (red, green, blue) as `--color` says
//! (`auto`: RGB when a training image has colour), values in [0, 1], resized to
//! `image_size` x `image_size` with bilinear (triangle) resampling, stretching when the
//! aspect ratio differs. The split is stratified and seeded, so every class appears in every
//! part; the normalization (mean and standard deviation per channel) comes from the training
//! part only.
//!
//! The walk never follows a link to a folder (a loop, or another class's files under this
//! class's name), reads each file once however many paths lead to it, and records every file
//! with its part and checksum (a [`DataManifest`]) for the checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use crate::checksum::checksum;
use crate::data::manifest::{DataManifest, ManifestFile};
use crate::data::split::{self, Part, minimum_per_class};
use crate::data::{Color, DataConfig, ImageDataset, Normalization, PerChannel, Sample, Splits};
use crate::error::{Result, TrainerError};

/// File extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

pub use super::image_file::RESAMPLING;
use super::image_file::{decode_image, has_colour};

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
    /// FNV-1a 64-bit of the file's bytes, hex.
    pub checksum: String,
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
    File,
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
        Entry::Folder | Entry::File => None,
        Entry::LinkToFolder => Some(FOLDER_LINK),
        Entry::Broken => Some("a broken link or an unreadable entry"),
        Entry::Hidden => {
            Some("hidden (its name starts with a dot): copies and metadata live there")
        }
        Entry::Pack => Some("a trainer evidence pack (it has a .trainer-run marker), not data"),
    }
}

fn entry_kind(path: &Path) -> Entry {
    if path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
    {
        return Entry::Hidden;
    }
    if path.join(PACK_MARKER).is_file() {
        return Entry::Pack;
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => match fs::metadata(path) {
            Ok(target) if target.is_dir() => Entry::LinkToFolder,
            Ok(_) => Entry::File,
            Err(_) => Entry::Broken,
        },
        Ok(m) if m.is_dir() => Entry::Folder,
        Ok(_) => Entry::File,
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

/// A file the walk found: its path and whether it was reached through a link to it.
struct Candidate {
    path: PathBuf,
    link: bool,
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
            Entry::File => out.push(Candidate {
                link: fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()),
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
            Entry::File => {
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
    Inode(u64, u64),
    Path(PathBuf),
}

fn file_identity(path: &Path) -> FileIdentity {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = fs::metadata(path) {
            return FileIdentity::Inode(m.dev(), m.ino());
        }
    }
    FileIdentity::Path(fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// Walks an image folder: its classes, and every image file once. A link to a folder is never
/// followed; two paths to one file (by canonical path) are read once, and one file in two
/// classes is refused.
pub fn list_folder(root: &Path) -> Result<Listing> {
    if !root.is_dir() {
        return Err(TrainerError::bad_input(format!(
            "--data '{}' is not a folder",
            root.display()
        )));
    }
    let mut skipped = Vec::new();
    let class_dirs = class_folders(root, &mut skipped)?;
    let classes: Vec<String> = class_dirs
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    check_class_count(root, &classes)?;
    // Every image file of every class, with what identifies the file itself.
    let mut found: Vec<(usize, Candidate, FileIdentity)> = Vec::new();
    for (label, dir) in class_dirs.iter().enumerate() {
        let mut candidates = Vec::new();
        files_under(dir, root, &mut candidates, &mut skipped)?;
        for candidate in candidates {
            if !is_image(&candidate.path) {
                skipped.push((
                    id_of(&candidate.path, root),
                    "not a PNG, JPEG or BMP file".to_string(),
                ));
                continue;
            }
            let identity = file_identity(&candidate.path);
            found.push((label, candidate, identity));
        }
    }
    // Which path reads each file: the first that is not a link, else the first link. One
    // file under two classes cannot have one label.
    let mut reader: HashMap<&FileIdentity, usize> = HashMap::new();
    for (i, (label, candidate, identity)) in found.iter().enumerate() {
        match reader.get(identity) {
            None => {
                reader.insert(identity, i);
            }
            Some(&first) if found[first].0 != *label => {
                return Err(TrainerError::bad_input(format!(
                    "'{}' and '{}' are the same file in two classes ('{}' and '{}'); a file can have one label only: remove one of them",
                    id_of(&found[first].1.path, root),
                    id_of(&candidate.path, root),
                    classes[found[first].0],
                    classes[*label]
                )));
            }
            Some(&first) if found[first].1.link && !candidate.link => {
                reader.insert(identity, i);
            }
            Some(_) => {}
        }
    }
    let mut files = Vec::new();
    for (i, (label, candidate, identity)) in found.iter().enumerate() {
        let id = id_of(&candidate.path, root);
        let chosen = reader[identity];
        if chosen != i {
            let first = id_of(&found[chosen].1.path, root);
            skipped.push((id, format!("the same file as '{first}' (read once)")));
            continue;
        }
        if crate::interrupt::requested() {
            return Err(TrainerError::Interrupted);
        }
        let bytes = fs::read(&candidate.path).map_err(|e| {
            TrainerError::bad_input(format!(
                "cannot read image '{}': {e} (remove or replace the file)",
                candidate.path.display()
            ))
        })?;
        files.push(FoundFile {
            id,
            label: *label,
            path: candidate.path.clone(),
            checksum: checksum(&bytes),
        });
    }
    let files = drop_copies(files, &classes, &mut skipped)?;
    Ok(Listing {
        classes,
        files,
        skipped,
    })
}

/// Drops byte-identical copies (a duplicated photo, a checkpoint copy of a notebook): the
/// first path of a class is read and the copies skipped, so a copy never sits in another
/// part than its original; the same bytes in two classes are refused (they cannot have one
/// label).
fn drop_copies(
    files: Vec<FoundFile>,
    classes: &[String],
    skipped: &mut Vec<(String, String)>,
) -> Result<Vec<FoundFile>> {
    let mut first_of: HashMap<String, Vec<usize>> = HashMap::new();
    let mut kept: Vec<FoundFile> = Vec::with_capacity(files.len());
    'files: for file in files {
        let earlier = first_of.entry(file.checksum.clone()).or_default();
        for &j in earlier.iter() {
            let original = &kept[j];
            if !same_bytes(&original.path, &file.path) {
                continue;
            }
            if original.label != file.label {
                return Err(TrainerError::bad_input(format!(
                    "'{}' and '{}' are the same image (identical bytes) in two classes ('{}' and '{}'); an image can have one label only: remove one of them",
                    original.id, file.id, classes[original.label], classes[file.label]
                )));
            }
            skipped.push((
                file.id.clone(),
                format!("a copy of '{}' (identical bytes): read once", original.id),
            ));
            continue 'files;
        }
        earlier.push(kept.len());
        kept.push(file);
    }
    Ok(kept)
}

/// Whether two files have the same bytes (after their checksums matched).
fn same_bytes(a: &Path, b: &Path) -> bool {
    matches!((fs::read(a), fs::read(b)), (Ok(x), Ok(y)) if x == y)
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

/// Reads `file` as a sample of `channels` channels, and the checksum of its bytes.
fn read_sample(file: &FoundFile, size: usize, channels: usize) -> Result<(Sample, String)> {
    let unreadable = |e: String| {
        TrainerError::bad_input(format!(
            "cannot read image '{}': {e} (remove or replace the file)",
            file.path.display()
        ))
    };
    let bytes = fs::read(&file.path).map_err(|e| unreadable(e.to_string()))?;
    let image = decode_image(&bytes, size, channels).map_err(unreadable)?;
    let sample = Sample {
        image,
        label: file.label,
        sample_id: file.id.clone(),
        recipe: None,
    };
    Ok((sample, checksum(&bytes)))
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
}

/// The channels `color` asks for; under `auto`, rgb when any training image has colour.
fn choose_color(color: Color, train: &[FoundFile]) -> Result<ColorChoice> {
    let (channels, why) = match color {
        Color::Gray => (
            1,
            "asked for (--color gray, or color = \"gray\" in a config)".to_string(),
        ),
        Color::Rgb => (
            3,
            "asked for (--color rgb, or color = \"rgb\" in a config)".to_string(),
        ),
        Color::Auto => {
            let mut coloured = 0;
            for file in train {
                if crate::interrupt::requested() {
                    return Err(TrainerError::Interrupted);
                }
                let bytes =
                    fs::read(&file.path).map_err(|e| TrainerError::io("reading", &file.path, e))?;
                if has_colour(&bytes).unwrap_or(false) {
                    coloured += 1;
                }
            }
            match coloured {
                0 => (
                    1,
                    format!(
                        "no training image has colour (--color auto, {} images)",
                        train.len()
                    ),
                ),
                n => (
                    3,
                    format!(
                        "{n} of {} training images have colour (--color auto)",
                        train.len()
                    ),
                ),
            }
        }
    };
    Ok(ColorChoice { channels, why })
}

/// Loads `config.folder` and splits it (stratified by class, see [`split::stratified`]): the
/// files are split, the colour chosen from the training part, then every image read.
pub fn folder_splits(config: &DataConfig) -> Result<Splits> {
    let Some(root) = &config.folder else {
        return Err(TrainerError::bad_input("no --data folder given"));
    };
    let listing = list_folder(root)?;
    let minimum = minimum_per_class(config.split);
    let mut by_class: Vec<Vec<FoundFile>> = vec![Vec::new(); listing.classes.len()];
    for file in &listing.files {
        by_class[file.label].push(file.clone());
    }
    for (label, files) in by_class.iter().enumerate() {
        if files.len() < minimum {
            return Err(TrainerError::bad_input(format!(
                "class '{}' has {} image(s); the split {},{},{} needs at least {minimum} per class so that each part gets one",
                listing.classes[label],
                files.len(),
                config.split[0],
                config.split[1],
                config.split[2]
            )));
        }
    }
    let files = split::stratified(&by_class, config.split, config.seed);
    let color = choose_color(config.color, &files[0])?;
    let mut sums = HashMap::new();
    let mut parts: [Vec<Sample>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for (part, files) in parts.iter_mut().zip(&files) {
        for file in files {
            if crate::interrupt::requested() {
                return Err(TrainerError::Interrupted);
            }
            let (sample, sum) = read_sample(file, config.image_size, color.channels)?;
            sums.insert(sample.sample_id.clone(), sum);
            part.push(sample);
        }
    }
    let manifest = DataManifest::new(
        Part::ALL
            .iter()
            .zip(&parts)
            .flat_map(|(&part, samples)| samples.iter().map(move |s| (part, s.sample_id.clone())))
            .map(|(part, file)| ManifestFile {
                checksum: sums.get(&file).cloned().unwrap_or_default(),
                file,
                part,
            })
            .collect(),
    );
    let normalization = training_statistics(&parts[0], color.channels);
    for part in parts.iter_mut() {
        for sample in part.iter_mut() {
            normalization.apply(&mut sample.image);
        }
    }
    let [train, val, test] = parts;
    let dataset = |samples| ImageDataset {
        samples,
        image_size: config.image_size,
        channels: color.channels,
    };
    Ok(Splits {
        train: dataset(train),
        val: dataset(val),
        test: dataset(test),
        classes: listing.classes,
        image_size: config.image_size,
        normalization,
        skipped: listing.skipped,
        manifest: Some(manifest),
        color,
    })
}

/// The checksum of every image file the walk reads from the folder as it is now, by path.
pub fn folder_now(root: &Path) -> Result<BTreeMap<String, String>> {
    let listing = list_folder(root)?;
    Ok(listing
        .files
        .into_iter()
        .map(|f| (f.id, f.checksum))
        .collect())
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
    if !changes.is_empty() {
        return Err(TrainerError::bad_input(format!(
            "the data folder '{}' changed since training: {}; evaluate tests the model on exactly the files training recorded, so it needs the folder as it was (or train again; predict classifies single images)",
            root.display(),
            changes.describe(5)
        )));
    }
    let mut samples = Vec::new();
    for file in manifest.part(Part::Test) {
        let class = file.file.split('/').next().unwrap_or_default();
        let label = classes.iter().position(|c| c == class).ok_or_else(|| {
            TrainerError::bad_input(format!(
                "the recorded test file '{}' is not in a class of the checkpoint",
                file.file
            ))
        })?;
        let found = FoundFile {
            id: file.file.clone(),
            label,
            path: root.join(&file.file),
            checksum: file.checksum.clone(),
        };
        let (mut sample, _) = read_sample(&found, image_size, channels)?;
        normalization.apply(&mut sample.image);
        samples.push(sample);
    }
    Ok(ImageDataset {
        samples,
        image_size,
        channels,
    })
}

/// Mean and standard deviation of every training value, channel by channel.
fn training_statistics(train: &[Sample], channels: usize) -> Normalization {
    let (mut means, mut stds) = (Vec::new(), Vec::new());
    for c in 0..channels {
        let plane = |s: &Sample| {
            let len = s.image.len() / channels;
            s.image[c * len..(c + 1) * len].to_vec()
        };
        let values: Vec<f64> = train
            .iter()
            .flat_map(|s| plane(s))
            .map(|v| v as f64)
            .collect();
        let count = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / count;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / count;
        means.push(mean as f32);
        stds.push((var.sqrt() as f32).max(1e-6));
    }
    Normalization {
        mean: PerChannel(means),
        std: PerChannel(stds),
    }
}
