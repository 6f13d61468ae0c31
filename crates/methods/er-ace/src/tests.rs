use super::*;
use retain_config::TrainingLoss;
use retain_train::testkit::{MethodFixture as Fixture, scalar};

fn table(source: &str) -> toml::Table {
    source.parse().unwrap()
}

fn bools(t: &Tensor) -> Vec<bool> {
    Vec::<bool>::try_from(t.flatten(0, -1)).unwrap()
}

/// `[classes]` bool, true at `on`.
fn class_set(classes: usize, on: &[usize]) -> Vec<bool> {
    (0..classes).map(|c| on.contains(&c)).collect()
}

fn seen(classes: usize, on: &[usize]) -> Tensor {
    Tensor::from_slice(&class_set(classes, on))
}

fn labels(values: &[i64]) -> Tensor {
    Tensor::from_slice(values)
}

#[test]
fn parameters_have_defaults_and_are_checked() {
    let params: Params = DESCRIPTOR.parse(&table("")).unwrap();
    assert_eq!(params, Params::default());
    assert_eq!(
        params,
        Params {
            buffer_size: 500,
            replay_batch_size: 10
        }
    );
    let example: Params = DESCRIPTOR.parse(&table(DESCRIPTOR.example)).unwrap();
    ErAce::new(example).unwrap();
    let error = |source: &str| from_params(&table(source)).err().unwrap().to_string();
    let err = error("buffer_sise = 7");
    assert!(err.contains("unknown key `buffer_sise`"), "{err}");
    let err = error("buffer_size = 0");
    assert!(err.contains("`buffer_size` must be at least 1"), "{err}");
    let err = error("replay_batch_size = 0");
    assert!(
        err.contains("`replay_batch_size` must be at least 1"),
        "{err}"
    );
    let err = error("weight = 1.0");
    assert!(err.contains("unknown key `weight`"), "{err}");
}

