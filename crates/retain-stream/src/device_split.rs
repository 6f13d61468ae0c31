//! One split of a dataset uploaded to the device once, as stored on disk.

use tch::{Device, Kind, Tensor};

/// One split of a dataset, resident on the device.
#[derive(Debug)]
pub struct DeviceSplit {
    /// `[N, C·H·W]`, `uint8`, exactly as stored on disk.
    pub images: Tensor,
    /// `[N]`, `int64`.
    pub labels: Tensor,
    /// Labels kept on the host too: scenario construction reads them, training never does.
    pub host_labels: Vec<u8>,
    /// For streams whose transforms read a zero fill (rotations): `[N, C·H·W + 1]` with a
    /// zero last column, of which `images` is a view, so a batch needs no concatenation.
    padded: Option<Tensor>,
}

impl DeviceSplit {
    pub(crate) fn upload(
        split: &retain_data::Split,
        features: usize,
        fill: bool,
        device: Device,
    ) -> Self {
        let images = Tensor::from_slice(&split.images)
            .view([split.len as i64, features as i64])
            .to_device(device);
        let labels = Tensor::from_slice(&split.labels)
            .to_kind(Kind::Int64)
            .to_device(device);
        let (images, padded) = if fill {
            let zeros = Tensor::zeros([split.len as i64, 1], (Kind::Uint8, device));
            let padded = Tensor::cat(&[images, zeros], 1);
            (padded.narrow(1, 0, features as i64), Some(padded))
        } else {
            (images, None)
        };
        Self {
            images,
            labels,
            host_labels: split.labels.clone(),
            padded,
        }
    }

    /// Replaces every label `l` by `label[l]`, on the device and on the host (a split stream
    /// labelled within its tasks).
    pub(crate) fn relabel(&mut self, label: &[u8]) {
        let table = Tensor::from_slice(label)
            .to_kind(Kind::Int64)
            .to_device(self.labels.device());
        self.labels = table.index_select(0, &self.labels);
        for l in &mut self.host_labels {
            *l = label[usize::from(*l)];
        }
    }

    /// The rows at `samples`, with the zero-fill column where the stream needs one.
    pub(crate) fn rows(&self, samples: &Tensor) -> Tensor {
        self.padded
            .as_ref()
            .unwrap_or(&self.images)
            .index_select(0, samples)
    }

    /// Number of stored samples (not of stream indices; see [`crate::TaskStream::index_len`]).
    pub fn len(&self) -> usize {
        self.host_labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.host_labels.is_empty()
    }
}
