//! Label-preserving augmentation of the training part: which ones a run asks for
//! (`--augment LIST`, the `augment` setting) and what each does to one image. Every sample
//! draws its own numbers from the counter-based generator, keyed by the run's seed and the
//! sample's running number, on the host before its batch is uploaded: a rerun, a resumed run
//! and every backend see the same images.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::rng;

/// `crop` without a size pads by this many pixels (the usual recipe for 28x28 and 32x32
/// images).
pub const DEFAULT_CROP_PAD: usize = 2;

/// The list `--augment` takes, for messages.
const CHOICES: &str = "shift-noise, flip, crop (pad 2), crop:N (pad N pixels), comma-separated";

/// One augmentation, as a list names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Augmentation {
    /// Pad by `pad` pixels of 0 (the normalized mean) on every side and cut the image's size
    /// back out at a random place (torchvision's `RandomCrop(size, padding=pad)`).
    Crop { pad: usize },
    /// Mirror left to right, with probability one half (`RandomHorizontalFlip`).
    Flip,
    /// Shift by up to one pixel each way (the uncovered edge is 0) and add N(0, 0.05) noise to
    /// each value: a bare `--augment` and `augment = true`.
    ShiftNoise,
}

impl Augmentation {
    /// Its name in a list: `flip`, `crop` (the default pad), `crop:3`, `shift-noise`.
    pub fn name(self) -> String {
        match self {
            Augmentation::Crop {
                pad: DEFAULT_CROP_PAD,
            } => "crop".into(),
            Augmentation::Crop { pad } => format!("crop:{pad}"),
            Augmentation::Flip => "flip".into(),
            Augmentation::ShiftNoise => "shift-noise".into(),
        }
    }

    /// What it does, in words, for the pack's README.
    pub fn describe(self) -> String {
        match self {
            Augmentation::Crop { pad } => {
                format!("random crops after padding by {pad} pixel(s) of 0 (the normalized mean)")
            }
            Augmentation::Flip => "random horizontal flips (one image in two)".into(),
            Augmentation::ShiftNoise => "shifts of up to one pixel and N(0, 0.05) noise".into(),
        }
    }
}

impl FromStr for Augmentation {
    type Err = String;

    fn from_str(text: &str) -> Result<Augmentation, String> {
        let item = text.trim();
        let unknown = || format!("unknown augmentation '{item}' (choose from {CHOICES})");
        match item {
            "flip" => return Ok(Augmentation::Flip),
            "shift-noise" => return Ok(Augmentation::ShiftNoise),
            "crop" => {
                return Ok(Augmentation::Crop {
                    pad: DEFAULT_CROP_PAD,
                });
            }
            _ => {}
        }
        let Some(size) = item.strip_prefix("crop:") else {
            return Err(unknown());
        };
        match size.trim().parse::<usize>() {
            Ok(0) => {
                Err("augmentation 'crop:0' pads nothing: N of crop:N must be at least 1".into())
            }
            Ok(pad) => Ok(Augmentation::Crop { pad }),
            Err(_) => Err(format!(
                "augmentation '{item}': N of crop:N must be a whole number of pixels, at least 1"
            )),
        }
    }
}

/// The augmentations of a run: a set, applied to each training image in a fixed order (flip,
/// crop, then shift and noise), whatever order the list gave. Empty: none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Augment {
    /// Mirror left to right half of the time.
    pub flip: bool,
    /// Pad by this many pixels and crop back at a random place.
    pub crop: Option<usize>,
    /// Shift by up to one pixel and add light noise (today's `--augment`).
    pub shift_noise: bool,
}

impl Augment {
    /// No augmentation.
    pub const NONE: Augment = Augment {
        flip: false,
        crop: None,
        shift_noise: false,
    };

    /// What a bare `--augment` and `augment = true` mean: shifts and noise.
    pub const SHIFT_NOISE: Augment = Augment {
        flip: false,
        crop: None,
        shift_noise: true,
    };

    /// Whether it changes nothing.
    pub fn is_none(self) -> bool {
        self == Augment::NONE
    }

    /// Its augmentations, in the order they are applied.
    pub fn items(self) -> Vec<Augmentation> {
        let mut items = Vec::new();
        if self.flip {
            items.push(Augmentation::Flip);
        }
        if let Some(pad) = self.crop {
            items.push(Augmentation::Crop { pad });
        }
        if self.shift_noise {
            items.push(Augmentation::ShiftNoise);
        }
        items
    }

