//! TensorBoard event files, written without TensorFlow: a run's scalars (loss, accuracy) and
//! images (plots as PNG) in the format `tensorboard --logdir` reads, so a user who already
//! works in TensorBoard can open a pack there.
//!
//! An event file is a sequence of TFRecords, each holding one protobuf `Event`: the first
//! names the file version, the rest carry a `Summary` of one scalar or image. The messages
//! below are the few fields of TensorFlow's `event.proto` and `summary.proto` this needs,
//! with the same tags, encoded by prost.

use prost::Message;

/// The file version TensorBoard expects in the first record of an event file.
const FILE_VERSION: &str = "brain.Event:2";

/// The constant TFRecord adds to a rotated CRC-32C, so data holding its own CRC checks well.
const MASK_DELTA: u32 = 0xa282_ead8;

/// `tensorflow.Event`, with its `what` oneof as two optional fields.
#[derive(Clone, PartialEq, Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// `tensorflow.Summary`: the values logged at one step.
#[derive(Clone, PartialEq, Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<Value>,
}

/// `tensorflow.Summary.Value`: one tagged scalar or image (its `value` oneof as two fields).
#[derive(Clone, PartialEq, Message)]
pub struct Value {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
    #[prost(message, optional, tag = "4")]
    pub image: Option<Image>,
}

/// `tensorflow.Summary.Image`: an encoded (PNG) image and its size.
#[derive(Clone, PartialEq, Message)]
pub struct Image {
    #[prost(int32, tag = "1")]
    pub height: i32,
    #[prost(int32, tag = "2")]
    pub width: i32,
    /// 1 grey, 2 grey and alpha, 3 RGB, 4 RGBA.
    #[prost(int32, tag = "3")]
    pub colorspace: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_image_string: Vec<u8>,
}

/// One TensorBoard run: the events of one event file, in memory.
pub struct EventWriter {
    bytes: Vec<u8>,
    wall_time: f64,
}

impl EventWriter {
    /// A new event file stamped with `wall_time` (seconds since the Unix epoch), holding the
    /// file-version record TensorBoard reads first.
    pub fn new(wall_time: f64) -> EventWriter {
        let mut writer = EventWriter {
            bytes: Vec::new(),
            wall_time,
        };
        let version = Some(FILE_VERSION.to_string());
        writer.push(Event {
            wall_time,
            step: 0,
            file_version: version,
            summary: None,
        });
        writer
    }

    /// Stamps the events that follow with `wall_time` (for example the end of an epoch).
    pub fn at(&mut self, wall_time: f64) {
        self.wall_time = wall_time;
    }

    /// Logs `value` under `tag` at `step` (TensorBoard stores scalars as 32-bit floats).
    pub fn scalar(&mut self, tag: &str, step: i64, value: f64) {
        self.summary(tag, step, Some(value as f32), None);
    }

    /// Logs a PNG image under `tag` at `step`; `colorspace` is 3 for RGB, 4 for RGBA (see
    /// [`png_size`] to read all three from the PNG itself).
    pub fn image(
        &mut self,
        tag: &str,
        step: i64,
        png: &[u8],
        width: u32,
        height: u32,
        colorspace: i32,
    ) {
        let image = Image {
            height: i32::try_from(height).unwrap_or(i32::MAX),
            width: i32::try_from(width).unwrap_or(i32::MAX),
            colorspace,
            encoded_image_string: png.to_vec(),
        };
        self.summary(tag, step, None, Some(image));
    }

    /// The event file's bytes, ready to write under [`file_name`].
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    fn summary(&mut self, tag: &str, step: i64, simple_value: Option<f32>, image: Option<Image>) {
        let tag = tag.to_string();
        let event = Event {
            wall_time: self.wall_time,
            step,
            file_version: None,
            summary: Some(Summary {
                value: vec![Value {
                    tag,
                    simple_value,
                    image,
                }],
            }),
        };
        self.push(event);
    }

    fn push(&mut self, event: Event) {
        write_record(&mut self.bytes, &event.encode_to_vec());
    }
}

/// The event file name TensorBoard looks for, `events.out.tfevents.{secs}.{host}`; the host is
/// always "trainer", so a rerun names its file the same way on any machine.
pub fn file_name(wall_time: f64) -> String {
    let secs = wall_time.max(0.0).floor() as u64;
    format!("events.out.tfevents.{secs}.trainer")
}

/// The CRC-32C of `data`, masked the way TFRecord stores it.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    ((crc >> 15) | (crc << 17)).wrapping_add(MASK_DELTA)
}

/// Appends one TFRecord: length, masked CRC of the length, data, masked CRC of the data.
fn write_record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
}

