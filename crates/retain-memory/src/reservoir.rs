//! Reservoir sampling (Vitter 1985, algorithm R) over the device-resident training split.

use retain_graph::Elementwise;
use retain_stream::hash::{hash32, hash32_xor};
use retain_stream::seed::combine;
use tch::{Device, Kind, Tensor};

/// [`SlotRule::slots`] of sample numbers `position + offered` as one fused kernel on CUDA, the
/// same `int64` operations as the tensor path.
const SLOTS: Elementwise = Elementwise::new(
    "retain_reservoir_slots",
    concat!(
        retain_stream::hash32_cuda_source!(),
        "template <typename T> T retain_reservoir_slots(T position, T offered, int64_t capacity,
                                                        int64_t salt_a, int64_t salt_b) {
           const int64_t n = position + offered;
           if (n < capacity) return n;
           const int64_t h = retain_hash32_of(retain_hash32_of(n ^ salt_a) ^ salt_b);
           const int64_t j = (int64_t)((uint64_t)h * (uint64_t)(n + 1)) >> 32;
           return j < capacity ? j : capacity;
         }"
    ),
);

use crate::{DeviceDraws, MemoryError, Replay, ReservoirState};

/// Algorithm R's decision for every offered sample, from its number alone.
///
/// The first `capacity` samples fill the slots in order; sample number `n ≥ capacity`
/// (0-based) draws `j` uniformly from `0..=n` and replaces slot `j` if `j < capacity`, else is
/// discarded. By induction every sample offered so far is in the buffer with probability
/// `capacity / (n + 1)`. Here `j` is a counter-based draw, `⌊h(n)·(n + 1) / 2³²⌋` with `h` a
/// seeded 32-bit hash of `n` (bias below `(n + 1)/2³²`), rather than the next value of a
/// sequential generator: the decision depends on nothing but `n`, so the device computes it
/// inside the step (no host plan, no upload, the same kernels at every step: capturable in a
/// CUDA graph), and the host computes the same decisions in [`ReservoirSchedule::next_slot`]
/// for checks. `n` stays below 2³¹ (two billion samples offered).
#[derive(Debug, Clone, Copy)]
struct SlotRule {
    capacity: i64,
    salt_a: i64,
    salt_b: i64,
}

impl SlotRule {
    fn new(capacity: usize, seed: u64) -> Self {
        Self {
            capacity: capacity as i64,
            salt_a: (combine(seed, 1) & 0xffff_ffff) as i64,
            salt_b: (combine(seed, 2) & 0xffff_ffff) as i64,
        }
    }

    /// The slot of sample `n`, or `capacity` when it is discarded.
    fn slot(&self, n: u64) -> i64 {
        let n32 = n as u32;
        if (n as i64) < self.capacity {
            return n as i64;
        }
        let h = hash32(hash32(n32 ^ self.salt_a as u32) ^ self.salt_b as u32);
        let j = ((u64::from(h) * (n + 1)) >> 32) as i64;
        j.min(self.capacity)
    }

    /// [`SlotRule::slot`] elementwise on the device, for sample numbers `positions + offered`
    /// (`int64`, `offered` broadcast).
    fn slots(&self, positions: &Tensor, offered: &Tensor) -> Tensor {
        if positions.kind() == Kind::Int64
            && offered.kind() == Kind::Int64
            && let Some(slots) = SLOTS.launch(
                &[positions, offered],
                &[self.capacity, self.salt_a, self.salt_b],
            )
        {
            return slots;
        }
        let n = positions + offered;
        let h = hash32_xor(&hash32_xor(&n, self.salt_a), self.salt_b);
        let j = (h * (&n + 1))
            .bitwise_right_shift_tensor_scalar(32)
            .clamp_max(self.capacity);
        n.where_self(&n.lt(self.capacity), &j)
    }
}

/// Algorithm R's bookkeeping on the host: the decisions [`Reservoir::add`] makes on the
/// device, one sample at a time (the reference the tests compare against).
#[derive(Debug, Clone)]
pub struct ReservoirSchedule {
    rule: SlotRule,
    seen: u64,
}

