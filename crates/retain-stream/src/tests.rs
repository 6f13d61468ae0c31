use super::*;
use retain_config::{DatasetName, Readout};
use retain_data::Split;

/// `classes` classes, `per_class` training samples each (half as many test samples), images
/// of `shape` whose pixels encode the sample index and position.
fn synthetic(name: &str, classes: usize, shape: [usize; 3], per_class: usize) -> ImageDataset {
    let features: usize = shape.iter().product();
    let split = |n: usize, salt: usize| {
        let len = n * classes;
        Split {
            images: (0..len * features)
                .map(|i| ((i * 7 + salt) % 251) as u8)
                .collect(),
            labels: (0..len).map(|i| (i % classes) as u8).collect(),
            len,
        }
    };
    ImageDataset {
        name: name.into(),
        classes,
        shape,
        train: split(per_class, 0),
        test: split(per_class / 2, 3),
    }
}

fn mnist_like(per_class: usize) -> ImageDataset {
    synthetic("mnist", 10, [1, 2, 2], per_class)
}

fn config(kind: StreamKind, tasks: usize) -> StreamConfig {
    StreamConfig {
        kind,
        dataset: DatasetName::Mnist,
        tasks,
        classes_per_task: (kind == StreamKind::Split).then_some(2),
        class_order: None,
        first_task_unpermuted: false,
        angles: None,
        angle_range: None,
        train_samples_per_task: None,
        test_samples_per_task: None,
        validation_fraction: None,
        evaluate_on: EvaluateOn::Test,
        augment: None,
        readouts: kind.readouts().to_vec(),
    }
}

fn split_config(order: ClassOrder, train_limit: Option<usize>) -> StreamConfig {
    StreamConfig {
        class_order: Some(order),
        train_samples_per_task: train_limit,
        ..config(StreamKind::Split, 5)
    }
}

fn natural() -> ClassOrder {
    ClassOrder::Named(ClassOrderName::Natural)
}

fn build(order: ClassOrder, limit: Option<usize>, seed: u64) -> TaskStream {
    TaskStream::build(
        &mnist_like(20),
        &split_config(order, limit),
        seed,
        Device::Cpu,
    )
    .unwrap()
}

fn ints(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.flatten(0, -1)).unwrap()
}

fn floats(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
}

fn bytes(t: &Tensor) -> Vec<u8> {
    Vec::<u8>::try_from(t.flatten(0, -1)).unwrap()
}

#[test]
fn tasks_have_disjoint_classes_and_cover_each_sample_once() {
    let stream = build(natural(), None, 0);
    assert_eq!(stream.tasks.len(), 5);
    let mut owner = vec![None; stream.train.len()];
    for task in &stream.tasks {
        assert_eq!(
            task.classes,
            vec![2 * task.index as i64, 2 * task.index as i64 + 1]
        );
        assert_eq!(task.transform, TaskTransform::Identity);
        for &i in &task.train_indices {
            let label = i64::from(stream.train.host_labels[i as usize]);
            assert!(task.classes.contains(&label));
            assert!(
                owner[i as usize].replace(task.index).is_none(),
                "sample {i} in two tasks"
            );
        }
    }
    assert!(owner.iter().all(Option::is_some));
}

#[test]
fn split_streams_take_any_number_of_classes_per_task() {
    let dataset = synthetic("cifar100", 100, [3, 2, 2], 4);
    let config = StreamConfig {
        dataset: DatasetName::Cifar100,
        classes_per_task: Some(5),
        ..config(StreamKind::Split, 20)
    };
    let stream = TaskStream::build(&dataset, &config, 0, Device::Cpu).unwrap();
    assert_eq!(stream.tasks.len(), 20);
    let mut seen = Vec::new();
    for task in &stream.tasks {
        assert_eq!(task.classes.len(), 5);
        assert_eq!(task.train_indices.len(), 5 * 4);
        seen.extend(task.classes.iter().copied());
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..100).collect::<Vec<_>>());
    let too_many = StreamConfig {
        tasks: 21,
        ..config
    };
    let err = TaskStream::build(&dataset, &too_many, 0, Device::Cpu).unwrap_err();
    assert_eq!(
        err.to_string(),
        "stream needs 105 classes but dataset `cifar100` has 100"
    );
}

