//! Rehearsal memories that live on the training device.
//!
//! A [`retain_stream::TaskStream`] already holds every training image on the device, so a
//! memory only needs the **dataset indices** of the samples it keeps (plus, for DER, the
//! logits recorded when they were seen). Replaying is then an index gather on the device:
//! [`retain_stream::TaskStream::batch`] of the sampled indices.
//!
//! Three memories, by when they decide what to keep:
//!
//! * [`Reservoir`]: online, boundary-free. Vitter's algorithm R: after `n` samples offered,
//!   each of them is in the buffer with probability `capacity / n`. Used by experience replay
//!   and DER.
//! * [`ClassBalanced`]: updated at task boundaries; every class seen so far gets an equal share
//!   of the capacity (water-filling when a class has fewer samples than its share).
//! * [`EpisodicMemory`]: GEM's per-task memories, `per_task` samples of each finished task,
//!   kept as one index tensor per task.
//!
//! [`gradients`] holds the flat-gradient helpers the projection methods (GEM, A-GEM) share.
//!
//! # No host synchronisation
//!
//! Which slot a sample overwrites is decided on the host with a seeded
//! [`SplitMix64`](retain_stream::seed::SplitMix64) from counts alone (algorithm R needs only
//! how many samples were offered), so nothing is ever read back from the device. The
//! reservoir uploads its decisions in chunks of [`PLAN_CHUNK`] samples, so a step does no
//! host→device copy either; the class-balanced and episodic memories upload one index tensor
//! per task. Sampling a replay batch is a permutation computed on the device from a
//! key ([`sample_slots`]); each memory derives its keys from its own seed and a count of
//! draws ([`DrawCounter`]), so it never reads torch's global generator.

mod balanced;
mod episodic;
pub mod gradients;
mod reservoir;

pub use balanced::ClassBalanced;
pub use episodic::EpisodicMemory;
pub use reservoir::{PLAN_CHUNK, Reservoir, ReservoirSchedule};

use tch::{Device, Kind, Tensor};

/// Errors of the memories.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MemoryError {
    #[error("{what} must be at least 1 (got 0)")]
    ZeroCapacity { what: &'static str },
    #[error(
        "{what}: expected {expected:?} but got {got:?} (a batch of indices and its logits must match)"
    )]
    Shape {
        what: &'static str,
        expected: Vec<i64>,
        got: Vec<i64>,
    },
    #[error("sample index {index} is outside the training split ({len} samples)")]
    IndexOutOfRange { index: i64, len: usize },
}

/// `count` distinct slots drawn uniformly from `0..filled`, on `device` (fewer when
/// `filled < count`; `None` when the memory is empty), for the draw `key`: the first `count`
/// of a pseudo-random permutation computed on the device from `key`
/// ([`retain_stream::augment::random_keys`]), so it costs no synchronisation, no host→device
/// copy, and does not touch torch's global generator.
pub fn sample_slots(filled: usize, count: usize, key: u32, device: Device) -> Option<Tensor> {
    if filled == 0 || count == 0 {
        return None;
    }
    let take = count.min(filled) as i64;
    let keys = retain_stream::augment::random_keys(filled as i64, key, device);
    let (_, order) = keys.sort(0, false);
    Some(order.narrow(0, 0, take))
}

/// The replay draws of one memory: the key of each successive sample, from the memory's
/// seed and the number of draws so far.
#[derive(Debug, Clone)]
pub struct DrawCounter {
    seed: u64,
    draws: u64,
}

impl DrawCounter {
    /// Counter for the memory seeded with `seed` (a purpose of its own is mixed in, so the
    /// draws do not repeat the memory's other random choices).
    pub fn new(seed: u64) -> Self {
        Self {
            seed: retain_stream::seed::combine(seed, 0x5a3e_d1a7),
            draws: 0,
        }
    }

    /// The key of the next draw.
    pub fn next_key(&mut self) -> u32 {
        self.draws += 1;
        retain_stream::seed::combine(self.seed, self.draws) as u32
    }

    /// Draws made so far (part of the memory's state for a resumed run).
    pub fn draws(&self) -> u64 {
        self.draws
    }

    /// Continues after `draws` draws.
    pub fn set_draws(&mut self, draws: u64) {
        self.draws = draws;
    }
}

/// Samples drawn from a memory: dataset indices into the training split and, for memories
/// that keep them, the logits recorded with each sample.
#[derive(Debug)]
pub struct Replay {
    /// `[n]`, int64, on the device: pass to [`retain_stream::TaskStream::batch`].
    pub indices: Tensor,
    /// `[n, width]`, float32, when the memory keeps logits.
    pub logits: Option<Tensor>,
}

/// Uploads host indices to the device in one (blocking) copy: used at task boundaries.
fn upload(indices: &[i64], device: Device) -> Tensor {
    Tensor::from_slice(indices).to_device(device)
}

/// Uploads host indices without waiting for the device's queue (the source is staged by the
/// driver before the call returns, so dropping it afterwards is safe).
fn upload_async(indices: &[i64], device: Device) -> Tensor {
    Tensor::from_slice(indices).to_device_(device, Kind::Int64, true, false)
}

#[cfg(test)]
mod tests;
