//! The WGSL kernels against their host references, on whatever wgpu adapter there is
//! (lavapipe in CI).

mod common;

use burn::prelude::*;
use common::cnn_spec as cnn;
use trainer::data::stripe_image;
use trainer::device::gpu_kernels;
use trainer::device::{BackendName, open_named};
use trainer::train::engine::kernel_model;

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
    assert_eq!(common::run_info(&with)["gpu_kernels"], true);
    assert_eq!(common::run_info(&without)["gpu_kernels"], false);
}

/// Logits, loss, gradient norm and every parameter's gradient from the training kernels
/// (src/device/gpu_train.rs) against burn's layers and autodiff on the same device: the
/// baseline and the CNN family (1 and 3 channels, 1 to 4 blocks, odd widths), even, odd and
/// non-square images, batches that are and are not multiples of the workgroup, batches
/// larger than the kernels' 512 workgroups, and more classes than the workshop's three.
/// Some cases again with label smoothing 0.1: the sample kernels' smoothed loss and its
/// gradient against burn's `CrossEntropyLossConfig::with_smoothing`.
#[test]
fn training_kernels_match_the_layers() {
    let Some(device) = wgpu_device("training_kernels_match_the_layers") else {
        return;
    };
    // (model, height, width, classes, batch, also with label smoothing 0.1)
    let cases = [
        (cnn(1, &[8, 16]), 16, 16, 3, 32, true),
        (cnn(1, &[8, 16]), 7, 7, 3, 5, false),
        (cnn(1, &[8, 16]), 5, 5, 4, 3, false),
        (cnn(1, &[8, 16]), 12, 9, 3, 37, false),
        (cnn(1, &[8, 16]), 33, 20, 10, 2, true),
        // More samples than workgroups (512): each workgroup sums several.
        (cnn(1, &[8, 16]), 6, 6, 3, 1100, false),
        (cnn(3, &[16, 32, 64]), 16, 16, 3, 6, true),
        (cnn(3, &[7, 5]), 9, 11, 4, 5, false),
        (cnn(1, &[3]), 6, 6, 3, 4, false),
        (cnn(3, &[4, 6, 8, 10]), 17, 16, 5, 3, false),
        // Widths past one group of sixteen channels and not a multiple of it; 180 (input,
        // tap) pairs in block 2, past the workgroup's 64 and not a multiple of it.
        (cnn(3, &[20, 33]), 9, 7, 3, 4, true),
        (baseline(1), 6, 6, 3, 700, false),
        (baseline(1), 16, 16, 3, 32, true),
        (baseline(1), 7, 7, 5, 9, true),
        (baseline(3), 8, 8, 3, 7, false),
    ];
    let mut rng = common::Lcg(11);
    for (spec, h, w, classes, n, smoothed) in cases {
        let case = format!(
            "{} ({} channels) {h}x{w}, {classes} classes, batch {n}",
            spec.display_name(),
            spec.channels
        );
        let batch = KernelBatch::draw(&mut rng, spec, (h, w), classes, n, &device);
        batch.check_logits(&case);
        batch.check_gradients(0.0, &case);
        if smoothed {
            batch.check_gradients(0.1, &format!("{case}, label smoothing 0.1"));
        }
    }
}

/// The kernels' heads against burn's layers and autodiff: global average pool and flatten,
/// without and with a hidden layer of 128, without and with dropout 0.25 (the masks drawn by
/// the kernel from the step's key, the layers' drawn on the host from the same key): logits,
/// loss, norm and every gradient, the first Linear's weight from `head_gradient.wgsl`. A
/// check that dropout changed the loss keeps the comparison from passing with no masks at
/// all. (tests/bench.rs counts these shapes' launches, in processes of their own: the launch
/// observer counts every thread's.)
#[test]
fn training_kernels_match_the_layers_on_every_head() {
    use trainer::model::{Head, HeadKind};
    let Some(device) = wgpu_device("training_kernels_match_the_layers_on_every_head") else {
        return;
    };
    let mut rng = common::Lcg(17);
    for kind in [HeadKind::Gap, HeadKind::Flatten] {
        for hidden in [0, 128] {
            for dropout in [0.0, 0.25] {
                let spec = trainer::model::ModelSpec {
                    head: Head::new(kind, hidden, dropout).unwrap(),
                    ..cnn(1, &[4, 6])
                };
                let case = format!("{} on 8x8, batch 6", spec.display_name());
                let batch = KernelBatch::draw(&mut rng, spec, (8, 8), 3, 6, &device);
                batch.check_logits(&case);
                let (loss, _) = batch.check_gradients(0.0, &case);
                if dropout > 0.0 {
                    let (plain, _) =
                        layer_gradients(&batch.net, &batch.images, &batch.labels, None, None);
                    assert_ne!(loss, plain, "{case}: dropout changes the loss");
                }
            }
        }
    }
    // A flatten head on an odd map (the pool floors it), three channels, four classes,
    // dropout 0.5 and label smoothing.
    let spec = trainer::model::ModelSpec {
        head: Head::new(HeadKind::Flatten, 12, 0.5).unwrap(),
        ..cnn(3, &[5, 7])
    };
    let batch = KernelBatch::draw(&mut rng, spec, (9, 9), 4, 7, &device);
    batch.check_logits("flatten-h12-d0.5 on 3x9x9");
    batch.check_gradients(0.1, "flatten-h12-d0.5 on 3x9x9, smoothing 0.1");
    check_batch_norm(&mut rng, &device);
}

