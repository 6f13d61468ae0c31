use super::*;
use retain_config::Readout;
use retain_data::Split;

/// 10 classes, `per_class` samples each, 2×2 images whose pixels encode the sample index.
fn synthetic(per_class: usize) -> ImageDataset {
    let split = |n: usize| {
        let len = n * 10;
        Split {
            images: (0..len * 4).map(|i| (i % 251) as u8).collect(),
            labels: (0..len).map(|i| (i % 10) as u8).collect(),
            len,
        }
    };
    ImageDataset {
        name: "mnist".into(),
        classes: 10,
        shape: [1, 2, 2],
        train: split(per_class),
        test: split(per_class / 2),
    }
}

fn config(order: ClassOrder, train_limit: Option<usize>) -> StreamConfig {
    StreamConfig {
        kind: StreamKind::Split,
        dataset: retain_config::DatasetName::Mnist,
        tasks: 5,
        classes_per_task: 2,
        class_order: order,
        train_samples_per_task: train_limit,
        test_samples_per_task: None,
        readouts: vec![Readout::ClassIl],
    }
}

fn natural() -> ClassOrder {
    ClassOrder::Named(ClassOrderName::Natural)
}

fn build(order: ClassOrder, limit: Option<usize>, seed: u64) -> TaskStream {
    TaskStream::build(&synthetic(20), &config(order, limit), seed, Device::Cpu).unwrap()
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
    assert_eq!(batch.inputs.size(), vec![2, 4]);
    assert_eq!(Vec::<i64>::try_from(&batch.labels).unwrap(), vec![3, 0]);
    let inputs = Vec::<f32>::try_from(batch.inputs.flatten(0, -1)).unwrap();
    // Sample 3 holds raw pixels 12..16; sample 0 holds 0..4.
    let expected: Vec<f32> = [12, 13, 14, 15, 0, 1, 2, 3]
        .iter()
        .map(|&p| ((f64::from(p) / 255.0 - 0.1307) / 0.3081) as f32)
        .collect();
    for (got, want) in inputs.iter().zip(&expected) {
        assert!((got - want).abs() < 1e-5, "{inputs:?} vs {expected:?}");
    }
}

#[test]
fn epoch_order_is_a_seeded_shuffle_of_the_task() {
    let stream = build(natural(), None, 0);
    let task = &stream.tasks[1];
    let e0 = Vec::<i64>::try_from(stream.epoch_order(&task.train_indices, 0, 1, 0)).unwrap();
    let again = Vec::<i64>::try_from(stream.epoch_order(&task.train_indices, 0, 1, 0)).unwrap();
    let e1 = Vec::<i64>::try_from(stream.epoch_order(&task.train_indices, 0, 1, 1)).unwrap();
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
