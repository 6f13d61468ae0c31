//! When an epoch's mean training loss counts as divergence ([`check`]): it is not finite, or
//! it exceeds `[training] divergence_factor` times the loss of the run's first step (the loss
//! the model started from; a first epoch's mean would not do, as a run with a huge learning
//! rate explodes within its first epoch). Checked where the trainer reads the epoch's mean
//! anyway ([`Watch`]): the first step's loss is kept on the device and crosses to the host
//! with the first epoch's sum, so the check costs no host read of its own.

use std::fmt;

use tch::{Device, Tensor};

/// Why an epoch's mean loss counts as divergence: the reason in
/// [`TrainError::Diverged`](crate::TrainError::Diverged).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Divergence {
    /// NaN or infinite.
    NotFinite,
    /// Above `factor` × `first`, the loss of the run's first step.
    AboveBound { first: f64, factor: f64 },
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Divergence::NotFinite => write!(f, "not a finite number"),
            Divergence::AboveBound { first, factor } => write!(
                f,
                "above training.divergence_factor = {factor} times the first step's loss {first}"
            ),
        }
    }
}

/// `Err` when `loss`, an epoch's mean loss, counts as divergence: it is not finite, or it
/// exceeds `factor` times `first`, the loss of the run's first step. A `first` that is not a
/// positive finite number (or `None`) gives no bound.
pub fn check(loss: f64, first: Option<f64>, factor: f64) -> Result<(), Divergence> {
    if !loss.is_finite() {
        return Err(Divergence::NotFinite);
    }
    match first {
        Some(first) if first.is_finite() && first > 0.0 && loss > factor * first => {
            Err(Divergence::AboveBound { first, factor })
        }
        _ => Ok(()),
    }
}

/// [`check`] over a run: keeps the first step's loss on the device and reads it once, with
/// the first epoch's loss sum.
pub(crate) struct Watch {
    factor: f64,
    /// The run's first step's loss, on the device, until it is read.
    first_step: Option<Tensor>,
    /// The run's first step's loss, once read.
    first: Option<f64>,
    stepped: bool,
}

impl Watch {
    pub(crate) fn new(factor: f64) -> Self {
        Watch {
            factor,
            first_step: None,
            first: None,
            stepped: false,
        }
    }

    /// A watch that continues a resumed run: `first` is the first step's loss, when the run
    /// before the checkpoint took a step.
    pub(crate) fn resumed(factor: f64, first: Option<f64>) -> Self {
        Watch {
            factor,
            first_step: None,
            first,
            stepped: first.is_some(),
        }
    }

    /// The first step's loss, once read.
    pub(crate) fn first(&self) -> Option<f64> {
        self.first
    }

    /// After each step, with the epoch's loss sum (zeroed at the epoch's start): after the
    /// run's first step it holds just that step's loss, which is copied on the device.
    pub(crate) fn after_step(&mut self, loss_sum: &Tensor) {
        if !self.stepped {
            self.stepped = true;
            self.first_step = Some(loss_sum.copy());
        }
    }

    /// The epoch's mean loss from its loss sum over `steps` steps (the one host read of the
    /// epoch), and whether it counts as divergence.
    pub(crate) fn epoch_mean(
        &mut self,
        loss_sum: &Tensor,
        steps: usize,
    ) -> (f64, Result<(), Divergence>) {
        let sum = match self.first_step.take() {
            Some(first_step) => {
                let both = Tensor::stack(&[loss_sum, &first_step], 0).to_device(Device::Cpu);
                self.first = Some(both.double_value(&[1]));
                both.double_value(&[0])
            }
            None => loss_sum.double_value(&[]),
        };
        let mean = sum / steps.max(1) as f64;
        (mean, check(mean, self.first, self.factor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_above_the_factor_times_the_first_steps_or_not_finite_diverges() {
        let first = Some(2.0);
        assert_eq!(check(19.9, first, 10.0), Ok(()));
        assert_eq!(check(20.0, first, 10.0), Ok(()));
        assert_eq!(
            check(20.1, first, 10.0),
            Err(Divergence::AboveBound {
                first: 2.0,
                factor: 10.0
            })
        );
        assert_eq!(
            check(f64::INFINITY, first, 10.0),
            Err(Divergence::NotFinite)
        );
        assert_eq!(check(f64::NAN, first, 10.0), Err(Divergence::NotFinite));
        // Without a first step's loss: only finiteness.
        assert_eq!(check(1e30, None, 10.0), Ok(()));
        assert_eq!(check(f64::INFINITY, None, 10.0), Err(Divergence::NotFinite));
        // A first loss of zero or NaN gives no bound.
        assert_eq!(check(5.0, Some(0.0), 10.0), Ok(()));
        assert_eq!(check(5.0, Some(f64::NAN), 10.0), Ok(()));
        let reason = check(20.1, first, 10.0).unwrap_err().to_string();
        assert_eq!(
            reason,
            "above training.divergence_factor = 10 times the first step's loss 2"
        );
    }
}

#[cfg(test)]
mod watch_tests {
    use tch::Kind;

    use super::*;

    #[test]
    fn the_watch_measures_every_epoch_against_the_first_steps_loss() {
        let mut watch = Watch::new(10.0);
        let sum = Tensor::from(2.0f32);
        watch.after_step(&sum);
        // The first epoch's two other steps add 60: its mean is 62 / 3.
        let _ = sum.shallow_clone().g_add_(&Tensor::from(60.0f32));
        watch.after_step(&sum);
        watch.after_step(&sum);
        let (mean, verdict) = watch.epoch_mean(&sum, 3);
        assert!((mean - 62.0 / 3.0).abs() < 1e-6, "{mean}");
        assert_eq!(
            verdict,
            Err(Divergence::AboveBound {
                first: 2.0,
                factor: 10.0
            })
        );
        // A later epoch: the first step's loss is kept.
        let sum = Tensor::full([], 39.8, (Kind::Float, Device::Cpu));
        assert_eq!(watch.epoch_mean(&sum, 2).1, Ok(()));
        let sum = Tensor::full([], 40.2, (Kind::Float, Device::Cpu));
        assert!(watch.epoch_mean(&sum, 2).1.is_err());
    }
}