    /// Adds `item`, or says that the list named it already.
    fn insert(&mut self, item: Augmentation) -> Result<(), String> {
        let twice = match item {
            Augmentation::Crop { pad } => self.crop.replace(pad).is_some(),
            Augmentation::Flip => std::mem::replace(&mut self.flip, true),
            Augmentation::ShiftNoise => std::mem::replace(&mut self.shift_noise, true),
        };
        if twice {
            let name = item.name();
            let name = name.split(':').next().unwrap_or_default();
            return Err(format!("the augmentation list names {name} twice"));
        }
        Ok(())
    }

    /// The run's augmentations in words ("none" when empty), for the pack's README.
    pub fn describe(self) -> String {
        let items: Vec<String> = self.items().into_iter().map(|a| a.describe()).collect();
        if items.is_empty() {
            "none".into()
        } else {
            items.join("; ")
        }
    }

    /// Whether these augmentations fit images of `size` pixels: a crop must keep more than
    /// half of the image in each direction (pad below half the size). One line if not.
    pub fn check(self, size: usize) -> Result<(), String> {
        match self.crop {
            Some(pad) if 2 * pad >= size => Err(format!(
                "--augment crop:{pad} pads {pad} pixels around a {size}-pixel image: a crop could keep less than half of it; N of crop:N must be below {} at --image-size {size}",
                size.div_ceil(2)
            )),
            _ => Ok(()),
        }
    }

    /// These augmentations with the run's seed; none when there is nothing to apply.
    pub fn seeded(self, seed: u64) -> Option<Augmenter> {
        (!self.is_none()).then_some(Augmenter { set: self, seed })
    }
}

/// `flip,crop`, `flip,crop:3,shift-noise`: the list that gives it back (`none` when empty).
impl fmt::Display for Augment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.items().into_iter().map(Augmentation::name).collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// A comma-separated list: `flip,crop`, `crop:3`, `shift-noise,flip`. Unknown, repeated or
/// empty items are one line naming the choices.
impl FromStr for Augment {
    type Err = String;

    fn from_str(text: &str) -> Result<Augment, String> {
        if text.trim().is_empty() {
            return Err(format!(
                "the augmentation list is empty (choose from {CHOICES})"
            ));
        }
        let mut set = Augment::NONE;
        for item in text.split(',') {
            if item.trim().is_empty() {
                return Err(format!(
                    "the augmentation list '{text}' has an empty item (choose from {CHOICES})"
                ));
            }
            set.insert(item.parse()?)?;
        }
        Ok(set)
    }
}

/// In a config file and `outputs/config.json`: `false` for none, `true` for shifts and noise
/// alone (as before lists existed), the list otherwise (`"flip,crop:2"`).
impl Serialize for Augment {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.is_none() {
            serializer.serialize_bool(false)
        } else if *self == Augment::SHIFT_NOISE {
            serializer.serialize_bool(true)
        } else {
            serializer.serialize_str(&self.to_string())
        }
    }
}

impl<'de> Deserialize<'de> for Augment {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Augment, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Augment;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "true, false or a list such as \"flip,crop\"")
            }

            fn visit_bool<E: serde::de::Error>(self, on: bool) -> Result<Augment, E> {
                Ok(if on {
                    Augment::SHIFT_NOISE
                } else {
                    Augment::NONE
                })
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Augment, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A run's augmentations and its seed: what a batcher applies to each training sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augmenter {
    pub set: Augment,
    pub seed: u64,
}

impl Augmenter {
    /// The augmented copy of `image` (`channels` planes of `size` x `size`, channel-major),
    /// sample number `number` of the run: every channel is flipped, cropped and shifted alike.
    pub fn apply(&self, image: &[f32], channels: usize, size: usize, number: u64) -> Vec<f32> {
        let key = rng::key(
            self.seed,
            rng::stream::AUGMENT,
            number as u32 ^ (number >> 32) as u32,
        );
        let mut out = image.to_vec();
        if self.set.flip && rng::below(key, FLIP_COUNTER, 0, 2) == 1 {
            out = flip(&out, channels, size);
        }
        if let Some(pad) = self.set.crop {
            out = crop(&out, channels, size, pad, key);
        }
        if self.set.shift_noise {
            out = shift_noise(&out, channels, size, key);
        }
        out
    }
}

