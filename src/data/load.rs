//! An image folder as a data set: walked ([`folder`]), sampled (`--max-per-class`), every
//! file read and decoded once in parallel ([`decode`]), unreadable files refused or skipped,
//! byte-identical copies resolved ([`duplicates`]), split (the given split folders, or
//! stratified and seeded), the colour chosen from the training part, the normalization
//! streamed from it ([`stats`]), and the pixels held once, normalized, as f32.
//!
//! Each image becomes one luminance channel or three (red, green, blue) as `--color` says
//! (`auto`: RGB when a training image has colour), resized to `image_size` x `image_size`
//! with bilinear (triangle) resampling, stretching when the aspect ratio differs.

use std::path::PathBuf;
use std::sync::Arc;

use rayon::prelude::*;
use serde::Serialize;

use crate::console::Progress;
use crate::data::decode::{self, Decoded};
use crate::data::duplicates::{self, Fingerprint, Member};
use crate::data::folder::{self, ColorChoice, FoundFile};
use crate::data::issues::{DataIssue, IssueKind};
use crate::data::layout::{self, Layout};
use crate::data::manifest::{DataManifest, LeftOutFile, ManifestFile};
use crate::data::split::{self, Part, minimum_per_class, split_counts};
use crate::data::stats::{self, ChannelSums};
use crate::data::{DEFAULT_SPLIT, DataConfig, ImageDataset, Sample, Splits};
use crate::error::{Result, TrainerError};
use crate::rng;

/// Unreadable files named in the refusal.
const NAMED_BAD_FILES: usize = 10;

/// Where one part of the split came from and its size, for the console and the reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SplitOrigin {
    pub part: Part,
    pub images: usize,
    /// "test/", "20% of train/, stratified by class, seed 42"...
    pub from: String,
}

/// What loading an image folder found, beyond the data: its layout, where each part came
/// from, and the modes and sizes decoded.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FolderSummary {
    /// Whether the folder came split (train/ and test/).
    pub pre_split: bool,
    pub layout: String,
    pub origins: Vec<SplitOrigin>,
    /// "60000 images read: 60000 rgb 8-bit; 0 resized to 32x32".
    pub decoded: String,
    /// A warning when a class keeps fewer than [`crate::data::MIN_TRAIN_PER_CLASS`] training
    /// images after the split ("class '3' keeps 1 training image ...").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub few_training_images: Option<String>,
}

/// One image file the walk found, with the split folder it is in (0 train or a folder of
/// classes, 1 val, 2 test).
struct Found {
    file: FoundFile,
    rank: u8,
}

/// One image file read and decoded.
struct Item {
    file: FoundFile,
    rank: u8,
    fingerprint: Fingerprint,
    decoded: Decoded,
}

/// Loads `config.folder` as train, val and test parts (see the module's text).
pub fn folder_splits(config: &DataConfig, progress: &dyn Progress) -> Result<Splits> {
    let Some(root) = &config.folder else {
        return Err(TrainerError::bad_input("no --data folder given"));
    };
    let layout = layout::detect(root)?;
    check_flags(config, &layout)?;
    let listings = folder::walk(&layout)?;
    let classes = listings[0].classes.clone();
    let mut skipped: Vec<(String, String)> =
        listings.iter().flat_map(|l| l.skipped.clone()).collect();
    for stray in layout::stray_folders(&layout)? {
        skipped.push((
            format!("{stray}/"),
            "a folder beside the split folders is not read (a pre-split folder holds only train/, test/ and val/)".to_string(),
        ));
    }
    let val_given = matches!(layout, Layout::PreSplit { val: Some(_), .. });
    let found = found_files(listings, &layout, val_given);
    let found = max_per_class(found, config);
    let paths: Vec<_> = found.iter().map(|f| f.file.path.clone()).collect();
    let read = decode::read_all(&paths, config.image_size, progress)?;
    let (items, mut issues, mut left_out) = readable(found, read, config.skip_bad_images)?;
    let copies: Vec<Member> = items
        .iter()
        .map(|i| Member {
            id: &i.file.id,
            label: i.file.label,
            rank: i.rank,
            fingerprint: &i.fingerprint,
        })
        .collect();
    let resolution = duplicates::resolve(&copies, &classes, config.strict_data)?;
    let mut kept = Vec::with_capacity(items.len());
    for (item, keep) in items.into_iter().zip(resolution.keep) {
        if keep {
            kept.push(item);
        } else {
            left_out.push(LeftOutFile {
                file: item.file.id.clone(),
                checksum: item.fingerprint.checksum.clone(),
            });
        }
    }
    issues.extend(resolution.issues);
    issues.sort_by(|a, b| a.path.cmp(&b.path));
    let parts = assign_parts(&kept, &classes, config, &layout)?;
    let origins = origins(&layout, &parts, config);
    let summary = FolderSummary {
        pre_split: layout.is_pre_split(),
        layout: layout.describe(),
        origins,
        decoded: decode::summary(kept.iter().map(|i| &i.decoded), config.image_size),
        few_training_images: few_training_images(&kept, &parts[0], &classes, config, &layout),
    };
    let manifest = manifest(&kept, &parts, left_out);
    let mut splits = into_splits(kept, parts, config, classes)?;
    splits.skipped = skipped;
    splits.manifest = Some(manifest);
    splits.issues = issues;
    splits.folder = Some(summary);
    Ok(splits)
}

