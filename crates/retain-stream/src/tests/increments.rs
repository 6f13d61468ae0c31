//! Split streams whose tasks have unequal class counts (B50-Inc10 and kin).

use super::*;

fn unequal(counts: &[usize]) -> StreamConfig {
    StreamConfig {
        classes_per_task: Some(ClassesPerTask::PerTask(counts.to_vec())),
        ..config(StreamKind::Split, counts.len())
    }
}

#[test]
fn each_task_takes_its_own_number_of_classes_in_order() {
    let stream = TaskStream::build(
        &mnist_like(20),
        &unequal(&[5, 1, 1, 1, 1, 1]),
        0,
        Device::Cpu,
    )
    .unwrap();
    let classes: Vec<Vec<i64>> = stream.tasks.iter().map(|t| t.classes.clone()).collect();
    assert_eq!(
        classes,
        [
            vec![0, 1, 2, 3, 4],
            vec![5],
            vec![6],
            vec![7],
            vec![8],
            vec![9]
        ]
    );
    // One head over every class; each task's mask is its own classes.
    assert_eq!(stream.num_classes, 10);
    for task in &stream.tasks {
        let mask = Vec::<bool>::try_from(&task.class_mask).unwrap();
        let expected: Vec<bool> = (0..10).map(|c| task.classes.contains(&c)).collect();
        assert_eq!(mask, expected, "task {}", task.index);
        // 20 training and 10 test samples per class.
        assert_eq!(task.train_indices.len(), 20 * task.classes.len());
        assert_eq!(task.test_len, 10 * task.classes.len());
        for &i in &task.train_indices {
            let label = i64::from(stream.train.host_labels[i as usize]);
            assert!(task.classes.contains(&label));
        }
    }
    // The task-IL loss keeps a sample's own task's classes: five for the first task's, one
    // for a later task's.
    let own = stream.own_task_classes(&Tensor::from_slice(&[3i64, 7]));
    let rows: Vec<Vec<bool>> = (0..2)
        .map(|r| Vec::<bool>::try_from(&own.get(r)).unwrap())
        .collect();
    assert_eq!(
        rows[0],
        [
            true, true, true, true, true, false, false, false, false, false
        ]
    );
    assert_eq!(
        rows[1],
        [
            false, false, false, false, false, false, false, true, false, false
        ]
    );
}

/// `train_samples_per_task` and `test_samples_per_task` cap each task's samples, whatever its
/// class count: a large first task is subsampled to the same number as a small one.
#[test]
fn sample_limits_apply_per_task_not_per_class() {
    let config = StreamConfig {
        train_samples_per_task: Some(30),
        test_samples_per_task: Some(15),
        ..unequal(&[5, 1, 1, 1, 1, 1])
    };
    let stream = TaskStream::build(&mnist_like(20), &config, 0, Device::Cpu).unwrap();
    let sizes: Vec<(usize, usize)> = stream
        .tasks
        .iter()
        .map(|t| (t.train_indices.len(), t.test_len))
        .collect();
    // The first task has 100 training and 50 test samples, the others 20 and 10.
    assert_eq!(
        sizes,
        [(30, 15), (20, 10), (20, 10), (20, 10), (20, 10), (20, 10)]
    );
}

#[test]
fn first_task_classes_with_the_icarl_order_gives_b50_inc10() {
    let dataset = synthetic("cifar100", 100, [3, 2, 2], 2);
    let config = StreamConfig {
        dataset: DatasetName::Cifar100,
        classes_per_task: Some(10.into()),
        first_task_classes: Some(50),
        class_order: Some(ClassOrder::Named(ClassOrderName::Icarl)),
        ..config(StreamKind::Split, 6)
    };
    let stream = TaskStream::build(&dataset, &config, 0, Device::Cpu).unwrap();
    let sizes: Vec<usize> = stream.tasks.iter().map(|t| t.classes.len()).collect();
    assert_eq!(sizes, [50, 10, 10, 10, 10, 10]);
    let order: Vec<i64> = stream
        .tasks
        .iter()
        .flat_map(|t| t.classes.clone())
        .collect();
    let icarl: Vec<i64> = retain_config::ICARL_CIFAR100_ORDER
        .iter()
        .map(|&c| i64::from(c))
        .collect();
    assert_eq!(order, icarl);
    assert_eq!(stream.tasks[1].classes[0], 37);
    // The order does not depend on the seed.
    let other = TaskStream::build(&dataset, &config, 7, Device::Cpu).unwrap();
    assert_eq!(other.tasks[0].classes, stream.tasks[0].classes);
}

#[test]
fn data_with_fewer_classes_than_the_unequal_tasks_need_is_refused() {
    let err = TaskStream::build(
        &synthetic("mnist", 8, [1, 2, 2], 4),
        &unequal(&[5, 1, 1, 1, 1, 1]),
        0,
        Device::Cpu,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            StreamError::NotEnoughClasses {
                needed: 10,
                available: 8,
                ..
            }
        ),
        "{err}"
    );
}