/// `--batch-norm` in the kernels (one workgroup runs the step's whole batch): the loss, the
/// norm and every gradient, the norms' weight and bias included, the frozen conv biases'
/// (0), and the running statistics the step leaves (where the gradients-only step writes
/// them) against burn's layers and autodiff with the same dropout masks; the evaluation's
/// logits with those running statistics. Every head, and one, two and three blocks on odd
/// sizes, three channels and label smoothing.
fn check_batch_norm(rng: &mut common::Lcg, device: &Device) {
    use trainer::model::{Head, HeadKind};
    let shapes = [
        (
            Head::new(HeadKind::Gap, 0, 0.0).unwrap(),
            cnn(1, &[4, 6]),
            8,
            6,
            0.0,
        ),
        (
            Head::new(HeadKind::Gap, 16, 0.25).unwrap(),
            cnn(1, &[4, 6]),
            8,
            6,
            0.0,
        ),
        (
            Head::new(HeadKind::Flatten, 0, 0.0).unwrap(),
            cnn(1, &[4, 6]),
            8,
            5,
            0.0,
        ),
        (
            Head::new(HeadKind::Flatten, 12, 0.25).unwrap(),
            cnn(1, &[20, 5]),
            8,
            6,
            0.0,
        ),
        (
            Head::new(HeadKind::Flatten, 12, 0.5).unwrap(),
            cnn(3, &[5, 7]),
            9,
            7,
            0.1,
        ),
        (Head::default(), cnn(1, &[3]), 6, 4, 0.0),
        (Head::default(), cnn(3, &[4, 6, 8]), 9, 3, 0.1),
    ];
    for (head, spec, size, n, smoothing) in shapes {
        let spec = trainer::model::ModelSpec {
            head,
            batch_norm: true,
            ..spec
        };
        let case = format!("{} on {size}x{size}, batch {n}", spec.display_name());
        let mut batch = KernelBatch::draw(rng, spec, (size, size), 3, n, device);
        batch.check_gradients(smoothing, &case);
        // Evaluation with the running statistics one step leaves (not the fresh 0 and 1).
        let stepped = batch_norm_reference(&batch, None, DROPOUT_KEY).2;
        batch.net = stepped;
        batch.check_logits(&format!("{case}, running statistics"));
    }
}

/// A batch-norm net's reference for the kernels' gradients-only step: the loss, the flat
/// vector the kernels give (each parameter's gradient from burn's autodiff, 0 for a conv
/// bias before a norm, which the layer path drops, the running statistics' new values where
/// they sit) and the net with those running statistics.
fn batch_norm_reference(
    batch: &KernelBatch,
    smoothing: Option<f32>,
    key: u32,
) -> (f32, Vec<f32>, trainer::model::Net) {
    use burn::module::{ModuleMapper, Param};
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::optim::GradientsParams;
    use trainer::model::flat;
    struct Grads<'a>(&'a GradientsParams);
    impl ModuleMapper for Grads<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            // A running state has no gradient: kept (a mapper writes into the state, which
            // the net's clones share).
            match self.0.get::<D>(param.id) {
                Some(grad) => param.map(|_| grad),
                None => param,
            }
        }
    }
    let train_device = batch.images.device().autodiff();
    let train_net = batch.net.clone().to_device(&train_device).train();
    let pass = train_net.forward_step(batch.images.clone().autodiff(), key);
    let loss = CrossEntropyLossConfig::new()
        .with_smoothing(smoothing)
        .init(&train_device)
        .forward(pass.logits, batch.labels.clone().autodiff());
    let loss_value = values(loss.clone().inner())[0];
    let grads = GradientsParams::from_grads(loss.backward(), &train_net);
    let gradient = values(flat::to_flat(&batch.net.clone().map(&mut Grads(&grads))));
    let stepped = train_net.with_norms(pass.norms).valid();
    let running = values(flat::to_flat(&stepped));
    let mut expected = Vec::new();
    let mut at = 0;
    for (name, len) in flat::segments(&batch.net) {
        let part = at..at + len;
        if name.contains("running") || name.contains("num_batches") {
            expected.extend_from_slice(&running[part]);
        } else if name.starts_with("conv") && name.ends_with(".bias") {
            expected.extend(std::iter::repeat_n(0.0, len));
        } else {
            expected.extend_from_slice(&gradient[part]);
        }
        at += len;
    }
    (loss_value, expected, stepped)
}

/// The step key of the kernel tests' dropout masks.
const DROPOUT_KEY: u32 = 0x5eed_d20f;

/// A model and a batch of random images and labels for the training kernels.
struct KernelBatch {
    spec: trainer::model::ModelSpec,
    net: trainer::model::Net,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    classes: usize,
}

impl KernelBatch {
    fn draw(
        rng: &mut common::Lcg,
        spec: trainer::model::ModelSpec,
        (h, w): (usize, usize),
        classes: usize,
        n: usize,
        device: &Device,
    ) -> KernelBatch {
        // The baseline is built for square images (its input is c * h * h values).
        let net = trainer::model::Net::init(spec, h, classes, 7, device);
        let c = spec.channels;
        let pixels: Vec<f32> = (0..n * c * h * w)
            .map(|_| (rng.next() % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let labels: Vec<i64> = (0..n)
            .map(|_| (rng.next() % classes as u64) as i64)
            .collect();
        KernelBatch {
            spec,
            net,
            images: Tensor::<4>::from_data(TensorData::new(pixels, [n, c, h, w]), device),
            labels: Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), device),
            classes,
        }
    }

    /// Forward: the kernels' logits against the layers'.
    fn check_logits(&self, case: &str) {
        use trainer::device::gpu_train;
        let kernel = gpu_train::logits(
            kernel_model(self.spec),
            self.images.clone(),
            trainer::model::flat::to_flat(&self.net),
            self.classes,
        );
        let layers = self.net.forward_traced(self.images.clone(), &mut |_, _| {});
        assert_close(
            &values(kernel),
            &values(layers),
            1e-5,
            &format!("{case}: logits"),
        );
    }

