//! The fused CNN operation of src/device/cpu_cnn.rs against burn-flex's layers: the same
//! logits and the same gradients (every parameter and the images) on the CNN family (1 and 3
//! channels, 1 to 4 blocks, odd and non-square images, odd widths, batches that are and are
//! not multiples of the backward chunk), the same bits on a rerun, with every instruction
//! set and any thread count.

mod common;

use burn::optim::GradientsParams;
use burn::prelude::*;
use common::cnn_spec as cnn;
use trainer::device::cpu_kernels;
use trainer::model::{Cnn, Head, HeadKind, ModelSpec, Net, flat};
use trainer::train::engine::Engine;

/// Logits, every parameter's gradient (flat order) and the images' gradient of a fixed
/// linear function of the logits; `fused` picks the fused operation or the layers.
fn run(net: &Net, images: &[f32], shape: [usize; 4], fused: bool) -> Vec<Vec<f32>> {
    let device = Device::flex().autodiff();
    let x = Tensor::<4>::from_data(TensorData::new(images.to_vec(), shape), &device).require_grad();
    let logits = match fused {
        true => Engine::CpuFused.forward(net, x.clone()),
        false => net.forward(x.clone()),
    };
    let [n, classes] = logits.dims();
    let mix: Vec<f32> = (0..n * classes)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) / 5.0)
        .collect();
    let mix = Tensor::<2>::from_data(TensorData::new(mix, [n, classes]), &device);
    let grads = (logits.clone() * mix).sum().backward();
    let values = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().expect("f32 values");
    let image_grad = values(x.grad(&grads).expect("an image gradient").flatten(0, 3));
    let params = GradientsParams::from_grads(grads, net);
    let param_grads = common::flat_gradients(&without_norms(net), &params);
    vec![values(logits.flatten(0, 1)), param_grads, image_grad]
}

/// `net` without its batch norms (same ids): the flat order leaves them out, and their
/// running statistics have no gradient to map.
fn without_norms(net: &Net) -> Net {
    match net {
        Net::Cnn(model) => Net::Cnn(Cnn {
            norms: Vec::new(),
            ..model.clone()
        }),
        net => net.clone(),
    }
}

fn random_images(rng: &mut common::Lcg, count: usize) -> Vec<f32> {
    (0..count)
        .map(|_| (rng.next() % 20_001) as f32 / 10_000.0 - 1.0)
        .collect()
}

#[test]
fn fused_operation_matches_the_layers_across_the_family() {
    assert!(
        cpu_kernels::available(&Device::flex().autodiff()),
        "the fused operation serves burn-flex"
    );
    let mut rng = common::Lcg(11);
    // (channels, widths, batch, height, width)
    let cases: [(usize, &[usize], usize, usize, usize); 10] = [
        (1, &[8, 16], 4, 16, 16),
        (1, &[8, 16], 13, 9, 9),
        (1, &[8, 16], 3, 12, 7),
        (1, &[8, 16], 9, 20, 28),
        (3, &[8, 16], 5, 10, 10),
        (1, &[5], 3, 7, 7),
        (3, &[16, 32, 64], 9, 16, 16),
        (3, &[7, 9, 3], 4, 13, 11),
        (1, &[4, 8, 12, 20], 2, 17, 17),
        (3, &[24, 17], 3, 8, 9),
    ];
    let names = ["logits", "parameters", "images"];
    for (channels, widths, n, h, w) in cases {
        let case = format!("{channels}x{h}x{w}, widths {widths:?}, batch {n}");
        let net = Net::init(
            cnn(channels, widths),
            h.max(w),
            3,
            5 + n as u64,
            &Device::flex().autodiff(),
        );
        let images = random_images(&mut rng, n * channels * h * w);
        let fused = run(&net, &images, [n, channels, h, w], true);
        let layers = run(&net, &images, [n, channels, h, w], false);
        assert_close(&net, &fused, &layers, 1e-4, &case, names);
    }
}

/// The cross-entropy loss, every parameter's gradient (flat order) and the images' gradient
/// of one training step's forward pass with dropout key `key`; `fused` picks the fused
/// operation or the layers.
fn train_step(
    net: &Net,
    images: &[f32],
    shape: [usize; 4],
    key: u32,
    fused: bool,
) -> Vec<Vec<f32>> {
    let device = Device::flex().autodiff();
    let x = Tensor::<4>::from_data(TensorData::new(images.to_vec(), shape), &device).require_grad();
    let logits = match fused {
        true => Engine::CpuFused.forward_train(net, x.clone(), Some(key)),
        false => net.forward_train(x.clone(), Some(key)),
    };
    let [n, classes] = logits.dims();
    let targets: Vec<i64> = (0..n).map(|i| (i * 5 % classes) as i64).collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [n]), &device);
    let loss = burn::nn::loss::CrossEntropyLossConfig::new()
        .init(&device)
        .forward(logits, targets);
    let grads = loss.backward();
    let values = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().expect("f32 values");
    let image_grad = values(x.grad(&grads).expect("an image gradient").flatten(0, 3));
    let params = GradientsParams::from_grads(grads, net);
    let param_grads = common::flat_gradients(net, &params);
    vec![values(loss.reshape([1])), param_grads, image_grad]
}