/// The key's counters each augmentation reads: shift-and-noise has 0 and 1 (its shift) and
/// 16 on (its noise, 12 a value), as it always had; the flip and the crop take free ones.
const FLIP_COUNTER: u32 = 4;
const CROP_COUNTERS: [u32; 2] = [5, 6];

/// `image` moved by (`dx`, `dy`) pixels (right and down), every channel alike; what comes in
/// from outside is 0.
fn translate(image: &[f32], channels: usize, size: usize, dx: i32, dy: i32) -> Vec<f32> {
    let s = size as i32;
    let plane = size * size;
    let mut out = vec![0.0; channels * plane];
    for channel in 0..channels {
        let (from, to) = (&image[channel * plane..], &mut out[channel * plane..]);
        for row in 0..s {
            for col in 0..s {
                let (from_row, from_col) = (row - dy, col - dx);
                if (0..s).contains(&from_row) && (0..s).contains(&from_col) {
                    to[(row * s + col) as usize] = from[(from_row * s + from_col) as usize];
                }
            }
        }
    }
    out
}

/// Padding by `pad` zeros and cutting `size` x `size` back out at offset (ox, oy) in
/// [0, 2 pad]: the image moved by (pad - ox, pad - oy).
fn crop(image: &[f32], channels: usize, size: usize, pad: usize, key: u32) -> Vec<f32> {
    let pad = pad as i32;
    let [x, y] = CROP_COUNTERS.map(|counter| rng::below(key, counter, 0, 2 * pad + 1));
    translate(image, channels, size, pad - x, pad - y)
}

/// The image mirrored left to right, every channel alike.
fn flip(image: &[f32], channels: usize, size: usize) -> Vec<f32> {
    let mut out = image.to_vec();
    for row in out.chunks_mut(size).take(channels * size) {
        row.reverse();
    }
    out
}

