//! What a memory holds as named tensors, for a method's checkpoint state
//! (`Method::state` / `load_state`), and the checked reading of them back.
//!
//! Each memory's state is everything that decides what it does next: the stored indices (and
//! logits), how many samples it was offered, the state of its host generator and the count of
//! replay draws made (the key of the next draw derives from it). A memory rebuilt from its
//! state with the same capacity and seed keeps, replaces and draws exactly what the original
//! would have. The names are `<prefix><part>`, the prefix the method's (`memory.`).
//!
//! Reading a state is done in two steps because a method gets its state before it knows
//! the device and the experiment seed: [`ReservoirState::read`] and its siblings check names,
//! kinds and shapes against the method's hyper-parameters at `load_state`, and the memory is
//! rebuilt from the checked state at the next `before_task` ([`crate::Reservoir::restore`]).

use std::collections::BTreeMap;

use tch::{Kind, Tensor};

use crate::MemoryError;

fn malformed(message: impl Into<String>) -> MemoryError {
    MemoryError::State {
        message: message.into(),
    }
}

/// A method's state tensors by name, taken one by one with their kind and rank checked;
/// [`StateReader::finish`] refuses any left over.
#[derive(Debug)]
pub struct StateReader {
    tensors: BTreeMap<String, Tensor>,
}

impl StateReader {
    /// Refuses a state that names one tensor twice.
    pub fn new(state: Vec<(String, Tensor)>) -> Result<Self, MemoryError> {
        let mut tensors = BTreeMap::new();
        for (name, tensor) in state {
            if tensors.contains_key(&name) {
                return Err(malformed(format!("tensor `{name}` appears twice")));
            }
            tensors.insert(name, tensor);
        }
        Ok(Self { tensors })
    }

    /// A method's whole state read by `read`, any tensor left over refused; `None` for an
    /// empty state (a method before its first task).
    pub fn read_whole<T>(
        state: Vec<(String, Tensor)>,
        read: impl FnOnce(&mut Self) -> Result<T, MemoryError>,
    ) -> Result<Option<T>, MemoryError> {
        if state.is_empty() {
            return Ok(None);
        }
        let mut reader = Self::new(state)?;
        let value = read(&mut reader)?;
        reader.finish()?;
        Ok(Some(value))
    }

    /// Whether a tensor named `name` is left.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor `name`, which must have `kind` and `dims` dimensions.
    pub fn take(&mut self, name: &str, kind: Kind, dims: usize) -> Result<Tensor, MemoryError> {
        let tensor = self
            .tensors
            .remove(name)
            .ok_or_else(|| malformed(format!("no tensor `{name}`")))?;
        if tensor.kind() != kind || tensor.dim() != dims {
            return Err(malformed(format!(
                "`{name}` must be {kind:?} with {dims} dimension(s), found {:?} of shape {:?}",
                tensor.kind(),
                tensor.size()
            )));
        }
        Ok(tensor)
    }

    /// The `[]` int64 tensor `name` as a count (≥ 0).
    pub fn take_count(&mut self, name: &str) -> Result<u64, MemoryError> {
        let value = self.take(name, Kind::Int64, 0)?.int64_value(&[]);
        u64::try_from(value).map_err(|_| malformed(format!("`{name}` is negative ({value})")))
    }

    /// The `[]` int64 tensor `name` as the 64 bits of a generator's state.
    pub fn take_bits(&mut self, name: &str) -> Result<u64, MemoryError> {
        Ok(self.take(name, Kind::Int64, 0)?.int64_value(&[]) as u64)
    }

    /// The `[n]` int64 tensor `name` on the host.
    pub fn take_indices(&mut self, name: &str) -> Result<Vec<i64>, MemoryError> {
        let tensor = self.take(name, Kind::Int64, 1)?;
        Ok(Vec::<i64>::try_from(&tensor.to_device(tch::Device::Cpu))
            .expect("an int64 vector converts to Vec<i64>"))
    }