/// Asserts that `a` and `b` (`names`: logits or loss, parameters, images) agree tensor by
/// tensor, each within `tolerance` of its own largest value.
fn assert_close(
    net: &Net,
    a: &[Vec<f32>],
    b: &[Vec<f32>],
    tolerance: f32,
    case: &str,
    names: [&str; 3],
) {
    let names = names.map(str::to_string);
    assert_close_named(
        &flat::segments(&without_norms(net)),
        a,
        b,
        tolerance,
        case,
        &names,
    );
}

/// [`assert_close`] with the parameters' `segments` (name, length) and any `names`.
fn assert_close_named(
    segments: &[(String, usize)],
    a: &[Vec<f32>],
    b: &[Vec<f32>],
    tolerance: f32,
    case: &str,
    names: &[String],
) {
    assert_eq!(a.len(), names.len(), "{case}");
    for ((name, a), b) in names.iter().zip(a).zip(b) {
        assert_eq!(a.len(), b.len(), "{name}: {case}");
        let segments = match name.as_str() {
            "parameters" => segments.to_vec(),
            _ => vec![(name.to_string(), b.len())],
        };
        let mut at = 0;
        for (tensor, len) in segments {
            let (x, y) = (&a[at..at + len], &b[at..at + len]);
            let scale = y.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            let worst = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst <= tolerance * scale,
                "{tensor} at {case}: fused and layers differ by {worst} (scale {scale})"
            );
            at += len;
        }
        assert_eq!(at, a.len(), "{name}: {case}");
    }
}

#[test]
fn fused_operation_matches_the_layers_with_every_head() {
    // gap and flatten, with and without a hidden layer of 128 and dropout 0.25 (the layers'
    // masks, drawn from the same key): the same loss and the same gradient of every
    // parameter and of the images, at 28x28 and at an odd size.
    let mut rng = common::Lcg(21);
    for kind in [HeadKind::Gap, HeadKind::Flatten] {
        for hidden in [0, 128] {
            for dropout in [0.0, 0.25] {
                for (channels, widths, n, size) in [(1, &[32, 64][..], 6, 28), (3, &[8, 12], 5, 11)]
                {
                    let head = Head::new(kind, hidden, dropout).unwrap();
                    let spec = ModelSpec {
                        head,
                        ..cnn(channels, widths)
                    };
                    let case = format!(
                        "{kind:?} hidden {hidden} dropout {dropout}, {channels}x{size}x{size} widths {widths:?} batch {n}"
                    );
                    let net = Net::init(spec, size, 10, 3, &Device::flex().autodiff());
                    let images = random_images(&mut rng, n * channels * size * size);
                    let shape = [n, channels, size, size];
                    let fused = train_step(&net, &images, shape, 77, true);
                    let layers = train_step(&net, &images, shape, 77, false);
                    assert_close(
                        &net,
                        &fused,
                        &layers,
                        1e-4,
                        &case,
                        ["loss", "parameters", "images"],
                    );
                    // Another key draws other masks: the comparison can tell them apart.
                    if dropout > 0.0 {
                        let other = train_step(&net, &images, shape, 78, true);
                        assert_ne!(other[0], fused[0], "{case}: the key changes the masks");
                    }
                }
            }
        }
    }
}

#[test]
fn fused_operation_repeats_bit_for_bit() {
    let mut rng = common::Lcg(12);
    let net = Net::init(cnn(3, &[16, 32, 64]), 16, 3, 9, &Device::flex().autodiff());
    let images = random_images(&mut rng, 37 * 3 * 16 * 16);
    let first = run(&net, &images, [37, 3, 16, 16], true);
    let second = run(&net, &images, [37, 3, 16, 16], true);
    assert_eq!(first, second);
}