    /// Backward: the kernels' gradients-only step (loss, norm, summed gradients) with label
    /// smoothing `smoothing` (0 for none) against burn's loss and autodiff, both with the
    /// dropout masks of [`DROPOUT_KEY`]; the reference's (loss, norm).
    fn check_gradients(&self, smoothing: f64, case: &str) -> (f32, f64) {
        use trainer::device::gpu_train;
        use trainer::model::flat;
        let reference_smoothing = (smoothing > 0.0).then_some(smoothing as f32);
        let (loss_value, reference) = match self.spec.batch_norm {
            true => {
                let (loss, flat, _) = batch_norm_reference(self, reference_smoothing, DROPOUT_KEY);
                (loss, flat)
            }
            false => layer_gradients(
                &self.net,
                &self.images,
                &self.labels,
                reference_smoothing,
                Some(DROPOUT_KEY),
            ),
        };
        let params = flat::to_flat(&self.net);
        let p = params.dims()[0];
        let device = params.device();
        let state = Tensor::cat(vec![params, Tensor::zeros([2 * p + 1], &device)], 0);
        let recipe = trainer::recipe::Recipe {
            label_smoothing: smoothing,
            ..trainer::recipe::Recipe::default()
        };
        let (next, stats) = gpu_train::step(
            kernel_model(self.spec),
            self.images.clone(),
            self.labels.clone(),
            state,
            &step_hyper(0.01, 1, recipe),
            self.classes,
            true,
        );
        assert_close_per_tensor(
            &values(next.narrow(0, 0, p)),
            &reference,
            &flat::segments(&self.net),
            1e-5,
            &format!("{case}: gradients"),
        );
        let stats = values(stats);
        // The running statistics are no gradients: outside the norm.
        let mut trained = Vec::new();
        let mut at = 0;
        for (name, len) in flat::segments(&self.net) {
            if !name.contains("running") && !name.contains("num_batches") {
                trained.extend_from_slice(&reference[at..at + len]);
            }
            at += len;
        }
        let norm = trained
            .iter()
            .map(|g| (*g as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            ((stats[0] - loss_value) as f64).abs() <= 1e-5 * (1.0 + loss_value.abs() as f64),
            "{case}: loss {} against {loss_value}",
            stats[0]
        );
        assert!(
            (stats[2] as f64 - norm).abs() <= 1e-5 * (1.0 + norm),
            "{case}: norm {} against {norm}",
            stats[2]
        );
        (loss_value, norm)
    }
}

/// The kernels' step numbers: `lr` at step `time` of `recipe`, Adam's betas and epsilon
/// (the workshop's), clipping at a global norm of 2.
fn step_hyper(
    lr: f64,
    time: usize,
    recipe: trainer::recipe::Recipe,
) -> trainer::device::gpu_train::StepHyper {
    trainer::device::gpu_train::StepHyper {
        lr,
        recipe,
        time,
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-8,
        max_norm: 2.0,
        diverged_norm: 1e6,
        dropout_key: DROPOUT_KEY,
    }
}

/// The kernels' name for a model.
fn baseline(channels: usize) -> trainer::model::ModelSpec {
    trainer::model::ModelSpec {
        channels,
        ..trainer::model::ModelSpec::from(trainer::model::ModelKind::Baseline)
    }
}

fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().try_to_vec_as::<f32>().unwrap()
}

/// Equal up to float summation order: within `tolerance` relative to the largest magnitude
/// (at least 1, for values such as logits that are compared as one tensor).
fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    let scale = expected.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tolerance * scale.max(1.0),
            "{what}: value {i} is {a}, the layers give {e}"
        );
    }
}

/// Equal up to float summation order, tensor by tensor: each value within `tolerance` of its
/// own tensor's largest magnitude (and 1e-9 absolute, for tensors that are all but zero), so
/// a small tensor's error is not hidden by a large one's scale.
fn assert_close_per_tensor(
    actual: &[f32],
    expected: &[f32],
    segments: &[(String, usize)],
    tolerance: f32,
    what: &str,
) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    assert_eq!(segments.iter().map(|s| s.1).sum::<usize>(), expected.len());
    let mut at = 0;
    for (name, len) in segments {
        let (a, e) = (&actual[at..at + len], &expected[at..at + len]);
        let scale = e.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (i, (x, y)) in a.iter().zip(e).enumerate() {
            assert!(
                (x - y).abs() <= tolerance * scale + 1e-9,
                "{what}: {name}[{i}] is {x}, the reference gives {y} (the tensor's scale {scale})"
            );
        }
        at += len;
    }
}

/// The loss and the flat gradient (the kernels' order) of `net`'s mean cross-entropy on a
/// batch, with burn's label smoothing `smoothing` (None: the plain loss) and the head's
/// dropout masks of the step key `dropout` (None: evaluation, no dropout), from burn's
/// layers and autodiff on the batch's device.
fn layer_gradients(
    net: &trainer::model::Net,
    images: &Tensor<4>,
    labels: &Tensor<1, Int>,
    smoothing: Option<f32>,
    dropout: Option<u32>,
) -> (f32, Vec<f32>) {
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::optim::GradientsParams;

    let train_device = images.device().autodiff();
    let train_net = net.clone().to_device(&train_device).train();
    let logits = train_net.forward_train(images.clone().autodiff(), dropout);
    let loss = CrossEntropyLossConfig::new()
        .with_smoothing(smoothing)
        .init(&train_device)
        .forward(logits, labels.clone().autodiff());
    let loss_value = values(loss.clone().inner())[0];
    let grads = GradientsParams::from_grads(loss.backward(), &train_net);
    let gradient = common::flat_gradients(net, &grads);
    (loss_value, gradient)
}

/// The rates of the three steps of the update tests, one per step: a schedule's rates are
/// the kernel's inputs step by step. Adam's and AdamW's.
const ADAM_RATES: [f64; 3] = [0.001, 0.0007, 0.0003];
/// SGD's: its step is the rate times the clipped gradient (a norm of 2 over every
/// parameter), so at Adam's rates the parameters would move by less than the tolerance.
const SGD_RATES: [f64; 3] = [0.1, 0.07, 0.03];

/// The update kernel on its own: three steps whose gradient norm is above the clipping
/// threshold of 2, against burn's own Adam (`burn::optim::Adam`, the optimizer of the layer
/// path) fed the layers' gradients clipped as the layer path clips them. After the third
/// step the parameters and both moments agree, tensor by tensor.
#[test]
fn the_update_kernel_clips_and_applies_adam_as_burn_does() {
    let Some(device) = wgpu_device("the_update_kernel_clips_and_applies_adam_as_burn_does") else {
        return;
    };
    check_update(&device, trainer::recipe::Recipe::default(), "Adam");
}

