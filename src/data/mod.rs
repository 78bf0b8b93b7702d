//! Data: the workshop's stripe images (or a real image folder, see [`folder`]), the
//! train/val/test split, and batching.
//!
//! A stripe image is a pure function of (seed, class, index) through the counter-based
//! generator in [`crate::rng`], so every backend sees the same numbers. Images are made on the
//! host once; the batcher uploads one batch at a time to the device.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::prelude::*;

pub mod augment;
pub mod decode;
pub mod duplicates;
pub mod folder;
pub mod image_file;
pub mod issues;
pub mod layout;
pub mod load;
pub mod manifest;
pub mod split;
pub mod stats;

pub use augment::{Augment, Augmenter};
pub use manifest::DataManifest;
pub use split::{Part, SplitRule, split_counts};

use crate::error::{Result, TrainerError};
use crate::rng;

/// The three classes of the workshop, in label order.
pub const CLASSES: [&str; 3] = ["vertical_stripe", "horizontal_stripe", "diagonal_stripe"];

/// The smallest image size, for stripes and folders alike (the stripe recipe's 4x4 patch
/// must fit with room to move); training and loading a checkpoint check the same bound.
pub const MIN_IMAGE_SIZE: usize = 5;
/// The largest image size accepted.
pub const MAX_IMAGE_SIZE: usize = 512;

/// What decides the data set.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DataConfig {
    pub seed: u64,
    /// Stripe images per class (ignored for a folder).
    pub samples_per_class: usize,
    pub image_size: usize,
    /// Shares of train, val and test.
    pub split: [f64; 3],
    /// Whether `--split` was given on the command line: a pre-split folder refuses it
    /// whatever its value. Never written (a checkpoint's data reads back without it).
    #[serde(skip)]
    pub split_given: bool,
    /// Whether `--val-fraction` was given on the command line: refused, whatever its value,
    /// where nothing is drawn from train/. Never written.
    #[serde(skip)]
    pub val_fraction_given: bool,
    /// Where a config file set `split` or `val_fraction` (and no flag overrode it): the key
    /// and its place (`--config 'x.toml' line 2`), for an error that names the key the user
    /// wrote rather than a flag they never gave. Never written.
    #[serde(skip)]
    pub file_places: Vec<(String, String)>,
    /// A folder of class subfolders instead of the stripe images.
    pub folder: Option<std::path::PathBuf>,
    /// How an image folder's images are read (checkpoints written before colour existed
    /// read them gray, and do not name it).
    #[serde(default = "Color::legacy", skip_serializing_if = "Color::is_legacy")]
    pub color: Color,
    /// How the parts were drawn (checkpoints written before the field existed used one
    /// permutation of all stripe images, and do not name it).
    #[serde(
        default = "SplitRule::legacy",
        skip_serializing_if = "SplitRule::is_legacy"
    )]
    pub split_rule: SplitRule,
    /// A pre-split folder without a val folder: the share of train drawn as validation.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub val_fraction: f64,
    /// At most this many images of each class from each folder (a quick run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_class: Option<usize>,
    /// Refuse byte-identical images in two classes instead of leaving them out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict_data: bool,
    /// Train on the readable images and list the others, instead of refusing the folder.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_bad_images: bool,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// Which channels an image folder is read with.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Color {
    /// RGB when any training image has colour, else grayscale.
    #[default]
    Auto,
    /// One luminance channel.
    Gray,
    /// Three channels, red, green, blue.
    Rgb,
}

impl Color {
    /// How checkpoints written before colour read a folder.
    pub fn legacy() -> Color {
        Color::Gray
    }

    pub fn is_legacy(&self) -> bool {
        *self == Color::Gray
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Color::Auto => "auto",
            Color::Gray => "gray",
            Color::Rgb => "rgb",
        }
    }
}

/// The workshop's split.
pub const DEFAULT_SPLIT: [f64; 3] = [0.6, 0.2, 0.2];

