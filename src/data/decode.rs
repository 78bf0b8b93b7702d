//! Reading a folder's image files: each file read once and decoded once, in parallel (rayon),
//! resized to `size` x `size` and held as 8-bit planes (one gray plane, or red, green, blue)
//! until the colour of the run is chosen and the training statistics known.

use std::collections::BTreeMap;
use std::path::PathBuf;

use image::imageops::FilterType;
use rayon::prelude::*;

use crate::console::Progress;
use crate::data::duplicates::Fingerprint;
use crate::error::{Result, TrainerError};

/// Files decoded between two updates of the progress bar (and checks for Ctrl-C).
const CHUNK: usize = 512;

/// A pixel whose channels differ by more than this (of 255) has colour; JPEG's chroma noise
/// on a gray picture stays below it.
const COLOUR_THRESHOLD: u8 = 4;

/// One decoded image: `planes` (1 or 3) planes of `size` x `size` bytes, channel-major.
#[derive(Clone, Debug)]
pub struct Pixels {
    pub data: Vec<u8>,
    pub planes: usize,
    /// Whether a pixel has colour (a gray picture saved as RGB has none).
    pub colour: bool,
}

/// What decoding a file found, for the summary: its mode and whether it was resized.
#[derive(Clone, Debug)]
pub struct Decoded {
    pub pixels: Pixels,
    /// "rgb 8-bit", "gray 16-bit", "rgba 8-bit"... (a palette PNG is decoded to its colours:
    /// "rgb 8-bit", or "rgba 8-bit" with transparency).
    pub mode: &'static str,
    /// The file's own channels: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA.
    pub channels: u8,
    pub resized: bool,
    /// The file's own width and height, before resizing.
    pub original: (u32, u32),
}

/// One file read: the fingerprint of its bytes, and its pixels or why it cannot be decoded.
pub struct ReadFile {
    pub fingerprint: Option<Fingerprint>,
    pub decoded: std::result::Result<Decoded, String>,
}

/// The mode of a decoded image in words.
fn mode(color: image::ColorType) -> &'static str {
    use image::ColorType::*;
    match color {
        L8 => "gray 8-bit",
        La8 => "gray+alpha 8-bit",
        Rgb8 => "rgb 8-bit",
        Rgba8 => "rgba 8-bit",
        L16 => "gray 16-bit",
        La16 => "gray+alpha 16-bit",
        Rgb16 => "rgb 16-bit",
        Rgba16 => "rgba 16-bit",
        _ => "other",
    }
}

/// A decode error as one short printable line: the image crate's Debug text (`ChunkType` and
/// its fields) and raw bytes cut off, at most [`DECODE_REASON_CHARS`] characters.
///
/// [`DECODE_REASON_CHARS`]: crate::data::DECODE_REASON_CHARS
pub fn reason(error: &image::ImageError) -> String {
    let text = error.to_string();
    let debug = text.find(['\x7b', '\x5b']); // an opening brace or bracket
    // "Format error decoding Png: ChunkType" and its fields: the words before the Debug
    // text's name.
    let kept = match debug {
        Some(at) => text[..at]
            .rsplit_once(':')
            .map_or(&text[..at], |(words, _)| words),
        None => &text[..],
    };
    let mut line = kept
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let line_was_cut = debug.is_some() || kept.len() != line.len();
    let limit = crate::data::DECODE_REASON_CHARS;
    if line.len() > limit {
        line.truncate(limit);
    }
    let line = line.trim_end_matches([' ', ':', ',', '(']).to_string();
    match (line.is_empty(), line_was_cut) {
        (true, _) => "not a valid image (corrupt or truncated)".to_string(),
        (false, true) => format!("{line} (corrupt or truncated)"),
        (false, false) => line,
    }
}

