//! Per-channel normalisation constants of each dataset, folded into one multiply-add.

use tch::{Device, Tensor};

use crate::StreamError;

/// Per-channel `x_normalised = x_uint8 · scale + shift`, folded from mean and std.
#[derive(Debug)]
pub(crate) struct Normalisation {
    /// `[1, C, 1, 1]`, `float32`, on the device.
    pub(crate) scale: Tensor,
    pub(crate) shift: Tensor,
}

/// Per-channel mean and standard deviation of the training pixels in `[0, 1]`, the values
/// used across the literature (for CIFAR, those of the DER paper's Mammoth code).
pub fn normalisation_constants(dataset: &str) -> Option<(&'static [f64], &'static [f64])> {
    Some(match dataset {
        "mnist" => (&[0.1307], &[0.3081]),
        "fashion-mnist" => (&[0.2860], &[0.3530]),
        "cifar10" => (&[0.4914, 0.4822, 0.4465], &[0.2470, 0.2435, 0.2615]),
        "cifar100" | "cifar100-coarse" => (&[0.5071, 0.4865, 0.4409], &[0.2673, 0.2564, 0.2762]),
        _ => return None,
    })
}

pub(crate) fn normalisation(dataset: &str, device: Device) -> Result<Normalisation, StreamError> {
    let (mean, std) =
        normalisation_constants(dataset).ok_or_else(|| StreamError::UnknownNormalisation {
            dataset: dataset.to_owned(),
        })?;
    let scale: Vec<f32> = std.iter().map(|s| (1.0 / (255.0 * s)) as f32).collect();
    let shift: Vec<f32> = mean.iter().zip(std).map(|(m, s)| (-m / s) as f32).collect();
    let channels = mean.len() as i64;
    let upload = |v: &[f32]| {
        Tensor::from_slice(v)
            .view([1, channels, 1, 1])
            .to_device(device)
    };
    Ok(Normalisation {
        scale: upload(&scale),
        shift: upload(&shift),
    })
}
