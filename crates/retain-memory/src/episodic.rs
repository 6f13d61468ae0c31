//! GEM's per-task episodic memories.

use retain_stream::seed::SplitMix64;
use tch::{Device, Tensor};

use crate::{EpisodicState, MemoryError, upload};

/// `per_task` samples of every finished task, one index tensor per task on the device.
///
/// GEM constrains the update with one gradient per earlier task, so it needs the memories
/// grouped by task. Each task keeps a seeded uniformly random subset of its training samples
/// (all of them when it has fewer than `per_task`), chosen once when the task ends.
#[derive(Debug)]
pub struct EpisodicMemory {
    per_task: usize,
    device: Device,
    rng: SplitMix64,
    host: Vec<Vec<i64>>,
    tasks: Vec<Tensor>,
}

impl EpisodicMemory {
    pub fn new(per_task: usize, seed: u64, device: Device) -> Result<Self, MemoryError> {
        if per_task == 0 {
            return Err(MemoryError::ZeroCapacity {
                what: "memories per task",
            });
        }
        Ok(Self {
            per_task,
            device,
            rng: SplitMix64::new(seed),
            host: Vec::new(),
            tasks: Vec::new(),
        })
    }

    /// A memory as [`EpisodicMemory::new`] builds it, holding what `state` says (a
    /// [`EpisodicMemory::snapshot`] of one with this `per_task` and seed): it chooses the
    /// next tasks' subsets exactly as that one would have.
    pub fn restore(
        per_task: usize,
        seed: u64,
        device: Device,
        state: &EpisodicState,
    ) -> Result<Self, MemoryError> {
        let mut memory = Self::new(per_task, seed, device)?;
        if let Some((t, kept)) = state
            .tasks
            .iter()
            .enumerate()
            .find(|(_, kept)| kept.len() > per_task)
        {
            return Err(MemoryError::State {
                message: format!(
                    "task {t}'s memory holds {} samples, more than {per_task} per task",
                    kept.len()
                ),
            });
        }
        memory.rng = SplitMix64::new(state.rng);
        memory.tasks = state.tasks.iter().map(|k| upload(k, device)).collect();
        memory.host = state.tasks.clone();
        Ok(memory)
    }

    /// What the memory holds now: what [`EpisodicMemory::restore`] takes.
    pub fn snapshot(&self) -> EpisodicState {
        EpisodicState {
            tasks: self.host.clone(),
            rng: self.rng.state(),
        }
    }

    /// Stores a memory for a finished task, from its training `indices`; returns it.
    pub fn add_task(&mut self, indices: &[i64]) -> &Tensor {
        let mut kept = indices.to_vec();
        if kept.len() > self.per_task {
            self.rng.shuffle(&mut kept);
            kept.truncate(self.per_task);
            kept.sort_unstable();
        }
        self.tasks.push(upload(&kept, self.device));
        self.host.push(kept);
        self.tasks.last().expect("just pushed")
    }

    pub fn per_task(&self) -> usize {
        self.per_task
    }

    /// Number of tasks with a memory.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Each task's memory, `[≤ per_task]` indices on the device, in task order.
    pub fn tasks(&self) -> &[Tensor] {
        &self.tasks
    }

    /// Host copies of [`EpisodicMemory::tasks`].
    pub fn host(&self) -> &[Vec<i64>] {
        &self.host
    }
}