/// Reads the TFRecords of an event file back, checking both CRCs of each; an error names the
/// record (counted from 0) and what is wrong with it: a bad CRC or a truncated record.
pub fn read_records(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut records = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = records.len();
        let truncated = || format!("record {n}: truncated");
        let (len, after) = rest.split_first_chunk::<8>().ok_or_else(truncated)?;
        let (len_crc, after) = after.split_first_chunk::<4>().ok_or_else(truncated)?;
        if masked_crc(len) != u32::from_le_bytes(*len_crc) {
            return Err(format!("record {n}: bad length CRC"));
        }
        let len = usize::try_from(u64::from_le_bytes(*len)).map_err(|_| truncated())?;
        if after.len() < len {
            return Err(truncated());
        }
        let (data, after) = after.split_at(len);
        let (data_crc, after) = after.split_first_chunk::<4>().ok_or_else(truncated)?;
        if masked_crc(data) != u32::from_le_bytes(*data_crc) {
            return Err(format!("record {n}: bad data CRC"));
        }
        records.push(data.to_vec());
        rest = after;
    }
    Ok(records)
}

/// A PNG's width, height and TensorBoard colorspace (1 grey, 2 grey and alpha, 3 RGB,
/// 4 RGBA), read from its IHDR chunk; `None` if `png` is not a PNG or its colour type is
/// palette (which TensorBoard has no colorspace for).
pub fn png_size(png: &[u8]) -> Option<(u32, u32, i32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if png.len() < 26 || !png.starts_with(SIGNATURE) || &png[12..16] != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes(png[16..20].try_into().ok()?);
    let height = u32::from_be_bytes(png[20..24].try_into().ok()?);
    let colorspace = match png[25] {
        0 => 1,
        4 => 2,
        2 => 3,
        6 => 4,
        _ => return None,
    };
    Some((width, height, colorspace))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published CRC-32C check values (the CRC catalogue's "123456789" -> 0xE3069283 and
    /// RFC 3720 B.4's 32 zeros, 32 0xFF bytes and the bytes 0..31), each masked as TFRecord
    /// does (rotate right by 15, add 0xa282ead8). The masked values were computed outside
    /// this crate (a bitwise CRC-32C in Python), so a wrong polynomial, rotation or delta
    /// fails here.
    #[test]
    fn masked_crc_of_published_check_values() {
        let cases: [(&[u8], u32); 4] = [
            (b"123456789", 0xC78A_B0E5),
            (&[0u8; 32], 0x0FD7_FFFA),
            (&[0xFFu8; 32], 0xF909_B029),
            (&core::array::from_fn::<u8, 32, _>(|i| i as u8), 0x951F_7892),
        ];
        for (data, masked) in cases {
            assert_eq!(masked_crc(data), masked, "{data:?}");
        }
    }

    #[test]
    fn scalar_and_image_read_back() {
        let png = [0x89, b'P', b'N', b'G', 1, 2, 3];
        let mut writer = EventWriter::new(1_700_000_000.5);
        writer.scalar("loss/train", 3, 0.25);
        writer.image("plots/curves", 4, &png, 640, 480, 3);
        let records = read_records(&writer.into_bytes()).expect("records read back");
        assert_eq!(records.len(), 3);

        let decode = |i: usize| Event::decode(records[i].as_slice()).expect("event decodes");
        let first = decode(0);
        assert_eq!(first.file_version.as_deref(), Some("brain.Event:2"));
        assert_eq!((first.step, first.wall_time), (0, 1_700_000_000.5));

        let scalar = decode(1);
        let value = &scalar.summary.expect("a summary").value[0];
        assert_eq!((scalar.step, value.tag.as_str()), (3, "loss/train"));
        assert_eq!(value.simple_value, Some(0.25));

        let image = decode(2);
        let value = &image.summary.expect("a summary").value[0];
        assert_eq!((image.step, value.tag.as_str()), (4, "plots/curves"));
        let img = value.image.as_ref().expect("an image");
        assert_eq!((img.width, img.height, img.colorspace), (640, 480, 3));
        assert_eq!(img.encoded_image_string, png);
    }

    #[test]
    fn flipped_byte_or_truncation_is_refused() {
        let mut writer = EventWriter::new(1.0);
        writer.scalar("loss", 1, 1.0);
        let bytes = writer.into_bytes();
        for i in [0, 9, 14, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(read_records(&bad).is_err(), "flipped byte {i} was accepted");
        }
        let err = read_records(&bytes[..bytes.len() - 2]).expect_err("truncation accepted");
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn png_size_reads_ihdr() {
        let mut png = std::io::Cursor::new(Vec::new());
        image::RgbImage::new(3, 2)
            .write_to(&mut png, image::ImageOutputFormat::Png)
            .expect("png encodes");
        assert_eq!(png_size(png.get_ref()), Some((3, 2, 3)));
        assert_eq!(png_size(b"not a png at all, not at all"), None);
    }

    #[test]
    fn file_name_uses_whole_seconds() {
        let name = file_name(1_700_000_000.9);
        assert_eq!(name, "events.out.tfevents.1700000000.trainer");
    }
}