#[test]
fn per_task_limits_are_honoured_and_seeded() {
    let a = build(natural(), Some(7), 1);
    let b = build(natural(), Some(7), 1);
    let c = build(natural(), Some(7), 2);
    for task in &a.tasks {
        assert_eq!(task.train_indices.len(), 7);
    }
    assert_eq!(a.tasks[0].train_indices, b.tasks[0].train_indices);
    assert_ne!(a.tasks[0].train_indices, c.tasks[0].train_indices);
}

#[test]
fn seeded_class_order_depends_on_the_seed_only() {
    let seeded = ClassOrder::Named(ClassOrderName::Seeded);
    let a = class_order(&seeded, 10, 3);
    assert_eq!(a, class_order(&seeded, 10, 3));
    assert_ne!(a, class_order(&seeded, 10, 4));
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    let stream = build(seeded, None, 3);
    assert_eq!(
        stream.tasks[0].classes,
        vec![i64::from(a[0]), i64::from(a[1])]
    );
}

#[test]
fn explicit_class_order_is_followed() {
    let stream = build(
        ClassOrder::Explicit(vec![9, 8, 7, 6, 5, 4, 3, 2, 1, 0]),
        None,
        0,
    );
    assert_eq!(stream.tasks[0].classes, vec![9, 8]);
    assert_eq!(stream.tasks[4].classes, vec![1, 0]);
}

#[test]
fn batches_are_gathered_and_normalised_on_the_device() {
    let stream = build(natural(), None, 0);
    let indices = Tensor::from_slice(&[3i64, 0]);
    let batch = stream.batch(SplitKind::Train, &indices);
    assert_eq!(batch.inputs.size(), vec![2, 1, 2, 2]);
    assert_eq!(ints(&batch.labels), vec![3, 0]);
    // Sample i holds raw pixels (7·(4i + k)) mod 251.
    let raw: Vec<u8> = [3usize, 0]
        .iter()
        .flat_map(|&i| (0..4).map(move |k| ((7 * (4 * i + k)) % 251) as u8))
        .collect();
    let expected: Vec<f32> = raw
        .iter()
        .map(|&p| ((f64::from(p) / 255.0 - 0.1307) / 0.3081) as f32)
        .collect();
    let inputs = floats(&batch.inputs);
    for (got, want) in inputs.iter().zip(&expected) {
        assert!((got - want).abs() < 1e-5, "{inputs:?} vs {expected:?}");
    }
    // Without augmentation a training batch is the same batch.
    let training = stream.training_batch(&indices, 7);
    assert!(training.inputs.equal(&batch.inputs));
}

#[test]
fn cifar_batches_are_normalised_per_channel() {
    let dataset = synthetic("cifar10", 10, [3, 2, 2], 2);
    let config = StreamConfig {
        dataset: DatasetName::Cifar10,
        ..config(StreamKind::Split, 5)
    };
    let stream = TaskStream::build(&dataset, &config, 0, Device::Cpu).unwrap();
    let batch = stream.batch(SplitKind::Test, &Tensor::from_slice(&[1i64]));
    assert_eq!(batch.inputs.size(), vec![1, 3, 2, 2]);
    let mean = [0.4914, 0.4822, 0.4465];
    let std = [0.2470, 0.2435, 0.2615];
    let got = floats(&batch.inputs);
    for (k, value) in got.iter().enumerate() {
        let raw = &dataset.test.images[12..24];
        let c = k / 4;
        let want = (f64::from(raw[k]) / 255.0 - mean[c]) / std[c];
        assert!((f64::from(*value) - want).abs() < 1e-5, "{got:?}");
    }
}

#[test]
fn epoch_order_is_a_seeded_shuffle_of_the_task() {
    let stream = build(natural(), None, 0);
    let task = &stream.tasks[1];
    let e0 = ints(&stream.epoch_order(&task.train_indices, 0, 1, 0));
    let again = ints(&stream.epoch_order(&task.train_indices, 0, 1, 0));
    let e1 = ints(&stream.epoch_order(&task.train_indices, 0, 1, 1));
    assert_eq!(e0, again);
    assert_ne!(e0, e1);
    let mut sorted = e0.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, task.train_indices);
}