/// A shift by up to one pixel in each direction (every channel alike; the uncovered edge is
/// 0, the normalized mean) and N(0, 0.05) noise on each value. No transposes or 90-degree
/// rotations: those would turn one stripe class into another.
fn shift_noise(image: &[f32], channels: usize, size: usize, key: u32) -> Vec<f32> {
    let dx = rng::below(key, 0, -1, 2);
    let dy = rng::below(key, 1, -1, 2);
    let mut out = translate(image, channels, size, dx, dy);
    for (i, value) in out.iter_mut().enumerate() {
        // The noise counter of value i (channel-major); one channel is the workshop's.
        *value += rng::normal(key, 16 + 12 * i as u32) * 0.05;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 2-channel 4x4 image whose values say where they are: channel * 100 + row * 10 + col.
    fn known() -> Vec<f32> {
        (0..2)
            .flat_map(|c| {
                (0..4).flat_map(move |r| (0..4).map(move |k| (c * 100 + r * 10 + k) as f32))
            })
            .collect()
    }

    #[test]
    fn lists_parse_into_a_set_in_any_order() {
        let set: Augment = "flip,crop".parse().unwrap();
        assert_eq!(
            set,
            Augment {
                flip: true,
                crop: Some(DEFAULT_CROP_PAD),
                shift_noise: false
            }
        );
        assert_eq!(set.to_string(), "flip,crop");
        assert_eq!("crop:2,flip".parse::<Augment>().unwrap(), set);
        let all: Augment = " shift-noise , crop:3,flip".parse().unwrap();
        assert_eq!(all.to_string(), "flip,crop:3,shift-noise");
        assert_eq!(
            "shift-noise".parse::<Augment>().unwrap(),
            Augment::SHIFT_NOISE
        );
        assert_eq!(Augment::NONE.to_string(), "none");
    }

    #[test]
    fn bad_lists_say_what_is_wrong_and_name_the_choices() {
        for (list, says) in [
            (
                "spin",
                "unknown augmentation 'spin' (choose from shift-noise, flip, crop",
            ),
            ("crop:0", "pads nothing"),
            ("crop:-1", "must be a whole number"),
            ("crop:x", "must be a whole number"),
            ("flip,,crop", "empty item"),
            ("", "is empty"),
            ("flip,flip", "names flip twice"),
            ("crop,crop:3", "names crop twice"),
        ] {
            let err = list.parse::<Augment>().unwrap_err();
            assert!(err.contains(says), "{list}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn a_crop_must_keep_more_than_half_the_image() {
        let crop = |pad| Augment {
            crop: Some(pad),
            ..Augment::NONE
        };
        assert!(crop(7).check(16).is_ok());
        let err = crop(8).check(16).unwrap_err();
        assert!(err.contains("crop:8") && err.contains("below 8"), "{err}");
        assert!(crop(2).check(4).unwrap_err().contains("below 2"));
        assert!(Augment::SHIFT_NOISE.check(2).is_ok());
    }

    #[test]
    fn config_values_are_true_false_or_a_list() {
        let read = |json: &str| serde_json::from_str::<Augment>(json);
        assert_eq!(read("true").unwrap(), Augment::SHIFT_NOISE);
        assert_eq!(read("false").unwrap(), Augment::NONE);
        assert_eq!(read("\"crop,flip\"").unwrap().to_string(), "flip,crop");
        let err = read("\"spin\"").unwrap_err().to_string();
        assert!(err.contains("unknown augmentation 'spin'"), "{err}");
        assert!(read("3").is_err());
        for set in [
            Augment::NONE,
            Augment::SHIFT_NOISE,
            "flip,crop:3".parse().unwrap(),
        ] {
            let json = serde_json::to_string(&set).unwrap();
            assert_eq!(read(&json).unwrap(), set, "{json}");
        }
        assert_eq!(
            serde_json::to_string(&Augment::SHIFT_NOISE).unwrap(),
            "true"
        );
        assert_eq!(serde_json::to_string(&Augment::NONE).unwrap(), "false");
    }

    #[test]
    fn a_flip_mirrors_each_row_of_every_channel() {
        let flipped = flip(&known(), 2, 4);
        assert_eq!(&flipped[..4], &[3.0, 2.0, 1.0, 0.0]);
        assert_eq!(&flipped[16 + 12..], &[133.0, 132.0, 131.0, 130.0]);
        assert_eq!(flip(&flipped, 2, 4), known());
    }

    #[test]
    fn a_crop_moves_every_channel_alike_and_fills_with_zeros() {
        let moved = translate(&known(), 2, 4, 1, -2);
        // Row 0 shows row 2 moved right by one; the bottom two rows and left column are 0.
        assert_eq!(&moved[..4], &[0.0, 20.0, 21.0, 22.0]);
        assert_eq!(&moved[8..16], &[0.0; 8]);
        assert_eq!(&moved[16..20], &[0.0, 120.0, 121.0, 122.0]);
    }

    #[test]
    fn crops_and_flips_are_seeded_and_cover_their_range() {
        let set: Augment = "flip,crop:1".parse().unwrap();
        let augmenter = set.seeded(7).unwrap();
        let image = known();
        let outs: Vec<Vec<f32>> = (0..400).map(|n| augmenter.apply(&image, 2, 4, n)).collect();
        assert_eq!(outs[5], augmenter.apply(&image, 2, 4, 5));
        assert_ne!(outs[5], set.seeded(8).unwrap().apply(&image, 2, 4, 5));
        // Every value comes from the image or the padding, channel 1 from channel 1's values.
        for out in &outs {
            assert!(out[..16].iter().all(|v| *v == 0.0 || *v < 100.0));
            assert!(out[16..].iter().all(|v| *v == 0.0 || *v >= 100.0));
        }
        // Over 400 samples all nine crops, each flipped and not, turn up, the image itself too.
        let distinct: std::collections::HashSet<Vec<u32>> = outs
            .iter()
            .map(|o| o.iter().map(|v| v.to_bits()).collect())
            .collect();
        assert_eq!(distinct.len(), 18, "9 crops x 2 flips");
        assert!(outs.iter().any(|o| o == &image));
    }

    #[test]
    fn shift_noise_alone_is_todays_augmentation() {
        let image = known();
        let out = Augment::SHIFT_NOISE
            .seeded(3)
            .unwrap()
            .apply(&image, 2, 4, 9);
        let key = rng::key(3, rng::stream::AUGMENT, 9);
        let (dx, dy) = (rng::below(key, 0, -1, 2), rng::below(key, 1, -1, 2));
        let moved = translate(&image, 2, 4, dx, dy);
        for (i, (a, b)) in out.iter().zip(&moved).enumerate() {
            let noise = rng::normal(key, 16 + 12 * i as u32) * 0.05;
            assert_eq!(*a, b + noise);
        }
        assert!(Augment::NONE.seeded(3).is_none());
    }
}
