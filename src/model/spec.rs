//! A model's shape: which model, how many input channels, and for the CNN one width per
//! block. Everything that builds, names, sizes or runs a model takes one of these.

use serde::{Deserialize, Serialize};

use super::ModelKind;

/// The most blocks of the CNN family.
pub const MAX_BLOCKS: usize = 4;
/// The widest block.
pub const MAX_WIDTH: usize = 128;
/// The workshop's Tiny CNN: 8 then 16 channels.
pub const TINY_CNN_WIDTHS: [usize; 2] = [8, 16];

/// The CNN's widths, one per block (1 to [`MAX_BLOCKS`], each 1 to [`MAX_WIDTH`]), kept
/// `Copy` so a [`ModelSpec`] travels like a plain value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CnnWidths {
    len: u8,
    values: [u8; MAX_BLOCKS],
}

impl CnnWidths {
    /// The widths, checked: one line naming what is wrong otherwise.
    pub fn new(widths: &[usize]) -> Result<CnnWidths, String> {
        if widths.is_empty() || widths.len() > MAX_BLOCKS {
            return Err(format!(
                "--cnn-widths takes 1 to {MAX_BLOCKS} widths (one per block), got {}",
                widths.len()
            ));
        }
        if let Some(w) = widths.iter().find(|w| !(1..=MAX_WIDTH).contains(*w)) {
            return Err(format!(
                "--cnn-widths takes widths from 1 to {MAX_WIDTH}, got {w}"
            ));
        }
        let mut values = [0u8; MAX_BLOCKS];
        for (v, w) in values.iter_mut().zip(widths) {
            *v = *w as u8;
        }
        Ok(CnnWidths {
            len: widths.len() as u8,
            values,
        })
    }

    /// The workshop's Tiny CNN.
    pub fn tiny() -> CnnWidths {
        CnnWidths::new(&TINY_CNN_WIDTHS).unwrap_or(CnnWidths {
            len: 2,
            values: [8, 16, 0, 0],
        })
    }

    /// One width per block, in order.
    pub fn get(&self) -> Vec<usize> {
        self.values[..self.len as usize]
            .iter()
            .map(|w| *w as usize)
            .collect()
    }

    /// Number of blocks.
    pub fn blocks(&self) -> usize {
        self.len as usize
    }

    /// The last block's width: the length of the feature vector.
    pub fn last(&self) -> usize {
        self.values[self.len as usize - 1] as usize
    }

    /// Whether these are the workshop's Tiny CNN widths.
    pub fn is_tiny(&self) -> bool {
        self.get() == TINY_CNN_WIDTHS
    }

    /// "16-32-64".
    pub fn dashed(&self) -> String {
        self.get()
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join("-")
    }

    /// The smallest image the blocks take: each 2x2 max-pool between blocks halves it, and
    /// the last block needs a pixel.
    pub fn min_image_size(&self) -> usize {
        1 << (self.blocks() - 1)
    }

    /// Whether images of `image_size` squared are large enough for the blocks' max-pools:
    /// one line saying what is needed otherwise.
    pub fn check_image_size(&self, image_size: usize) -> Result<(), String> {
        if image_size >= self.min_image_size() {
            return Ok(());
        }
        Err(format!(
            "--cnn-widths {} has {} blocks, whose max-pools need --image-size of at least {}, got {image_size}",
            self.get()
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join(","),
            self.blocks(),
            self.min_image_size(),
        ))
    }
}

impl std::fmt::Debug for CnnWidths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.get())
    }
}

impl Default for CnnWidths {
    fn default() -> CnnWidths {
        CnnWidths::tiny()
    }
}

impl Serialize for CnnWidths {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(s)
    }
}

impl<'de> Deserialize<'de> for CnnWidths {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let widths = Vec::<usize>::deserialize(d)?;
        CnnWidths::new(&widths).map_err(serde::de::Error::custom)
    }
}

/// What the CNN's last block feeds the classifier: its global average (one value per
/// channel, the workshop's) or its whole map flattened (channels x side x side).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// Global average pool: one feature per channel of the last block.
    #[default]
    Gap,
    /// The last block's map flattened, as PyTorch's nn.Flatten.
    Flatten,
}