#[test]
fn class_mask_marks_the_task_classes() {
    let stream = build(natural(), None, 0);
    let mask = Vec::<bool>::try_from(&stream.tasks[2].class_mask).unwrap();
    let expected: Vec<bool> = (0..10).map(|c| c == 4 || c == 5).collect();
    assert_eq!(mask, expected);
}

fn permuted(tasks: usize, seed: u64, adjust: impl FnOnce(&mut StreamConfig)) -> TaskStream {
    let mut config = config(StreamKind::Permuted, tasks);
    adjust(&mut config);
    let dataset = synthetic("mnist", 10, [1, 4, 4], 6);
    TaskStream::build(&dataset, &config, seed, Device::Cpu).unwrap()
}

fn permutation_of(task: &Task) -> Vec<i64> {
    match &task.transform {
        TaskTransform::Permutation(p) => p.clone(),
        other => panic!("task {} is {other:?}", task.index),
    }
}

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
const PIL_ROTATIONS: &str = include_str!("../fixtures/pil_rotation.txt");

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

#[test]
fn validation_samples_are_held_out_of_every_task() {
    for kind in [StreamKind::Split, StreamKind::Permuted] {
        let config = StreamConfig {
            validation_fraction: Some(0.2),
            evaluate_on: EvaluateOn::Validation,
            ..config(kind, 3)
        };
        let dataset = mnist_like(20);
        let stream = TaskStream::build(&dataset, &config, 4, Device::Cpu).unwrap();
        assert_eq!(stream.eval_split, SplitKind::Train);
        let n = stream.train.len() as i64;
        let mut trained = std::collections::HashSet::new();
        let mut held = std::collections::HashSet::new();
        for task in &stream.tasks {
            trained.extend(task.train_indices.iter().map(|&i| i % n));
            let validation = ints(&task.validation_indices);
            assert_eq!(validation.len(), task.validation_len);
            for &v in &validation {
                let (owner, _) = stream.locate(SplitKind::Train, v);
                assert_eq!(
                    owner,
                    if kind == StreamKind::Split {
                        0
                    } else {
                        task.index
                    }
                );
                let label = i64::from(stream.label(SplitKind::Train, v));
                assert!(task.classes.contains(&label));
            }
            held.extend(validation.iter().map(|&i| i % n));
            let (split, indices, len) = stream.evaluation_set(task);
            assert_eq!(split, SplitKind::Train);
            assert_eq!(len, task.validation_len);
            assert!(indices.equal(&task.validation_indices));
        }
        // 20 % of the 200 training samples, never trained on under any task.
        assert!(trained.is_disjoint(&held), "{kind:?}");
        if kind == StreamKind::Permuted {
            assert_eq!(held.len(), 40);
            assert_eq!(trained.len(), 160);
        }
    }
    // Same seed, same hold-out; another seed, another.
    let config = StreamConfig {
        validation_fraction: Some(0.2),
        ..config(StreamKind::Split, 5)
    };
    let held = |seed| {
        let stream = TaskStream::build(&mnist_like(20), &config, seed, Device::Cpu).unwrap();
        ints(&stream.tasks[0].validation_indices)
    };
    assert_eq!(held(1), held(1));
    assert_ne!(held(1), held(2));
    let stream = TaskStream::build(&mnist_like(20), &config, 1, Device::Cpu).unwrap();
    assert_eq!(stream.eval_split, SplitKind::Test);
    let (split, _, len) = stream.evaluation_set(&stream.tasks[0]);
    assert_eq!((split, len), (SplitKind::Test, stream.tasks[0].test_len));
}

fn cifar_stream(augment: AugmentConfig) -> (ImageDataset, TaskStream) {
    let dataset = synthetic("cifar10", 10, [3, 6, 5], 4);
    let config = StreamConfig {
        dataset: DatasetName::Cifar10,
        augment: Some(augment),
        ..config(StreamKind::Split, 5)
    };
    let stream = TaskStream::build(&dataset, &config, 9, Device::Cpu).unwrap();
    (dataset, stream)
}