    /// Refuses every tensor not taken, naming them.
    pub fn finish(self) -> Result<(), MemoryError> {
        if self.tensors.is_empty() {
            return Ok(());
        }
        Err(malformed(format!(
            "unexpected tensor(s) {}",
            self.tensors
                .keys()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

/// A `[]` int64 tensor holding `value` (a count, or a generator's bits).
pub(crate) fn scalar(value: u64) -> Tensor {
    Tensor::from(value as i64)
}

/// What a [`crate::Reservoir`] holds: `<prefix>indices` (`[len]` int64, slot order),
/// `<prefix>logits` (`[len, width]` float32, when kept), `<prefix>offered` and
/// `<prefix>draws` (`[]` int64).
#[derive(Debug)]
pub struct ReservoirState {
    /// The valid slots' dataset indices, `[len]` int64, `len = min(offered, capacity)`.
    pub indices: Tensor,
    /// Their logits, `[len, width]` float32, for a reservoir that keeps them.
    pub logits: Option<Tensor>,
    /// Samples offered so far (decides every later sample's slot).
    pub offered: u64,
    /// Replay draws made so far (decides the next draw's key).
    pub draws: u64,
}

impl ReservoirState {
    /// The named tensors.
    pub fn tensors(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut tensors = vec![(format!("{prefix}indices"), self.indices.shallow_clone())];
        if let Some(logits) = &self.logits {
            tensors.push((format!("{prefix}logits"), logits.shallow_clone()));
        }
        tensors.push((format!("{prefix}offered"), scalar(self.offered)));
        tensors.push((format!("{prefix}draws"), scalar(self.draws)));
        tensors
    }

    /// Takes a reservoir of `capacity` slots (keeping logits when `logits`) from `reader`,
    /// checking that it holds `min(offered, capacity)` samples.
    pub fn read(
        reader: &mut StateReader,
        prefix: &str,
        capacity: usize,
        logits: bool,
    ) -> Result<Self, MemoryError> {
        let indices = reader.take(&format!("{prefix}indices"), Kind::Int64, 1)?;
        let logits = logits
            .then(|| reader.take(&format!("{prefix}logits"), Kind::Float, 2))
            .transpose()?;
        let offered = reader.take_count(&format!("{prefix}offered"))?;
        let draws = reader.take_count(&format!("{prefix}draws"))?;
        let len = offered.min(capacity as u64) as i64;
        if indices.size()[0] != len {
            return Err(malformed(format!(
                "`{prefix}indices` holds {} samples, but a reservoir of {capacity} slots offered \
                 {offered} holds {len}",
                indices.size()[0]
            )));
        }
        if let Some(logits) = &logits
            && logits.size()[0] != len
        {
            return Err(malformed(format!(
                "`{prefix}logits` has {} rows for {len} stored samples",
                logits.size()[0]
            )));
        }
        Ok(Self {
            indices,
            logits,
            offered,
            draws,
        })
    }
}

/// What a [`crate::ClassBalanced`] memory holds: `<prefix>classes` and
/// `<prefix>class_counts` (`[k]` int64: each class kept and how many of its samples),
/// `<prefix>indices` (`[len]` int64, class by class in the memory's order), `<prefix>rng`
/// (the host generator's bits) and `<prefix>draws` (`[]` int64).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassBalancedState {
    /// Per class, the kept dataset indices in the memory's (random) order.
    pub by_class: BTreeMap<i64, Vec<i64>>,
    /// The generator's state (decides the next rebalancing's choices).
    pub rng: u64,
    /// Replay draws made so far.
    pub draws: u64,
}

impl ClassBalancedState {
    /// The named tensors.
    pub fn tensors(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let classes: Vec<i64> = self.by_class.keys().copied().collect();
        let counts: Vec<i64> = self.by_class.values().map(|v| v.len() as i64).collect();
        let indices: Vec<i64> = self.by_class.values().flatten().copied().collect();
        vec![
            (format!("{prefix}classes"), Tensor::from_slice(&classes)),
            (format!("{prefix}class_counts"), Tensor::from_slice(&counts)),
            (format!("{prefix}indices"), Tensor::from_slice(&indices)),
            (format!("{prefix}rng"), scalar(self.rng)),
            (format!("{prefix}draws"), scalar(self.draws)),
        ]
    }

    /// Takes a memory of `capacity` samples from `reader`.
    pub fn read(
        reader: &mut StateReader,
        prefix: &str,
        capacity: usize,
    ) -> Result<Self, MemoryError> {
        let classes = reader.take_indices(&format!("{prefix}classes"))?;
        let counts = reader.take_indices(&format!("{prefix}class_counts"))?;
        let indices = reader.take_indices(&format!("{prefix}indices"))?;
        let rng = reader.take_bits(&format!("{prefix}rng"))?;
        let draws = reader.take_count(&format!("{prefix}draws"))?;
        if classes.len() != counts.len() {
            return Err(malformed(format!(
                "`{prefix}classes` lists {} classes but `{prefix}class_counts` {} counts",
                classes.len(),
                counts.len()
            )));
        }
        if classes.windows(2).any(|w| w[0] >= w[1]) {
            return Err(malformed(format!(
                "`{prefix}classes` must be strictly increasing, found {classes:?}"
            )));
        }
        if counts.iter().any(|&c| c < 0) || counts.iter().sum::<i64>() != indices.len() as i64 {
            return Err(malformed(format!(
                "`{prefix}class_counts` {counts:?} do not add up to the {} samples of \
                 `{prefix}indices`",
                indices.len()
            )));
        }
        if indices.len() > capacity {
            return Err(malformed(format!(
                "`{prefix}indices` holds {} samples, more than the capacity {capacity}",
                indices.len()
            )));
        }
        let mut rest = indices.as_slice();
        let mut by_class = BTreeMap::new();
        for (class, count) in classes.into_iter().zip(counts) {
            let (these, after) = rest.split_at(count as usize);
            by_class.insert(class, these.to_vec());
            rest = after;
        }
        Ok(Self {
            by_class,
            rng,
            draws,
        })
    }
}

/// What an [`crate::EpisodicMemory`] holds: `<prefix>task<N>` (`[≤ per_task]` int64, one
/// per finished task, from 0) and `<prefix>rng` (the host generator's bits).
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodicState {
    /// Each finished task's kept indices, in task order.
    pub tasks: Vec<Vec<i64>>,
    /// The generator's state (decides the next task's subset).
    pub rng: u64,
}

impl EpisodicState {
    /// The named tensors.
    pub fn tensors(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut tensors: Vec<(String, Tensor)> = self
            .tasks
            .iter()
            .enumerate()
            .map(|(t, kept)| (format!("{prefix}task{t}"), Tensor::from_slice(kept)))
            .collect();
        tensors.push((format!("{prefix}rng"), scalar(self.rng)));
        tensors
    }

    /// Takes the memories of `per_task` samples per task from `reader`: `task0`, `task1`, …
    /// up to the first missing one (any later one is left over, which
    /// [`StateReader::finish`] refuses).
    pub fn read(
        reader: &mut StateReader,
        prefix: &str,
        per_task: usize,
    ) -> Result<Self, MemoryError> {
        let mut tasks = Vec::new();
        while reader.contains(&format!("{prefix}task{}", tasks.len())) {
            let name = format!("{prefix}task{}", tasks.len());
            let kept = reader.take_indices(&name)?;
            if kept.len() > per_task {
                return Err(malformed(format!(
                    "`{name}` holds {} samples, more than `memories_per_task` = {per_task}",
                    kept.len()
                )));
            }
            tasks.push(kept);
        }
        let rng = reader.take_bits(&format!("{prefix}rng"))?;
        Ok(Self { tasks, rng })
    }
}