/// `--split` has no say over a pre-split folder (its splits are given): refused when given on
/// the command line, whatever its value, or any other split than the default; and
/// `--val-fraction` is a share of train/ drawn as validation, so refused alike where nothing
/// is drawn (a folder of class folders, a pre-split folder with its own val/).
fn check_flags(config: &DataConfig, layout: &Layout) -> Result<()> {
    let folder = config
        .folder
        .as_deref()
        .unwrap_or(std::path::Path::new(""))
        .display();
    if layout.is_pre_split() && (config.split_given || config.split != DEFAULT_SPLIT) {
        let [a, b, c] = config.split;
        let (split, _) = config.setting_name(
            "split",
            &format!("{a},{b},{c}"),
            &format!("[{a}, {b}, {c}]"),
        );
        return Err(TrainerError::bad_input(format!(
            "{split} cannot apply: '{folder}' is already split ({}); use --val-fraction to draw validation from train/, or point --data at a folder of class folders",
            layout.describe()
        )));
    }
    let f = config.val_fraction;
    let fraction_set = config.val_fraction_given || f != crate::data::DEFAULT_VAL_FRACTION;
    // A config file's val_fraction is named as the file's key, a flag as the flag.
    let (fraction, name) = config.setting_name("val_fraction", &f.to_string(), &f.to_string());
    match layout {
        Layout::Flat { .. } if fraction_set => Err(TrainerError::bad_input(format!(
            "{fraction} cannot apply: '{folder}' is a folder of class folders, split by --split; {name} applies to a pre-split folder (train/ and test/ inside)"
        ))),
        Layout::PreSplit { val: Some(_), .. } if fraction_set => {
            Err(TrainerError::bad_input(format!(
                "{fraction} cannot apply: '{folder}' has its own validation folder ({}); leave {name} out, or move that folder away to draw validation from train/",
                layout.describe()
            )))
        }
        Layout::PreSplit { val: None, .. } if !(f.is_finite() && f > 0.0 && f < 1.0) => {
            Err(TrainerError::bad_input(format!(
                "{name} must be between 0 and 1 (exclusive), got {f}"
            )))
        }
        _ => Ok(()),
    }
}

/// Every file the walk found with its split folder's rank, labels by the train folder's
/// classes (the layout checked that every split holds the same ones).
fn found_files(listings: Vec<folder::Listing>, layout: &Layout, val_given: bool) -> Vec<Found> {
    let ranks: Vec<u8> = match (layout, val_given) {
        (Layout::Flat { .. }, _) => vec![0],
        (Layout::PreSplit { .. }, true) => vec![0, 1, 2],
        (Layout::PreSplit { .. }, false) => vec![0, 2],
    };
    listings
        .into_iter()
        .zip(ranks)
        .flat_map(|(listing, rank)| {
            listing
                .files
                .into_iter()
                .map(move |file| Found { file, rank })
        })
        .collect()
}

