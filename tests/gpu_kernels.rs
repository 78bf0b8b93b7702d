//! The WGSL kernels against their host references, on whatever wgpu adapter there is
//! (lavapipe in CI).

mod common;

use burn::prelude::*;
use trainer::data::stripe_image;
use trainer::device::gpu_kernels;
use trainer::device::{BackendName, open_named};

fn wgpu_device(test: &str) -> Option<Device> {
    if !common::wgpu_available(test) {
        return None;
    }
    trainer::device::prepare_environment();
    Some(open_named(BackendName::Wgpu).expect("wgpu starts").device)
}

#[test]
fn stripe_synth_equals_the_host_bit_for_bit() {
    let Some(device) = wgpu_device("stripe_synth_equals_the_host_bit_for_bit") else {
        return;
    };
    let mut rng = common::Lcg(3);
    let mut cases: Vec<(u64, usize, usize)> = vec![
        (42, 16, 1),
        (0, 5, 3),
        (7, 16, 255),
        ((1 << 40) + 9, 33, 257),
        (123_456_789, 8, 600),
        (u64::MAX, 64, 70),
    ];
    // And twenty more random seeds, sizes and batch sizes.
    for _ in 0..20 {
        let seed = rng.next() << 20 ^ rng.next();
        cases.push((
            seed,
            5 + (rng.next() % 40) as usize,
            1 + (rng.next() % 300) as usize,
        ));
    }
    for (seed, size, batch) in cases {
        let recipes: Vec<(u32, u32)> = (0..batch)
            .map(|_| ((rng.next() % 3) as u32, (rng.next() % 5000) as u32))
            .collect();
        let images = gpu_kernels::stripe_images(&recipes, seed, size, &device);
        assert_eq!(images.dims(), [batch, 1, size, size]);
        let values: Vec<f32> = images.into_data().try_to_vec_as::<f32>().unwrap();
        for (i, &(class, index)) in recipes.iter().enumerate() {
            let host = stripe_image(seed, class as usize, index as usize, size);
            let device_image = &values[i * size * size..(i + 1) * size * size];
            for (p, (a, b)) in host.iter().zip(device_image).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "seed {seed} size {size} image {i} (class {class}, index {index}) pixel {p}: host {a} device {b}"
                );
            }
        }
    }
}

#[test]
fn eval_summary_matches_the_host() {
    let Some(device) = wgpu_device("eval_summary_matches_the_host") else {
        return;
    };
    let mut rng = common::Lcg(11);
    for (n, classes) in [(1, 3), (84, 3), (257, 5), (1000, 2)] {
        let logits: Vec<f32> = (0..n * classes)
            .map(|_| (rng.next() % 2000) as f32 / 250.0 - 4.0)
            .collect();
        let labels: Vec<i64> = (0..n)
            .map(|_| (rng.next() % classes as u64) as i64)
            .collect();
        let (summary, confusion) = gpu_kernels::summarize(
            Tensor::<2>::from_data(TensorData::new(logits.clone(), [n, classes]), &device),
            Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [n]), &device),
        );
        let summary: Vec<f32> = summary.into_data().try_to_vec_as::<f32>().unwrap();
        let confusion: Vec<i64> = confusion.into_data().try_to_vec_as::<i64>().unwrap();
        let mut expected = vec![0i64; classes * classes];
        for i in 0..n {
            let row = &logits[i * classes..(i + 1) * classes];
            let (best, top) = row
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |acc, (j, v)| {
                    if *v > acc.1 { (j, *v) } else { acc }
                });
            let total: f32 = row.iter().map(|v| (v - top).exp()).sum();
            assert_eq!(summary[3 * i + 1], best as f32, "sample {i}");
            assert!(
                (summary[3 * i] - 1.0 / total).abs() < 1e-6,
                "sample {i}: {} vs {}",
                summary[3 * i],
                1.0 / total
            );
            assert_eq!(
                summary[3 * i + 2],
                if labels[i] as usize == best { 1.0 } else { 0.0 }
            );
            expected[labels[i] as usize * classes + best] += 1;
        }
        assert_eq!(confusion, expected, "n {n} classes {classes}");
    }
}

#[test]
fn the_evidence_is_the_same_with_and_without_the_kernels() {
    if !common::wgpu_available("the_evidence_is_the_same_with_and_without_the_kernels") {
        return;
    }
    let dir = common::temp();
    let with = dir.path().join("with");
    let without = dir.path().join("without");
    let base = || common::trainer().wgpu().quiet().epochs(2, 4);
    base().out(&with).run_ok();
    base().arg("--no-gpu-kernels").out(&without).run_ok();
    for file in [
        "outputs/training_log.csv",
        "outputs/model_comparison.csv",
        "outputs/confusion_matrix.csv",
        "outputs/error_samples.csv",
        "outputs/metrics_summary.json",
    ] {
        assert_eq!(
            std::fs::read(with.join(file)).unwrap(),
            std::fs::read(without.join(file)).unwrap(),
            "{file} differs with and without the kernels"
        );
    }
    let info = |p: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p.join("outputs/run_info.json")).unwrap())
            .unwrap()
    };
    assert_eq!(info(&with)["gpu_kernels"], true);
    assert_eq!(info(&without)["gpu_kernels"], false);
}