/// The same for the recipes' other optimizers, each against burn's as the layer path
/// configures it (`optimizer()` in src/train/weights.rs): AdamW's decoupled decay, and SGD
/// plain, with momentum (no dampening) and with Nesterov momentum and L2 decay. SGD keeps
/// its velocity where Adam keeps its first moments and leaves the second third at zero.
#[test]
fn the_update_kernel_applies_adamw_and_sgd_as_burn_does() {
    use trainer::recipe::{Optimizer, Recipe};
    let Some(device) = wgpu_device("the_update_kernel_applies_adamw_and_sgd_as_burn_does") else {
        return;
    };
    let adamw = Recipe {
        optimizer: Optimizer::Adamw,
        weight_decay: 0.01,
        ..Recipe::default()
    };
    let sgd = Recipe {
        optimizer: Optimizer::Sgd,
        ..Recipe::default()
    };
    let momentum = Recipe {
        momentum: 0.9,
        ..sgd
    };
    let nesterov = Recipe {
        nesterov: true,
        weight_decay: 1e-3,
        ..momentum
    };
    check_update(&device, adamw, "AdamW, decay 0.01");
    // At 0.01 the decay moves a parameter by 2e-5 of itself over the three steps, under the
    // tolerance; at 0.5 by 1e-3, so a decay the kernel got wrong shows.
    let strong = Recipe {
        weight_decay: 0.5,
        ..adamw
    };
    check_update(&device, strong, "AdamW, decay 0.5");
    check_update(&device, sgd, "SGD");
    check_update(&device, momentum, "SGD, momentum 0.9");
    check_update(&device, nesterov, "SGD, Nesterov momentum 0.9, decay 1e-3");
}

/// Three steps of the update kernel with `recipe` against burn's optimizer for it, on a CNN
/// and a baseline whose gradient norm stays above 2 (every step clips): the norms step by
/// step, then after the third step the parameters and the state's two moment slots, tensor
/// by tensor, and no divergence.
fn check_update(device: &Device, recipe: trainer::recipe::Recipe, what: &str) {
    use trainer::model::{ModelKind, flat};
    let mut rng = common::Lcg(21);
    for (kind, size, classes, n) in [(ModelKind::Cnn, 8, 3, 24), (ModelKind::Baseline, 6, 4, 20)] {
        let case = UpdateCase::draw(&mut rng, kind, size, classes, n, device);
        let what = format!("{what}, {kind:?}");
        let (state, norms) = case.kernel_steps(recipe);
        let expected = case.burn_steps(recipe);
        for (step, (norm, reference)) in norms.iter().zip(&expected.norms).enumerate() {
            assert!(
                (norm - reference).abs() <= 1e-4 * reference,
                "{what} step {}: norm {norm} against {reference}",
                step + 1
            );
            assert!(*reference > 2.0, "{what}: every step clips ({norms:?})");
        }
        let p = expected.params.len();
        let segments = flat::segments(&case.net);
        for (name, at, expected) in [
            ("parameters", 0, &expected.params),
            ("first moments (SGD's velocity)", p, &expected.first),
            ("second moments", 2 * p, &expected.second),
        ] {
            assert_close_per_tensor(
                &state[at..at + p],
                expected,
                &segments,
                1e-4,
                &format!("{what} step 3: {name}"),
            );
        }
        assert_eq!(state[3 * p], 0.0, "{what}: not diverged");
    }
}

/// A model and a batch for the update tests: large pixels make large gradients.
struct UpdateCase {
    kind: trainer::model::ModelKind,
    net: trainer::model::Net,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    classes: usize,
}

/// burn's optimizer after three steps: the parameters, its first and second moments (SGD:
/// the velocity, zeros without momentum, and zeros) and the norm of each step's gradient.
struct Reference {
    params: Vec<f32>,
    first: Vec<f32>,
    second: Vec<f32>,
    norms: Vec<f32>,
}