/// Decodes one file's bytes: gray files as one plane, colour files as three (the run's
/// channels are chosen later, from the training part, and [`Pixels::into_channels`] converts).
pub fn decode(bytes: &[u8], size: usize) -> std::result::Result<Decoded, String> {
    let image = image::load_from_memory(bytes).map_err(|e| reason(&e))?;
    let mode = mode(image.color());
    let channels = image.color().channel_count();
    let original = (image.width(), image.height());
    let resized = image.width() as usize != size || image.height() as usize != size;
    let image = if resized {
        image.resize_exact(size as u32, size as u32, FilterType::Triangle)
    } else {
        image
    };
    let pixels = if !image.color().has_color() {
        Pixels {
            data: image.to_luma8().into_raw(),
            planes: 1,
            colour: false,
        }
    } else {
        planar_rgb(&image.to_rgb8().into_raw(), size)
    };
    Ok(Decoded {
        pixels,
        mode,
        channels,
        resized,
        original,
    })
}

/// Interleaved RGB to one plane a channel, and whether a pixel has colour.
fn planar_rgb(rgb: &[u8], size: usize) -> Pixels {
    let plane = size * size;
    let mut data = vec![0u8; 3 * plane];
    let mut colour = false;
    for (i, p) in rgb.chunks_exact(3).enumerate() {
        data[i] = p[0];
        data[plane + i] = p[1];
        data[2 * plane + i] = p[2];
        colour |= p[0].max(p[1]).max(p[2]) - p[0].min(p[1]).min(p[2]) > COLOUR_THRESHOLD;
    }
    Pixels {
        data,
        planes: 3,
        colour,
    }
}

impl Pixels {
    /// The image as `channels` planes of values in [0, 1] (see [`Pixels::into_channels`]):
    /// what training, evaluate and predict all feed a model before normalizing.
    pub fn into_unit(self, channels: usize) -> Vec<f32> {
        self.into_channels(channels)
            .into_iter()
            .map(|v| v as f32 / 255.0)
            .collect()
    }

    /// The image as `channels` planes: luminance from colour (Rec. 709 weights, as the image
    /// crate converts), or the gray plane repeated.
    pub fn into_channels(self, channels: usize) -> Vec<u8> {
        match (self.planes, channels) {
            (1, 3) => self.data.repeat(3),
            (3, 1) => {
                let plane = self.data.len() / 3;
                (0..plane)
                    .map(|i| {
                        let (r, g, b) = (
                            self.data[i] as f32,
                            self.data[plane + i] as f32,
                            self.data[2 * plane + i] as f32,
                        );
                        (0.2126 * r + 0.7152 * g + 0.0722 * b)
                            .round()
                            .clamp(0.0, 255.0) as u8
                    })
                    .collect()
            }
            _ => self.data,
        }
    }
}

/// Reads and decodes every file of `paths` in parallel, in order, with a progress bar.
pub fn read_all(paths: &[PathBuf], size: usize, progress: &dyn Progress) -> Result<Vec<ReadFile>> {
    progress.start("reading images", paths.len() as u64);
    let mut out = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(CHUNK) {
        if crate::interrupt::requested() {
            progress.finish();
            return Err(TrainerError::Interrupted);
        }
        let read: Vec<ReadFile> = chunk
            .par_iter()
            .map(|path| match std::fs::read(path) {
                Ok(bytes) => ReadFile {
                    fingerprint: Some(Fingerprint::of(&bytes)),
                    decoded: decode(&bytes, size),
                },
                Err(e) => ReadFile {
                    fingerprint: None,
                    decoded: Err(e.to_string()),
                },
            })
            .collect();
        out.extend(read);
        progress.advance(chunk.len() as u64, "");
    }
    progress.finish();
    Ok(out)
}