#[test]
fn a_buffer_size_beyond_the_host_memory_is_refused_naming_the_key() {
    let err = from_params(&table("buffer_size = 1000000000000"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`method.buffer_size` = 1000000000000 needs at least"),
        "{err}"
    );
    assert!(err.contains("more than this host's"), "{err}");
}

#[test]
fn present_classes_are_the_batch_labels() {
    let present = present_classes(&labels(&[3, 2, 3, 3]), 6);
    assert_eq!(bools(&present), class_set(6, &[2, 3]));
}

#[test]
fn the_current_term_keeps_present_classes_and_those_from_the_largest_seen_on() {
    let kept = |batch: &[i64], seen_classes: &[usize]| {
        let present = present_classes(&labels(batch), 10);
        bools(&kept_classes(&present, &seen(10, seen_classes)))
    };
    // Second task of a split stream: old classes 0 and 1 are excluded, the unseen 4..9 kept.
    assert_eq!(
        kept(&[2, 3, 2], &[0, 1, 2, 3]),
        class_set(10, &[2, 3, 4, 5, 6, 7, 8, 9])
    );
    // The largest class seen (3) is kept even when absent from the batch; 2 is present.
    assert_eq!(
        kept(&[2, 2], &[0, 1, 2, 3]),
        class_set(10, &[2, 3, 4, 5, 6, 7, 8, 9])
    );
    // Absent and below the largest seen: excluded (2 here).
    assert_eq!(
        kept(&[3, 3], &[0, 1, 2, 3]),
        class_set(10, &[3, 4, 5, 6, 7, 8, 9])
    );
    // Largest seen 8 < C − 1: 8 and 9 kept.
    assert_eq!(
        kept(&[8], &[0, 1, 2, 3, 4, 5, 6, 7, 8]),
        class_set(10, &[8, 9])
    );
    // Once the last class (9) is seen only the present classes are kept, even 9 absent.
    assert_eq!(
        kept(&[4, 5], &[0, 1, 2, 3, 4, 5, 9]),
        class_set(10, &[4, 5])
    );
    assert_eq!(
        kept(&[8], &(0..10).collect::<Vec<_>>()),
        class_set(10, &[8])
    );
}

/// `−log softmax(z)_y` over the classes `kept`, in f64.
fn hand_ce(z: &[f64], y: usize, kept: &[usize]) -> f64 {
    let log_sum = kept.iter().map(|&c| z[c].exp()).sum::<f64>().ln();
    log_sum - z[y]
}

#[test]
fn the_masked_cross_entropy_is_a_softmax_over_the_kept_classes() {
    let rows = [[1.0f32, 2.0, 3.0, 0.5, -1.0], [0.3, -0.2, 1.5, 2.5, 0.0]];
    let logits = Tensor::from_slice(&rows.concat()).view([2, 5]);
    let targets = labels(&[2, 3]);
    let kept = Tensor::from_slice(&class_set(5, &[2, 3, 4]));
    let masked = mask_logits(&logits, &kept);
    assert_eq!(
        bools(&masked.isinf()),
        [
            true, true, false, false, false, true, true, false, false, false
        ]
    );
    let loss = scalar(&masked.cross_entropy_for_logits(&targets));
    let z = |r: usize| rows[r].map(f64::from);
    let expected = (hand_ce(&z(0), 2, &[2, 3, 4]) + hand_ce(&z(1), 3, &[2, 3, 4])) / 2.0;
    assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
    // The excluded outputs get no gradient.
    let logits = logits.set_requires_grad(true);
    mask_logits(&logits, &kept)
        .cross_entropy_for_logits(&targets)
        .backward();
    let grad = logits.grad();
    assert_eq!(
        bools(&grad.ne(0.0)),
        [
            false, false, true, true, true, false, false, true, true, true
        ]
    );
}

/// A fresh method on the fixture with an explicit memory size.
fn method(buffer_size: usize, replay_batch_size: usize) -> ErAce {
    ErAce::new(Params {
        buffer_size,
        replay_batch_size,
    })
    .unwrap()
}

#[test]
fn the_first_task_is_plain_cross_entropy_and_fills_the_memory() {
    let fx = Fixture::new();
    let mut method = method(50, 50);
    method.before_task(&fx.task(0)).unwrap();
    assert!(method.capture_ready());
    for n in [6, 4] {
        let (indices, batch) = fx.batch(0, n);
        let loss = method.loss(&fx.step(0, &indices), &batch).unwrap();
        let plain = fx
            .network
            .model
            .forward_t(&batch.inputs, true)
            .cross_entropy_for_logits(&batch.labels);
        assert_eq!(scalar(&loss), scalar(&plain));
    }
    assert_eq!(method.memory_len(), 10);
    assert_eq!(method.seen_classes(), [0, 1]);
    assert!(method.capture_ready(), "no replay on the first task");
}

/// Task 0 stores 6 samples; a task-1 step replays all of them (6 < 50) and masks the current
/// batch's logits to `{2, …, 9}`: the loss is the masked cross-entropy of the batch plus the
/// full cross-entropy of the memory, computed here by hand from the model's outputs.
#[test]
fn later_tasks_add_the_replayed_cross_entropy_to_the_masked_one() {
    let fx = Fixture::new();
    let mut method = method(50, 50);
    method.before_task(&fx.task(0)).unwrap();
    let (first_indices, first) = fx.batch(0, 6);
    let _ = method.loss(&fx.step(0, &first_indices), &first).unwrap();
    method.after_task(&fx.task(0)).unwrap();
    method.before_task(&fx.task(1)).unwrap();
    let (indices, batch) = fx.batch(1, 10);
    let loss = method.loss(&fx.step(1, &indices), &batch).unwrap();
    assert_eq!(method.seen_classes(), [0, 1, 2, 3]);
    assert_eq!(method.memory_len(), 16);

    let model = &fx.network.model;
    let current =
        Vec::<f32>::try_from(model.forward_t(&batch.inputs, true).flatten(0, -1)).unwrap();
    let current_labels = Vec::<i64>::try_from(&batch.labels).unwrap();
    let old = Vec::<f32>::try_from(model.forward_t(&first.inputs, true).flatten(0, -1)).unwrap();
    let old_labels = Vec::<i64>::try_from(&first.labels).unwrap();
    let mean_ce = |outputs: &[f32], targets: &[i64], kept: &[usize]| {
        targets
            .iter()
            .enumerate()
            .map(|(i, &y)| {
                let z: Vec<f64> = outputs[i * 10..(i + 1) * 10]
                    .iter()
                    .map(|&v| v.into())
                    .collect();
                hand_ce(&z, y as usize, kept)
            })
            .sum::<f64>()
            / targets.len() as f64
    };
    let all: Vec<usize> = (0..10).collect();
    let expected = mean_ce(&current, &current_labels, &[2, 3, 4, 5, 6, 7, 8, 9])
        + mean_ce(&old, &old_labels, &all);
    assert!(
        (scalar(&loss) - expected).abs() < 1e-5,
        "{} vs {expected}",
        scalar(&loss)
    );
    // Plain replay's loss differs: the current batch's softmax also spans classes 0 and 1.
    let unmasked = mean_ce(&current, &current_labels, &all) + mean_ce(&old, &old_labels, &all);
    assert!((unmasked - expected).abs() > 1e-4);
}

/// Under `loss = "task_il"` both terms are restricted to each sample's own task on top of the
/// mask: the current batch (both classes of task 1 present) over `{2, 3}`, the replayed
/// task-0 samples over `{0, 1}`.
#[test]
fn under_the_task_il_training_loss_each_term_keeps_its_samples_own_task() {
    let fx = Fixture::new();
    let mut method = method(50, 50);
    method.before_task(&fx.task(0)).unwrap();
    let (first_indices, first) = fx.batch(0, 6);
    let mut step = fx.step(0, &first_indices);
    step.loss = TrainingLoss::TaskIl;
    let _ = method.loss(&step, &first).unwrap();
    method.before_task(&fx.task(1)).unwrap();
    let (indices, batch) = fx.batch(1, 10);
    let mut step = fx.step(1, &indices);
    step.loss = TrainingLoss::TaskIl;
    let loss = method.loss(&step, &batch).unwrap();
    let model = &fx.network.model;
    let restricted = |inputs: &Tensor, targets: &Tensor, kept: &[usize]| {
        let kept = Tensor::from_slice(&class_set(10, kept));
        scalar(
            &mask_logits(&model.forward_t(inputs, true), &kept).cross_entropy_for_logits(targets),
        )
    };
    let expected = restricted(&batch.inputs, &batch.labels, &[2, 3])
        + restricted(&first.inputs, &first.labels, &[0, 1]);
    assert!(
        (scalar(&loss) - expected).abs() < 1e-5,
        "{} vs {expected}",
        scalar(&loss)
    );
}

#[test]
fn capture_waits_for_a_full_replay_batch_after_the_first_task() {
    let fx = Fixture::new();
    let mut method = method(20, 8);
    method.before_task(&fx.task(0)).unwrap();
    let (indices, batch) = fx.batch(0, 5);
    let _ = method.loss(&fx.step(0, &indices), &batch).unwrap();
    method.before_task(&fx.task(1)).unwrap();
    assert!(!method.capture_ready(), "5 stored, 8 replayed per step");
    let (indices, batch) = fx.batch(1, 5);
    let _ = method.loss(&fx.step(1, &indices), &batch).unwrap();
    assert!(method.capture_ready());
}

fn copied(state: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    state.iter().map(|(n, t)| (n.clone(), t.copy())).collect()
}

fn assert_same_state(a: &[(String, Tensor)], b: &[(String, Tensor)]) {
    let names = |s: &[(String, Tensor)]| s.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(a), names(b));
    for ((name, x), (_, y)) in a.iter().zip(b) {
        assert!(x.equal(y), "`{name}` differs: {x:?} vs {y:?}");
    }
}

