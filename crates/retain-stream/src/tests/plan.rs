//! Streams built from the validated plan: the plan's resolved values are what the stream
//! uses, and a configuration that does not validate builds nothing.

use super::*;
use retain_config::{Scenario, SplitLabels, StreamPlan};

fn plan(config: &StreamConfig) -> StreamPlan {
    config.plan().unwrap_or_else(|e| panic!("{e}"))
}

/// One task as built: classes, transform, training and test indices.
type TaskLayout = (Vec<i64>, TaskTransform, Vec<i64>, Vec<i64>);

/// What a stream made of its tasks, comparable between two builds.
fn layout(stream: &TaskStream) -> Vec<TaskLayout> {
    stream
        .tasks
        .iter()
        .map(|t| {
            (
                t.classes.clone(),
                t.transform.clone(),
                t.train_indices.clone(),
                ints(&t.test_indices),
            )
        })
        .collect()
}

#[test]
fn building_from_a_config_is_building_from_its_plan() {
    let dataset = synthetic("mnist", 10, [1, 4, 4], 6);
    for kind in [StreamKind::Split, StreamKind::Permuted, StreamKind::Rotated] {
        let config = StreamConfig {
            train_samples_per_task: Some(9),
            ..config(kind, 4)
        };
        let from_config = TaskStream::build(&dataset, &config, 7, Device::Cpu).unwrap();
        let from_plan = TaskStream::from_plan(&dataset, &plan(&config), 7, Device::Cpu).unwrap();
        assert_eq!(layout(&from_config), layout(&from_plan), "{kind:?}");
        assert_eq!(from_plan.kind, kind);
    }
}

#[test]
fn the_stream_follows_the_resolved_defaults_of_its_plan() {
    // Absent keys: natural class order, even angles over [0, 180], no augmentation, the test
    // split for evaluation.
    let split = config(StreamKind::Split, 5);
    assert_eq!(
        plan(&split).scenario(),
        &Scenario::Split {
            task_classes: vec![2; 5],
            class_order: ClassOrder::Named(ClassOrderName::Natural),
            labels: SplitLabels::Global,
        }
    );
    let stream = TaskStream::build(&mnist_like(4), &split, 3, Device::Cpu).unwrap();
    let classes: Vec<Vec<i64>> = stream.tasks.iter().map(|t| t.classes.clone()).collect();
    assert_eq!(classes, [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]);
    assert!(!stream.augments());
    assert_eq!(stream.eval_split, SplitKind::Test);

    let rotated = config(StreamKind::Rotated, 4);
    let Scenario::Rotated {
        angles,
        angle_range,
    } = plan(&rotated).scenario().clone()
    else {
        panic!("a rotated stream plans a rotation")
    };
    assert_eq!(
        task_angles(&angles, angle_range, 4, 0),
        [0.0, 45.0, 90.0, 135.0]
    );
    assert_eq!(rotation_angles(&rotated, 0), [0.0, 45.0, 90.0, 135.0]);
}

/// Regression: a split stream without `classes_per_task` used to be built with one class per
/// task; it is a configuration error, as when the experiment file is loaded.
#[test]
fn a_split_stream_without_classes_per_task_is_refused_not_given_one_class() {
    let config = StreamConfig {
        classes_per_task: None,
        ..config(StreamKind::Split, 5)
    };
    let err = TaskStream::build(&mnist_like(4), &config, 0, Device::Cpu).unwrap_err();
    let StreamError::Config(retain_config::ConfigError::Invalid { key, .. }) = &err else {
        panic!("{err}")
    };
    assert_eq!(key, "stream.classes_per_task");
}

#[test]
fn data_with_fewer_classes_than_the_plan_needs_is_refused() {
    // The plan is checked against MNIST's ten classes; the data in hand has six.
    let dataset = synthetic("mnist", 6, [1, 2, 2], 4);
    let err =
        TaskStream::build(&dataset, &config(StreamKind::Split, 5), 0, Device::Cpu).unwrap_err();
    assert_eq!(
        err.to_string(),
        "stream needs 10 classes but dataset `mnist` has 6"
    );
}