#[test]
fn every_instruction_set_and_thread_count_gives_the_same_bits() {
    // The module's claim: vector width and thread count change which instructions run and
    // where, never the order of additions. Every set this CPU has (the override only narrows
    // it), with 1, 2 and 3 threads, against the first.
    let mut rng = common::Lcg(13);
    // A wide block too: on AVX-512 it takes 16 lanes, narrow blocks 8.
    let net = Net::init(cnn(3, &[8, 24]), 16, 3, 4, &Device::flex().autodiff());
    let images = random_images(&mut rng, 29 * 3 * 16 * 16);
    // And blocks of 16 channels or more on even sides: Winograd's convolution (forward,
    // input gradient and weight gradient of the second block, src/device/cpu_winograd.rs),
    // with two lane blocks of outputs (32) and with four (64: AVX-512's widest tiles).
    let wide = Net::init(cnn(1, &[16, 32]), 12, 3, 5, &Device::flex().autodiff());
    let wide_images = random_images(&mut rng, 11 * 12 * 12);
    let widest = Net::init(cnn(1, &[16, 64]), 8, 3, 6, &Device::flex().autodiff());
    let widest_images = random_images(&mut rng, 10 * 8 * 8);
    let sets = cpu_kernels::supported_instruction_sets();
    assert!(sets.contains(&"portable"), "{sets:?}");
    eprintln!("instruction sets compared: {sets:?}");
    assert!(cpu_kernels::force_instruction_set(Some("sse9")).is_err());
    same_bits_on_every_instruction_set_and_thread_count(&sets, |_| {
        let mut got = run(&net, &images, [29, 3, 16, 16], true);
        got.extend(run(&wide, &wide_images, [11, 1, 12, 12], true));
        got.extend(run(&widest, &widest_images, [10, 1, 8, 8], true));
        got
    });
}