/// `--val-fraction`'s default: the share of a pre-split folder's train/ drawn as validation
/// (the settings take their default from it).
pub const DEFAULT_VAL_FRACTION: f64 = 0.2;

/// The fewest training images a class of an image folder should keep after the split: below
/// it the run warns (a class of one or two training images is barely learned).
pub const MIN_TRAIN_PER_CLASS: usize = 5;

/// The longest reason shown for an image file that cannot be decoded (the image crate's
/// messages can hold Debug text and raw bytes, thousands of characters long).
pub const DECODE_REASON_CHARS: usize = 120;

/// How pixels become model input: `(value - mean[c]) / std[c]` for each channel `c`, values
/// in [0, 1]. One channel is written as the plain numbers it always was (`"mean": 0.4`),
/// several as lists.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalization {
    pub mean: PerChannel,
    pub std: PerChannel,
}

/// One value per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct PerChannel(pub Vec<f32>);

impl serde::Serialize for PerChannel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }
}

impl<'de> serde::Deserialize<'de> for PerChannel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(f32),
            Many(Vec<f32>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(v) => PerChannel(vec![v]),
            OneOrMany::Many(v) => PerChannel(v),
        })
    }
}

impl Normalization {
    /// For stripe images: maps the luminance (value + 1) / 2.5 of a stripe image saved as a
    /// picture back to the generated value, so the model sees what it trained on.
    pub fn stripes() -> Normalization {
        Normalization {
            mean: PerChannel(vec![0.4]),
            std: PerChannel(vec![0.4]),
        }
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.mean.0.len()
    }

    /// Applies the normalization to an image's values (channel-major, one plane a channel).
    pub fn apply(&self, image: &mut [f32]) {
        let plane = image.len() / self.channels().max(1);
        for (c, values) in image.chunks_mut(plane.max(1)).enumerate() {
            let (mean, std) = (self.mean.0[c], self.std.0[c]);
            for v in values {
                *v = (*v - mean) / std;
            }
        }
    }

    /// Undoes [`Normalization::apply`]: the values in [0, 1] again (for pictures).
    pub fn undo(&self, image: &[f32]) -> Vec<f32> {
        let plane = image.len() / self.channels().max(1);
        image
            .chunks(plane.max(1))
            .enumerate()
            .flat_map(|(c, values)| {
                let (mean, std) = (self.mean.0[c], self.std.0[c]);
                values.iter().map(move |v| v * std + mean)
            })
            .collect()
    }