/// Steps of tasks 0 and 1, the state, then a step of task 2 in the original and in a fresh
/// method given the state: the same loss, bit for bit, and the same state.
#[test]
fn state_round_trips_into_a_fresh_method() {
    let fx = Fixture::new();
    let mut original = method(8, 4);
    for task in [0, 1] {
        original.before_task(&fx.task(task)).unwrap();
        for n in [5, 6] {
            let (indices, batch) = fx.batch(task, n);
            let _ = original.loss(&fx.step(task, &indices), &batch).unwrap();
        }
        original.after_task(&fx.task(task)).unwrap();
    }
    let state = original.state();
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "memory.indices",
            "memory.offered",
            "memory.draws",
            "seen_classes"
        ]
    );
    // 22 samples offered to 8 slots, two draws (task 0 does not replay).
    assert_eq!(state[0].1.size(), [8]);
    assert_eq!(state[1].1.int64_value(&[]), 22);
    assert_eq!(state[2].1.int64_value(&[]), 2);
    assert_eq!(
        Vec::<i64>::try_from(&state[3].1).unwrap(),
        [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    );

    let mut restored = method(8, 4);
    restored.load_state(copied(&state)).unwrap();
    assert_same_state(&restored.state(), &state);
    let (indices, batch) = fx.batch(2, 6);
    let mut losses = Vec::new();
    for method in [&mut original, &mut restored] {
        method.before_task(&fx.task(2)).unwrap();
        losses.push(scalar(&method.loss(&fx.step(2, &indices), &batch).unwrap()));
    }
    assert_eq!(losses[0], losses[1]);
    assert_same_state(&original.state(), &restored.state());
    assert_eq!(restored.seen_classes(), [0, 1, 2, 3, 4, 5]);
}

