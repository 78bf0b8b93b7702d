//! The commands, one module each: what `main.rs` calls with the parsed command line
//! ([`crate::cli`]). Each turns its flags into a configuration, runs it and prints the result.

pub mod bench;
pub mod compare;
pub mod devices;
pub mod export;
pub mod inference;
pub mod lr_find;
pub mod parity;
pub mod sweep;
pub mod workshop;

/// Quotes a word for a POSIX shell (`'...'`, a `'` inside as `'\''`).
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Environment variables that change what a run does, put before the command when set.
const RUN_ENVIRONMENT: [&str; 3] = [
    crate::memory::FAIL_ALLOC_ABOVE_ENV,
    crate::device::address_cap::CAP_MEMORY_AT_ENV,
    "TRAINER_DEVICE",
];

/// The command line as typed, quoted where needed, after the variables of
/// [`RUN_ENVIRONMENT`] that are set (recorded in the run's files, so that it reruns the same).
pub fn command_line() -> String {
    let environment = RUN_ENVIRONMENT.iter().filter_map(|name| {
        std::env::var(name)
            .ok()
            .map(|value| format!("{name}={}", quoted(value)))
    });
    let words = std::env::args().enumerate().map(|(i, a)| {
        if i == 0 {
            "trainer".to_string()
        } else {
            quoted(a)
        }
    });
    environment.chain(words).collect::<Vec<_>>().join(" ")
}

/// A word as a shell reads it back: quoted when it is empty or holds a special character.
fn quoted(word: String) -> String {
    if word.is_empty() || word.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
        shell_quote(&word)
    } else {
        word
    }
}

/// The run's data, loaded as the workshop run trains on it: each skipped file a warning and,
/// for an image folder, one line saying its colour (`who` names the command, "parity: ").
pub fn load_data(
    settings: &crate::config::Settings,
    console: &crate::console::Console,
    who: &str,
) -> crate::error::Result<crate::data::Splits> {
    let splits = crate::data::load_splits(&settings.data_config())?;
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
    if settings.data.is_some() {
        console.info(&format!("{who}images: {}", splits.color.describe()));
    }
    Ok(splits)
}

/// A fresh model of `kind` for `splits`, from the run's seed: the data's channels, image size
/// and classes, `--cnn-widths`; every command starts from the same weights.
pub fn init_net(
    settings: &crate::config::Settings,
    kind: crate::model::ModelKind,
    splits: &crate::data::Splits,
    device: &burn::tensor::Device,
) -> crate::error::Result<crate::model::Net> {
    Ok(crate::model::Net::init(
        settings.spec(kind, splits.train.channels)?,
        splits.image_size,
        splits.classes.len(),
        settings.seed,
        device,
    ))
}