impl UpdateCase {
    fn draw(
        rng: &mut common::Lcg,
        kind: trainer::model::ModelKind,
        size: usize,
        classes: usize,
        n: usize,
        device: &Device,
    ) -> UpdateCase {
        let net = trainer::model::Net::init(kind, size, classes, 13, device);
        // Large pixels make large gradients: the norm stays above 2, so every step clips.
        let pixels: Vec<f32> = (0..n * size * size)
            .map(|_| (rng.next() % 2001) as f32 / 30.0 - 33.3)
            .collect();
        let labels: Vec<i64> = (0..n)
            .map(|_| (rng.next() % classes as u64) as i64)
            .collect();
        UpdateCase {
            kind,
            net,
            images: Tensor::<4>::from_data(TensorData::new(pixels, [n, 1, size, size]), device),
            labels: Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), device),
            classes,
        }
    }

    /// The kernels' three steps from a fresh state: the state after them and each step's norm.
    fn kernel_steps(&self, recipe: trainer::recipe::Recipe) -> (Vec<f32>, Vec<f32>) {
        use trainer::device::gpu_train;
        let params = trainer::model::flat::to_flat(&self.net);
        let p = params.dims()[0];
        let zeros = Tensor::zeros([2 * p + 1], &params.device());
        let mut state = Tensor::cat(vec![params, zeros], 0);
        let mut norms = Vec::new();
        for (step, lr) in rates(&recipe).into_iter().enumerate() {
            let (next, stats) = gpu_train::step(
                kernel_model(self.kind.into()),
                self.images.clone(),
                self.labels.clone(),
                state,
                &step_hyper(lr, step + 1, recipe),
                self.classes,
                false,
            );
            state = next;
            norms.push(values(stats)[2]);
        }
        (values(state), norms)
    }

    /// burn's optimizer for `recipe`, configured as the layer path configures it.
    fn burn_steps(&self, recipe: trainer::recipe::Recipe) -> Reference {
        use burn::optim::decay::WeightDecayConfig;
        use burn::optim::momentum::MomentumConfig;
        use burn::optim::{AdamConfig, AdamWConfig, SgdConfig};
        use trainer::recipe::Optimizer;
        let rates = rates(&recipe);
        let adam =
            |(params, state, norms): (Tensor<1>, burn::optim::AdaptiveMomentumState<1>, _)| {
                assert_eq!(state.time, 3);
                Reference {
                    params: values(params),
                    first: values(state.moment_1),
                    second: values(state.moment_2),
                    norms,
                }
            };
        match recipe.optimizer {
            Optimizer::Adam => {
                let optim = AdamConfig::new().with_beta_1(0.9).with_beta_2(0.999);
                let (params, state, norms) = self.steps(&optim.with_epsilon(1e-8).build(), rates);
                adam((params, state.momentum, norms))
            }
            Optimizer::Adamw => {
                let optim = AdamWConfig::new().with_beta_1(0.9).with_beta_2(0.999);
                let optim = optim.with_weight_decay(recipe.weight_decay as f32);
                let (params, state, norms) = self.steps(&optim.with_epsilon(1e-8).build(), rates);
                adam((params, state.momentum, norms))
            }
            Optimizer::Sgd => {
                let momentum = MomentumConfig::new()
                    .with_momentum(recipe.momentum)
                    .with_dampening(0.0)
                    .with_nesterov(recipe.nesterov);
                let optim = SgdConfig::new()
                    .with_weight_decay(
                        (recipe.weight_decay > 0.0)
                            .then(|| WeightDecayConfig::new(recipe.weight_decay as f32)),
                    )
                    .with_momentum((recipe.momentum > 0.0).then_some(momentum));
                let (params, state, norms) = self.steps(&optim.build(), rates);
                let p = params.dims()[0];
                Reference {
                    params: values(params),
                    first: sgd_velocity(&state, recipe.momentum > 0.0, p),
                    second: vec![0.0; p],
                    norms,
                }
            }
        }
    }

    /// `optim`'s three steps at `rates` on the layers' gradients, clipped by their global norm
    /// as the layer path clips them: the parameters, the state and each step's norm.
    fn steps<O: burn::optim::Optimizer>(
        &self,
        optim: &O,
        rates: [f64; 3],
    ) -> (Tensor<1>, O::State<1>, Vec<f32>) {
        use trainer::model::flat;
        let max_norm = 2.0f32;
        let mut params = flat::to_flat(&self.net);
        let (p, device) = (params.dims()[0], params.device());
        let mut state = None;
        let mut norms = Vec::new();
        for lr in rates {
            let net = flat::from_flat(&self.net, params.clone());
            let (_, gradient) = layer_gradients(&net, &self.images, &self.labels, None, None);
            let norm = gradient
                .iter()
                .map(|g| (*g as f64).powi(2))
                .sum::<f64>()
                .sqrt() as f32;
            let coefficient = (max_norm / (norm + 1e-6)).min(1.0);
            let gradient = Tensor::<1>::from_data(TensorData::new(gradient, [p]), &device)
                .mul_scalar(coefficient);
            (params, state) = optim.step(lr, params, gradient, state);
            norms.push(norm);
        }
        (params, state.expect("the optimizer's state"), norms)
    }
}

/// The step rates for `recipe`'s optimizer.
fn rates(recipe: &trainer::recipe::Recipe) -> [f64; 3] {
    match recipe.optimizer {
        trainer::recipe::Optimizer::Sgd => SGD_RATES,
        _ => ADAM_RATES,
    }
}

/// SGD's velocity (zeros without momentum). `MomentumState`'s `velocity` field is private,
/// so it is read as burn records it, through the state's public `RecordState` flattening.
fn sgd_velocity(state: &burn::optim::SgdState<1>, momentum: bool, p: usize) -> Vec<f32> {
    use burn::optim::{RecordState, StateSink};
    let mut sink = StateSink::default();
    state.state_flatten("sgd", &mut sink);
    let names: Vec<&String> = sink.tensors.iter().map(|(name, _)| name).collect();
    let velocity = sink
        .tensors
        .iter()
        .find(|(name, _)| name.ends_with("velocity"));
    assert_eq!(
        velocity.is_some(),
        momentum,
        "SGD's recorded state {names:?}: a velocity exactly with momentum"
    );
    match velocity {
        Some((_, data)) => data.try_to_vec::<f32>().expect("f32 velocity"),
        None => vec![0.0; p],
    }
}

/// The first wgpu run into an empty kernel cache says "cold", the next one "warm", and both
/// name the folder (TRAINER_KERNEL_CACHE; the user's cache folder by default).
#[test]
fn run_info_says_whether_the_kernel_cache_was_warm() {
    if !common::wgpu_available("run_info_says_whether_the_kernel_cache_was_warm") {
        return;
    }
    let dir = common::temp();
    let cache = dir.path().join("cache");
    let state = |name: &str| {
        let pack = dir.path().join(name);
        common::trainer()
            .wgpu()
            .quiet()
            .quick()
            .env("TRAINER_KERNEL_CACHE", cache.to_str().unwrap())
            .out(&pack)
            .run_ok();
        let info: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(pack.join("outputs/run_info.json")).unwrap(),
        )
        .unwrap();
        let kernel_cache = &info["device"]["kernel_cache"];
        assert_eq!(kernel_cache["path"], cache.to_str().unwrap());
        kernel_cache["state"].as_str().unwrap().to_string()
    };
    assert_eq!(state("first"), "cold");
    assert_eq!(state("second"), "warm");
}