    /// "mean 0.48, 0.45, 0.41; std ..." in words, six decimals.
    pub fn describe(&self) -> (String, String) {
        let join = |v: &PerChannel| {
            v.0.iter()
                .map(|x| format!("{x:.6}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        (join(&self.mean), join(&self.std))
    }
}

impl DataConfig {
    /// How an error names the setting `key` of value `value`: the config file's key and
    /// place when a file set it (`--config 'x.toml' line 2: 'val_fraction' = 0.3`), else
    /// the flag (`--val-fraction 0.3`); and the name alone, for "leave ... out".
    pub fn setting_name(&self, key: &str, value: &str, file_value: &str) -> (String, String) {
        match self.file_places.iter().find(|(k, _)| k == key) {
            Some((_, place)) => (format!("{place}: '{key}' = {file_value}"), key.to_string()),
            None => {
                let flag = format!("--{}", key.replace('_', "-"));
                (format!("{flag} {value}"), flag)
            }
        }
    }

    /// The workshop's data: stripes, seed `seed`, 140 per class, 16x16, split 60/20/20.
    pub fn stripes(seed: u64, samples_per_class: usize, image_size: usize) -> DataConfig {
        DataConfig {
            seed,
            samples_per_class,
            image_size,
            split: DEFAULT_SPLIT,
            split_given: false,
            val_fraction_given: false,
            file_places: Vec::new(),
            folder: None,
            color: Color::Gray,
            split_rule: SplitRule::Stratified,
            // Folders' settings: the stripes use none of them.
            val_fraction: 0.0,
            max_per_class: None,
            strict_data: false,
            skip_bad_images: false,
        }
    }

    /// Checks the values before any work starts.
    pub fn validate(&self) -> Result<()> {
        let [a, b, c] = self.split;
        if !(self.split.iter().all(|v| v.is_finite() && *v > 0.0)
            && ((a + b + c) - 1.0).abs() < 1e-6)
        {
            return Err(TrainerError::bad_input(format!(
                "--split takes three positive shares that add up to 1 (train,val,test such as 0.6,0.2,0.2), got {a},{b},{c}"
            )));
        }
        // One bound for stripes and folders, for training and for loading a checkpoint.
        if !(MIN_IMAGE_SIZE..=MAX_IMAGE_SIZE).contains(&self.image_size) {
            return Err(TrainerError::bad_input(format!(
                "--image-size must be between {MIN_IMAGE_SIZE} and {MAX_IMAGE_SIZE} (the stripe recipe and the CNN's pooling need at least {MIN_IMAGE_SIZE}), got {}",
                self.image_size
            )));
        }
        if self.folder.is_some() {
            return Ok(());
        }
        if !(5..=1_000_000).contains(&self.samples_per_class) {
            return Err(TrainerError::bad_input(format!(
                "--samples-per-class must be between 5 and 1000000 (each split needs at least one sample of each class), got {}",
                self.samples_per_class
            )));
        }
        Ok(())
    }

    /// Sizes of the train, val and test parts of the stripe images (the workshop's
    /// 252/84/84 at the defaults).
    pub fn split_sizes(&self) -> [usize; 3] {
        match self.split_rule {
            SplitRule::Stratified => {
                split::stratified_counts(&[self.samples_per_class; CLASSES.len()], self.split)
            }
            SplitRule::Permutation => {
                split_counts(self.samples_per_class * CLASSES.len(), self.split)
            }
        }
    }
}

/// Loads the data set the configuration names: the image folder, or the stripe images.
pub fn load_splits(config: &DataConfig) -> Result<Splits> {
    load_splits_with(config, &crate::console::Silent)
}

/// [`load_splits`], showing the reading of an image folder on `progress`.
pub fn load_splits_with(
    config: &DataConfig,
    progress: &dyn crate::console::Progress,
) -> Result<Splits> {
    match &config.folder {
        Some(_) => load::folder_splits(config, progress),
        None => stripe_splits(config),
    }
}

/// Draws one stripe image, row-major, `size * size` values.
///
/// The recipe of the workshop: noise N(0, 0.2); a 2-pixel vertical or horizontal bar at a
/// random position in [1, size-3], or a diagonal (1.1 on it, 0.8 right of it) at an offset in
/// [-3, 3]; with probability 0.18 a 4x4 patch scaled by 0.25; clamp to [-1, 1.5].
/// The seed script indexes `image[row, col + 1]` with Python semantics, so a negative column
/// wraps to the right edge; we keep that quirk so the data matches the workshop's.
pub fn stripe_image(seed: u64, class: usize, index: usize, size: usize) -> Vec<f32> {
    let key = rng::key(
        seed,
        rng::stream::IMAGE,
        ((class as u32) << 20) | index as u32,
    );
    // Counters 0..4 are the image's parameters, 16.. its noise (12 per pixel).
    let mut image: Vec<f32> = (0..size * size)
        .map(|p| rng::normal(key, 16 + 12 * p as u32) * 0.2)
        .collect();
    let s = size as i32;
    match class {
        0 => {
            let col = rng::below(key, 0, 1, s - 2) as usize;
            for row in 0..size {
                image[row * size + col] += 1.0;
                image[row * size + col + 1] += 1.0;
            }
        }
        1 => {
            let row = rng::below(key, 0, 1, s - 2) as usize;
            for col in 0..size {
                image[row * size + col] += 1.0;
                image[(row + 1) * size + col] += 1.0;
            }
        }
        _ => {
            let offset = rng::below(key, 0, -3, 4);
            for row in 0..s {
                let col = row + offset;
                if (0..s).contains(&col) {
                    image[(row * s + col) as usize] += 1.1;
                }
                if col + 1 < s {
                    let next = (col + 1).rem_euclid(s); // Python's negative index
                    image[(row * s + next) as usize] += 0.8;
                }
            }
        }
    }
    if rng::uniform(key, 1) < 0.18 {
        let top = rng::below(key, 2, 0, s - 4) as usize;
        let left = rng::below(key, 3, 0, s - 4) as usize;
        for row in top..top + 4 {
            for col in left..left + 4 {
                image[row * size + col] *= 0.25;
            }
        }
    }
    for value in &mut image {
        *value = value.clamp(-1.0, 1.5);
    }
    image
}

/// One sample: an image (channels x size x size, channel-major, normalized), its label and
/// its id. The pixels are shared: cloning a sample (as the data loader does for every batch)
/// copies no pixel.
#[derive(Clone, Debug)]
pub struct Sample {
    pub image: Arc<[f32]>,
    pub label: usize,
    pub sample_id: String,
    /// For a stripe image: what makes it, so a wgpu device can draw it itself.
    pub recipe: Option<Recipe>,
}

/// What a stripe image is a pure function of.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Recipe {
    pub seed: u64,
    pub class: u32,
    pub index: u32,
}

/// A list of samples of one image size and channel count; burn's [`Dataset`] over it
/// yields (image, label, id).
#[derive(Clone, Debug)]
pub struct ImageDataset {
    pub samples: Vec<Sample>,
    pub image_size: usize,
    /// 1 (grayscale) or 3 (RGB): each sample's image is channels x size x size, channel-major.
    pub channels: usize,
}

impl ImageDataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there is no sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Checks every label against the class count, on the host, before a kernel reads one
    /// (the WGSL kernels index their arrays by label, and cubecl compiles them without
    /// bounds checks).
    pub fn check_labels(&self, classes: usize) -> Result<()> {
        match self.samples.iter().find(|s| s.label >= classes) {
            Some(s) => Err(TrainerError::bad_input(format!(
                "sample '{}' has label {} but the model has {classes} classes (labels 0 to {})",
                s.sample_id,
                s.label,
                classes.saturating_sub(1)
            ))),
            None => Ok(()),
        }
    }
}

impl Dataset<Sample> for ImageDataset {
    fn get(&self, index: usize) -> std::result::Result<Sample, DatasetError> {
        self.samples.get(index).cloned().ok_or_else(|| {
            DatasetError::new(std::io::Error::other(format!(
                "sample {index} is out of range ({} samples)",
                self.samples.len()
            )))
        })
    }