/// "60000 images: 59000 rgb 8-bit, 1000 gray 8-bit; 1200 resized to 32x32", for the console
/// and the reports.
/// When most files were resized from one square size, the summary names it and the flag
/// that keeps it ("70000 resized to 16x16 from 28x28 (--image-size 28 keeps them as they
/// are)"): a folder of 28x28 photos is otherwise trained at the 16x16 default unnoticed.
pub fn summary<'a>(decoded: impl Iterator<Item = &'a Decoded>, size: usize) -> String {
    let mut modes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut from: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    let (mut total, mut resized) = (0, 0);
    for d in decoded {
        total += 1;
        if d.resized {
            resized += 1;
            *from.entry(d.original).or_default() += 1;
        }
        *modes.entry(d.mode).or_default() += 1;
    }
    let modes: Vec<String> = modes.iter().map(|(m, n)| format!("{n} {m}")).collect();
    let common = from.iter().max_by_key(|(_, n)| **n);
    let hint = match common {
        Some(((w, h), n)) if w == h && *n * 2 > total => {
            format!(" from {w}x{h} (--image-size {w} keeps them as they are)")
        }
        _ => String::new(),
    };
    format!(
        "{total} images read: {}; {resized} resized to {size}x{size}{hint}",
        modes.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(image: image::DynamicImage) -> Vec<u8> {
        let mut bytes = std::io::Cursor::new(Vec::new());
        image
            .write_to(&mut bytes, image::ImageOutputFormat::Png)
            .unwrap();
        bytes.into_inner()
    }

    #[test]
    fn colour_gray_and_sixteen_bit_files_decode_to_planes() {
        let red = png(image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            4,
            4,
            image::Rgb([255, 0, 0]),
        )));
        let d = decode(&red, 2).unwrap();
        assert!(d.resized && d.pixels.colour && d.pixels.planes == 3);
        assert_eq!(d.pixels.data, [255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0]);
        let gray = png(image::DynamicImage::ImageLuma16(
            image::ImageBuffer::from_pixel(2, 2, image::Luma([65535u16])),
        ));
        let d = decode(&gray, 2).unwrap();
        assert_eq!(
            (d.mode, d.resized, d.pixels.planes),
            ("gray 16-bit", false, 1)
        );
        assert_eq!(d.pixels.clone().into_channels(3), [255; 12]);
        assert!(decode(b"not an image", 2).is_err());
    }

    #[test]
    fn the_summary_names_the_size_most_files_had_and_the_flag_that_keeps_it() {
        let gray = |side: u32| {
            let bytes = png(image::DynamicImage::ImageLuma8(image::GrayImage::new(
                side, side,
            )));
            decode(&bytes, 16).unwrap()
        };
        let files = [gray(28), gray(28), gray(16)];
        let line = summary(files.iter(), 16);
        assert_eq!(
            line,
            "3 images read: 3 gray 8-bit; 2 resized to 16x16 from 28x28 \
             (--image-size 28 keeps them as they are)"
        );
        // No hint when no one size is most of the folder, nor when nothing was resized.
        let mixed = [gray(28), gray(20), gray(16), gray(16)];
        assert_eq!(
            summary(mixed.iter(), 16),
            "4 images read: 4 gray 8-bit; 2 resized to 16x16"
        );
        let same = [gray(16)];
        assert_eq!(
            summary(same.iter(), 16),
            "1 images read: 1 gray 8-bit; 0 resized to 16x16"
        );
    }

    #[test]
    fn a_corrupt_file_gets_a_short_printable_reason() {
        let mut bytes = png(image::DynamicImage::ImageLuma8(image::GrayImage::new(4, 4)));
        // The IHDR chunk's type replaced by raw bytes, as in a damaged download.
        bytes[12..16].copy_from_slice(&[0xf9, 0x46, 0xfa, 0xa6]);
        bytes.extend(std::iter::repeat_n(0xa6, 3000));
        for bad in [bytes.as_slice(), &bytes[..20], b"not an image"] {
            let Err(why) = decode(bad, 2) else {
                panic!("decoded")
            };
            assert!(!why.is_empty() && why.len() <= 150, "{why}");
            assert!(
                why.chars().all(|c| c.is_ascii_graphic() || c == ' '),
                "{why}"
            );
            assert!(!why.contains('\x7b'), "{why}");
        }
        // A PNG cut off in its image data (an interrupted download): the README's example.
        let noise = image::GrayImage::from_fn(64, 64, |x, y| image::Luma([(x * 7 + y * 13) as u8]));
        let whole = png(image::DynamicImage::ImageLuma8(noise));
        let Err(why) = decode(&whole[..whole.len() / 2], 2) else {
            panic!("decoded a truncated file")
        };
        assert_eq!(why, "unexpected end of file");
    }
}