/// A step whose gradient norm diverges is found from the epoch's one read, and the kernels'
/// state stops there: the pack names the same step as the layers, which read every norm.
#[test]
fn divergence_is_reported_at_the_same_step_with_and_without_the_kernels() {
    if !common::wgpu_available(
        "divergence_is_reported_at_the_same_step_with_and_without_the_kernels",
    ) {
        return;
    }
    let dir = common::temp();
    let comparison = |name: &str, kernels: bool| {
        let pack = dir.path().join(name);
        let run = common::trainer()
            .wgpu()
            .quiet()
            .args(["--lr-cnn", "1e6"])
            .out(&pack);
        let run = if kernels {
            run
        } else {
            run.arg("--no-gpu-kernels")
        };
        run.run_fail(3);
        std::fs::read_to_string(pack.join("outputs/model_comparison.csv")).unwrap()
    };
    let with = comparison("with", true);
    assert!(with.contains("diverged at epoch 1 step"), "{with}");
    assert_eq!(with, comparison("without", false));
}

/// A shape the kernels cannot take (more classes than their 256) trains on burn's layers:
/// one line on the console says so and why, and run_info.json names the engine and the
/// reason, model by model.
#[test]
fn a_shape_the_kernels_do_not_take_runs_on_the_layers_and_says_so() {
    if !common::wgpu_available("a_shape_the_kernels_do_not_take_runs_on_the_layers_and_says_so") {
        return;
    }
    let dir = common::temp();
    let data = dir.path().join("many");
    for class in 0..257 {
        let folder = data.join(format!("c{class:03}"));
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..3u8 {
            // Distinct bytes per file: a copy would be skipped as the same image.
            let mut pixels: Vec<u8> = (0..25u32).map(|p| (p * 13) as u8 ^ (i * 85)).collect();
            pixels[0] = (class % 256) as u8;
            pixels[1] = (class / 256) as u8;
            image::GrayImage::from_raw(5, 5, pixels)
                .unwrap()
                .save(folder.join(format!("{i}.png")))
                .unwrap();
        }
    }
    let out = dir.path().join("pack");
    let output = common::trainer()
        .wgpu()
        .quick()
        .data(&data)
        .args(["--image-size", "5", "--models", "baseline"])
        .out(&out)
        .run_ok();
    let console = format!("{}{}", common::stdout(&output), common::stderr(&output));
    let notes: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("at most 256 classes"))
        .collect();
    assert_eq!(notes.len(), 1, "{console}");
    assert!(notes[0].contains("layers"), "{console}");
    let (info, model) = first_model(&out);
    let model = &model;
    assert_eq!(model["engine"], "layers", "{info}");
    assert!(
        model["engine_note"].as_str().unwrap().contains("257"),
        "{info}"
    );
}

/// On a software adapter, a model whose training step would pass llvmpipe's loop cap (32,64
/// on 56x56, batch 2) trains on burn's layers from the start, with one line that says why,
/// instead of stopping at its first step; run_info.json names the engine and the reason. A
/// batch-norm step too long for its one workgroup (the issue's widths at 28x28, batch 16)
/// takes the layers on every adapter, saying so.
#[test]
fn a_step_past_the_software_loop_cap_trains_on_the_layers_and_says_so() {
    if !common::wgpu_available("a_step_past_the_software_loop_cap_trains_on_the_layers_and_says_so")
        || !common::wgpu_is_software()
    {
        return;
    }
    let dir = common::temp();
    let run = |name: &str, flags: &[&str], size: &str, batch: &str| {
        let out = dir.path().join(name);
        let output = common::trainer()
            .wgpu()
            .quick()
            .args(["--models", "cnn", "--cnn-widths", "32,64"])
            .args(flags)
            .args(["--image-size", size, "--samples-per-class", "6"])
            .args(["--batch-size", batch])
            .out(&out)
            .run_ok();
        let console = format!("{}{}", common::stdout(&output), common::stderr(&output));
        let notes: Vec<String> = console
            .lines()
            .filter(|l| l.starts_with("engine: "))
            .map(String::from)
            .collect();
        assert_eq!(notes.len(), 1, "{console}");
        let (info, model) = first_model(&out);
        assert_eq!(model["engine"], "layers", "{info}");
        assert_eq!(
            model["engine_note"].as_str(),
            notes[0].strip_prefix("engine: "),
            "{info}"
        );
        notes[0].clone()
    };
    let capped = run("capped", &[], "56", "2");
    assert!(
        capped.contains("65535") && capped.contains("burn's layers run it"),
        "{capped}"
    );
    let whole = run("whole-batch", &["--batch-norm"], "28", "16");
    assert!(
        whole.contains("one workgroup") && whole.contains("batch 16"),
        "{whole}"
    );
}

/// `evaluate` and `predict` print the engine line training prints when the kernels do not
/// take the model (an adapter without subgroups of 8 lanes, by the test hook): evaluate with
/// its other lines on stdout, predict on stderr (its stdout is its results); none when the
/// kernels take it.
#[test]
fn evaluate_and_predict_say_the_engine_line_training_says() {
    if !common::wgpu_available("evaluate_and_predict_say_the_engine_line_training_says") {
        return;
    }
    let dir = common::temp();
    let out = dir.path().join("pack");
    let lanes =
        |trainer: common::Trainer, lanes: &str| trainer.wgpu().env("TRAINER_SUBGROUP_LANES", lanes);
    let output = lanes(common::trainer(), "4")
        .args([
            "--models",
            "cnn",
            "--cnn-widths",
            "4,6",
            "--epochs-cnn",
            "1",
        ])
        .args(["--samples-per-class", "10"])
        .out(&out)
        .run_ok();
    let engine_lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("engine: "))
            .map(str::to_string)
            .collect()
    };
    let trained = engine_lines(&common::stdout(&output));
    assert_eq!(trained.len(), 1, "{}", common::stdout(&output));
    assert!(
        trained[0].contains("needs subgroups of at least 8 lanes"),
        "{trained:?}"
    );
    let checkpoint = out.join("checkpoints/best_model.json");
    let evaluate = |n: &str| {
        lanes(common::trainer().subcommand("evaluate"), n)
            .checkpoint(&checkpoint)
            .run_ok()
    };
    let output = evaluate("4");
    assert_eq!(
        engine_lines(&common::stdout(&output)),
        trained,
        "{}",
        common::stdout(&output)
    );
    assert!(engine_lines(&common::stderr(&output)).is_empty());
    assert!(engine_lines(&common::stdout(&evaluate("8"))).is_empty());

    let images = common::image_folder(dir.path(), 3);
    let predict = |n: &str| {
        lanes(common::trainer().subcommand("predict"), n)
            .checkpoint(&checkpoint)
            .arg(&images)
            .run_ok()
    };
    let output = predict("4");
    assert_eq!(
        engine_lines(&common::stderr(&output)),
        trained,
        "{}",
        common::stderr(&output)
    );
    assert!(engine_lines(&common::stdout(&output)).is_empty());
    assert!(engine_lines(&common::stderr(&predict("8"))).is_empty());
}

