use super::*;
use retain_train::testkit::{MethodFixture as Fixture, scalar};

fn table(source: &str) -> toml::Table {
    source.parse().unwrap()
}

#[test]
fn parameters_have_defaults_and_are_checked() {
    let params: Params = DESCRIPTOR.parse(&table("")).unwrap();
    assert_eq!(params, Params::default());
    let params: Params = DESCRIPTOR
        .parse(&table(
            "buffer_size = 7\nreplay_batch_size = 3\nbuffer = \"class_balanced\"",
        ))
        .unwrap();
    assert_eq!(params.buffer, BufferKind::ClassBalanced);
    let err = from_params(&table("buffer_sise = 7"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("unknown key `buffer_sise`"), "{err}");
    let err = from_params(&table("buffer = \"fifo\""))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`buffer` must be \"reservoir\" | \"class_balanced\""),
        "{err}"
    );
    let err = from_params(&table("replay_batch_size = 0"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("`replay_batch_size` must be at least 1"),
        "{err}"
    );
}

#[test]
fn reservoir_replay_trains_on_the_batch_plus_the_memory() {
    let fx = Fixture::new();
    let mut method = Replay::new(Params {
        buffer_size: 50,
        replay_batch_size: 50,
        buffer: BufferKind::Reservoir,
    })
    .unwrap();
    method.before_task(&fx.task(0)).unwrap();
    // Empty memory: plain cross-entropy of the batch, then the batch is remembered.
    let (first_indices, first) = fx.batch(0, 6);
    let loss = method.loss(&fx.step(0, &first_indices), &first).unwrap();
    let plain = fx
        .network
        .model
        .forward_t(&first.inputs, true)
        .cross_entropy_for_logits(&first.labels);
    assert_eq!(scalar(&loss), scalar(&plain));
    assert_eq!(method.memory_len(), 6);
    // Second batch: the replay batch is the whole memory (6 < 50), so the loss is the
    // cross-entropy of the 10 + 6 samples together, whatever order they were drawn in.
    let (indices, batch) = fx.batch(1, 10);
    let loss = method.loss(&fx.step(1, &indices), &batch).unwrap();
    let inputs = Tensor::cat(&[&batch.inputs, &first.inputs], 0);
    let labels = Tensor::cat(&[&batch.labels, &first.labels], 0);
    let expected = fx
        .network
        .model
        .forward_t(&inputs, true)
        .cross_entropy_for_logits(&labels);
    assert!((scalar(&loss) - scalar(&expected)).abs() < 1e-6);
    assert_eq!(method.memory_len(), 16);
}

#[test]
fn class_balanced_replay_fills_at_task_ends() {
    let fx = Fixture::new();
    let mut method = Replay::new(Params {
        buffer_size: 12,
        replay_batch_size: 4,
        buffer: BufferKind::ClassBalanced,
    })
    .unwrap();
    method.before_task(&fx.task(0)).unwrap();
    let (indices, batch) = fx.batch(0, 5);
    let loss = method.loss(&fx.step(0, &indices), &batch).unwrap();
    let plain = fx
        .network
        .model
        .forward_t(&batch.inputs, true)
        .cross_entropy_for_logits(&batch.labels);
    assert_eq!(scalar(&loss), scalar(&plain));
    assert_eq!(method.memory_len(), 0, "filled at task ends only");
    method.after_task(&fx.task(0)).unwrap();
    assert_eq!(method.memory_len(), 12);
    method.after_task(&fx.task(1)).unwrap();
    let Some(Memory::ClassBalanced(memory)) = &method.memory else {
        panic!("class-balanced memory expected");
    };
    assert_eq!(
        memory.class_counts(),
        [(0, 3), (1, 3), (2, 3), (3, 3)].into_iter().collect()
    );
}

