//! The images inference reads: files as given and folders walked recursively (sorted, image
//! files only), each read at the checkpoint's size and channels, with a count of what had to
//! be resized or converted so that the user is told once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::data::folder::IMAGE_EXTENSIONS;
use crate::error::{Result, TrainerError};

/// One image to classify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub path: PathBuf,
    /// The class subfolder it lies in, under a folder that was given (none for a file given
    /// by name).
    pub folder_class: Option<String>,
}

/// Whether `path` names an image file by its extension.
pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The images of `paths`: a file as given (also one that cannot be read: its error is its
/// result), a folder as every image file under it, in sorted order.
pub fn gather(paths: &[PathBuf]) -> Result<Vec<Input>> {
    let mut inputs = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut files = Vec::new();
            walk(path, &mut files)?;
            files.sort();
            inputs.extend(files.into_iter().map(|file| Input {
                folder_class: class_of(&file, path),
                path: file,
            }));
        } else {
            inputs.push(Input {
                path: path.clone(),
                folder_class: None,
            });
        }
    }
    Ok(inputs)
}

/// The first folder of `file` below `root`, when it is in one.
fn class_of(file: &Path, root: &Path) -> Option<String> {
    let relative = file.strip_prefix(root).ok()?;
    let mut parts = relative.components();
    let first = parts.next()?;
    parts
        .next()
        .map(|_| first.as_os_str().to_string_lossy().into_owned())
}

/// Every image file under `dir`, following no links to folders (no loops), hidden entries
/// (a pack's staging folders, `.DS_Store`) left out.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| TrainerError::io("reading folder", dir, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => walk(&path, out)?,
            _ if is_image(&path) && path.is_file() => out.push(path),
            _ => {}
        }
    }
    Ok(())
}

/// What reading images at a checkpoint's size and channels changed, counted over every image.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Conversions {
    /// Images of another size, and the sizes they had (width x height).
    pub resized: usize,
    pub sizes: BTreeSet<(u32, u32)>,
    /// Images of another channel count (colour for a grey model, grey for a colour one, an
    /// alpha channel dropped), and the files' own channel counts.
    pub converted: usize,
    pub channels: BTreeSet<usize>,
}

impl Conversions {
    /// The one line that says it, or none when every image was as the checkpoint expects.
    pub fn line(&self, size: usize, channels: usize) -> Option<String> {
        let mut parts = Vec::new();
        if self.resized > 0 {
            let sizes: Vec<String> = self
                .sizes
                .iter()
                .take(4)
                .map(|(w, h)| format!("{w}x{h}"))
                .collect();
            let more = if self.sizes.len() > 4 { ", ..." } else { "" };
            parts.push(format!(
                "{} resized from {}{more}",
                self.resized,
                sizes.join(", ")
            ));
        }
        if self.converted > 0 {
            let from: Vec<String> = self
                .channels
                .iter()
                .map(|&c| format!("{c} channel(s) ({})", channel_words(c)))
                .collect();
            parts.push(format!(
                "{} converted from {}",
                self.converted,
                from.join(" or ")
            ));
        }
        (!parts.is_empty()).then(|| {
            format!(
                "images read as the checkpoint's {size}x{size} {}: {}",
                if channels == 1 { "grayscale" } else { "RGB" },
                parts.join("; ")
            )
        })
    }
}

/// What a file of `channels` channels holds, in words.
fn channel_words(channels: usize) -> &'static str {
    match channels {
        1 => "gray",
        2 => "gray+alpha",
        3 => "RGB",
        4 => "RGBA",
        _ => "other",
    }
}

/// Reads one image as `channels` x `size` x `size` values in [0, 1], counting in
/// `conversions` what differed from that.
pub fn read(
    path: &Path,
    size: usize,
    channels: usize,
    conversions: &mut Conversions,
) -> std::result::Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    read_bytes(&bytes, size, channels, conversions)
}

/// [`read`] on a file's bytes already read.
pub fn read_bytes(
    bytes: &[u8],
    size: usize,
    channels: usize,
    conversions: &mut Conversions,
) -> std::result::Result<Vec<f32>, String> {
    // Decoded as training decodes (8-bit planes, the same resize and luminance).
    let decoded = crate::data::decode::decode(bytes, size)?;
    if decoded.resized {
        conversions.resized += 1;
        conversions.sizes.insert(decoded.original);
    }
    // The file's own channels: an RGBA file read as RGB loses its alpha, so it counts too.
    let has = decoded.channels as usize;
    if has != channels {
        conversions.converted += 1;
        conversions.channels.insert(has);
    }
    Ok(decoded.pixels.into_unit(channels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_walked_sorted_with_their_class_and_files_kept_as_given() {
        let dir = std::env::temp_dir().join(format!("trainer-inputs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for file in [
            "b/2.png",
            "a/deep/1.PNG",
            "a/notes.txt",
            "top.jpg",
            ".hidden/x.png",
        ] {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        let missing = dir.join("missing.png");
        let found = gather(&[dir.clone(), missing.clone()]).unwrap();
        let names: Vec<(String, Option<String>)> = found
            .iter()
            .map(|i| {
                let rel = i.path.strip_prefix(&dir).unwrap().display().to_string();
                (rel, i.folder_class.clone())
            })
            .collect();
        assert_eq!(
            names,
            [
                ("a/deep/1.PNG".to_string(), Some("a".to_string())),
                ("b/2.png".to_string(), Some("b".to_string())),
                ("top.jpg".to_string(), None),
                ("missing.png".to_string(), None),
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn one_line_says_what_was_resized_and_converted() {
        let mut c = Conversions::default();
        assert_eq!(c.line(28, 1), None);
        c.resized = 3;
        c.sizes.insert((32, 32));
        c.converted = 3;
        c.channels.insert(3);
        let line = c.line(28, 1).unwrap();
        assert!(line.contains("28x28 grayscale"), "{line}");
        assert!(line.contains("3 resized from 32x32"), "{line}");
        assert!(
            line.contains("3 converted from 3 channel(s) (RGB)"),
            "{line}"
        );
        c.channels.insert(4);
        let line = c.line(28, 1).unwrap();
        assert!(
            line.contains("from 3 channel(s) (RGB) or 4 channel(s) (RGBA)"),
            "{line}"
        );
    }

    #[test]
    fn an_rgba_file_is_counted_by_its_own_four_channels() {
        let dir = std::env::temp_dir().join(format!("trainer-rgba-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rgba.png");
        image::RgbaImage::from_pixel(28, 28, image::Rgba([200, 10, 10, 128]))
            .save(&path)
            .unwrap();
        for (channels, converted) in [(1, 1), (3, 1)] {
            let mut c = Conversions::default();
            let values = read(&path, 28, channels, &mut c).unwrap();
            assert_eq!(values.len(), channels * 28 * 28);
            assert_eq!((c.converted, c.resized), (converted, 0));
            let line = c.line(28, channels).unwrap();
            assert!(
                line.contains("1 converted from 4 channel(s) (RGBA)"),
                "{line}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