/// `--max-per-class N`: at most N files of each class from each folder, drawn with the seed
/// (kept in walk order).
fn max_per_class(found: Vec<Found>, config: &DataConfig) -> Vec<Found> {
    let Some(limit) = config.max_per_class else {
        return found;
    };
    let mut groups: std::collections::BTreeMap<(u8, usize), Vec<usize>> = Default::default();
    for (i, f) in found.iter().enumerate() {
        groups.entry((f.rank, f.file.label)).or_default().push(i);
    }
    let mut chosen = vec![false; found.len()];
    for ((rank, label), members) in groups {
        let item = 5000 + (rank as u32) * 100_000 + label as u32;
        let order = rng::permutation(
            members.len(),
            rng::key(config.seed, rng::stream::SPLIT, item),
        );
        for &k in order.iter().take(limit) {
            chosen[members[k]] = true;
        }
    }
    found
        .into_iter()
        .zip(chosen)
        .filter_map(|(f, keep)| keep.then_some(f))
        .collect()
}

/// The files that decoded; unreadable ones refuse the run (naming the first ten) unless
/// `skip` (`--skip-bad-images`), when each is an issue and recorded as left out.
fn readable(
    found: Vec<Found>,
    read: Vec<decode::ReadFile>,
    skip: bool,
) -> Result<(Vec<Item>, Vec<DataIssue>, Vec<LeftOutFile>)> {
    let (mut items, mut issues, mut left_out) = (Vec::new(), Vec::new(), Vec::new());
    for (f, r) in found.into_iter().zip(read) {
        match (r.decoded, r.fingerprint) {
            (Ok(decoded), Some(fingerprint)) => items.push(Item {
                file: f.file,
                rank: f.rank,
                fingerprint,
                decoded,
            }),
            (Err(why), fingerprint) => {
                left_out.push(LeftOutFile {
                    file: f.file.id.clone(),
                    checksum: fingerprint.map_or("unreadable".into(), |p| p.checksum),
                });
                issues.push(DataIssue {
                    path: f.file.id,
                    issue: IssueKind::Unreadable,
                    detail: why,
                });
            }
            (Ok(_), None) => {}
        }
    }
    if !issues.is_empty() && !skip {
        let named: Vec<String> = issues
            .iter()
            .take(NAMED_BAD_FILES)
            .map(|i| format!("'{}' ({})", i.path, i.detail))
            .collect();
        return Err(TrainerError::bad_input(format!(
            "{} image file(s) cannot be read{}: {}; remove or replace them, or pass --skip-bad-images to train on the rest (each skipped file is listed in outputs/data_issues.csv)",
            issues.len(),
            if issues.len() > NAMED_BAD_FILES {
                ", the first ten"
            } else {
                ""
            },
            named.join(", ")
        )));
    }
    Ok((items, issues, left_out))
}

/// The train, val and test parts as indices into `items`: a folder of classes split by
/// `--split` (stratified, seeded); a pre-split folder's given folders, validation drawn from
/// train by `--val-fraction` when there is no val folder.
fn assign_parts(
    items: &[Item],
    classes: &[String],
    config: &DataConfig,
    layout: &Layout,
) -> Result<[Vec<usize>; 3]> {
    let by_class = |rank: u8| {
        let mut by: Vec<Vec<usize>> = vec![Vec::new(); classes.len()];
        for (i, item) in items.iter().enumerate().filter(|(_, i)| i.rank == rank) {
            by[item.file.label].push(i);
        }
        by
    };
    match layout {
        Layout::Flat { .. } => {
            let by = by_class(0);
            let share = format!(
                "--split {},{},{}",
                config.split[0], config.split[1], config.split[2]
            );
            check_per_class(
                &by,
                classes,
                minimum_per_class(config.split),
                &share,
                config.max_per_class,
            )?;
            Ok(split::stratified(&by, config.split, config.seed))
        }
        Layout::PreSplit {
            train: train_dir,
            val,
            test: test_dir,
        } => {
            let train = by_class(0);
            let test = by_class(2);
            let given_val = val.as_ref().map(|dir| (by_class(1), dir));
            let mut parts = vec![(&train, train_dir), (&test, test_dir)];
            parts.extend(given_val.as_ref().map(|(by, dir)| (by, *dir)));
            check_every_part(&parts, classes)?;
            let test: Vec<usize> = test.concat();
            if val.is_some() {
                return Ok([train.concat(), by_class(1).concat(), test]);
            }
            let shares = [1.0 - config.val_fraction, config.val_fraction, 0.0];
            let minimum = (2..10_000)
                .find(|&n| split_counts(n, shares)[..2].iter().all(|&c| c >= 1))
                .unwrap_or(10_000);
            let share = format!("--val-fraction {}", config.val_fraction);
            check_per_class(&train, classes, minimum, &share, config.max_per_class)?;
            let [train, val, _] = split::stratified(&train, shares, config.seed);
            Ok([train, val, test])
        }
    }
}