#[test]
fn a_buffer_size_beyond_the_host_memory_is_refused_naming_the_key() {
    let params: toml::Table = toml::from_str("buffer_size = 1000000000000").unwrap();
    let err = from_params(&params).err().unwrap().to_string();
    assert!(
        err.contains("`method.buffer_size` = 1000000000000 needs at least"),
        "{err}"
    );
    assert!(err.contains("more than this host's"), "{err}");
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

/// Three steps of task 0 (and its end), the state, then one step of task 1 in the original
/// and in a fresh method given the state: the same loss, bit for bit, and the same state.
fn round_trip(buffer: BufferKind) -> Vec<(String, Tensor)> {
    let fx = Fixture::new();
    let params = Params {
        buffer_size: 8,
        replay_batch_size: 4,
        buffer,
    };
    let mut original = Replay::new(params.clone()).unwrap();
    original.before_task(&fx.task(0)).unwrap();
    for n in [5, 6, 7] {
        let (indices, batch) = fx.batch(0, n);
        let _ = original.loss(&fx.step(0, &indices), &batch).unwrap();
    }
    original.after_task(&fx.task(0)).unwrap();
    let state = original.state();

    let mut restored = Replay::new(params).unwrap();
    restored.load_state(copied(&state)).unwrap();
    assert_same_state(&restored.state(), &state);
    let (indices, batch) = fx.batch(1, 6);
    let mut losses = Vec::new();
    for method in [&mut original, &mut restored] {
        method.before_task(&fx.task(1)).unwrap();
        losses.push(scalar(&method.loss(&fx.step(1, &indices), &batch).unwrap()));
    }
    assert_eq!(losses[0], losses[1]);
    assert_same_state(&original.state(), &restored.state());
    state
}

#[test]
fn reservoir_state_round_trips_into_a_fresh_method() {
    let state = round_trip(BufferKind::Reservoir);
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["memory.indices", "memory.offered", "memory.draws"]);
    // 18 samples offered to 8 slots, two draws (the first step had nothing to draw).
    assert_eq!(state[0].1.size(), [8]);
    assert_eq!(state[1].1.int64_value(&[]), 18);
    assert_eq!(state[2].1.int64_value(&[]), 2);
}

#[test]
fn class_balanced_state_round_trips_into_a_fresh_method() {
    let state = round_trip(BufferKind::ClassBalanced);
    let names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "memory.classes",
            "memory.class_counts",
            "memory.indices",
            "memory.rng",
            "memory.draws"
        ]
    );
    assert_eq!(state[2].1.size(), [8]);
}

#[test]
fn malformed_state_is_refused_naming_the_tensor() {
    let params = |buffer| Params {
        buffer_size: 8,
        replay_batch_size: 4,
        buffer,
    };
    let error = |buffer, state: Vec<(String, Tensor)>| {
        Replay::new(params(buffer))
            .unwrap()
            .load_state(state)
            .unwrap_err()
            .to_string()
    };
    let reservoir = || {
        vec![
            ("memory.indices".to_owned(), Tensor::from_slice(&[3i64, 4])),
            ("memory.offered".to_owned(), Tensor::from(2i64)),
            ("memory.draws".to_owned(), Tensor::from(0i64)),
        ]
    };
    let mut method = Replay::new(params(BufferKind::Reservoir)).unwrap();
    method.load_state(reservoir()).unwrap();
    assert_eq!(
        error(BufferKind::ClassBalanced, reservoir()),
        "method `replay` failed: malformed state: no tensor `memory.classes`"
    );
    let mut extra = reservoir();
    extra.push((
        "memory.logits".into(),
        Tensor::zeros([2, 3], tch::kind::FLOAT_CPU),
    ));
    assert_eq!(
        error(BufferKind::Reservoir, extra),
        "method `replay` failed: malformed state: unexpected tensor(s) `memory.logits`"
    );
    let mut short = reservoir();
    short[1].1 = Tensor::from(3i64);
    assert_eq!(
        error(BufferKind::Reservoir, short),
        "method `replay` failed: malformed state: `memory.indices` holds 2 samples, but a \
         reservoir of 8 slots offered 3 holds 3"
    );
}
