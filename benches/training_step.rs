//! `cargo bench`: one Tiny CNN training step at batch 32 and 256 on each backend this machine
//! has, and the generation of the workshop's data set. Regressions show up as lower numbers.
//! (A plain harness: it needs no benchmarking crate, so `cargo bench` adds nothing to build.)

use std::time::Instant;

use trainer::bench::{BenchConfig, describe, measure};
use trainer::data::{DataConfig, stripe_splits};
use trainer::device::{self, BackendName};
use trainer::model::ModelKind;

use burn::prelude::*;

#[cfg(not(target_os = "macos"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    trainer::device::prepare_environment();
    let config = BenchConfig {
        backends: Vec::new(),
        models: vec![ModelKind::Cnn],
        batch_sizes: vec![32, 256],
        image_size: 16,
        channels: 1,
        cnn_widths: trainer::model::CnnWidths::default(),
        head: trainer::model::Head::default(),
        batch_norm: false,
        classes: trainer::bench::CLASSES,
        steps: 50,
        warmup: 5,
        out: "unused".into(),
        memory_limit_bytes: None,
        command: "cargo bench".into(),
    };
    for name in [BackendName::Cpu, BackendName::Ndarray, BackendName::Wgpu] {
        let open = match device::open_named(name) {
            Ok(open) => open,
            Err(e) => {
                println!("{}: skipped ({e})", name.as_str());
                continue;
            }
        };
        // On cpu, the fused Tiny CNN operation (src/device/cpu_kernels.rs) and burn-flex's layers.
        let variants: &[(&str, bool)] = if name == BackendName::Cpu {
            &[("cpu", true), ("cpu-layers", false)]
        } else {
            &[(name.as_str(), true)]
        };
        for &(label, fused) in variants {
            trainer::device::cpu_kernels::set_enabled(fused);
            for &batch in &config.batch_sizes {
                match measure(&config, ModelKind::Cnn, batch, &open.device, &open.info) {
                    Ok(row) => println!("training_step/{label}: {}", describe(&row)),
                    Err(e) => println!("training_step/{label}/{batch}: failed: {e}"),
                }
            }
        }
        trainer::device::cpu_kernels::set_enabled(true);
    }

    data_feed();

    let data = DataConfig::stripes(42, 140, 16);
    let runs = 20;
    let started = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(stripe_splits(&data).expect("valid config"));
    }
    let seconds = started.elapsed().as_secs_f64() / runs as f64;
    println!(
        "data_generation: 420 images of 16x16 in {:.3} ms ({:.0} images/s)",
        seconds * 1e3,
        420.0 / seconds
    );
}

/// Feeding stripe batches to the wgpu device: uploading host images (generated once, as
/// training does) against drawing them on the device with shaders/stripe_synth.wgsl. Each
/// batch ends with a read, so both are timed to completion.
fn data_feed() {
    let Ok(open) = device::open_named(BackendName::Wgpu) else {
        println!("data_feed: skipped (no wgpu adapter)");
        return;
    };
    let device = open.device;
    for (size, batch) in [(16usize, 256usize), (16, 4096), (64, 1024)] {
        let recipes: Vec<(u32, u32)> = (0..batch)
            .map(|i| ((i % 3) as u32, (i / 3) as u32))
            .collect();
        let host: Vec<f32> = recipes
            .iter()
            .flat_map(|&(c, i)| trainer::data::stripe_image(42, c as usize, i as usize, size))
            .collect();
        let upload = || {
            let t = Tensor::<4>::from_data(
                TensorData::new(host.clone(), [batch, 1, size, size]),
                &device,
            );
            t.sum().into_scalar::<f32>()
        };
        let synth = || {
            trainer::device::gpu_kernels::stripe_images(&recipes, 42, size, &device)
                .sum()
                .into_scalar::<f32>()
        };
        let rate = |f: &dyn Fn() -> f32| {
            f();
            let runs = 20;
            let started = Instant::now();
            for _ in 0..runs {
                std::hint::black_box(f());
            }
            (batch * runs) as f64 / started.elapsed().as_secs_f64()
        };
        println!(
            "data_feed/wgpu {}x{} batch {batch}: upload {:.0} images/s, stripe_synth kernel {:.0} images/s",
            size,
            size,
            rate(&upload),
            rate(&synth)
        );
    }
}
