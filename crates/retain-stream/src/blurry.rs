//! Blurry task boundaries of split streams (`stream.blurry`): a share of every class's
//! training samples moved out of its own task into the others.
//!
//! The rule, for a percentage `M` and a stream of `T ≥ 2` tasks: for every class `c` of
//! task `t`, its `n_c` trainable samples (those not held out for validation) are shuffled
//! with a seed derived from the experiment seed and the class (`blurry/class{c}`); the first
//! `round(M · n_c / 100)` of that order (halves rounded up) leave task `t`. They are dealt
//! out over the other `T − 1` tasks in turn, in the order of the tasks after `t` (wrapping
//! round), starting at a seeded one: every other task receives `⌊k / (T − 1)⌋` or
//! `⌈k / (T − 1)⌉` of the `k` moved samples, which samples go where being the seeded
//! shuffle's. The rest stay in task `t`. So every trainable sample of the stream's classes
//! trains in exactly one task, and a task holds `n_c − round(M · n_c / 100)` samples of each
//! of its own classes and about `round(M · n_c / 100) / (T − 1)` of every other task's
//! class `c`.

use crate::seed::{self, SplitMix64};

/// Samples of a class that leave its task under `percent`: `round(percent · n / 100)`,
/// halves rounded up, at most `n`.
pub fn moved_count(percent: f64, n: usize) -> usize {
    ((percent * n as f64 / 100.0).round() as usize).min(n)
}

/// The training candidates of every task of a blurry split stream, ascending: task `t`'s
/// entry holds the samples of its classes (`task_classes[t]`) that stay, and those moved to
/// it from the other tasks' classes (see the module's rule). `labels` are the training
/// split's labels; samples with `held_out` set are never trained on and never moved.
pub fn blurry_training_sets(
    labels: &[u8],
    held_out: &[bool],
    task_classes: &[Vec<i64>],
    percent: f64,
    master_seed: u64,
) -> Vec<Vec<i64>> {
    let tasks = task_classes.len();
    // Each class's trainable samples, ascending.
    let mut of_class: Vec<Vec<i64>> = vec![Vec::new(); 256];
    for (i, (&label, &held)) in labels.iter().zip(held_out).enumerate() {
        if !held {
            of_class[usize::from(label)].push(i as i64);
        }
    }
    let mut sets: Vec<Vec<i64>> = vec![Vec::new(); tasks];
    for (own, classes) in task_classes.iter().enumerate() {
        for &class in classes {
            let mut samples = std::mem::take(&mut of_class[class as usize]);
            let moved = if tasks > 1 {
                moved_count(percent, samples.len())
            } else {
                0
            };
            if moved == 0 {
                sets[own].extend(samples);
                continue;
            }
            let mut rng =
                SplitMix64::new(seed::derive(master_seed, &format!("blurry/class{class}")));
            rng.shuffle(&mut samples);
            let others = tasks - 1;
            let start = rng.below(others as u64) as usize;
            for (k, &sample) in samples[..moved].iter().enumerate() {
                // The (start + k)-th other task after `own`, wrapping round.
                let to = (own + 1 + (start + k) % others) % tasks;
                sets[to].push(sample);
            }
            sets[own].extend_from_slice(&samples[moved..]);
        }
    }
    for set in &mut sets {
        set.sort_unstable();
    }
    sets
}