/// The widest hidden layer of the head.
pub const MAX_HIDDEN: usize = 4096;
/// `x` short enough for one line: scientific notation when tiny or huge.
fn shown(x: f64) -> String {
    match x.abs() {
        a if a != 0.0 && !(1e-4..1e6).contains(&a) => format!("{x:e}"),
        _ => format!("{x}"),
    }
}

/// The smallest dropout above 0 (model names give it to 4 decimals).
pub const MIN_DROPOUT: f64 = 1e-4;

/// A dropout in (0, 1) for a model name: 4 decimals, more where 4 would round it up to 1
/// (0.99999 stays "0.99999", never "1." or "1"), trailing zeros trimmed and never a trailing
/// dot, since the name is also a folder name (Windows refuses one ending in a dot).
fn dropout_text(p: f64) -> String {
    let mut text = format!("{p:.4}");
    for decimals in 5..=17 {
        if !text.starts_with('1') {
            break;
        }
        text = format!("{p:.decimals$}");
    }
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}
/// The most weights of the head's first linear layer (features x hidden units).
pub const MAX_HEAD_WEIGHTS: usize = 64 << 20;

/// The CNN's classifier head: [`HeadKind`], an optional hidden Linear+ReLU of `hidden` units
/// (0 = none), and dropout before each Linear of the head while training. The dropout is
/// kept as its bits so the spec stays `Eq + Hash`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Head {
    pub kind: HeadKind,
    pub hidden: usize,
    dropout_bits: u64,
}

impl Head {
    /// A head, checked: one line naming what is wrong otherwise.
    pub fn new(kind: HeadKind, hidden: usize, dropout: f64) -> Result<Head, String> {
        if !(dropout.is_finite() && (0.0..1.0).contains(&dropout)) {
            return Err(format!(
                "--dropout must be in [0, 1), got {}",
                shown(dropout)
            ));
        }
        if dropout > 0.0 && dropout < MIN_DROPOUT {
            return Err(format!(
                "--dropout below {MIN_DROPOUT} drops nothing in practice, got {}: 0 turns dropout off",
                shown(dropout)
            ));
        }
        if hidden > MAX_HIDDEN {
            return Err(format!(
                "--hidden takes 0 (no hidden layer) to {MAX_HIDDEN} units, got {hidden}"
            ));
        }
        Ok(Head {
            kind,
            hidden,
            dropout_bits: dropout.to_bits(),
        })
    }

    /// The dropout probability, in [0, 1).
    pub fn dropout(&self) -> f64 {
        f64::from_bits(self.dropout_bits)
    }

    /// The workshop's head: global average pool and one linear layer, no dropout.
    pub fn is_gap_only(&self) -> bool {
        *self == Head::default()
    }

    /// "flatten-h128-d0.25", "gap-h64", "flatten": the head in model names.
    pub fn name(&self) -> String {
        let mut name = match self.kind {
            HeadKind::Gap => "gap".to_string(),
            HeadKind::Flatten => "flatten".to_string(),
        };
        if self.hidden > 0 {
            name += &format!("-h{}", self.hidden);
        }
        if self.dropout() > 0.0 {
            name += &format!("-d{}", dropout_text(self.dropout()));
        }
        name
    }

    /// The side of the last block's map on `image_size` squared images.
    pub fn last_side(widths: &CnnWidths, image_size: usize) -> usize {
        image_size >> (widths.blocks() - 1)
    }

    /// How many features the head's first Linear takes.
    pub fn features(&self, widths: &CnnWidths, image_size: usize) -> usize {
        match self.kind {
            HeadKind::Gap => widths.last(),
            HeadKind::Flatten => widths.last() * Self::last_side(widths, image_size).pow(2),
        }
    }

