//! Blurry split streams: each task's class mixture, the samples' single task, seeding.

#![allow(clippy::needless_range_loop)] // classes index per-task count tables
use super::*;
use crate::blurry::moved_count;

/// 5 tasks of 2 classes over 45 training samples per class (10 % of 45 rounds to 5).
fn blurry_stream(
    percent: Option<f64>,
    seed: u64,
    adjust: impl FnOnce(&mut StreamConfig),
) -> TaskStream {
    let mut config = StreamConfig {
        blurry: percent,
        ..config(StreamKind::Split, 5)
    };
    adjust(&mut config);
    TaskStream::build(&mnist_like(45), &config, seed, Device::Cpu).unwrap()
}

/// `counts[t][c]`: training samples of class `c` in task `t`.
fn class_counts(stream: &TaskStream) -> Vec<Vec<usize>> {
    stream
        .tasks
        .iter()
        .map(|task| {
            let mut counts = vec![0; 10];
            for &i in &task.train_indices {
                counts[usize::from(stream.train.host_labels[i as usize])] += 1;
            }
            counts
        })
        .collect()
}

#[test]
fn moved_counts_round_to_the_nearest_sample() {
    assert_eq!(moved_count(10.0, 45), 5);
    assert_eq!(moved_count(10.0, 44), 4);
    assert_eq!(moved_count(10.0, 46), 5);
    assert_eq!(moved_count(0.0, 45), 0);
    assert_eq!(moved_count(100.0, 45), 45);
    assert_eq!(moved_count(2.5, 6000), 150);
}

#[test]
fn each_task_keeps_most_of_its_classes_and_receives_a_share_of_every_other_class() {
    for percent in [10.0, 30.0, 50.0, 100.0] {
        let stream = blurry_stream(Some(percent), 3, |_| {});
        let counts = class_counts(&stream);
        let moved = moved_count(percent, 45);
        for class in 0..10 {
            let own = class / 2;
            assert_eq!(counts[own][class], 45 - moved, "{percent}% class {class}");
            // Dealt over the four other tasks as evenly as possible.
            let received: Vec<usize> = (0..5)
                .filter(|&t| t != own)
                .map(|t| counts[t][class])
                .collect();
            assert_eq!(
                received.iter().sum::<usize>(),
                moved,
                "{percent}% class {class}"
            );
            for &r in &received {
                assert!(
                    r == moved / 4 || r == moved.div_ceil(4),
                    "{percent}% class {class}: {received:?}"
                );
            }
        }
        for task in &stream.tasks {
            // The task's own classes, mask and evaluation data are those of the plain stream.
            assert_eq!(
                task.classes,
                vec![2 * task.index as i64, 2 * task.index as i64 + 1]
            );
            assert_eq!(
                task.train_indices.len(),
                counts[task.index].iter().sum::<usize>()
            );
            assert!(task.train_indices.is_sorted());
        }
    }
}

#[test]
fn every_training_sample_trains_in_exactly_one_task() {
    let stream = blurry_stream(Some(10.0), 0, |_| {});
    let mut owner = vec![None; stream.train.len()];
    for task in &stream.tasks {
        for &i in &task.train_indices {
            assert!(
                owner[i as usize].replace(task.index).is_none(),
                "sample {i} in two tasks"
            );
        }
    }
    assert!(owner.iter().all(Option::is_some));
}

#[test]
fn test_sets_and_masks_are_those_of_the_stream_without_blurry() {
    let plain = blurry_stream(None, 5, |_| {});
    let zero = blurry_stream(Some(0.0), 5, |_| {});
    let blurry = blurry_stream(Some(20.0), 5, |_| {});
    for ((p, z), b) in plain.tasks.iter().zip(&zero.tasks).zip(&blurry.tasks) {
        assert_eq!(p.train_indices, z.train_indices, "blurry = 0 moves nothing");
        assert_ne!(p.train_indices, b.train_indices);
        assert_eq!(p.classes, b.classes);
        assert_eq!(ints(&p.test_indices), ints(&b.test_indices));
        assert_eq!(
            bytes(&p.class_mask.to_kind(tch::Kind::Uint8)),
            bytes(&b.class_mask.to_kind(tch::Kind::Uint8))
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_stream_and_another_seed_another() {
    let indices = |seed| -> Vec<Vec<i64>> {
        blurry_stream(Some(10.0), seed, |_| {})
            .tasks
            .iter()
            .map(|t| t.train_indices.clone())
            .collect()
    };
    assert_eq!(indices(7), indices(7));
    assert_ne!(indices(7), indices(8));
}

#[test]
fn held_out_samples_stay_validation_of_their_own_task_and_are_never_moved() {
    let validated = |percent| blurry_stream(percent, 2, |c| c.validation_fraction = Some(0.2));
    let plain = validated(None);
    let blurry = validated(Some(30.0));
    let mut trained = vec![false; blurry.train.len()];
    for task in &blurry.tasks {
        for &i in &task.train_indices {
            trained[i as usize] = true;
        }
    }
    for (p, b) in plain.tasks.iter().zip(&blurry.tasks) {
        let validation = ints(&b.validation_indices);
        assert_eq!(ints(&p.validation_indices), validation);
        assert!(validation.iter().all(|&i| !trained[i as usize]));
    }
    // Each class's trainable samples: 45 less its held-out ones; 30 % of those move.
    let counts = class_counts(&blurry);
    for class in 0..10 {
        let own = class / 2;
        let trainable: usize = (0..5).map(|t| counts[t][class]).sum();
        assert_eq!(counts[own][class], trainable - moved_count(30.0, trainable));
    }
}

#[test]
fn a_sample_limit_subsamples_each_tasks_blurry_training_set() {
    let full = blurry_stream(Some(30.0), 4, |_| {});
    let limited = blurry_stream(Some(30.0), 4, |c| c.train_samples_per_task = Some(40));
    for (f, l) in full.tasks.iter().zip(&limited.tasks) {
        assert_eq!(l.train_indices.len(), 40);
        assert!(l.train_indices.iter().all(|i| f.train_indices.contains(i)));
    }
    // The other tasks' samples survive the subsampling in about their share (30 %).
    let foreign: usize = limited
        .tasks
        .iter()
        .map(|t| {
            t.train_indices
                .iter()
                .filter(|&&i| {
                    !t.classes
                        .contains(&i64::from(limited.train.host_labels[i as usize]))
                })
                .count()
        })
        .sum();
    assert!((30..=90).contains(&foreign), "{foreign} of 200");
}
