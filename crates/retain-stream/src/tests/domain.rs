//! Permuted and rotated streams: per-task transforms and their index space.

use super::*;

#[test]
fn permuted_tasks_share_the_label_space_and_own_their_indices() {
    let stream = permuted(3, 5, |c| c.train_samples_per_task = Some(25));
    let n = stream.train.len() as i64;
    assert_eq!(stream.index_len(SplitKind::Train), 3 * n as usize);
    let mut seen = std::collections::HashSet::new();
    for task in &stream.tasks {
        assert_eq!(task.classes, (0..10).collect::<Vec<_>>());
        assert_eq!(task.train_indices.len(), 25);
        assert_eq!(task.test_len, stream.test.len());
        let mask = Vec::<bool>::try_from(&task.class_mask).unwrap();
        assert!(mask.iter().all(|&m| m));
        for &i in &task.train_indices {
            // Every index lies in its own task's block and is used once.
            assert_eq!(stream.locate(SplitKind::Train, i).0, task.index);
            assert!(seen.insert(i), "index {i} twice");
        }
        let mut p = permutation_of(task);
        p.sort_unstable();
        assert_eq!(p, (0..16).collect::<Vec<_>>());
    }
    // Tasks draw their subsamples independently.
    let local = |t: usize| -> Vec<i64> {
        stream.tasks[t]
            .train_indices
            .iter()
            .map(|&i| i % n)
            .collect()
    };
    assert_ne!(local(0), local(1));
}

#[test]
fn permutations_are_seeded_and_differ_between_tasks() {
    let a = permuted(3, 5, |_| {});
    let b = permuted(3, 5, |_| {});
    let c = permuted(3, 6, |_| {});
    for t in 0..3 {
        assert_eq!(permutation_of(&a.tasks[t]), permutation_of(&b.tasks[t]));
        assert_ne!(permutation_of(&a.tasks[t]), permutation_of(&c.tasks[t]));
    }
    assert_ne!(permutation_of(&a.tasks[0]), permutation_of(&a.tasks[1]));
    let first_plain = permuted(3, 5, |c| c.first_task_unpermuted = true);
    assert_eq!(first_plain.tasks[0].transform, TaskTransform::Identity);
    assert_eq!(
        permutation_of(&first_plain.tasks[1]),
        permutation_of(&a.tasks[1])
    );
}

#[test]
fn permutation_matches_a_naive_host_gather_in_mixed_batches() {
    let stream = permuted(3, 11, |c| c.first_task_unpermuted = true);
    let n = stream.train.len() as i64;
    let test_n = stream.test.len() as i64;
    let dataset = synthetic("mnist", 10, [1, 4, 4], 6);
    let picks = [(2, 7), (0, 7), (1, 0), (2, n - 1), (1, 33)];
    let indices: Vec<i64> = picks.iter().map(|&(t, i)| t * n + i).collect();
    let batch = stream.raw_batch(SplitKind::Train, &Tensor::from_slice(&indices));
    assert_eq!(batch.0.size(), vec![5, 1, 4, 4]);
    let got = bytes(&batch.0);
    let labels = ints(&batch.1);
    for (b, &(t, i)) in picks.iter().enumerate() {
        let image = &dataset.train.images[i as usize * 16..(i as usize + 1) * 16];
        let expected: Vec<u8> = match &stream.tasks[t as usize].transform {
            TaskTransform::Identity => image.to_vec(),
            TaskTransform::Permutation(p) => p.iter().map(|&j| image[j as usize]).collect(),
            other => panic!("{other:?}"),
        };
        assert_eq!(&got[b * 16..(b + 1) * 16], &expected[..], "sample {b}");
        assert_eq!(labels[b], i64::from(dataset.train.labels[i as usize]));
        assert_eq!(
            stream.label(SplitKind::Train, t * n + i),
            dataset.train.labels[i as usize]
        );
    }
    // The single-task path reads the same bytes.
    let task_two: Vec<i64> = [7, 0, n - 1].iter().map(|i| 2 * n + i).collect();
    let task_two = Tensor::from_slice(&task_two);
    let (a, la) = stream.raw_batch(SplitKind::Train, &task_two);
    let (b, lb) = stream.raw_task_batch(SplitKind::Train, 2, &task_two);
    assert!(a.equal(&b) && la.equal(&lb));
    // Test indices of task t are offset by t·N_test and carry task t's permutation.
    let test = ints(&stream.tasks[2].test_indices);
    assert_eq!(test[0], 2 * test_n);
    let batch = stream.raw_batch(SplitKind::Test, &Tensor::from_slice(&[2 * test_n + 1]));
    let image = &dataset.test.images[16..32];
    let p = permutation_of(&stream.tasks[2]);
    let expected: Vec<u8> = p.iter().map(|&j| image[j as usize]).collect();
    assert_eq!(bytes(&batch.0), expected);
}