#[test]
fn malformed_state_is_refused_naming_the_tensor() {
    let state = |seen: Tensor| {
        vec![
            ("memory.indices".to_owned(), Tensor::from_slice(&[3i64, 4])),
            ("memory.offered".to_owned(), Tensor::from(2i64)),
            ("memory.draws".to_owned(), Tensor::from(0i64)),
            ("seen_classes".to_owned(), seen),
        ]
    };
    let error =
        |state: Vec<(String, Tensor)>| method(8, 4).load_state(state).unwrap_err().to_string();
    let ok = || Tensor::from_slice(&[1i64, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    method(8, 4).load_state(state(ok())).unwrap();
    let mut missing = state(ok());
    missing.pop();
    assert_eq!(
        error(missing),
        "method `er-ace` failed: malformed state: no tensor `seen_classes`"
    );
    assert_eq!(
        error(state(Tensor::from_slice(&[
            2i64, 0, 0, 0, 0, 0, 0, 0, 0, 0
        ]))),
        "method `er-ace` failed: malformed state: `seen_classes` must hold only 0 and 1"
    );
    let mut extra = state(ok());
    extra.push((
        "memory.logits".into(),
        Tensor::zeros([2, 3], tch::kind::FLOAT_CPU),
    ));
    assert_eq!(
        error(extra),
        "method `er-ace` failed: malformed state: unexpected tensor(s) `memory.logits`"
    );
    // The classes are checked against the stream when the memory is rebuilt.
    let fx = Fixture::new();
    let mut short = method(8, 4);
    short
        .load_state(state(Tensor::from_slice(&[1i64, 1, 0])))
        .unwrap();
    let err = short.before_task(&fx.task(1)).unwrap_err().to_string();
    assert_eq!(
        err,
        "method `er-ace` failed: malformed state: `seen_classes` has 3 classes, the stream 10"
    );
}
