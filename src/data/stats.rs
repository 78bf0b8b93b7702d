//! The normalization of an image folder: mean and standard deviation of every training value,
//! channel by channel, streamed as exact integer sums of the 8-bit values (nothing kept per
//! value), and the conversion of 8-bit planes to normalized model input.

use crate::data::{Normalization, PerChannel};

/// Running sums of one part's 8-bit values, channel by channel.
#[derive(Clone, Debug)]
pub struct ChannelSums {
    sum: Vec<u64>,
    squares: Vec<u64>,
    count: u64,
}

impl ChannelSums {
    pub fn new(channels: usize) -> ChannelSums {
        ChannelSums {
            sum: vec![0; channels],
            squares: vec![0; channels],
            count: 0,
        }
    }

    /// Adds one image (`channels` planes, channel-major).
    pub fn add(&mut self, image: &[u8]) {
        let channels = self.sum.len();
        let plane = image.len() / channels.max(1);
        for (c, values) in image.chunks(plane.max(1)).enumerate().take(channels) {
            let (mut s, mut q) = (0u64, 0u64);
            for &v in values {
                s += v as u64;
                q += (v as u64) * (v as u64);
            }
            self.sum[c] += s;
            self.squares[c] += q;
        }
        self.count += plane as u64;
    }

    /// The mean and standard deviation of the values in [0, 1] (population, as before).
    pub fn normalization(&self) -> Normalization {
        let count = self.count.max(1) as f64;
        let (mut means, mut stds) = (Vec::new(), Vec::new());
        for (s, q) in self.sum.iter().zip(&self.squares) {
            let mean = *s as f64 / 255.0 / count;
            let var = (*q as f64 / (255.0 * 255.0) / count - mean * mean).max(0.0);
            means.push(mean as f32);
            stds.push((var.sqrt() as f32).max(1e-6));
        }
        Normalization {
            mean: PerChannel(means),
            std: PerChannel(stds),
        }
    }
}

/// 8-bit planes as normalized values: `(v / 255 - mean[c]) / std[c]`.
pub fn normalized(image: &[u8], normalization: &Normalization) -> Vec<f32> {
    let channels = normalization.channels().max(1);
    let plane = (image.len() / channels).max(1);
    image
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / plane).min(channels - 1);
            (v as f32 / 255.0 - normalization.mean.0[c]) / normalization.std.0[c]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_statistics_match_the_values() {
        let mut sums = ChannelSums::new(1);
        sums.add(&[0, 255]);
        sums.add(&[0, 255]);
        let n = sums.normalization();
        assert!((n.mean.0[0] - 0.5).abs() < 1e-6);
        assert!((n.std.0[0] - 0.5).abs() < 1e-6);
        assert_eq!(normalized(&[255, 0], &n), [1.0, -1.0]);
    }
}
