//! Seeds derived from the experiment seed, and the small PRNG that consumes them.
//!
//! Every random draw of a run — class order, per-task subsampling, epoch shuffles, the
//! initial weights, a method's memory sampling and adapter initialisation — comes from a
//! [`SplitMix64`] stream whose seed is derived from the master seed and a purpose string
//! ([`derive`]), never from a library's global generator. Consequences researchers rely on:
//! * tasks do not depend on the method or on the device: two methods in one grid, or the same
//!   run on CPU and CUDA, see identical tasks in identical batch order;
//! * the same seed gives bit-identical initial weights on every device: they are drawn here,
//!   on the host, and then copied to the device;
//! * a run's result does not depend on what else ran in the process before it;
//! * the streams are our own code, so results do not shift when a dependency's RNG changes.
//!
//! The crate is pure Rust (no tch), so every other crate can depend on it.

/// Derives the seed for one purpose (e.g. `"class-order"`, `"shuffle/task3/epoch0"`).
pub fn derive(master: u64, purpose: &str) -> u64 {
    // FNV-1a over the purpose, then mixed with the master seed through SplitMix64's finaliser.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in purpose.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(master ^ mix(hash))
}

/// Mixes a number into a seed: distinct `value`s give unrelated seeds (e.g. one per batch).
pub fn combine(seed: u64, value: u64) -> u64 {
    mix(seed ^ mix(value.wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and statistically adequate for
/// shuffling and sampling.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The generator's whole state: `SplitMix64::new(rng.state())` continues exactly where
    /// `rng` is (for checkpoints of what a generator has drawn so far).
    pub fn state(&self) -> u64 {
        self.state
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.state)
    }

    /// Uniform integer in `0..bound` (Lemire's multiply-shift with rejection, unbiased).
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(bound);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// Uniform on `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform on `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Standard normal, by the Box–Muller transform (one draw per call; the second value of
    /// the pair is discarded so that a draw is a function of the stream position alone).
    pub fn standard_normal(&mut self) -> f64 {
        // 1 − unit() lies in (0, 1], so the logarithm is finite.
        let radius = (-2.0 * (1.0 - self.unit()).ln()).sqrt();
        radius * (std::f64::consts::TAU * self.unit()).cos()
    }

    /// Normal with mean `mean` and standard deviation `std`, redrawn until it lies in
    /// `[lo, hi]`: PyTorch's and timm's `trunc_normal_(mean, std, a = lo, b = hi)`
    /// distribution (their bounds are absolute values, not multiples of `std`).
    ///
    /// # Panics
    /// If `[lo, hi]` holds less than one in a million of the normal's mass (a caller's
    /// mistake that would otherwise loop for ever).
    pub fn truncated_normal(&mut self, mean: f64, std: f64, lo: f64, hi: f64) -> f64 {
        assert!(
            lo < hi && std > 0.0,
            "empty truncation [{lo}, {hi}] or std {std}"
        );
        for _ in 0..1_000_000 {
            let x = mean + std * self.standard_normal();
            if (lo..=hi).contains(&x) {
                return x;
            }
        }
        panic!("truncated normal: [{lo}, {hi}] is too far in the tail of N({mean}, {std}²)")
    }

    /// Fisher–Yates shuffle in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_differ_by_purpose_and_master() {
        assert_eq!(derive(7, "class-order"), derive(7, "class-order"));
        assert_ne!(derive(7, "class-order"), derive(8, "class-order"));
        assert_ne!(derive(7, "class-order"), derive(7, "subsample"));
    }

    #[test]
    fn a_generator_rebuilt_from_its_state_continues_its_sequence() {
        let mut rng = SplitMix64::new(5);
        for _ in 0..3 {
            rng.next_u64();
        }
        let mut resumed = SplitMix64::new(rng.state());
        let ahead: Vec<u64> = (0..4).map(|_| rng.next_u64()).collect();
        let again: Vec<u64> = (0..4).map(|_| resumed.next_u64()).collect();
        assert_eq!(ahead, again);
        assert_ne!(SplitMix64::new(5).next_u64(), ahead[0]);
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let mut a: Vec<u32> = (0..100).collect();
        let mut b = a.clone();
        SplitMix64::new(1).shuffle(&mut a);
        SplitMix64::new(1).shuffle(&mut b);
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(a, sorted);
    }

    fn moments(draws: &[f64]) -> (f64, f64) {
        let n = draws.len() as f64;
        let mean = draws.iter().sum::<f64>() / n;
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var.sqrt())
    }

    #[test]
    fn uniform_draws_have_the_moments_of_uniform() {
        // U(−1, 1): mean 0, std 1/√3 ≈ 0.5774; 100 000 draws: se(mean) ≈ 0.0018.
        let mut rng = SplitMix64::new(3);
        let draws: Vec<f64> = (0..100_000).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let (mean, std) = moments(&draws);
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((std - 1.0 / 3f64.sqrt()).abs() < 0.005, "{std}");
        assert!(draws.iter().all(|x| (-1.0..1.0).contains(x)));
    }

    #[test]
    fn normal_draws_have_the_moments_of_a_normal() {
        let mut rng = SplitMix64::new(4);
        let draws: Vec<f64> = (0..100_000).map(|_| rng.standard_normal()).collect();
        let (mean, std) = moments(&draws);
        assert!(mean.abs() < 0.015, "{mean}");
        assert!((std - 1.0).abs() < 0.01, "{std}");
        // P(|x| > 2) = 4.55 %.
        let tail = draws.iter().filter(|x| x.abs() > 2.0).count() as f64 / 1e5;
        assert!((tail - 0.0455).abs() < 0.003, "{tail}");
    }

    #[test]
    fn truncated_normal_stays_in_its_bounds_with_the_truncated_variance() {
        // N(0, 1) truncated to [−1, 1]: variance 1 − 2φ(1)/(2Φ(1) − 1) = 0.29113.
        let mut rng = SplitMix64::new(5);
        let draws: Vec<f64> = (0..100_000)
            .map(|_| rng.truncated_normal(0.0, 1.0, -1.0, 1.0))
            .collect();
        assert!(draws.iter().all(|x| (-1.0..=1.0).contains(x)));
        let (mean, std) = moments(&draws);
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((std * std - 0.29113).abs() < 0.004, "{std}");
    }

    #[test]
    fn below_is_roughly_uniform() {
        // 60_000 draws over 6 buckets: each expects 10_000, sd ≈ 91; allow 5 sd.
        let mut rng = SplitMix64::new(42);
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            counts[rng.below(6) as usize] += 1;
        }
        for count in counts {
            assert!((9_545..=10_455).contains(&count), "{counts:?}");
        }
    }
}