/// Every class has images in every given split folder (the README's promise), unless it
/// has none in any: an empty class folder, or one whose images were all left out as copies.
fn check_every_part(parts: &[(&Vec<Vec<usize>>, &PathBuf)], classes: &[String]) -> Result<()> {
    for (label, class) in classes.iter().enumerate() {
        let empty: Vec<String> = parts
            .iter()
            .filter(|(by, _)| by[label].is_empty())
            .map(|(_, dir)| format!("{}/", dir.file_name().unwrap_or_default().to_string_lossy()))
            .collect();
        if !empty.is_empty() && empty.len() < parts.len() {
            return Err(TrainerError::bad_input(format!(
                "class '{class}' has no image to use in {} (its folder there is empty, or all its images there were left out as byte-identical copies); every class needs images in every split folder",
                empty.join(" and ")
            )));
        }
    }
    Ok(())
}

/// Every class has at least `minimum` images to split.
fn check_per_class(
    by_class: &[Vec<usize>],
    classes: &[String],
    minimum: usize,
    share: &str,
    max_per_class: Option<usize>,
) -> Result<()> {
    for (label, files) in by_class.iter().enumerate() {
        if files.len() < minimum {
            let why = match max_per_class {
                Some(n) if n < minimum => format!(" (--max-per-class {n} leaves too few)"),
                _ if files.is_empty() => " (its folder is empty, or all its images were left out: unreadable, or byte-identical copies of images in other classes or splits)".to_string(),
                _ => String::new(),
            };
            return Err(TrainerError::bad_input(format!(
                "class '{}' has {} image(s) to split{why}; {share} needs at least {minimum} per class so that each part gets one",
                classes[label],
                files.len()
            )));
        }
    }
    Ok(())
}

/// The warning for a class left with fewer than [`crate::data::MIN_TRAIN_PER_CLASS`]
/// training images (`train`: the training part's indices into `items`), naming the class with
/// the fewest and what left them so few.
fn few_training_images(
    items: &[Item],
    train: &[usize],
    classes: &[String],
    config: &DataConfig,
    layout: &Layout,
) -> Option<String> {
    let minimum = crate::data::MIN_TRAIN_PER_CLASS;
    let mut counts = vec![0usize; classes.len()];
    for &i in train {
        counts[items[i].file.label] += 1;
    }
    let (label, &fewest) = counts.iter().enumerate().min_by_key(|(_, n)| **n)?;
    if fewest >= minimum {
        return None;
    }
    let thin = counts.iter().filter(|&&n| n < minimum).count();
    let cause = match layout {
        Layout::Flat { .. } => format!(
            "--split {},{},{} leaves too few to learn from; give training a larger share",
            config.split[0], config.split[1], config.split[2]
        ),
        Layout::PreSplit { val: None, .. } => format!(
            "--val-fraction {} leaves too few to learn from; lower it",
            config.val_fraction
        ),
        Layout::PreSplit { .. } => "its train/ folder holds too few to learn from".to_string(),
    };
    let capped = match config.max_per_class {
        Some(n) => format!(" (or raise --max-per-class {n})"),
        None => String::new(),
    };
    Some(format!(
        "class '{}' keeps {fewest} training image(s) ({thin} of {} classes keep fewer than {minimum}): {cause}{capped}, or add images",
        classes[label],
        classes.len()
    ))
}

/// The percentage `part` of `whole` makes, as the console shows it ("95.2%").
fn percent(part: usize, whole: usize) -> String {
    percent_of(part as f64 / whole.max(1) as f64)
}

