//! How a data loader feeds a model: shuffled or in order, augmented or not, and whether the
//! stripe images are drawn by the device's kernel instead of uploaded. The data layer knows no
//! device; this choice is the training layer's.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::prelude::*;

use crate::data::{ImageBatch, ImageBatcher, ImageDataset, Sample};

/// How a loader feeds a model: shuffled (with this seed) or in order, augmented or not,
/// stripe images drawn on the device or uploaded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Feed {
    pub shuffle_seed: Option<u64>,
    pub augment: Option<crate::data::Augmenter>,
    pub stripes_on_device: bool,
}

/// The data layer's batcher, with stripe images drawn on a wgpu device when the engine
/// says so (shaders/stripe_synth.wgsl: equal to the host's images, bit for bit).
#[derive(Clone, Debug)]
pub struct DeviceBatcher {
    pub inner: ImageBatcher,
    pub stripes_on_device: bool,
}

impl DeviceBatcher {
    /// The recipes of `items` when the device can draw them itself (stripe images of one seed,
    /// no augmentation, a wgpu device with the kernels on).
    fn device_recipes(&self, items: &[Sample]) -> Option<(u64, Vec<(u32, u32)>)> {
        let inner = &self.inner;
        if inner.augment.is_some()
            || !self.stripes_on_device
            || inner.channels != 1
            || !crate::device::gpu_kernels::indexable(items.len() * inner.image_size.pow(2))
        {
            return None;
        }
        let seed = items.first()?.recipe?.seed;
        let pairs = items
            .iter()
            .map(|item| {
                item.recipe
                    .filter(|r| r.seed == seed)
                    .map(|r| (r.class, r.index))
            })
            .collect::<Option<Vec<_>>>()?;
        Some((seed, pairs))
    }
}

impl Batcher<Sample, ImageBatch> for DeviceBatcher {
    fn batch(&self, items: Vec<Sample>, device: &Device) -> ImageBatch {
        let Some((seed, recipes)) = self.device_recipes(&items) else {
            return self.inner.batch(items, device);
        };
        let plain = device.clone().without_autodiff();
        let size = self.inner.image_size;
        let images = crate::device::gpu_kernels::stripe_images(&recipes, seed, size, &plain);
        let images = if device.is_autodiff() {
            images.autodiff()
        } else {
            images
        };
        ImageBatch::of_items(images, items, device)
    }
}

/// A burn data loader over `dataset`: batches of `batch_size` on `device`, fed as `feed`
/// says (reshuffled at each pass when it has a seed, in dataset order otherwise). The
/// dataset's clone shares its pixels.
pub fn loader(
    dataset: &ImageDataset,
    batch_size: usize,
    feed: Feed,
    device: &Device,
) -> Arc<dyn DataLoader<ImageBatch>> {
    loader_counted(
        dataset,
        batch_size,
        feed,
        device,
        Arc::new(AtomicU64::new(0)),
    )
}

/// [`loader`], its augmentation counting samples in `augmented` (which a resumed run sets to
/// where the stopped run was, so the same samples get the same numbers).
pub fn loader_counted(
    dataset: &ImageDataset,
    batch_size: usize,
    feed: Feed,
    device: &Device,
    augmented: Arc<AtomicU64>,
) -> Arc<dyn DataLoader<ImageBatch>> {
    let mut inner = ImageBatcher::plain(dataset.image_size, dataset.channels);
    inner.augment = feed.augment;
    inner.augmented = augmented;
    let batcher = DeviceBatcher {
        inner,
        stripes_on_device: feed.stripes_on_device,
    };
    let mut builder = DataLoaderBuilder::new(batcher)
        .batch_size(batch_size)
        .set_device(device.clone());
    if let Some(seed) = feed.shuffle_seed {
        builder = builder.shuffle(seed);
    }
    builder.build(dataset.clone())
}
