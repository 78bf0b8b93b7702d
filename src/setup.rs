//! What every command that trains does first: the run's data loaded as the workshop run
//! loads it, and a fresh model from the run's seed.

use crate::config::Settings;
use crate::console::Console;
use crate::data::{self, Splits};
use crate::error::Result;
use crate::model::{ModelKind, Net};

/// The run's data, loaded as the workshop run trains on it: each skipped file a warning and,
/// for an image folder, one line saying its colour (`who` names the command, "parity: ").
pub fn load_data(settings: &Settings, console: &Console, who: &str) -> Result<Splits> {
    let splits = data::load_splits(&settings.data_config())?;
    for (file, reason) in &splits.skipped {
        console.warn(&format!("{who}skipped '{file}': {reason}"));
    }
    if settings.data.is_some() {
        console.info(&format!("{who}images: {}", splits.color.describe()));
    }
    Ok(splits)
}

/// A fresh model of `kind` for `splits`, from the run's seed: the data's channels, image size
/// and classes, `--cnn-widths`; every command starts from the same weights.
pub fn init_net(
    settings: &Settings,
    kind: ModelKind,
    splits: &Splits,
    device: &burn::tensor::Device,
) -> Net {
    Net::init(
        settings.spec(kind, splits.train.channels),
        splits.image_size,
        splits.classes.len(),
        settings.seed,
        device,
    )
}
