//! GDumb's greedy class-balanced sampler, on the host.

use retain_stream::seed::SplitMix64;

/// What [`GreedySampler::offer`] did with a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Stored in a free slot.
    Stored,
    /// Stored after evicting the given dataset index (a random sample of a largest class).
    Replaced { evicted: i64 },
    /// Not stored: its class already holds its share.
    Refused,
}

/// A memory of `capacity` dataset indices filled by GDumb's greedy class-balanced rule
/// (Prabhu et al. 2020, Algorithm 1). With `Y` the classes seen so far and `k_c = capacity /
/// |Y|` (integer division), a sample of class `y` is kept when `y` is new or holds fewer than
/// `k_c` samples; if the memory is then full, one sample drawn uniformly from the class with
/// the most samples (the earliest seen among equals) is evicted first. Otherwise the sample
/// is refused.
///
/// Classes are kept in the order they were first seen, each with its indices in the order
/// they were stored (an eviction removes one and keeps the order of the rest). A class whose
/// samples were all evicted stays among the seen classes with none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GreedySampler {
    capacity: usize,
    classes: Vec<(i64, Vec<i64>)>,
    len: usize,
}

impl GreedySampler {
    /// An empty memory of `capacity` samples (at least 1: the caller's to ensure).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            classes: Vec::new(),
            len: 0,
        }
    }

    /// A memory holding `classes` (label and stored indices, in the order first seen); `None`
    /// when a label repeats or the indices exceed `capacity`.
    pub fn from_classes(capacity: usize, classes: Vec<(i64, Vec<i64>)>) -> Option<Self> {
        let len = classes.iter().map(|(_, s)| s.len()).sum();
        let distinct = classes
            .iter()
            .enumerate()
            .all(|(i, (c, _))| classes[..i].iter().all(|(d, _)| d != c));
        (len <= capacity && distinct).then_some(Self {
            capacity,
            classes,
            len,
        })
    }

    /// Offers the sample at dataset index `index` with label `label`; an eviction draws from
    /// `rng`.
    pub fn offer(&mut self, index: i64, label: i64, rng: &mut SplitMix64) -> Offer {
        let share = self.capacity / self.classes.len().max(1);
        let position = self.classes.iter().position(|(c, _)| *c == label);
        if let Some(p) = position
            && self.classes[p].1.len() >= share
        {
            return Offer::Refused;
        }
        let mut outcome = Offer::Stored;
        if self.len >= self.capacity {
            // The first class of the largest size, in the order classes were first seen.
            let mut largest = 0;
            for (i, (_, stored)) in self.classes.iter().enumerate() {
                if stored.len() > self.classes[largest].1.len() {
                    largest = i;
                }
            }
            let stored = &mut self.classes[largest].1;
            let slot = rng.below(stored.len() as u64) as usize;
            outcome = Offer::Replaced {
                evicted: stored.remove(slot),
            };
            self.len -= 1;
        }
        let p = position.unwrap_or_else(|| {
            self.classes.push((label, Vec::new()));
            self.classes.len() - 1
        });
        self.classes[p].1.push(index);
        self.len += 1;
        outcome
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every class seen, in the order first seen, with its stored indices.
    pub fn classes(&self) -> &[(i64, Vec<i64>)] {
        &self.classes
    }

    /// Every class seen with its number of stored samples, in the order first seen.
    pub fn counts(&self) -> Vec<(i64, usize)> {
        self.classes.iter().map(|(c, s)| (*c, s.len())).collect()
    }

    /// Every stored index, class by class in the order classes were first seen.
    pub fn indices(&self) -> Vec<i64> {
        self.classes
            .iter()
            .flat_map(|(_, s)| s.iter().copied())
            .collect()
    }
}