#[test]
fn device_augmentation_draws_match_the_host_reference() {
    let augment = AugmentConfig {
        crop_padding: 2,
        flip: true,
    };
    let (_, stream) = cifar_stream(augment);
    let key = stream.augment_key(17);
    let params = stream.augment_params(400, 17);
    let (dy, dx, flip) = (ints(&params.dy), ints(&params.dx), ints(&params.flip));
    for i in 0..400 {
        let (hy, hx, hflip) = augment::params_host(&augment, key, i as u32);
        assert_eq!((dy[i], dx[i], flip[i] == 1), (hy, hx, hflip), "sample {i}");
    }
    // Every offset and both flips occur, roughly uniformly (400 draws over 5 offsets).
    for offsets in [&dy, &dx] {
        for o in 0..5 {
            let count = offsets.iter().filter(|&&v| v == o).count();
            assert!((40..=120).contains(&count), "offset {o}: {count}");
        }
    }
    let flips = flip.iter().filter(|&&f| f == 1).count();
    assert!((150..=250).contains(&flips), "{flips}");
    // Known values of the hash (from a three-line Python transcription of its definition).
    assert_eq!(hash::hash32(0), 0);
    assert_eq!(hash::hash32(1), 824_515_495);
    assert_eq!(hash::hash32(12_345), 1_747_545_881);
}

#[test]
fn crop_is_a_shifted_window_of_the_padded_image_and_flip_mirrors_it() {
    let augment = AugmentConfig {
        crop_padding: 2,
        flip: true,
    };
    let (dataset, stream) = cifar_stream(augment);
    let [c, h, w] = [3usize, 6, 5];
    let picks: Vec<i64> = (0..16).map(|i| (i * 3) % 40).collect();
    let indices = Tensor::from_slice(&picks);
    for draw in [0u64, 1, 99] {
        let key = stream.augment_key(draw);
        let augmented = stream.training_batch(&indices, draw);
        let clean = stream.batch(SplitKind::Train, &indices);
        assert_eq!(augmented.inputs.size(), vec![16, 3, 6, 5]);
        assert!(augmented.labels.equal(&clean.labels), "labels stay aligned");
        // Undo the normalisation to compare raw pixels exactly.
        let raw = stream
            .normalise(&stream.raw_batch(SplitKind::Train, &indices).0)
            .equal(&clean.inputs);
        assert!(raw);
        let got = floats(&augmented.inputs);
        let scale = [0.2470, 0.2435, 0.2615];
        let mean = [0.4914, 0.4822, 0.4465];
        for (b, &sample) in picks.iter().enumerate() {
            let (dy, dx, flip) = augment::params_host(&augment, key, b as u32);
            let image = &dataset.train.images[sample as usize * c * h * w..][..c * h * w];
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        let column = if flip { w - 1 - x } else { x } as i64;
                        let (sy, sx) = (y as i64 + dy - 2, column + dx - 2);
                        let inside = (0..h as i64).contains(&sy) && (0..w as i64).contains(&sx);
                        let pixel = if inside {
                            image[ch * h * w + sy as usize * w + sx as usize]
                        } else {
                            0
                        };
                        let want = (f64::from(pixel) / 255.0 - mean[ch]) / scale[ch];
                        let value = got[((b * c + ch) * h + y) * w + x];
                        assert!(
                            (f64::from(value) - want).abs() < 1e-5,
                            "draw {draw}, sample {b}, ({ch},{y},{x}): {value} vs {want}"
                        );
                    }
                }
            }
        }
        // Same draw, same batch; another draw, another batch.
        assert!(
            stream
                .training_batch(&indices, draw)
                .inputs
                .equal(&augmented.inputs)
        );
        assert!(
            !stream
                .training_batch(&indices, draw + 1)
                .inputs
                .equal(&augmented.inputs)
        );
    }
}

#[test]
fn flip_alone_mirrors_exactly() {
    let augment = AugmentConfig {
        crop_padding: 0,
        flip: true,
    };
    let (_, stream) = cifar_stream(augment);
    let indices = Tensor::from_slice(&(0..32).collect::<Vec<i64>>());
    let augmented = stream.training_batch(&indices, 5).inputs;
    let clean = stream.batch(SplitKind::Train, &indices).inputs;
    let flips = ints(&stream.augment_params(32, 5).flip);
    assert!(flips.contains(&0) && flips.contains(&1));
    for (b, &flip) in flips.iter().enumerate() {
        let want = if flip == 1 {
            clean.get(b as i64).flip([2])
        } else {
            clean.get(b as i64)
        };
        assert!(augmented.get(b as i64).equal(&want), "sample {b}");
    }
}