/// Reference maps from Pillow 13 (`fixtures/pil_rotation.py`): per case, the source index
/// plus one of every output pixel, 0 for the zero fill.
const PIL_ROTATIONS: &str = include_str!("../../fixtures/pil_rotation.txt");

#[test]
fn rotation_maps_match_pil_pixel_for_pixel() {
    let mut cases = 0;
    for line in PIL_ROTATIONS.lines() {
        let (head, values) = line.split_once(':').unwrap();
        let head: Vec<f64> = head.split(' ').map(|v| v.parse().unwrap()).collect();
        let (h, w, angle) = (head[0] as usize, head[1] as usize, head[2]);
        let expected: Vec<i64> = values
            .split_whitespace()
            .map(|v| v.parse::<i64>().unwrap() - 1)
            .collect();
        assert_eq!(
            transform::rotation_map(angle, h, w),
            expected,
            "{h}×{w} by {angle}°"
        );
        cases += 1;
    }
    assert_eq!(cases, 9);
}

#[test]
fn rotation_by_90_degrees_turns_a_hand_made_image_exactly() {
    // A 3×3 "L" shape in the top-left of a 4×4 image, rotated counter-clockwise by 90°,
    // lies along the bottom-left edge.
    #[rustfmt::skip]
    let image: Vec<u8> = vec![
        9, 0, 0, 0,
        8, 0, 0, 0,
        7, 6, 5, 0,
        0, 0, 0, 0,
    ];
    #[rustfmt::skip]
    let turned: Vec<u8> = vec![
        0, 0, 0, 0,
        0, 0, 5, 0,
        0, 0, 6, 0,
        9, 8, 7, 0,
    ];
    let dataset = ImageDataset {
        name: "mnist".into(),
        classes: 10,
        shape: [1, 4, 4],
        train: Split {
            images: image.clone(),
            labels: vec![3],
            len: 1,
        },
        test: Split {
            images: image.clone(),
            labels: vec![3],
            len: 1,
        },
    };
    let config = StreamConfig {
        angles: Some(Angles::Explicit(vec![0.0, 90.0, 180.0, 45.0])),
        ..config(StreamKind::Rotated, 4)
    };
    let stream = TaskStream::build(&dataset, &config, 0, Device::Cpu).unwrap();
    let (images, labels) = stream.raw_batch(SplitKind::Train, &Tensor::from_slice(&[1i64, 0, 2]));
    let got = bytes(&images);
    assert_eq!(&got[..16], &turned[..]);
    assert_eq!(&got[16..32], &image[..]);
    let upside_down: Vec<u8> = image.iter().rev().copied().collect();
    assert_eq!(&got[32..48], &upside_down[..]);
    assert_eq!(ints(&labels), vec![3, 3, 3]);
    // 45° needs the zero fill for corners: the map reads the appended zero column.
    let (images, _) = stream.raw_batch(SplitKind::Test, &Tensor::from_slice(&[3i64]));
    let (single, _) = stream.raw_task_batch(SplitKind::Test, 3, &Tensor::from_slice(&[3i64]));
    assert!(images.equal(&single));
    let expected: Vec<u8> = transform::rotation_map(45.0, 4, 4)
        .iter()
        .map(|&j| if j < 0 { 0 } else { image[j as usize] })
        .collect();
    assert_eq!(bytes(&images), expected);
}

#[test]
fn rotation_angles_are_even_or_seeded() {
    let even = config(StreamKind::Rotated, 4);
    assert_eq!(rotation_angles(&even, 0), vec![0.0, 45.0, 90.0, 135.0]);
    let ranged = StreamConfig {
        angle_range: Some([10.0, 30.0]),
        ..even.clone()
    };
    assert_eq!(rotation_angles(&ranged, 0), vec![10.0, 15.0, 20.0, 25.0]);
    let seeded = StreamConfig {
        angles: Some(Angles::Named(AnglesName::Seeded)),
        ..ranged
    };
    let a = rotation_angles(&seeded, 1);
    assert_eq!(a, rotation_angles(&seeded, 1));
    assert_ne!(a, rotation_angles(&seeded, 2));
    assert!(a.iter().all(|x| (10.0..30.0).contains(x)), "{a:?}");
    let dataset = synthetic("mnist", 10, [1, 4, 4], 2);
    let stream = TaskStream::build(&dataset, &seeded, 1, Device::Cpu).unwrap();
    let angles: Vec<f64> = stream
        .tasks
        .iter()
        .map(|t| match t.transform {
            TaskTransform::Rotation(angle) => angle,
            ref other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(angles, a);
}
