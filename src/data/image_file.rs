//! One image file as model input: decoded (PNG, JPEG or BMP, any colour type), resized to
//! `size` x `size` with bilinear (triangle) resampling, stretching when the aspect ratio
//! differs, as one luminance channel or three (red, green, blue), values in [0, 1],
//! channel-major. A grayscale file read as RGB repeats its channel; a colour file read as
//! grayscale is converted to luminance.

use std::path::Path;

use image::imageops::FilterType;

/// The resampling used, as the evidence states it.
pub const RESAMPLING: &str = "bilinear (triangle filter), aspect ratio not kept";

/// A pixel whose channels differ by more than this (of 255) has colour; JPEG's chroma noise
/// on a gray picture stays below it.
const COLOUR_THRESHOLD: f32 = 4.0 / 255.0;

/// Reads one image file as `channels` x `size` x `size` values in [0, 1].
pub fn read_image(path: &Path, size: usize, channels: usize) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    decode_image(&bytes, size, channels)
}

/// Decodes an image file's bytes as `channels` (1 or 3) x `size` x `size` values in [0, 1].
pub fn decode_image(bytes: &[u8], size: usize, channels: usize) -> Result<Vec<f32>, String> {
    let decoded = image::load_from_memory(bytes).map_err(|e| e.to_string())?;
    Ok(convert(&decoded, size, channels))
}

/// A decoded image as `channels` (1 or 3) x `size` x `size` values in [0, 1].
pub fn convert(decoded: &image::DynamicImage, size: usize, channels: usize) -> Vec<f32> {
    let resized = decoded.resize_exact(size as u32, size as u32, FilterType::Triangle);
    if channels == 1 {
        return resized.to_luma32f().into_raw();
    }
    // Interleaved RGB to one plane a channel.
    let rgb = resized.to_rgb32f().into_raw();
    let plane = size * size;
    let mut out = vec![0.0; 3 * plane];
    for (i, pixel) in rgb.chunks_exact(3).enumerate() {
        for (c, v) in pixel.iter().enumerate() {
            out[c * plane + i] = *v;
        }
    }
    out
}

/// Whether an image file has colour: a colour type with colour, and a pixel whose channels
/// differ (a gray picture saved as RGB has none).
pub fn has_colour(bytes: &[u8]) -> Result<bool, String> {
    let decoded = image::load_from_memory(bytes).map_err(|e| e.to_string())?;
    if !decoded.color().has_color() {
        return Ok(false);
    }
    let rgb = decoded.to_rgb32f();
    Ok(rgb.pixels().any(|p| {
        let [r, g, b] = p.0;
        r.max(g).max(b) - r.min(g).min(b) > COLOUR_THRESHOLD
    }))
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
    fn colour_is_kept_channel_major_and_gray_is_repeated() {
        let red = png(image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            4,
            4,
            image::Rgb([255, 0, 0]),
        )));
        assert!(has_colour(&red).unwrap());
        let values = decode_image(&red, 2, 3).unwrap();
        assert_eq!(
            values,
            [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
        let gray = png(image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            4,
            4,
            image::Rgb([100, 100, 100]),
        )));
        assert!(
            !has_colour(&gray).unwrap(),
            "gray saved as RGB has no colour"
        );
        let values = decode_image(&gray, 2, 3).unwrap();
        assert!(values.iter().all(|v| (v - 100.0 / 255.0).abs() < 1e-6));
        assert_eq!(decode_image(&red, 2, 1).unwrap().len(), 4);
    }
}