    /// Whether this head fits `widths` on `image_size` squared images: one line otherwise.
    pub fn check(&self, widths: &CnnWidths, image_size: usize) -> Result<(), String> {
        let features = self.features(widths, image_size);
        if self.kind == HeadKind::Flatten && Self::last_side(widths, image_size) == 0 {
            return Err(format!(
                "--head flatten: {} blocks leave no pixels of a {image_size}x{image_size} image to flatten",
                widths.blocks()
            ));
        }
        if features * self.hidden.max(1) > MAX_HEAD_WEIGHTS {
            return Err(format!(
                "--head {}{} on --cnn-widths {} at --image-size {image_size} needs {} weights in its first linear layer ({features} features); at most {MAX_HEAD_WEIGHTS}: use --head gap, fewer --hidden units or smaller images",
                match self.kind {
                    HeadKind::Gap => "gap",
                    HeadKind::Flatten => "flatten",
                },
                if self.hidden > 0 {
                    format!(" --hidden {}", self.hidden)
                } else {
                    String::new()
                },
                widths
                    .get()
                    .iter()
                    .map(|w| w.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                features * self.hidden.max(1),
            ));
        }
        Ok(())
    }
}

impl Serialize for Head {
    /// `{"head": "flatten", "hidden": 128, "dropout": 0.25}`, as the config keys name them.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut state = s.serialize_struct("Head", 3)?;
        state.serialize_field("head", &self.kind)?;
        state.serialize_field("hidden", &self.hidden)?;
        state.serialize_field("dropout", &self.dropout())?;
        state.end()
    }
}

/// Which model, on how many input channels, of which widths and head (widths and head mean
/// nothing for the baseline).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ModelSpec {
    pub kind: ModelKind,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    pub widths: CnnWidths,
    /// The CNN's classifier head (global average pool or flatten, hidden layer, dropout).
    pub head: Head,
    /// BatchNorm after each convolution, before its ReLU (`--batch-norm`).
    pub batch_norm: bool,
}

impl From<ModelKind> for ModelSpec {
    /// The workshop's model: one channel, the Tiny CNN's widths.
    fn from(kind: ModelKind) -> ModelSpec {
        ModelSpec {
            kind,
            channels: 1,
            widths: CnnWidths::tiny(),
            head: Head::default(),
            batch_norm: false,
        }
    }
}

impl ModelSpec {
    /// The name in every evidence file: the workshop's names for its two models ("Flatten
    /// baseline", "Tiny CNN"), "CNN 16-32-64" for other widths, then "bn" with batch norm
    /// and the head when it is not the workshop's ("CNN 32-64 bn flatten-h128").
    pub fn display_name(&self) -> String {
        match self.kind {
            ModelKind::Cnn if !self.is_plain_cnn() => {
                format!("CNN {}", self.shape_parts().join(" "))
            }
            ModelKind::Cnn if !self.widths.is_tiny() => format!("CNN {}", self.widths.dashed()),
            kind => kind.display_name().to_string(),
        }
    }

    /// A short name for files and leaderboards: "baseline", "cnn", "cnn-16-32-64",
    /// "cnn-32-64-bn-flatten-h128".
    pub fn slug(&self) -> String {
        match self.kind {
            ModelKind::Cnn if !self.is_plain_cnn() => {
                format!("cnn-{}", self.shape_parts().join("-"))
            }
            ModelKind::Cnn if !self.widths.is_tiny() => format!("cnn-{}", self.widths.dashed()),
            kind => kind.slug().to_string(),
        }
    }

    /// Whether the CNN has the workshop's head and no batch norm (named by its widths only).
    fn is_plain_cnn(&self) -> bool {
        self.head.is_gap_only() && !self.batch_norm
    }

    /// The widths, "bn" with batch norm, and the head unless it is the workshop's.
    fn shape_parts(&self) -> Vec<String> {
        let mut parts = vec![self.widths.dashed()];
        if self.batch_norm {
            parts.push("bn".into());
        }
        if !self.head.is_gap_only() {
            parts.push(self.head.name());
        }
        parts
    }

    /// Floating-point operations of one sample's forward pass on `image_size` squared
    /// images: two per multiply-add of the convolutions and the linear layer (ReLU, batch
    /// norm and pooling are not counted, as is usual). A training step costs about three times this
    /// (forward, then the gradients of the inputs and of the weights).
    pub fn forward_flops(&self, image_size: usize, classes: usize) -> u64 {
        let pixels = |side: usize| (side * side) as u64;
        match self.kind {
            ModelKind::Baseline => 2 * (self.channels as u64) * pixels(image_size) * classes as u64,
            ModelKind::Cnn => {
                let mut side = image_size;
                let mut inputs = self.channels as u64;
                let mut flops = 0;
                for (block, width) in self.widths.get().into_iter().enumerate() {
                    if block > 0 {
                        side /= 2;
                    }
                    flops += 2 * 9 * inputs * width as u64 * pixels(side);
                    inputs = width as u64;
                }
                let features = self.head.features(&self.widths, image_size) as u64;
                let hidden = self.head.hidden as u64;
                flops
                    + match hidden {
                        0 => 2 * features * classes as u64,
                        _ => 2 * features * hidden + 2 * hidden * classes as u64,
                    }
            }
        }
    }

