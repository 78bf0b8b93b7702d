//! Real image folders: one subfolder per class (sorted names are the classes), PNG, JPEG or
//! BMP files inside (any depth), grayscale or colour.
//!
//! Each image becomes one grayscale channel (luminance in [0, 1]), resized to
//! `image_size` x `image_size` with bilinear (triangle) resampling, stretching when the
//! aspect ratio differs. The split is stratified and seeded, so every class appears in every
//! part; the normalization (mean and standard deviation) comes from the training part only.

use std::fs;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use crate::data::{DataConfig, ImageDataset, Normalization, Sample, Splits, split_counts};
use crate::error::{Result, TrainerError};
use crate::rng;

/// File extensions read as images (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

/// The resampling used, as the evidence states it.
pub const RESAMPLING: &str = "bilinear (triangle filter), aspect ratio not kept";

/// Reads one image file as `size` x `size` luminance values in [0, 1].
pub fn read_luminance(path: &Path, size: usize) -> std::result::Result<Vec<f32>, String> {
    let bytes = fs::read(path).map_err(|e| e.to_string())?;
    let decoded = image::load_from_memory(&bytes).map_err(|e| e.to_string())?;
    let gray = decoded
        .resize_exact(size as u32, size as u32, FilterType::Triangle)
        .to_luma32f();
    Ok(gray.into_raw())
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Every file under `dir`, sorted, as paths relative to `root`.
fn files_under(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| TrainerError::io("reading folder", dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files_under(&path, root, out)?;
        } else {
            out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
        }
    }
    Ok(())
}

/// The smallest number of images a class needs so that each part of `split` gets one.
pub fn minimum_per_class(split: [f64; 3]) -> usize {
    (3..10_000)
        .find(|&n| split_counts(n, split).iter().all(|&c| c >= 1))
        .unwrap_or(10_000)
}

/// Loads `config.folder` and splits it.
pub fn folder_splits(config: &DataConfig) -> Result<Splits> {
    let Some(root) = &config.folder else {
        return Err(TrainerError::bad_input("no --data folder given"));
    };
    if !root.is_dir() {
        return Err(TrainerError::bad_input(format!(
            "--data '{}' is not a folder",
            root.display()
        )));
    }
    let mut class_dirs: Vec<PathBuf> = fs::read_dir(root)
        .map_err(|e| TrainerError::io("reading folder", root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    class_dirs.sort();
    let classes: Vec<String> = class_dirs
        .iter()
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    match classes.len() {
        0 => {
            return Err(TrainerError::bad_input(format!(
                "--data '{}' has no class folders: put each class's images in a subfolder named after the class",
                root.display()
            )));
        }
        1 => {
            return Err(TrainerError::bad_input(format!(
                "--data '{}' has one class folder ('{}'); a classifier needs at least two",
                root.display(),
                classes[0]
            )));
        }
        _ => {}
    }

    let minimum = minimum_per_class(config.split);
    let mut skipped = Vec::new();
    let mut by_class: Vec<Vec<Sample>> = Vec::new();
    for (label, dir) in class_dirs.iter().enumerate() {
        let mut files = Vec::new();
        files_under(dir, root, &mut files)?;
        let mut samples = Vec::new();
        for relative in files {
            let id = relative.to_string_lossy().replace('\\', "/");
            if !is_image(&relative) {
                skipped.push((id, "not a PNG, JPEG or BMP file".to_string()));
                continue;
            }
            let image = read_luminance(&root.join(&relative), config.image_size).map_err(|e| {
                TrainerError::bad_input(format!(
                    "cannot read image '{}': {e} (remove or replace the file)",
                    root.join(&relative).display()
                ))
            })?;
            samples.push(Sample {
                image,
                label,
                sample_id: id,
                recipe: None,
            });
        }
        if samples.len() < minimum {
            return Err(TrainerError::bad_input(format!(
                "class '{}' has {} image(s); the split {},{},{} needs at least {minimum} per class so that each part gets one",
                classes[label],
                samples.len(),
                config.split[0],
                config.split[1],
                config.split[2]
            )));
        }
        by_class.push(samples);
    }

    // Stratified: each class is split on its own by a seeded permutation.
    let mut parts: [Vec<Sample>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for (label, samples) in by_class.into_iter().enumerate() {
        let order = rng::permutation(
            samples.len(),
            rng::key(config.seed, rng::stream::SPLIT, label as u32 + 1),
        );
        let [train, val, _] = split_counts(samples.len(), config.split);
        for (position, &index) in order.iter().enumerate() {
            let part = if position < train {
                0
            } else if position < train + val {
                1
            } else {
                2
            };
            parts[part].push(samples[index].clone());
        }
    }
    // Mix the classes within each part (the training loader reshuffles every epoch anyway).
    for (i, part) in parts.iter_mut().enumerate() {
        let order = rng::permutation(
            part.len(),
            rng::key(config.seed, rng::stream::SPLIT, 1000 + i as u32),
        );
        *part = order.into_iter().map(|j| part[j].clone()).collect();
    }

    let normalization = training_statistics(&parts[0]);
    for part in parts.iter_mut() {
        for sample in part.iter_mut() {
            normalization.apply(&mut sample.image);
        }
    }
    let [train, val, test] = parts;
    let dataset = |samples| ImageDataset {
        samples,
        image_size: config.image_size,
    };
    Ok(Splits {
        train: dataset(train),
        val: dataset(val),
        test: dataset(test),
        classes,
        image_size: config.image_size,
        normalization,
        skipped,
    })
}

/// Mean and standard deviation of every training pixel.
fn training_statistics(train: &[Sample]) -> Normalization {
    let count = train.iter().map(|s| s.image.len()).sum::<usize>().max(1) as f64;
    let mean = train
        .iter()
        .flat_map(|s| &s.image)
        .map(|v| *v as f64)
        .sum::<f64>()
        / count;
    let var = train
        .iter()
        .flat_map(|s| &s.image)
        .map(|v| (*v as f64 - mean).powi(2))
        .sum::<f64>()
        / count;
    Normalization {
        mean: mean as f32,
        std: (var.sqrt() as f32).max(1e-6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workshop_split_needs_three_images_per_class() {
        assert_eq!(minimum_per_class([0.6, 0.2, 0.2]), 3);
        assert!(minimum_per_class([0.8, 0.1, 0.1]) > 3);
    }
}