#[test]
fn mismatched_or_unknown_datasets_are_rejected() {
    let config = config(StreamKind::Split, 5);
    let err = TaskStream::build(
        &synthetic("fashion-mnist", 10, [1, 2, 2], 2),
        &config,
        0,
        Device::Cpu,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "dataset `fashion-mnist` given for a stream configured on `mnist`"
    );
    assert!(normalisation_constants("tiny").is_none());
    assert_eq!(
        normalisation_constants("cifar100").unwrap().1,
        &[0.2673, 0.2564, 0.2762]
    );
    assert_eq!(config.readouts, vec![Readout::ClassIl, Readout::TaskIl]);
}

/// The data path computes the same bytes on CUDA as on the CPU: transforms, the on-device
/// augmentation hash, crops and flips. Runs where a CUDA device is visible.
#[test]
fn cuda_batches_equal_cpu_batches_where_cuda_exists() {
    if !tch::Cuda::is_available() {
        eprintln!("skipped: no CUDA device visible");
        return;
    }
    let augment = AugmentConfig {
        crop_padding: 4,
        flip: true,
    };
    let dataset = synthetic("cifar10", 10, [3, 32, 32], 8);
    let cifar = StreamConfig {
        dataset: DatasetName::Cifar10,
        augment: Some(augment),
        ..config(StreamKind::Split, 5)
    };
    let cpu = TaskStream::build(&dataset, &cifar, 3, Device::Cpu).unwrap();
    let gpu = TaskStream::build(&dataset, &cifar, 3, Device::Cuda(0)).unwrap();
    let indices: Vec<i64> = (0..64).map(|i| (i * 5) % 80).collect();
    for draw in [0u64, 12345] {
        let a = cpu.training_batch(&Tensor::from_slice(&indices), draw);
        let b = gpu.training_batch(
            &Tensor::from_slice(&indices).to_device(Device::Cuda(0)),
            draw,
        );
        assert!(a.labels.equal(&b.labels.to_device(Device::Cpu)));
        let diff = (a.inputs - b.inputs.to_device(Device::Cpu)).abs().max();
        assert!(diff.double_value(&[]) < 1e-5, "draw {draw}: {diff}");
    }
    for kind in [StreamKind::Permuted, StreamKind::Rotated] {
        let dataset = synthetic("mnist", 10, [1, 28, 28], 4);
        let config = config(kind, 4);
        let cpu = TaskStream::build(&dataset, &config, 3, Device::Cpu).unwrap();
        let gpu = TaskStream::build(&dataset, &config, 3, Device::Cuda(0)).unwrap();
        let indices: Vec<i64> = (0..40).map(|i| i * 3).collect();
        let (a, _) = cpu.raw_batch(SplitKind::Train, &Tensor::from_slice(&indices));
        let (b, _) = gpu.raw_batch(
            SplitKind::Train,
            &Tensor::from_slice(&indices).to_device(Device::Cuda(0)),
        );
        assert!(a.equal(&b.to_device(Device::Cpu)), "{kind:?}");
    }
}

/// The batch a captured step builds from a device key is the one the eager step builds from
/// the host draw, bit for bit.
#[test]
fn keyed_training_batch_equals_the_drawn_one() {
    let (_, stream) = cifar_stream(AugmentConfig {
        crop_padding: 2,
        flip: true,
    });
    let indices = Tensor::from_slice(&(0..16).map(|i| (i * 5) % 40).collect::<Vec<i64>>());
    for draw in [0u64, 3, 1 << 41] {
        let key = Tensor::from(i64::from(stream.augment_key(draw)));
        let eager = stream.training_batch(&indices, draw);
        let keyed = stream.training_batch_keyed(&indices, &key);
        assert!(eager.inputs.equal(&keyed.inputs), "draw {draw}");
        assert!(eager.labels.equal(&keyed.labels));
    }
}