/// A share as the console shows it: to one decimal, "20%" or "95.2%".
fn percent_of(share: f64) -> String {
    format!("{}%", (share * 1000.0).round() / 10.0)
}

/// The flag that set a share, with the share it asked for when the real one (each class
/// rounded on its own) differs from it on the console: "--val-fraction 0.999 asks 99.9%".
fn asked(flag: &str, asked: f64, real: &str) -> String {
    match percent_of(asked) == real {
        true => flag.to_string(),
        false => format!("{flag} asks {}, each class rounded", percent_of(asked)),
    }
}

/// Where each part came from, in words, with the share each part really got.
fn origins(layout: &Layout, parts: &[Vec<usize>; 3], config: &DataConfig) -> Vec<SplitOrigin> {
    let total: usize = parts.iter().map(Vec::len).sum();
    let from: [String; 3] = match layout {
        Layout::Flat { .. } => std::array::from_fn(|i| {
            let real = percent(parts[i].len(), total);
            format!(
                "{real} of each class folder ({}, stratified, seed {})",
                asked("--split", config.split[i], &real),
                config.seed
            )
        }),
        Layout::PreSplit { train, val, test } => {
            let name = |p: &std::path::Path| {
                format!("{}/", p.file_name().unwrap_or_default().to_string_lossy())
            };
            match val {
                Some(val) => [name(train), name(val), name(test)],
                None => {
                    let real = percent(parts[1].len(), parts[0].len() + parts[1].len());
                    [
                        format!("{} less the validation part", name(train)),
                        format!(
                            "{real} of {} ({}, stratified, seed {})",
                            name(train),
                            asked("--val-fraction", config.val_fraction, &real),
                            config.seed
                        ),
                        name(test),
                    ]
                }
            }
        }
    };
    Part::ALL
        .iter()
        .zip(parts)
        .zip(from)
        .map(|((&part, indices), from)| SplitOrigin {
            part,
            images: indices.len(),
            from,
        })
        .collect()
}

/// Every file read with its part and checksum, and those left out.
fn manifest(items: &[Item], parts: &[Vec<usize>; 3], left_out: Vec<LeftOutFile>) -> DataManifest {
    let files = Part::ALL
        .iter()
        .zip(parts)
        .flat_map(|(&part, indices)| {
            indices.iter().map(move |&i| ManifestFile {
                file: items[i].file.id.clone(),
                part,
                checksum: items[i].fingerprint.checksum.clone(),
            })
        })
        .collect();
    DataManifest::with_left_out(files, left_out)
}

/// The parts as data sets: the colour chosen from the training part, the normalization
/// streamed from it, every image normalized to f32 once (its 8-bit planes freed as it goes).
fn into_splits(
    items: Vec<Item>,
    parts: [Vec<usize>; 3],
    config: &DataConfig,
    classes: Vec<String>,
) -> Result<Splits> {
    let coloured = parts[0]
        .iter()
        .filter(|&&i| items[i].decoded.pixels.colour)
        .count();
    let color = ColorChoice::choose(config.color, coloured, parts[0].len());
    let channels = color.channels;
    let (pixels, files): (Vec<Vec<u8>>, Vec<FoundFile>) = items
        .into_par_iter()
        .map(|item| (item.decoded.pixels.into_channels(channels), item.file))
        .unzip();
    let mut sums = ChannelSums::new(channels);
    for &i in &parts[0] {
        sums.add(&pixels[i]);
    }
    let normalization = sums.normalization();
    let mut images: Vec<Option<Arc<[f32]>>> = pixels
        .into_par_iter()
        .map(|p| Some(Arc::from(stats::normalized(&p, &normalization))))
        .collect();
    let [train, val, test] = parts.map(|indices| {
        let samples = indices
            .iter()
            .map(|&i| Sample {
                image: images[i].take().unwrap_or_else(|| Arc::from(Vec::new())),
                label: files[i].label,
                sample_id: files[i].id.clone(),
                recipe: None,
            })
            .collect();
        ImageDataset {
            samples,
            image_size: config.image_size,
            channels,
        }
    });
    Ok(Splits {
        train,
        val,
        test,
        classes,
        image_size: config.image_size,
        normalization,
        skipped: Vec::new(),
        manifest: None,
        color,
        issues: Vec::new(),
        folder: None,
    })
}
