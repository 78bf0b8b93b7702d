//! The fused Tiny CNN operation of src/device/cpu_kernels.rs against burn-flex's layers: the same
//! logits and the same gradients on even, odd and non-square images, with and without image
//! gradients, and the same bits on a rerun.

mod common;

use burn::prelude::*;
use trainer::device::cpu_kernels;
use trainer::model::{ModelKind, Net};

/// Logits and the gradients of (conv1 weight, conv1 bias, conv2 weight, conv2 bias, images)
/// of a fixed linear function of the logits; `fused` picks the fused operation or the layers.
fn run(net: &Net, images: &[f32], shape: [usize; 4], fused: bool) -> Vec<Vec<f32>> {
    let device = Device::flex().autodiff();
    let x = Tensor::<4>::from_data(TensorData::new(images.to_vec(), shape), &device).require_grad();
    let logits = if fused {
        net.forward(x.clone())
    } else {
        net.forward_traced(x.clone(), &mut |_, _| {})
    };
    let [n, classes] = logits.dims();
    let mix: Vec<f32> = (0..n * classes)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0)
        .collect();
    let mix = Tensor::<2>::from_data(TensorData::new(mix, [n, classes]), &device);
    let grads = (logits.clone() * mix).sum().backward();
    let Net::Cnn(model) = net else {
        panic!("a Tiny CNN")
    };
    let values = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().expect("f32 values");
    let bias = |p: &Option<burn::module::Param<Tensor<1>>>| {
        p.as_ref()
            .expect("a bias")
            .grad(&grads)
            .expect("a bias gradient")
    };
    vec![
        values(logits.flatten(0, 1)),
        values(
            model
                .conv1
                .weight
                .grad(&grads)
                .expect("a gradient")
                .flatten(0, 3),
        ),
        values(bias(&model.conv1.bias)),
        values(
            model
                .conv2
                .weight
                .grad(&grads)
                .expect("a gradient")
                .flatten(0, 3),
        ),
        values(bias(&model.conv2.bias)),
        values(x.grad(&grads).expect("an image gradient").flatten(0, 3)),
    ]
}

fn random_images(rng: &mut common::Lcg, count: usize) -> Vec<f32> {
    (0..count)
        .map(|_| (rng.next() % 20_001) as f32 / 10_000.0 - 1.0)
        .collect()
}

#[test]
fn fused_operation_matches_the_layers() {
    assert!(
        cpu_kernels::available(&Device::flex().autodiff()),
        "the fused operation serves burn-flex"
    );
    let names = [
        "logits",
        "conv1.weight",
        "conv1.bias",
        "conv2.weight",
        "conv2.bias",
        "images",
    ];
    let mut rng = common::Lcg(11);
    // (batch, height, width): even, odd (pooling floors), non-square, a batch that is not a
    // multiple of the backward chunk, widths below and above the register tiles.
    for (n, h, w) in [
        (4, 16, 16),
        (13, 9, 9),
        (3, 12, 7),
        (1, 4, 4),
        (9, 20, 28),
        (2, 6, 33),
    ] {
        let net = Net::init(
            ModelKind::Cnn,
            h.max(w),
            3,
            5 + n as u64,
            &Device::flex().autodiff(),
        );
        let images = random_images(&mut rng, n * h * w);
        let fused = run(&net, &images, [n, 1, h, w], true);
        let layers = run(&net, &images, [n, 1, h, w], false);
        for ((name, a), b) in names.iter().zip(&fused).zip(&layers) {
            assert_eq!(a.len(), b.len(), "{name} at {n}x{h}x{w}");
            let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            let worst = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst <= 1e-4 * scale,
                "{name} at {n}x{h}x{w}: fused and layers differ by {worst} (scale {scale})"
            );
        }
    }
}

#[test]
fn fused_operation_repeats_bit_for_bit() {
    let mut rng = common::Lcg(12);
    let net = Net::init(ModelKind::Cnn, 16, 3, 9, &Device::flex().autodiff());
    let images = random_images(&mut rng, 37 * 16 * 16);
    let first = run(&net, &images, [37, 1, 16, 16], true);
    let second = run(&net, &images, [37, 1, 16, 16], true);
    assert_eq!(first, second);
}

#[test]
fn every_instruction_set_and_thread_count_gives_the_same_bits() {
    // The module's claim: vector width and thread count change which instructions run and
    // where, never the order of additions. Every set this CPU has (the override only narrows
    // it), with 1, 2 and 3 threads, against the first.
    let mut rng = common::Lcg(13);
    let net = Net::init(ModelKind::Cnn, 16, 3, 4, &Device::flex().autodiff());
    let images = random_images(&mut rng, 29 * 16 * 16);
    let sets = cpu_kernels::supported_instruction_sets();
    assert!(sets.contains(&"portable"), "{sets:?}");
    eprintln!("instruction sets compared: {sets:?}");
    assert!(cpu_kernels::force_instruction_set(Some("sse9")).is_err());
    let mut reference: Option<Vec<Vec<f32>>> = None;
    for set in &sets {
        cpu_kernels::force_instruction_set(Some(set)).unwrap();
        assert_eq!(cpu_kernels::instruction_set(), *set);
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let got = pool.install(|| run(&net, &images, [29, 1, 16, 16], true));
            match &reference {
                None => reference = Some(got),
                Some(first) => {
                    let same = got
                        .iter()
                        .flatten()
                        .zip(first.iter().flatten())
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(
                        same,
                        "{set} with {threads} thread(s) differs from {}",
                        sets[0]
                    );
                }
            }
        }
    }
    cpu_kernels::force_instruction_set(None).unwrap();
}

#[test]
fn no_cpu_kernels_trains_the_same_model() {
    // The whole workshop with and without the fused operation: the same epochs and, to the
    // four decimals of the log, the same losses and accuracies.
    let with = common::temp();
    let without = common::temp();
    let a = with.path().join("pack");
    let b = without.path().join("pack");
    common::trainer().cpu().quiet().out(&a).run_ok();
    common::trainer()
        .cpu()
        .quiet()
        .arg("--no-cpu-kernels")
        .out(&b)
        .run_ok();
    let log =
        |pack: &std::path::Path| common::read_csv(&common::file(pack, "outputs/training_log.csv"));
    let (header, rows_with) = log(&a);
    let (_, rows_without) = log(&b);
    assert_eq!(rows_with.len(), rows_without.len());
    for (x, y) in rows_with.iter().zip(&rows_without) {
        for (column, (u, v)) in header.iter().zip(x.iter().zip(y)) {
            match (u.parse::<f64>(), v.parse::<f64>()) {
                (Ok(u), Ok(v)) => assert!((u - v).abs() <= 2e-4, "{column}: {u} vs {v}"),
                _ => assert_eq!(u, v, "{column}"),
            }
        }
    }
    let info = |pack: &std::path::Path| -> serde_json::Value {
        let text = std::fs::read_to_string(common::file(pack, "outputs/run_info.json"))
            .expect("run_info.json");
        serde_json::from_str(&text).expect("JSON")
    };
    assert!(info(&a)["cpu_kernels"].is_string());
    assert!(info(&b)["cpu_kernels"].is_null());
}