    /// Whether `name` is the display name of a CNN of the family ("Tiny CNN", "CNN 16-32").
    pub fn is_cnn_name(name: &str) -> bool {
        name == ModelKind::Cnn.display_name() || name.starts_with("CNN ")
    }

    /// Whether `name` is this model's display name.
    pub fn is_named(&self, name: &str) -> bool {
        self.display_name() == name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropout_is_named_to_four_decimals_and_a_vanishing_one_is_refused() {
        let head = |p| Head::new(HeadKind::Flatten, 128, p);
        assert_eq!(head(0.25).unwrap().name(), "flatten-h128-d0.25");
        assert_eq!(head(1.0 / 3.0).unwrap().name(), "flatten-h128-d0.3333");
        assert_eq!(head(0.0001).unwrap().name(), "flatten-h128-d0.0001");
        assert_eq!(head(0.0).unwrap().name(), "flatten-h128");
        // Near 1 the name keeps the digits that tell it from 1, and never ends in a dot.
        assert_eq!(head(0.99999).unwrap().name(), "flatten-h128-d0.99999");
        assert_eq!(head(0.9999).unwrap().name(), "flatten-h128-d0.9999");
        assert_eq!(head(0.5).unwrap().name(), "flatten-h128-d0.5");
        for p in [0.99999, 0.999999999, 0.5, 0.0001, 0.12345] {
            let name = head(p).unwrap().name();
            assert!(!name.ends_with('.') && !name.ends_with("-d1"), "{name}");
        }
        let err = head(1e-300).unwrap_err();
        assert!(err.contains("0 turns dropout off"), "{err}");
        assert!(err.lines().count() == 1 && err.len() < 200, "{err}");
        let err = head(1e300).unwrap_err();
        assert!(err.len() < 100, "{err}");
    }

    #[test]
    fn names_and_bounds() {
        let tiny = ModelSpec::from(ModelKind::Cnn);
        assert_eq!(tiny.display_name(), "Tiny CNN");
        let wide = ModelSpec {
            widths: CnnWidths::new(&[16, 32, 64]).unwrap(),
            ..tiny
        };
        assert_eq!(wide.display_name(), "CNN 16-32-64");
        assert_eq!(wide.slug(), "cnn-16-32-64");
        assert_eq!(wide.widths.min_image_size(), 4);
        // 3 channels, 16-32-64 at 32x32: the 5.6 MFLOP forward pass the 95 GFLOP/s
        // figure for PyTorch rests on (5.7k samples/s, three passes a step).
        let rgb = ModelSpec {
            channels: 3,
            ..wide
        };
        assert_eq!(
            rgb.forward_flops(32, 3),
            2 * 9 * (3 * 16 * 1024 + 16 * 32 * 256 + 32 * 64 * 64) + 2 * 64 * 3
        );
        let bn = ModelSpec {
            batch_norm: true,
            ..tiny
        };
        assert_eq!(bn.display_name(), "CNN 8-16 bn");
        assert_eq!(bn.slug(), "cnn-8-16-bn");
        let classic = ModelSpec {
            widths: CnnWidths::new(&[32, 64]).unwrap(),
            head: Head::new(HeadKind::Flatten, 128, 0.0).unwrap(),
            ..bn
        };
        assert_eq!(classic.display_name(), "CNN 32-64 bn flatten-h128");
        assert_eq!(classic.slug(), "cnn-32-64-bn-flatten-h128");
        assert!(CnnWidths::new(&[]).is_err());
        assert!(CnnWidths::new(&[8, 8, 8, 8, 8]).is_err());
        assert!(CnnWidths::new(&[0]).is_err());
        assert!(CnnWidths::new(&[1000]).is_err());
        assert_eq!(
            serde_json::to_string(&CnnWidths::new(&[3, 5]).unwrap()).unwrap(),
            "[3,5]"
        );
    }
}