/// On an adapter whose subgroups have fewer than 8 lanes, or none, the CNN family (not the
/// Tiny CNN, whose kernel needs no subgroups) trains on burn's layers and says why
/// (`TRAINER_SUBGROUP_LANES`, a test hook, stands for such an adapter).
#[test]
fn a_family_cnn_without_subgroups_of_eight_lanes_runs_on_the_layers() {
    if !common::wgpu_available("a_family_cnn_without_subgroups_of_eight_lanes_runs_on_the_layers") {
        return;
    }
    let dir = common::temp();
    for (lanes, why) in [
        (
            "4",
            "needs subgroups of at least 8 lanes, this adapter's have 4",
        ),
        ("0", "needs subgroup operations"),
        ("8", ""),
    ] {
        let out = dir.path().join(format!("lanes-{lanes}"));
        let output = common::trainer()
            .wgpu()
            .args([
                "--models",
                "cnn",
                "--cnn-widths",
                "4,6",
                "--epochs-cnn",
                "1",
            ])
            .args(["--samples-per-class", "10"])
            .env("TRAINER_SUBGROUP_LANES", lanes)
            .out(&out)
            .run_ok();
        // The console's one line names its topic first, as "memory: ..." or "data: ..." do.
        let printed = common::stdout(&output);
        let engine: Vec<&str> = printed
            .lines()
            .filter(|l| l.contains("burn's layers"))
            .collect();
        match why {
            "" => assert!(engine.is_empty(), "{printed}"),
            _ => assert!(
                engine.len() == 1
                    && engine[0].starts_with("engine: CNN ")
                    && engine[0].contains(why),
                "{printed}"
            ),
        }
        let info: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join("outputs/run_info.json")).unwrap(),
        )
        .unwrap();
        assert!(
            info["device"].get("subgroup_lanes").is_some(),
            "run_info.json records the adapter's subgroup lanes: {info}"
        );
        let model = &info["models"][0];
        if why.is_empty() {
            assert_eq!(model["engine"], "wgpu kernels", "{lanes} lanes: {model}");
        } else {
            assert_eq!(model["engine"], "layers", "{lanes} lanes: {model}");
            assert!(
                model["engine_note"]
                    .as_str()
                    .is_some_and(|n| n.contains(why)),
                "{lanes} lanes: {model}"
            );
        }
    }
}

/// The issue's network (1 channel, widths 32,64 at 28x28, flatten, hidden 128, dropout 0.25)
/// fits a 128 MiB storage binding at batch 64 in the kernels' footprint: a workgroup's
/// gradient row leaves out the head's 1.6 million dense weights (counted once per batch), as
/// the launch lays them out. (Counting them in every row made the memory policy refuse it.)
#[test]
fn the_kernels_footprint_counts_the_heads_dense_block_once() {
    use trainer::model::{Head, HeadKind};
    use trainer::train::engine::Engine;
    let spec = trainer::model::ModelSpec {
        head: Head::new(HeadKind::Flatten, 128, 0.25).unwrap(),
        ..cnn(1, &[32, 64])
    };
    let footprint = Engine::GpuKernels(kernel_model(spec)).footprint(spec, 28, 10);
    let params = trainer::model::flat::len(spec, 28 * 28, 10) as u64;
    assert!(footprint.slot_gradient < params / 50, "{footprint:?}");
    assert!(
        footprint.largest_buffer_bytes(64) < 128 << 20,
        "{} bytes",
        footprint.largest_buffer_bytes(64)
    );
}

/// The issue's network at its full size (32,64 on 28x28, flatten, hidden 128, dropout 0.25,
/// ten classes): its gradients are the layers'. On lavapipe its hidden layer's and its
/// features' dot products were once long enough to pass llvmpipe's cap on one invocation's
/// loop iterations, after which every loop ran one lap: the first block's gradient was left
/// wrong and a resumed run drifted from an unstopped one (cnn_sample.wgsl's Loops).
/// With batch norm too (the whole batch in one workgroup: batch 2).
#[test]
fn training_kernels_match_the_layers_at_the_issues_full_size() {
    use trainer::model::{Head, HeadKind};
    let Some(device) = wgpu_device("training_kernels_match_the_layers_at_the_issues_full_size")
    else {
        return;
    };
    let spec = trainer::model::ModelSpec {
        head: Head::new(HeadKind::Flatten, 128, 0.25).unwrap(),
        ..cnn(1, &[32, 64])
    };
    let mut rng = common::Lcg(29);
    let batch = KernelBatch::draw(&mut rng, spec, (28, 28), 10, 3, &device);
    batch.check_gradients(0.0, "cnn-32-64-flatten-h128-d0.25 on 28x28, batch 3");
    // With batch norm one workgroup runs the whole batch: batch 2 stays within llvmpipe's
    // loop cap at these widths (batch 16 does not), so the kernel runs here at the issue's
    // full size; the running statistics it leaves then give the evaluation's logits.
    let normed = trainer::model::ModelSpec {
        batch_norm: true,
        ..spec
    };
    let mut batch = KernelBatch::draw(&mut rng, normed, (28, 28), 10, 2, &device);
    let case = "cnn-32-64-bn-flatten-h128-d0.25 on 28x28, batch 2";
    batch.check_gradients(0.0, case);
    batch.net = batch_norm_reference(&batch, None, DROPOUT_KEY).2;
    batch.check_logits(&format!("{case}, running statistics"));
}

