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
//! # No host synchronisation, capturable steps
//!
//! Which slot a sample overwrites follows from the sample's number alone (algorithm R needs
//! only how many samples were offered), through a seeded counter-based hash evaluated on the
//! device, so nothing is read back and nothing is uploaded per step. Sampling a replay batch
//! is a permutation computed on the device from a key ([`sample_slots`]); each memory derives
//! its keys from its own seed and a count of draws kept on the device ([`DeviceDraws`]), so it
//! never reads torch's global generator. A step that adds to and samples from a memory thus
//! launches the same kernels on the same tensors every time: it can be captured in a CUDA
//! graph and replayed once the number of rows it draws stops changing (see
//! [`Reservoir`]). The class-balanced and episodic memories upload one index tensor per task.

mod balanced;
mod episodic;
pub mod gradients;
mod reservoir;
pub mod state;

pub use balanced::ClassBalanced;
pub use episodic::EpisodicMemory;
pub use reservoir::{Reservoir, ReservoirSchedule};
pub use state::{ClassBalancedState, EpisodicState, ReservoirState, StateReader};

use retain_graph::Elementwise;
use retain_stream::hash::{hash32_xor, hash32_xor_tensor};
use tch::{Device, Kind, Tensor};

/// The sort keys of [`sample_slots`] as one fused kernel on CUDA: `hash32(position ^ key)`,
/// or 2³³ (after every 32-bit key) for a position at or beyond `filled`.
const MASKED_KEYS: Elementwise = Elementwise::new(
    "retain_masked_sample_keys",
    concat!(
        retain_stream::hash32_cuda_source!(),
        "template <typename T> T retain_masked_sample_keys(T position, T key, T filled) {
           return position >= filled ? (int64_t)1 << 33 : retain_hash32_of(position ^ key);
         }"
    ),
);

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
    /// A checkpoint's state does not describe a memory of this kind and size.
    #[error("malformed state: {message}")]
    State { message: String },
}

/// `take` distinct slots drawn uniformly from the first `filled` of `slots` (all of them
/// when `filled` is `None`), `[take]` int64 on the key's device, for the draw `key` (`[]`
/// int64 on the device, 32 significant bits): the first `take` of a pseudo-random
/// permutation computed on the device ([`retain_stream::augment::random_keys`]'s hash of
/// each position), the positions at or beyond `filled` sorted last. A position's hash does
/// not depend on `slots`, so a memory that grows draws the same permutation of its filled
/// slots whatever its capacity. `take ≤ filled` is the caller's to ensure. Costs no
/// synchronisation and no host→device copy, and does not touch torch's global generator.
pub fn sample_slots(slots: i64, filled: Option<&Tensor>, take: i64, key: &Tensor) -> Tensor {
    let positions = Tensor::arange(slots, (Kind::Int64, key.device()));
    let keys = match filled {
        Some(filled) => (key.kind() == Kind::Int64 && filled.kind() == Kind::Int64)
            .then(|| MASKED_KEYS.launch(&[&positions, key, filled], &[]))
            .flatten()
            .unwrap_or_else(|| {
                // Above every 32-bit key: the empty slots sort after the filled ones.
                hash32_xor_tensor(&positions, key)
                    .masked_fill(&positions.ge_tensor(filled), 1i64 << 33)
            }),
        None => hash32_xor_tensor(&positions, key),
    };
    keys.argsort_stable(true, 0, false).narrow(0, 0, take)
}

/// The replay draws of one memory: the key of each successive draw, from the memory's seed
/// and the number of draws so far, counted on the device (so that a draw inside a replayed
/// CUDA graph step is the next draw too).
#[derive(Debug)]
pub struct DeviceDraws {
    salt: i64,
    /// `[]` int64: draws made so far.
    count: Tensor,
}

impl DeviceDraws {
    /// Draws for the memory seeded with `seed` (a purpose of its own is mixed in, so the
    /// draws do not repeat the memory's other random choices).
    pub fn new(seed: u64, device: Device) -> Self {
        Self {
            salt: (retain_stream::seed::combine(seed, 0x5a3e_d1a7) & 0xffff_ffff) as i64,
            count: Tensor::zeros([], (Kind::Int64, device)),
        }
    }

    /// The draws of [`DeviceDraws::new`] after `count` of them were made: its next key is
    /// the one the original's draw number `count + 1` had.
    pub fn restore(seed: u64, device: Device, count: u64) -> Self {
        let draws = Self::new(seed, device);
        let _ = draws.count.shallow_clone().fill_(count as i64);
        draws
    }

    /// The key of the next draw, `[]` int64 on the device: `hash32(count ^ salt)` after
    /// counting the draw, both on the device.
    pub fn next_key(&mut self) -> Tensor {
        let _ = self.count.g_add_scalar_(1);
        hash32_xor(&self.count, self.salt)
    }

    /// Draws made so far (a host read).
    pub fn count(&self) -> u64 {
        self.count.int64_value(&[]) as u64
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

#[cfg(test)]
mod tests;