    fn len(&self) -> usize {
        self.samples.len()
    }
}

/// The three parts of a data set, its class names, and how pixels were normalized.
#[derive(Clone, Debug)]
pub struct Splits {
    pub train: ImageDataset,
    pub val: ImageDataset,
    pub test: ImageDataset,
    pub classes: Vec<String>,
    pub image_size: usize,
    pub normalization: Normalization,
    /// Files of an image folder that were not images, with the reason (none for stripes).
    pub skipped: Vec<(String, String)>,
    /// Every file of an image folder with its part and checksum (none for stripes, which
    /// the data config regenerates).
    pub manifest: Option<DataManifest>,
    /// The channels the images were read with, and why.
    pub color: folder::ColorChoice,
    /// Every file of an image folder left out or merged (`outputs/data_issues.csv`).
    pub issues: Vec<issues::DataIssue>,
    /// An image folder's layout, where each part came from, what was decoded.
    pub folder: Option<load::FolderSummary>,
}

/// Generates the stripe data set and splits it: stratified by class (the workshop's
/// [252, 84, 84] at the defaults, 84/28/28 of each class), or by the one permutation of
/// packs written before that.
pub fn stripe_splits(config: &DataConfig) -> Result<Splits> {
    config.validate()?;
    let [train, val, test] = config.split_sizes();
    if train == 0 || val == 0 || test == 0 {
        return Err(TrainerError::bad_input(format!(
            "--split {:?} leaves a part of the {} stripe images empty; use more --samples-per-class",
            config.split,
            config.samples_per_class * CLASSES.len()
        )));
    }
    let by_class: Vec<Vec<Sample>> = CLASSES
        .iter()
        .enumerate()
        .map(|(label, name)| {
            (0..config.samples_per_class)
                .map(|index| {
                    // Ctrl-C stops generation too (a large set takes a while).
                    if index % 256 == 0 && crate::interrupt::requested() {
                        return Err(TrainerError::Interrupted);
                    }
                    Ok(Sample {
                        image: stripe_image(config.seed, label, index, config.image_size).into(),
                        label,
                        sample_id: format!("{name}_{index:03}"),
                        recipe: Some(Recipe {
                            seed: config.seed,
                            class: label as u32,
                            index: index as u32,
                        }),
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let [train, val, test] = match config.split_rule {
        SplitRule::Stratified => split::stratified(&by_class, config.split, config.seed),
        SplitRule::Permutation => split::permutation(&by_class.concat(), config.split, config.seed),
    };
    let dataset = |samples| ImageDataset {
        samples,
        image_size: config.image_size,
        channels: 1,
    };
    Ok(Splits {
        train: dataset(train),
        val: dataset(val),
        test: dataset(test),
        classes: CLASSES.iter().map(|c| c.to_string()).collect(),
        image_size: config.image_size,
        normalization: Normalization::stripes(),
        skipped: Vec::new(),
        manifest: None,
        color: folder::ColorChoice::stripes(),
        issues: Vec::new(),
        folder: None,
    })
}

/// A batch on the device, with the host copies that the evidence needs.
#[derive(Clone, Debug)]
pub struct ImageBatch {
    /// (batch, 1, height, width)
    pub images: Tensor<4>,
    /// (batch,)
    pub labels: Tensor<1, Int>,
    pub host_labels: Vec<usize>,
    pub sample_ids: Vec<String>,
}

impl ImageBatch {
    /// Number of samples in the batch.
    pub fn len(&self) -> usize {
        self.host_labels.len()
    }

    /// Whether the batch holds no sample.
    pub fn is_empty(&self) -> bool {
        self.host_labels.is_empty()
    }

    /// The samples `start .. start + len` of this batch, as a batch of their own.
    pub fn narrow(&self, start: usize, len: usize) -> ImageBatch {
        ImageBatch {
            images: self.images.clone().narrow(0, start, len),
            labels: self.labels.clone().narrow(0, start, len),
            host_labels: self.host_labels[start..start + len].to_vec(),
            sample_ids: self.sample_ids[start..start + len].to_vec(),
        }
    }
}

/// Stacks samples into an [`ImageBatch`] on the device, augmenting them when asked. (Whether
/// stripe images are drawn on the device instead is the training layer's choice, see
/// `train::feed`.)
#[derive(Clone, Debug)]
pub struct ImageBatcher {
    pub image_size: usize,
    pub channels: usize,
    /// The augmentations and their seed; none for no augmentation.
    pub augment: Option<Augmenter>,
    /// How many samples have been augmented: each gets its own random numbers, in order.
    pub augmented: Arc<AtomicU64>,
}

impl ImageBatcher {
    /// A batcher without augmentation.
    pub fn plain(image_size: usize, channels: usize) -> ImageBatcher {
        ImageBatcher {
            image_size,
            channels,
            augment: None,
            augmented: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl ImageBatch {
    /// A batch of `images` (made however the caller made them) with the labels and ids of
    /// `items`.
    pub fn of_items(images: Tensor<4>, items: Vec<Sample>, device: &Device) -> ImageBatch {
        let n = items.len();
        let mut labels = Vec::with_capacity(n);
        let mut host_labels = Vec::with_capacity(n);
        let mut sample_ids = Vec::with_capacity(n);
        for item in items {
            labels.push(item.label as i64);
            host_labels.push(item.label);
            sample_ids.push(item.sample_id);
        }
        ImageBatch {
            images,
            labels: Tensor::from_data(TensorData::new(labels, [n]), device),
            host_labels,
            sample_ids,
        }
    }
}

impl Batcher<Sample, ImageBatch> for ImageBatcher {
    fn batch(&self, items: Vec<Sample>, device: &Device) -> ImageBatch {
        let n = items.len();
        let (s, c) = (self.image_size, self.channels);
        let mut pixels = Vec::with_capacity(n * c * s * s);
        for item in &items {
            match &self.augment {
                Some(augmenter) => {
                    let number = self.augmented.fetch_add(1, Ordering::SeqCst);
                    pixels.extend(augmenter.apply(&item.image, c, s, number));
                }
                None => pixels.extend_from_slice(&item.image),
            }
        }
        let images = Tensor::from_data(TensorData::new(pixels, [n, c, s, s]), device);
        ImageBatch::of_items(images, items, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DataConfig {
        DataConfig::stripes(42, 140, 16)
    }

    #[test]
    fn default_split_is_the_workshops() {
        let splits = stripe_splits(&config()).unwrap();
        assert_eq!(splits.train.len(), 252);
        assert_eq!(splits.val.len(), 84);
        assert_eq!(splits.test.len(), 84);
        assert_eq!(splits.train.samples[0].image.len(), 256);
    }

    #[test]
    fn images_are_a_pure_function_of_seed_class_and_index() {
        assert_eq!(stripe_image(42, 2, 7, 16), stripe_image(42, 2, 7, 16));
        assert_ne!(stripe_image(42, 2, 7, 16), stripe_image(43, 2, 7, 16));
        let image = stripe_image(42, 0, 3, 16);
        assert!(image.iter().all(|v| (-1.0..=1.5).contains(v)));
    }

    #[test]
    fn every_class_lands_in_every_split_in_proportion() {
        let splits = stripe_splits(&config()).unwrap();
        for (part, expected) in [&splits.train, &splits.val, &splits.test]
            .into_iter()
            .zip([84, 28, 28])
        {
            for label in 0..3 {
                let n = part.samples.iter().filter(|s| s.label == label).count();
                assert_eq!(n, expected);
            }
        }
    }

    #[test]
    fn five_per_class_keeps_every_class_in_the_test_part_for_every_seed() {
        for seed in 0..20 {
            let splits = stripe_splits(&DataConfig::stripes(seed, 5, 16)).unwrap();
            for label in 0..3 {
                assert!(
                    splits.test.samples.iter().any(|s| s.label == label),
                    "seed {seed}"
                );
            }
        }
    }

    #[test]
    fn a_legacy_checkpoint_regenerates_its_old_split() {
        let mut config = config();
        config.split_rule = SplitRule::Permutation;
        let old = stripe_splits(&config).unwrap();
        assert_eq!(old.test.len(), 84);
        let new = stripe_splits(&self::config()).unwrap();
        let ids = |d: &ImageDataset| {
            d.samples
                .iter()
                .map(|s| s.sample_id.clone())
                .collect::<Vec<_>>()
        };
        assert_ne!(ids(&old.test), ids(&new.test));
    }

    #[test]
    fn a_label_at_or_above_the_class_count_is_refused_on_the_host() {
        let splits = stripe_splits(&DataConfig::stripes(1, 5, 8)).unwrap();
        assert!(splits.test.check_labels(3).is_ok());
        let err = splits.test.check_labels(2).unwrap_err().to_string();
        assert!(
            err.contains("has label 2 but the model has 2 classes"),
            "{err}"
        );
    }

    #[test]
    fn vertical_stripes_are_brighter_in_two_columns() {
        let size = 16;
        let image = stripe_image(5, 0, 0, size);
        let column_means: Vec<f32> = (0..size)
            .map(|c| (0..size).map(|r| image[r * size + c]).sum::<f32>() / size as f32)
            .collect();
        let bright = column_means.iter().filter(|m| **m > 0.5).count();
        assert!(bright >= 2, "{column_means:?}");
    }
}
