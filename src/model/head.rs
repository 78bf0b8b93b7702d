//! The CNN's classifier head after its features (global average or flattened map):
//! dropout, the optional hidden Linear + ReLU, dropout, the last Linear. Dropout is
//! PyTorch's inverted dropout (kept values scaled by 1 / (1 - p)), its masks drawn on the
//! host from the counter-based generator ([`crate::rng`]), so a run's masks are the same on
//! every backend and every rerun.

use burn::prelude::*;
use burn::tensor::activation::relu;
use rayon::prelude::*;

use super::Cnn;
use crate::rng;

impl Cnn {
    /// Logits of `features` (batch, features). `dropout` is the step's key while training,
    /// none in evaluation (dropout is then the identity).
    pub fn head_forward(
        &self,
        features: Tensor<2>,
        dropout: Option<u32>,
        trace: &mut dyn FnMut(&str, Vec<usize>),
    ) -> Tensor<2> {
        let p = self.head.dropout() as f32;
        let mut x = features;
        let mut layer = 0u32;
        let mut drop = |x: Tensor<2>, trace: &mut dyn FnMut(&str, Vec<usize>)| {
            if p <= 0.0 {
                return x;
            }
            layer += 1;
            let x = match dropout {
                Some(key) => x.clone() * mask(x.dims(), p, mask_key(key, layer), &x.device()),
                None => x,
            };
            trace(&format!("dropout {p} (training only)"), x.dims().to_vec());
            x
        };
        if let Some(hidden) = &self.hidden {
            x = drop(x, trace);
            x = relu(hidden.forward(x));
            trace("linear + relu (hidden)", x.dims().to_vec());
        }
        x = drop(x, trace);
        let logits = self.classifier.forward(x);
        trace("linear (logits)", logits.dims().to_vec());
        logits
    }
}

/// The key of the mask before the head's `layer`-th Linear (1, then 2 after a hidden layer)
/// in a step keyed `step_key`: every path that draws the masks (the layers, the WGSL kernels)
/// takes it from here, so they draw the same bits.
pub fn mask_key(step_key: u32, layer: u32) -> u32 {
    rng::mix32(step_key ^ layer)
}

/// The inverted-dropout mask of `shape`: 0 with probability `p`, else 1 / (1 - p).
pub fn mask(shape: [usize; 2], p: f32, key: u32, device: &Device) -> Tensor<2> {
    let keep = 1.0 / (1.0 - p);
    // In parallel, in chunks: each value depends only on its index, so the mask is the same.
    const CHUNK: usize = 8192;
    let mut values = vec![0.0f32; shape[0] * shape[1]];
    values
        .par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| rng::fill_threshold(chunk, key, (c * CHUNK) as u32, p, 0.0, keep));
    Tensor::from_data(TensorData::new(values, shape), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_drops_about_p_and_keeps_the_mean() {
        let device = Device::default();
        let m = mask([64, 100], 0.25, 7, &device);
        let values = m.into_data().try_to_vec::<f32>().unwrap();
        let dropped = values.iter().filter(|v| **v == 0.0).count() as f64 / values.len() as f64;
        assert!((dropped - 0.25).abs() < 0.03, "dropped {dropped}");
        let mean = values.iter().sum::<f32>() / values.len() as f32;
        assert!((mean - 1.0).abs() < 0.05, "mean {mean}");
        let again = mask([64, 100], 0.25, 7, &device)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(values, again);
        // Value i is the generator's i-th draw of the key, whatever the chunking.
        for (i, v) in values.iter().enumerate() {
            let dropped = rng::uniform(7, i as u32) < 0.25;
            assert_eq!(*v, if dropped { 0.0 } else { 1.0 / 0.75 }, "value {i}");
        }
    }
}