/// Runs `pass` under every instruction set in `sets` (the override forced to it, which
/// `pass` is given) with 1, 2 and 3 threads, and asserts every result has the first's bits.
/// The override is process-wide: one caller at a time, or a concurrent test's set would run
/// in place of this one's.
fn same_bits_on_every_instruction_set_and_thread_count(
    sets: &[&'static str],
    pass: impl Fn(&str) -> Vec<Vec<f32>> + Sync,
) {
    static OVERRIDE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _only_caller = OVERRIDE.lock().unwrap_or_else(|e| e.into_inner());
    let mut reference: Option<Vec<Vec<f32>>> = None;
    for set in sets {
        cpu_kernels::force_instruction_set(Some(set)).unwrap();
        assert_eq!(cpu_kernels::instruction_set(), *set);
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let got = pool.install(|| pass(set));
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

/// A training pass with batch norm: the cross-entropy loss, every parameter's gradient (flat
/// order, then each batch norm's weight and bias), the images' gradient and each batch
/// norm's new running statistics (mean, variance, batches tracked); `fused` picks the fused
/// operation or the layers.
fn normed_step(net: &Net, images: &[f32], shape: [usize; 4], fused: bool) -> Vec<Vec<f32>> {
    let device = Device::flex().autodiff();
    let x = Tensor::<4>::from_data(TensorData::new(images.to_vec(), shape), &device).require_grad();
    let pass = match fused {
        true => Engine::CpuFused.forward_step(net, x.clone(), 77),
        false => net.forward_step(x.clone(), 77),
    };
    let [n, classes] = pass.logits.dims();
    let targets: Vec<i64> = (0..n).map(|i| (i * 5 % classes) as i64).collect();
    let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [n]), &device);
    let loss = burn::nn::loss::CrossEntropyLossConfig::new()
        .init(&device)
        .forward(pass.logits, targets);
    let grads = loss.backward();
    let values = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().expect("f32 values");
    let image_grad = values(x.grad(&grads).expect("an image gradient").flatten(0, 3));
    let params = GradientsParams::from_grads(grads, net);
    let mut param_grads = common::flat_gradients(&without_norms(net), &params);
    let Net::Cnn(cnn) = net else { panic!("a CNN") };
    for norm in &cnn.norms {
        for id in [norm.weight.id, norm.bias.id] {
            param_grads.extend(values(params.get::<1>(id).expect("a batch norm gradient")));
        }
    }
    let mut out = vec![values(loss.reshape([1])), param_grads, image_grad];
    for stats in pass.norms {
        out.push(values(stats.running_mean));
        out.push(values(stats.running_var));
        out.push(values(stats.num_batches_tracked));
    }
    out
}

#[test]
fn fused_operation_matches_the_layers_with_batch_norm() {
    // Training (batch statistics, running statistics moved) and evaluation (running
    // statistics) against the layers: the loss, every gradient (the batch norms' weight and
    // bias too) and the new running statistics, each within 1e-4 of its tensor's scale, on
    // the flatten and gap heads, 1 to 3 blocks, batches across the backward chunk of 8.
    let mut rng = common::Lcg(31);
    let cases: [(usize, &[usize], usize, usize, HeadKind, usize, f64); 4] = [
        (1, &[32, 64], 6, 28, HeadKind::Flatten, 128, 0.25),
        (3, &[8, 12], 13, 11, HeadKind::Gap, 0, 0.0),
        (3, &[7, 9, 3], 9, 13, HeadKind::Flatten, 0, 0.0),
        (1, &[5], 3, 7, HeadKind::Gap, 16, 0.25),
    ];
    for (channels, widths, n, size, kind, hidden, dropout) in cases {
        let spec = ModelSpec {
            head: Head::new(kind, hidden, dropout).unwrap(),
            batch_norm: true,
            ..cnn(channels, widths)
        };
        let case = format!("{channels}x{size}x{size} widths {widths:?} batch {n} {kind:?}");
        let net = Net::init(spec, size, 10, 3, &Device::flex().autodiff());
        let images = random_images(&mut rng, n * channels * size * size);
        let shape = [n, channels, size, size];
        let fused = normed_step(&net, &images, shape, true);
        let mut layers = normed_step(&net, &images, shape, false);
        let Net::Cnn(model) = &net else {
            panic!("a CNN")
        };
        // The conv biases before a batch norm: exactly 0 fused; float noise in the layers
        // (the step drops both).
        // The op's gradient: the parameters in the kernels' order without the norms (which
        // flat::segments places after each conv), then each norm's weight and bias.
        let mut segments: Vec<(String, usize)> = flat::segments(&net)
            .into_iter()
            .filter(|(name, _)| !name.starts_with("norms."))
            .collect();
        let mut at = 0;
        for (name, len) in &segments {
            if name.starts_with("conv") && name.ends_with(".bias") {
                assert!(
                    fused[1][at..at + len].iter().all(|g| *g == 0.0),
                    "{name}: {case}"
                );
                let noise = layers[1][at..at + len]
                    .iter()
                    .fold(0.0f32, |m, g| m.max(g.abs()));
                assert!(noise < 1e-5, "{name}: layers' noise {noise}, {case}");
                layers[1][at..at + len].fill(0.0);
            }
            at += len;
        }
        for (i, norm) in model.norms.iter().enumerate() {
            segments.push((format!("norm{}.weight", i + 1), norm.features()));
            segments.push((format!("norm{}.bias", i + 1), norm.features()));
        }
        assert_eq!(fused.len(), 3 + 3 * widths.len(), "{case}");
        let names: Vec<String> = ["loss", "parameters", "images"]
            .iter()
            .map(|s| s.to_string())
            .chain((1..=widths.len()).flat_map(|b| {
                ["running_mean", "running_var", "num_batches_tracked"]
                    .map(|s| format!("norm{b}.{s}"))
            }))
            .collect();
        assert_close_named(&segments, &fused, &layers, 1e-4, &case, &names);
        // The batch norms moved: the statistics are the batch's, not the initial ones.
        assert_ne!(fused[3], vec![0.0; widths[0]], "{case}");
        // Evaluation with the moved running statistics: the logits and every gradient.
        let stats: Vec<_> = (0..widths.len())
            .map(|b| {
                let t = |v: &Vec<f32>| Tensor::<1>::from_data(v.as_slice(), &Device::flex());
                trainer::model::NormStats {
                    running_mean: t(&fused[3 + 3 * b]),
                    running_var: t(&fused[4 + 3 * b]),
                    num_batches_tracked: t(&fused[5 + 3 * b]),
                }
            })
            .collect();
        let trained = net.clone().with_norms(stats);
        let fused = run(&trained, &images, shape, true);
        let layers = run(&trained, &images, shape, false);
        assert_close(
            &trained,
            &fused,
            &layers,
            1e-4,
            &case,
            ["logits", "parameters", "images"],
        );
    }
}

#[test]
fn a_batch_norm_step_gives_the_same_bits_on_every_instruction_set_and_thread_count() {
    // The batch's statistics are combined in image order and the gradient sums chunk by
    // chunk, so neither the vector width nor the thread count changes a bit of the training
    // pass: loss, gradients and running statistics.
    let mut rng = common::Lcg(32);
    let spec = ModelSpec {
        batch_norm: true,
        ..cnn(3, &[8, 24])
    };
    let net = Net::init(spec, 16, 3, 4, &Device::flex().autodiff());
    let images = random_images(&mut rng, 19 * 3 * 16 * 16);
    // And a block on Winograd's transforms (16 -> 64 channels at 4x4).
    let spec = ModelSpec {
        batch_norm: true,
        ..cnn(1, &[16, 64])
    };
    let wide = Net::init(spec, 8, 3, 7, &Device::flex().autodiff());
    let wide_images = random_images(&mut rng, 9 * 8 * 8);
    same_bits_on_every_instruction_set_and_thread_count(
        &cpu_kernels::supported_instruction_sets(),
        |_| {
            let mut got = normed_step(&net, &images, [19, 3, 16, 16], true);
            got.extend(normed_step(&wide, &wide_images, [9, 1, 8, 8], true));
            got
        },
    );
}