/// A network past what llvmpipe lets one invocation loop (32,64 on 96x96: the second
/// block's convolution alone is ~40,000 laps, the whole sample ~180,000) fails loudly there (a
/// loss below 0, a NaN gradient norm; the trainer stops the model with one line) instead of
/// returning a gradient that is silently wrong; on a GPU it is the layers' gradient.
#[test]
fn a_kernel_cut_short_by_the_software_loop_cap_fails_loudly() {
    let Some(device) = wgpu_device("a_kernel_cut_short_by_the_software_loop_cap_fails_loudly")
    else {
        return;
    };
    let spec = cnn(1, &[32, 64]);
    if !trainer::device::wgpu_is_software() {
        let mut rng = common::Lcg(31);
        let batch = KernelBatch::draw(&mut rng, spec, (96, 96), 3, 2, &device);
        batch.check_gradients(0.0, "cnn-32-64 on 96x96, batch 2");
        return;
    }
    assert!(
        cut_short(spec, 96, 2, &device),
        "cnn-32-64 on 96x96 should be cut short"
    );
}

/// The host's count of a step's loop laps (`gpu_train::sample_laps`: the sample kernel's and
/// the update kernel's, whichever is more; burn's layers take a model on a software adapter
/// past fifteen sixteenths of the cap) is exact or high: shapes near and far from llvmpipe's
/// cap, with and without batch norm, with a wide hidden layer (whose update kernel, one
/// workgroup over 7.5 million parameters, passes the cap first), run one real step each, and
/// each is cut short exactly when its count passes the cap.
#[test]
fn the_host_counts_a_kernels_loop_laps_on_the_right_side_of_the_cap() {
    use trainer::device::gpu_train::{
        SOFTWARE_LOOP_BUDGET, SOFTWARE_LOOP_CAP, Workload, sample_laps,
    };
    use trainer::model::{Head, HeadKind};
    let Some(device) =
        wgpu_device("the_host_counts_a_kernels_loop_laps_on_the_right_side_of_the_cap")
    else {
        return;
    };
    if !trainer::device::wgpu_is_software() {
        return;
    }
    let flatten = Head::new(HeadKind::Flatten, 128, 0.25).unwrap();
    let issue = trainer::model::ModelSpec {
        head: flatten,
        ..cnn(1, &[32, 64])
    };
    let normed = |spec: trainer::model::ModelSpec| trainer::model::ModelSpec {
        batch_norm: true,
        ..spec
    };
    let hidden = |units: usize| trainer::model::ModelSpec {
        head: Head::new(HeadKind::Flatten, units, 0.25).unwrap(),
        ..issue
    };
    // (spec, image size, batch, cut short on lavapipe): near the cap on both sides, and far
    // from it. Counted (laps measured on lavapipe): 52, 64,111 (62,404 ran); the batch-norm
    // batch of 14, 68,454 (ran whole: a batch-norm step's count is a few thousand high);
    // hidden 590, 65,460 and hidden 600, 66,558: the update kernel's (exact but a lap; the
    // sample kernel's are 53,000).
    let cases = [
        (cnn(1, &[32, 64]), 52, 2, false),
        (cnn(1, &[32, 64]), 56, 2, true),
        (normed(cnn(1, &[8, 16])), 28, 14, false),
        (normed(cnn(1, &[8, 16])), 28, 18, true),
        (hidden(590), 28, 2, false),
        (hidden(600), 28, 2, true),
        (issue, 28, 2, false),
        (normed(cnn(1, &[8, 16])), 12, 4, false),
        (normed(issue), 28, 16, true),
    ];
    let mut seen = Vec::new();
    for (spec, size, n, expected) in cases {
        let workload = Workload {
            batch: n,
            training: true,
        };
        let laps = sample_laps(kernel_model(spec), 1, size, 3, workload).unwrap();
        let cut = cut_short(spec, size, n, &device);
        seen.push(format!(
            "{} {size}x{size} batch {n}: {laps} laps, cut {cut}",
            spec.display_name()
        ));
        // Never cut within the budget the engine uses, nor within the cap (the count is
        // exact or high), and cut where lavapipe cuts it.
        assert!(laps > SOFTWARE_LOOP_BUDGET || !cut, "{seen:#?}");
        assert!(laps > SOFTWARE_LOOP_CAP || !cut, "{seen:#?}");
        assert_eq!(cut, expected, "{seen:#?}");
    }
    eprintln!("{seen:#?}");
}

/// Whether one training step of `spec` on `size` squared images, batch `n`, was cut short
/// by the software loop cap (a kernel's poisoned loss and norm): a whole step, the
/// optimizer's loop included, as training runs it.
fn cut_short(spec: trainer::model::ModelSpec, size: usize, n: usize, device: &Device) -> bool {
    let mut rng = common::Lcg(31);
    let batch = KernelBatch::draw(&mut rng, spec, (size, size), 3, n, device);
    let p = trainer::model::flat::to_flat(&batch.net).dims()[0];
    let state = Tensor::cat(
        vec![
            trainer::model::flat::to_flat(&batch.net),
            Tensor::zeros([2 * p + 1], device),
        ],
        0,
    );
    let (_, stats) = trainer::device::gpu_train::step(
        kernel_model(spec),
        batch.images.clone(),
        batch.labels.clone(),
        state,
        &step_hyper(0.01, 1, trainer::recipe::Recipe::default()),
        3,
        false,
    );
    let stats = values(stats);
    let cut = stats[0] < 0.0 && !stats[2].is_finite();
    assert!(
        cut || (stats[0] >= 0.0 && stats[2].is_finite()),
        "a step is either cut short or whole: loss {}, norm {}",
        stats[0],
        stats[2]
    );
    cut
}

/// A pack's run_info.json and its first model's entry.
fn first_model(pack: &std::path::Path) -> (serde_json::Value, serde_json::Value) {
    let info = common::run_info(pack);
    let model = info["models"][0].clone();
    (info, model)
}
