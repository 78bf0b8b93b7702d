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
    let started = std::time::Instant::now();
    let splits = data::load_splits_with(&settings.data_config(), console)?;
    let load_seconds = started.elapsed().as_secs_f64();
    // An empty part would train on nothing (NaN losses) or test on nothing.
    if let Some((name, _)) = [
        ("training", &splits.train),
        ("validation", &splits.val),
        ("test", &splits.test),
    ]
    .into_iter()
    .find(|(_, part)| part.samples.is_empty())
    {
        return Err(crate::error::TrainerError::bad_input(format!(
            "{who}the {name} part is empty: use more images per class or another --split"
        )));
    }
    for (file, reason) in &splits.skipped {
        console.warn(&format!("{who}skipped '{file}': {reason}"));
    }
    if let Some(folder) = &splits.folder {
        console.info(&format!("{who}data: {}", folder.layout));
        for origin in &folder.origins {
            console.info(&format!(
                "{who}  {}: {} images from {}",
                origin.part.as_str(),
                origin.images,
                origin.from
            ));
        }
        console.info(&format!(
            "{who}{} (loaded in {load_seconds:.2} s)",
            folder.decoded
        ));
        if let Some(line) = &folder.few_training_images {
            console.warn(&format!("{who}{line}"));
        }
    }
    if let Some(line) = data::issues::summary(&splits.issues) {
        console.warn(&format!("{who}{line}"));
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
) -> Result<Net> {
    Ok(Net::init(
        settings.spec(kind, splits.train.channels)?,
        splits.image_size,
        splits.classes.len(),
        settings.seed,
        device,
    ))
}
