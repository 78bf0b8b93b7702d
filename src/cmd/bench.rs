//! `trainer bench`: the backends (`auto` resolved to the one it opens), models and batch
//! sizes from the flags; the measurement is [`crate::bench`].

use crate::bench::{self, BenchConfig};
use crate::config::Color;
use crate::console::Console;
use crate::device::{self, BackendName};
use crate::error::{Result, TrainerError};
use crate::model::{CnnWidths, ModelKind};

/// `trainer bench`: the backends (`auto` resolved to the one it opens) and models from the
/// flags, the measurement, and where its README is.
pub fn main(args: crate::cli::BenchArgs) -> Result<()> {
    let console = Console::new(args.quiet);
    let mut backends = Vec::new();
    for name in &args.backend {
        let name = if name.trim() == "auto" {
            device::open(crate::device::BackendChoice::Auto)?
                .info
                .backend
        } else {
            BackendName::parse(name)?
        };
        if backends.contains(&name) {
            return Err(TrainerError::bad_input(format!(
                "--backend names {} twice; give each backend once",
                name.as_str()
            )));
        }
        backends.push(name);
    }
    let color = match args.color {
        // The bench draws its own images: gray unless rgb is asked for.
        Color::Auto | Color::Gray => Color::Gray,
        Color::Rgb => Color::Rgb,
    };
    let cnn_widths = CnnWidths::new(&args.cnn_widths).map_err(TrainerError::bad_input)?;
    let head = crate::model::Head::new(args.head.head, args.head.hidden, args.head.dropout)
        .map_err(TrainerError::bad_input)?;
    let models = match args.model.as_str() {
        "baseline" => vec![ModelKind::Baseline],
        "both" => vec![ModelKind::Cnn, ModelKind::Baseline],
        _ => vec![ModelKind::Cnn],
    };
    if !models.contains(&ModelKind::Cnn) && !cnn_widths.is_tiny() {
        console.warn("--cnn-widths has no effect: --model baseline measures no CNN");
    }
    // Measured smallest first: once a batch does not fit, the larger ones are skipped.
    let mut batch_sizes = args.batch_sizes.clone();
    batch_sizes.sort_unstable();
    if batch_sizes != args.batch_sizes {
        console.info(&format!(
            "bench: measuring the batch sizes smallest first: {}",
            batch_sizes
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    let config = BenchConfig {
        backends,
        models,
        batch_sizes,
        image_size: args.image_size,
        channels: if color == Color::Rgb { 3 } else { 1 },
        cnn_widths,
        head,
        batch_norm: args.head.batch_norm,
        classes: args.classes,
        steps: args.steps,
        warmup: args.warmup,
        out: args.out,
        memory_limit_bytes: args.memory_limit,
        command: crate::cmd::command_line(),
    };
    let report = bench::run(config, &console)?;
    console.result(
        &report
            .config
            .out
            .join("bench/README.md")
            .display()
            .to_string(),
    );
    Ok(())
}
