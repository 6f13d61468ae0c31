//! Reservoir sampling (Vitter 1985, algorithm R) over the device-resident training split.

use retain_stream::seed::SplitMix64;
use tch::{Device, Kind, Tensor};

use crate::{DrawCounter, MemoryError, Replay, upload_async};

/// How many slot decisions the reservoir uploads at once: one host→device copy per this many
/// samples offered, none in between.
pub const PLAN_CHUNK: usize = 1024;

/// Algorithm R's bookkeeping, on the host: where each offered sample goes.
///
/// The first `capacity` samples fill the slots in order; sample number `n ≥ capacity`
/// (0-based) draws `j` uniformly from `0..=n` and replaces slot `j` if `j < capacity`, else is
/// discarded. By induction every sample offered so far is in the buffer with probability
/// `capacity / (n + 1)`. The decisions depend only on the count, never on the data, which is
/// what lets [`Reservoir`] decide on the host without reading the device.
#[derive(Debug, Clone)]
pub struct ReservoirSchedule {
    capacity: usize,
    seen: u64,
    rng: SplitMix64,
}

impl ReservoirSchedule {
    pub fn new(capacity: usize, seed: u64) -> Result<Self, MemoryError> {
        if capacity == 0 {
            return Err(MemoryError::ZeroCapacity {
                what: "reservoir capacity",
            });
        }
        Ok(Self {
            capacity,
            seen: 0,
            rng: SplitMix64::new(seed),
        })
    }

    /// The slot of the next offered sample, or `None` when it is discarded.
    pub fn next_slot(&mut self) -> Option<usize> {
        let n = self.seen;
        self.seen += 1;
        if n < self.capacity as u64 {
            return Some(n as usize);
        }
        let j = self.rng.below(n + 1);
        (j < self.capacity as u64).then_some(j as usize)
    }

