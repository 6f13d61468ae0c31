//! Split streams: classes per task, class orders, sample limits, validation hold-out.

use super::*;

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
        classes_per_task: Some(5.into()),
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
    // The configuration itself asks for more classes than CIFAR-100 has: refused as a
    // configuration error, naming the key.
    let err = TaskStream::build(&dataset, &too_many, 0, Device::Cpu).unwrap_err();
    assert_eq!(
        err.to_string(),
        "[stream]: invalid value for `stream.tasks`: `stream.tasks` = 21 × `stream.classes_per_task` = 5 need 105 classes, but cifar100 has 100"
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
fn class_mask_marks_the_task_classes() {
    let stream = build(natural(), None, 0);
    let mask = Vec::<bool>::try_from(&stream.tasks[2].class_mask).unwrap();
    let expected: Vec<bool> = (0..10).map(|c| c == 4 || c == 5).collect();
    assert_eq!(mask, expected);
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

/// Split-MNIST-shaped stream with `order`, labelled within its tasks.
fn within_task(order: ClassOrder) -> StreamConfig {
    StreamConfig {
        labels: Some(SplitLabels::WithinTask),
        readouts: vec![Readout::DomainIl],
        ..split_config(order, None)
    }
}

#[test]
fn within_task_labels_are_each_class_position_in_its_task() {
    let dataset = mnist_like(20);
    let global = build(natural(), None, 0);
    let stream = TaskStream::build(&dataset, &within_task(natural()), 0, Device::Cpu).unwrap();
    // One label space of two labels, shared by every task.
    assert_eq!(stream.num_classes, 2);
    assert_eq!(global.num_classes, 10);
    assert_eq!(stream.tasks.len(), 5);
    for (task, global_task) in stream.tasks.iter().zip(&global.tasks) {
        // The same samples as with global labels.
        assert_eq!(task.train_indices, global_task.train_indices);
        assert!(task.test_indices.equal(&global_task.test_indices));
        assert_eq!(task.classes, [0, 1]);
        assert_eq!(
            Vec::<bool>::try_from(&task.class_mask).unwrap(),
            [true, true]
        );
        // Even digit → 0, odd digit → 1, on the device and on the host.
        for (split, indices) in [
            (SplitKind::Train, Tensor::from_slice(&task.train_indices)),
            (SplitKind::Test, task.test_indices.shallow_clone()),
        ] {
            let labels = ints(&stream.batch(split, &indices).labels);
            let dataset_classes = ints(&global.batch(split, &indices).labels);
            assert!(!labels.is_empty());
            assert!(dataset_classes.iter().all(|c| c / 2 == task.index as i64));
            let expected: Vec<i64> = dataset_classes.iter().map(|c| c % 2).collect();
            assert_eq!(labels, expected, "task {}", task.index);
            let host: Vec<i64> = ints(&indices)
                .iter()
                .map(|&i| i64::from(stream.label(split, i)))
                .collect();
            assert_eq!(host, expected);
            // Every label is in every task: the task-IL loss's mask keeps both outputs.
            let own = stream.own_task_classes(&stream.batch(split, &indices).labels);
            assert_eq!(own.size(), [labels.len() as i64, 2]);
            assert!(bool::try_from(own.all()).unwrap());
        }
    }
    let index_labels = stream.train_index_labels();
    assert!(index_labels.iter().all(|&l| l < 2));
    assert_eq!(index_labels.len(), global.train_index_labels().len());
}

#[test]
fn within_task_labels_follow_the_class_order() {
    let order = ClassOrder::Explicit(vec![3, 1, 4, 0, 2, 9, 8, 7, 6, 5]);
    let global = build(order.clone(), None, 0);
    let stream = TaskStream::build(&mnist_like(20), &within_task(order), 0, Device::Cpu).unwrap();
    // The tasks are the order's pairs [3, 1], [4, 0], [2, 9], [8, 7], [6, 5]: a class's
    // label is its place in its pair (3 → 0, 1 → 1, …, 2 → 0, 9 → 1).
    let position = |class: i64| {
        let chunk = global
            .tasks
            .iter()
            .find(|t| t.classes.contains(&class))
            .unwrap();
        chunk.classes.iter().position(|&c| c == class).unwrap() as i64
    };
    assert_eq!(global.tasks[2].classes, [2, 9]);
    assert_eq!((position(2), position(9)), (0, 1));
    for task in &stream.tasks {
        let indices = Tensor::from_slice(&task.train_indices);
        let labels = ints(&stream.batch(SplitKind::Train, &indices).labels);
        let classes = ints(&global.batch(SplitKind::Train, &indices).labels);
        let expected: Vec<i64> = classes.iter().map(|&c| position(c)).collect();
        assert_eq!(labels, expected);
        assert!(labels.contains(&0) && labels.contains(&1));
    }

    // Fewer tasks than the dataset has class pairs: the classes of no task are in no
    // task's samples, and the head still has two outputs.
    let short = StreamConfig {
        tasks: 3,
        ..within_task(natural())
    };
    let stream = TaskStream::build(&mnist_like(20), &short, 0, Device::Cpu).unwrap();
    assert_eq!((stream.tasks.len(), stream.num_classes), (3, 2));
    // Three classes per task: labels 0, 1, 2.
    let wide = StreamConfig {
        tasks: 3,
        classes_per_task: Some(3.into()),
        ..within_task(natural())
    };
    let stream = TaskStream::build(&mnist_like(20), &wide, 0, Device::Cpu).unwrap();
    assert_eq!(stream.num_classes, 3);
    let last = &stream.tasks[2];
    assert_eq!(last.classes, [0, 1, 2]);
    let labels = ints(
        &stream
            .batch(SplitKind::Train, &Tensor::from_slice(&last.train_indices))
            .labels,
    );
    let mut seen = labels.clone();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, [0, 1, 2]);
}
