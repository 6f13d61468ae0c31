//! A class-balanced memory, rebalanced at task boundaries.

use std::collections::BTreeMap;

use retain_stream::seed::SplitMix64;
use tch::{Device, Kind, Tensor};

use crate::{ClassBalancedState, DeviceDraws, MemoryError, Replay, upload};

/// A memory whose capacity is shared equally by every class seen so far.
///
/// [`ClassBalanced::add_task`] takes the samples of a finished task and recomputes each class's
/// share by water-filling: classes are visited from the fewest available samples up, each gets
/// `min(available, ⌈remaining / classes left⌉)`, so shares differ by at most one except where
/// a class has fewer samples than its share (its spare slots go to the others). A class keeps a
/// uniformly random subset of its samples (seeded); shrinking a class drops a random subset.
/// All of this is host bookkeeping on indices and host labels; the result is uploaded once
/// per task, and replay batches are sampled on the device.
#[derive(Debug)]
pub struct ClassBalanced {
    capacity: usize,
    device: Device,
    rng: SplitMix64,
    /// Per class, the kept dataset indices in random order.
    by_class: BTreeMap<i64, Vec<i64>>,
    /// Every kept index, class by class, on the device.
    indices: Tensor,
    draws: DeviceDraws,
}

impl ClassBalanced {
    pub fn new(capacity: usize, seed: u64, device: Device) -> Result<Self, MemoryError> {
        if capacity == 0 {
            return Err(MemoryError::ZeroCapacity {
                what: "class-balanced memory capacity",
            });
        }
        Ok(Self {
            capacity,
            device,
            rng: SplitMix64::new(seed),
            by_class: BTreeMap::new(),
            indices: Tensor::zeros([0], (Kind::Int64, device)),
            draws: DeviceDraws::new(seed, device),
        })
    }

    /// A memory as [`ClassBalanced::new`] builds it, holding what `state` says (a
    /// [`ClassBalanced::snapshot`] of one with this capacity and seed): it rebalances and
    /// draws exactly as that one would have from then on.
    pub fn restore(
        capacity: usize,
        seed: u64,
        device: Device,
        state: &ClassBalancedState,
    ) -> Result<Self, MemoryError> {
        let mut memory = Self::new(capacity, seed, device)?;
        let held: usize = state.by_class.values().map(Vec::len).sum();
        if held > capacity {
            return Err(MemoryError::State {
                message: format!(
                    "the state holds {held} samples, more than the capacity {capacity}"
                ),
            });
        }
        memory.rng = SplitMix64::new(state.rng);
        memory.by_class = state.by_class.clone();
        memory.indices = upload(&memory.host_indices(), device);
        memory.draws = DeviceDraws::restore(seed, device, state.draws);
        Ok(memory)
    }

    /// What the memory holds now: what [`ClassBalanced::restore`] takes.
    pub fn snapshot(&self) -> ClassBalancedState {
        ClassBalancedState {
            by_class: self.by_class.clone(),
            rng: self.rng.state(),
            draws: self.draws.count(),
        }
    }

    /// Adds a finished task's samples (`indices` into the training split, whose host labels
    /// are `labels`) and rebalances.
    pub fn add_task(&mut self, indices: &[i64], labels: &[u8]) -> Result<(), MemoryError> {
        let mut fresh: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for &index in indices {
            let label = usize::try_from(index)
                .ok()
                .and_then(|i| labels.get(i))
                .ok_or(MemoryError::IndexOutOfRange {
                    index,
                    len: labels.len(),
                })?;
            fresh.entry(i64::from(*label)).or_default().push(index);
        }
        for (class, mut new) in fresh {
            let kept = self.by_class.entry(class).or_default();
            kept.append(&mut new);
            self.rng.shuffle(kept);
        }
        let mut order: Vec<(usize, i64)> = self
            .by_class
            .iter()
            .map(|(&class, kept)| (kept.len(), class))
            .collect();
        order.sort_unstable();
        let mut remaining = self.capacity;
        let mut left = order.len();
        for (available, class) in order {
            let share = available.min(remaining.div_ceil(left));
            self.by_class
                .get_mut(&class)
                .expect("class listed above")
                .truncate(share);
            remaining -= share;
            left -= 1;
        }
        self.indices = upload(&self.host_indices(), self.device);
        Ok(())
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.by_class.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples held per class.
    pub fn class_counts(&self) -> BTreeMap<i64, usize> {
        self.by_class
            .iter()
            .map(|(&class, kept)| (class, kept.len()))
            .collect()
    }

    /// Every kept index, class by class (host copy of [`ClassBalanced::indices`]).
    pub fn host_indices(&self) -> Vec<i64> {
        self.by_class.values().flatten().copied().collect()
    }

    /// Every kept index, `[len]`, on the device.
    pub fn indices(&self) -> &Tensor {
        &self.indices
    }

    /// `count` distinct stored samples drawn uniformly (all of them when it holds fewer;
    /// `None` while empty). Each call is the memory's next seeded draw, made on the device;
    /// the memory changes only at task boundaries, so a step that samples it launches the
    /// same kernels throughout a task (capturable).
    pub fn sample(&mut self, count: usize) -> Option<Replay> {
        if self.is_empty() {
            return None;
        }
        if count == 0 {
            return None;
        }
        let len = self.len();
        let slots = crate::sample_slots(
            len as i64,
            None,
            count.min(len) as i64,
            &self.draws.next_key(),
        );
        Some(Replay {
            indices: self.indices.index_select(0, &slots),
            logits: None,
        })
    }
}
