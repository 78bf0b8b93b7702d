//! One image file as model input: decoded (PNG, JPEG or BMP, any colour type), resized to
//! `size` x `size` with bilinear (triangle) resampling, stretching when the aspect ratio
//! differs, as one luminance channel or three (red, green, blue), values in [0, 1],
//! channel-major. A grayscale file read as RGB repeats its channel; a colour file read as
//! grayscale is converted to luminance. The same conversion as training's ([`super::decode`]),
//! so `predict` sees what the model trained on.

use std::path::Path;

/// The resampling used, as the evidence states it.
pub const RESAMPLING: &str = "bilinear (triangle filter), aspect ratio not kept";

/// Reads one image file as `channels` x `size` x `size` values in [0, 1].
pub fn read_image(path: &Path, size: usize, channels: usize) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    decode_image(&bytes, size, channels)
}

/// Decodes an image file's bytes as `channels` (1 or 3) x `size` x `size` values in [0, 1].
pub fn decode_image(bytes: &[u8], size: usize, channels: usize) -> Result<Vec<f32>, String> {
    let decoded = super::decode::decode(bytes, size)?;
    Ok(decoded.pixels.into_unit(channels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_is_kept_channel_major_and_gray_is_repeated() {
        let mut bytes = std::io::Cursor::new(Vec::new());
        image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(4, 4, image::Rgb([100; 3])))
            .write_to(&mut bytes, image::ImageOutputFormat::Png)
            .unwrap();
        let values = decode_image(bytes.get_ref(), 2, 3).unwrap();
        assert!(values.iter().all(|v| (v - 100.0 / 255.0).abs() < 1e-6));
        assert_eq!(decode_image(bytes.get_ref(), 2, 1).unwrap().len(), 4);
    }
}