    /// Samples offered so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

/// A reservoir of dataset indices (and optionally the logits recorded with them) on the
/// device.
///
/// [`Reservoir::add`] offers a batch in the order of its rows, exactly as if the samples were
/// offered one by one: when two rows of one batch land in the same slot, the later one wins.
/// The slot decisions come from a [`ReservoirSchedule`] computed ahead on the host and uploaded
/// every [`PLAN_CHUNK`] samples; applying them is a handful of device ops over the batch
/// (no host read, no per-step copy).
#[derive(Debug)]
pub struct Reservoir {
    capacity: usize,
    device: Device,
    schedule: ReservoirSchedule,
    /// `[capacity + 1]`, int64; slots `0..len` are valid, the last one takes discarded rows.
    indices: Tensor,
    /// `[capacity + 1, width]`, float32, when logits are kept (DER).
    logits: Option<Tensor>,
    /// Decisions for the next samples (`capacity` = discard), host copy and device copy.
    plan_host: Vec<i64>,
    plan: Tensor,
    plan_used: usize,
    /// `0, 1, 2, …` on the device, at least as long as any batch seen.
    positions: Tensor,
    offered: u64,
    draws: DrawCounter,
}

impl Reservoir {
    /// An empty reservoir of `capacity` slots on `device`, keeping `logit_width` logits per
    /// sample when given. `seed` drives the slot decisions.
    pub fn new(
        capacity: usize,
        logit_width: Option<usize>,
        seed: u64,
        device: Device,
    ) -> Result<Self, MemoryError> {
        let schedule = ReservoirSchedule::new(capacity, seed)?;
        if logit_width == Some(0) {
            return Err(MemoryError::ZeroCapacity {
                what: "reservoir logit width",
            });
        }
        let capacity_i = capacity as i64;
        Ok(Self {
            capacity,
            device,
            schedule,
            indices: Tensor::zeros([capacity_i + 1], (Kind::Int64, device)),
            logits: logit_width
                .map(|w| Tensor::zeros([capacity_i + 1, w as i64], (Kind::Float, device))),
            plan_host: Vec::new(),
            plan: Tensor::zeros([0], (Kind::Int64, device)),
            plan_used: 0,
            positions: Tensor::arange(PLAN_CHUNK as i64, (Kind::Int64, device)),
            offered: 0,
            draws: DrawCounter::new(seed),
        })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Slots holding a sample: `min(offered, capacity)`.
    pub fn len(&self) -> usize {
        (self.offered.min(self.capacity as u64)) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.offered == 0
    }

    /// Samples offered so far.
    pub fn offered(&self) -> u64 {
        self.offered
    }

    /// The stored dataset indices, `[len]`, on the device.
    pub fn indices(&self) -> Tensor {
        self.indices.narrow(0, 0, self.len() as i64)
    }

    /// The stored logits, `[len, width]`, when kept.
    pub fn logits(&self) -> Option<Tensor> {
        self.logits
            .as_ref()
            .map(|l| l.narrow(0, 0, self.len() as i64))
    }

    /// The next `count` slot decisions, on the device, uploading a new chunk when needed.
    fn take_plan(&mut self, count: usize) -> Tensor {
        if self.plan_used + count > self.plan_host.len() {
            let mut next = self.plan_host[self.plan_used..].to_vec();
            let discard = self.capacity as i64;
            for _ in 0..PLAN_CHUNK.max(count) {
                next.push(self.schedule.next_slot().map_or(discard, |s| s as i64));
            }
            self.plan = upload_async(&next, self.device);
            self.plan_host = next;
            self.plan_used = 0;
        }
        if self.positions.size()[0] < count as i64 {
            self.positions = Tensor::arange(count as i64, (Kind::Int64, self.device));
        }
        let slots = self.plan.narrow(0, self.plan_used as i64, count as i64);
        self.plan_used += count;
        slots
    }

    /// Offers a batch: `indices` `[B]` (int64, on the device) and, when the reservoir keeps
    /// logits, `logits` `[B, width]` (detached here).
    pub fn add(&mut self, indices: &Tensor, logits: Option<&Tensor>) -> Result<(), MemoryError> {
        let batch = indices.size();
        if batch.len() != 1 {
            return Err(MemoryError::Shape {
                what: "reservoir indices",
                expected: vec![-1],
                got: batch,
            });
        }
        let count = batch[0] as usize;
        let logits = match (&self.logits, logits) {
            (Some(stored), Some(given)) => {
                let expected = vec![count as i64, stored.size()[1]];
                if given.size() != expected {
                    return Err(MemoryError::Shape {
                        what: "reservoir logits",
                        expected,
                        got: given.size(),
                    });
                }
                Some(given.detach().to_kind(Kind::Float))
            }
            (Some(stored), None) => {
                return Err(MemoryError::Shape {
                    what: "reservoir logits (this reservoir keeps logits)",
                    expected: vec![count as i64, stored.size()[1]],
                    got: vec![],
                });
            }
            (None, _) => None,
        };
        if count == 0 {
            return Ok(());
        }
        let _no_grad = tch::no_grad_guard();
        let slots = self.take_plan(count);
        // Sequential semantics: when several rows land in one slot, the last one wins. Sort
        // the rows by (slot, row) and send every row that is not the last of its slot to the
        // spare slot `capacity`, where discarded rows go too; then every real slot receives
        // at most one row and a plain index_copy is deterministic. All on the device, no
        // shapes that depend on values.
        let rows = count as i64;
        let keys = &slots * rows + self.positions.narrow(0, 0, rows);
        let (sorted, _) = keys.sort(0, false);
        let slot = sorted.floor_divide_scalar(rows);
        let row = &sorted - &slot * rows;
        let next = Tensor::cat(&[slot.narrow(0, 1, rows - 1), slot.narrow(0, 0, 1) - 1], 0);
        let target = slot.where_self(
            &slot.ne_tensor(&next),
            &slot.full_like(self.capacity as i64),
        );
        let _ = self
            .indices
            .index_copy_(0, &target, &indices.index_select(0, &row));
        if let (Some(stored), Some(given)) = (&mut self.logits, logits) {
            let _ = stored.index_copy_(0, &target, &given.index_select(0, &row));
        }
        self.offered += count as u64;
        Ok(())
    }

    /// `count` distinct stored samples drawn uniformly (fewer while the reservoir holds fewer;
    /// `None` while it is empty). Each call is the memory's next seeded draw.
    pub fn sample(&mut self, count: usize) -> Option<Replay> {
        if self.is_empty() {
            return None;
        }
        let key = self.draws.next_key();
        let slots = crate::sample_slots(self.len(), count, key, self.device)?;
        Some(Replay {
            indices: self.indices.index_select(0, &slots),
            logits: self.logits.as_ref().map(|l| l.index_select(0, &slots)),
        })
    }
}