impl ReservoirSchedule {
    pub fn new(capacity: usize, seed: u64) -> Result<Self, MemoryError> {
        if capacity == 0 {
            return Err(MemoryError::ZeroCapacity {
                what: "reservoir capacity",
            });
        }
        Ok(Self {
            rule: SlotRule::new(capacity, seed),
            seen: 0,
        })
    }

    /// The slot of the next offered sample, or `None` when it is discarded.
    pub fn next_slot(&mut self) -> Option<usize> {
        let slot = self.rule.slot(self.seen);
        self.seen += 1;
        (slot < self.rule.capacity).then_some(slot as usize)
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
/// Everything a step changes lives on the device: the slots, the count of samples offered
/// (from which [`SlotRule`] decides each row's slot) and the count of replay draws. Adding and
/// sampling therefore read nothing from the host and launch the same kernels at every step,
/// so a step that uses the reservoir can be captured in a CUDA graph and replayed.
///
/// The host keeps a mirror of the count offered, advanced by [`Reservoir::add`]; it decides
/// only how many rows a replay draws while the reservoir holds fewer than asked (and whether
/// it is empty). Replayed graph steps do not run host code, so the mirror can fall behind
/// the device during a task; the decisions it drives depend only on whether the reservoir
/// holds at least the rows asked for, which stays true once it is, and
/// [`Reservoir::sync`] (a host read, at a task boundary) makes it exact again.
#[derive(Debug)]
pub struct Reservoir {
    capacity: usize,
    device: Device,
    rule: SlotRule,
    /// `[capacity + 1]`, int64; slots `0..len` are valid, the last one takes discarded rows.
    indices: Tensor,
    /// `[capacity + 1, width]`, float32, when logits are kept (DER).
    logits: Option<Tensor>,
    /// `0, 1, 2, …` on the device, at least as long as any batch seen.
    positions: Tensor,
    /// `later[i][j] = j > i`, `[n, n]` bool on the device, `n` at least as long as any batch
    /// seen: which rows of a batch come after which.
    later: Tensor,
    /// `[]` int64 on the device: samples offered so far.
    pub(crate) offered: Tensor,
    /// The host mirror of `offered` (see the type's docs).
    offered_host: u64,
    draws: DeviceDraws,
}

impl Reservoir {
    /// An empty reservoir of `capacity` slots on `device`, keeping `logit_width` logits per
    /// sample when given. `seed` drives the slot decisions and the replay draws.
    pub fn new(
        capacity: usize,
        logit_width: Option<usize>,
        seed: u64,
        device: Device,
    ) -> Result<Self, MemoryError> {
        ReservoirSchedule::new(capacity, seed)?;
        if logit_width == Some(0) {
            return Err(MemoryError::ZeroCapacity {
                what: "reservoir logit width",
            });
        }
        let capacity_i = capacity as i64;
        Ok(Self {
            capacity,
            device,
            rule: SlotRule::new(capacity, seed),
            indices: Tensor::zeros([capacity_i + 1], (Kind::Int64, device)),
            logits: logit_width
                .map(|w| Tensor::zeros([capacity_i + 1, w as i64], (Kind::Float, device))),
            positions: Tensor::arange(256, (Kind::Int64, device)),
            later: Tensor::ones([256, 256], (Kind::Bool, device)).triu(1),
            offered: Tensor::zeros([], (Kind::Int64, device)),
            offered_host: 0,
            draws: DeviceDraws::new(seed, device),
        })
    }

    /// A reservoir as [`Reservoir::new`] builds it, holding what `state` says (a
    /// [`Reservoir::snapshot`] of one with this capacity, logit width and seed): it keeps,
    /// replaces and draws exactly what that one would have from then on.
    pub fn restore(
        capacity: usize,
        logit_width: Option<usize>,
        seed: u64,
        device: Device,
        state: &ReservoirState,
    ) -> Result<Self, MemoryError> {
        let mut reservoir = Self::new(capacity, logit_width, seed, device)?;
        let len = state.offered.min(capacity as u64) as i64;
        let state_error = |message: String| MemoryError::State { message };
        if state.indices.size() != [len] {
            return Err(state_error(format!(
                "a reservoir of {capacity} slots offered {} samples holds {len}, the state {:?}",
                state.offered,
                state.indices.size()
            )));
        }
        let _no_grad = tch::no_grad_guard();
        reservoir
            .indices
            .narrow(0, 0, len)
            .copy_(&state.indices.to_device(device));
        match (&reservoir.logits, &state.logits) {
            (Some(stored), Some(given)) if given.size() == [len, stored.size()[1]] => {
                stored
                    .narrow(0, 0, len)
                    .copy_(&given.to_device(device).to_kind(Kind::Float));
            }
            (None, None) => {}
            (stored, given) => {
                return Err(state_error(format!(
                    "the reservoir keeps logits of shape {:?}, the state {:?}",
                    stored.as_ref().map(|s| vec![len, s.size()[1]]),
                    given.as_ref().map(Tensor::size)
                )));
            }
        }
        let _ = reservoir.offered.fill_(state.offered as i64);
        reservoir.offered_host = state.offered;
        reservoir.draws = DeviceDraws::restore(seed, device, state.draws);
        Ok(reservoir)
    }

    /// What the reservoir holds now (copies; the counts read from the device, so steps
    /// replayed from a CUDA graph are counted): what [`Reservoir::restore`] takes.
    pub fn snapshot(&self) -> ReservoirState {
        let offered = self.offered.int64_value(&[]) as u64;
        let len = offered.min(self.capacity as u64) as i64;
        ReservoirState {
            indices: self.indices.narrow(0, 0, len).copy(),
            logits: self.logits.as_ref().map(|l| l.narrow(0, 0, len).copy()),
            offered,
            draws: self.draws.count(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Slots holding a sample: `min(offered, capacity)`.
    pub fn len(&self) -> usize {
        (self.offered_host.min(self.capacity as u64)) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.offered_host == 0
    }

    /// Samples offered so far (the host mirror; see [`Reservoir::sync`]).
    pub fn offered(&self) -> u64 {
        self.offered_host
    }

    /// Brings the host mirror of the count offered up to the device's (one host read): after
    /// steps replayed from a CUDA graph, which advance only the device's count.
    pub fn sync(&mut self) {
        self.offered_host = self.offered.int64_value(&[]) as u64;
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
        let rows = count as i64;
        if self.positions.size()[0] < rows {
            self.positions = Tensor::arange(rows, (Kind::Int64, self.device));
        }
        let positions = self.positions.narrow(0, 0, rows);
        let slots = self.rule.slots(&positions, &self.offered);
        // Sequential semantics: when several rows land in one slot, the last one wins. A row
        // that a later row of the batch overwrites goes to the spare slot `capacity`, where
        // discarded rows go too; then every real slot receives at most one row and a plain
        // index_copy is deterministic. All on the device, no shapes that depend on values.
        if self.later.size()[0] < rows {
            self.later = Tensor::ones([rows, rows], (Kind::Bool, self.device)).triu(1);
        }
        let later = self.later.narrow(0, 0, rows).narrow(1, 0, rows);
        let overwritten = slots
            .unsqueeze(1)
            .eq_tensor(&slots.unsqueeze(0))
            .logical_and(&later)
            .any_dim(1, false);
        let target = slots.masked_fill(&overwritten, self.capacity as i64);
        let _ = self.indices.index_copy_(0, &target, indices);
        if let (Some(stored), Some(given)) = (&mut self.logits, logits) {
            let _ = stored.index_copy_(0, &target, &given);
        }
        let _ = self.offered.g_add_scalar_(rows);
        self.offered_host += count as u64;
        Ok(())
    }

    /// `count` distinct stored samples drawn uniformly (fewer while the reservoir holds fewer;
    /// `None` while it is empty). Each call is the memory's next seeded draw, made on the
    /// device.
    pub fn sample(&mut self, count: usize) -> Option<Replay> {
        if self.is_empty() || count == 0 {
            return None;
        }
        let filled = self.offered.clamp_max(self.capacity as i64);
        let slots = crate::sample_slots(
            self.capacity as i64,
            Some(&filled),
            count.min(self.len()) as i64,
            &self.draws.next_key(),
        );
        Some(Replay {
            indices: self.indices.index_select(0, &slots),
            logits: self.logits.as_ref().map(|l| l.index_select(0, &slots)),
        })
    }

    /// Replay draws made so far (a host read).
    pub fn draws(&self) -> u64 {
        self.draws.count()
    }
}
