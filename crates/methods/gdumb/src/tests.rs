use super::*;
use retain_train::testkit::{MethodFixture, snapshot};

fn method(toml: &str) -> Result<Box<dyn Method>, TrainError> {
    from_params(&toml::from_str(toml).unwrap())
}

fn gdumb(memory_size: usize) -> Gdumb {
    Gdumb::new(Params {
        memory_size,
        mask_unseen: true,
    })
    .unwrap()
}

fn contents(sampler: &GreedySampler) -> Vec<(i64, Vec<i64>)> {
    sampler.classes().to_vec()
}

#[test]
fn greedy_sampler_follows_a_hand_trace() {
    // Capacity 4; dataset index = position in the stream. `twin` replays the eviction draws.
    let mut sampler = GreedySampler::new(4);
    let mut rng = SplitMix64::new(7);
    let mut twin = SplitMix64::new(7);
    let mut offer = |s: &mut GreedySampler, index: i64, label: i64| s.offer(index, label, &mut rng);

    // One class, k_c = 4: the first four are stored, the fifth refused.
    for i in 0..4 {
        assert_eq!(offer(&mut sampler, i, 5), Offer::Stored);
    }
    assert_eq!(contents(&sampler), vec![(5, vec![0, 1, 2, 3])]);
    assert_eq!(offer(&mut sampler, 4, 5), Offer::Refused);
    assert_eq!(sampler.len(), 4);

    // New class 2, memory full: one of class 5's four goes.
    let mut fives = vec![0, 1, 2, 3];
    let gone = fives.remove(twin.below(4) as usize);
    assert_eq!(offer(&mut sampler, 5, 2), Offer::Replaced { evicted: gone });
    assert_eq!(contents(&sampler), vec![(5, fives.clone()), (2, vec![5])]);

    // k_c = 2: class 2 (1 sample) takes one more, evicting from class 5 (3 samples).
    let gone = fives.remove(twin.below(3) as usize);
    assert_eq!(offer(&mut sampler, 6, 2), Offer::Replaced { evicted: gone });
    assert_eq!(
        contents(&sampler),
        vec![(5, fives.clone()), (2, vec![5, 6])]
    );

    // Both classes at their share of 2: refused.
    assert_eq!(offer(&mut sampler, 7, 2), Offer::Refused);
    assert_eq!(offer(&mut sampler, 8, 5), Offer::Refused);

    // New class 7: classes 5 and 2 are equally large, the earlier seen (5) gives one up.
    let gone = fives.remove(twin.below(2) as usize);
    assert_eq!(offer(&mut sampler, 9, 7), Offer::Replaced { evicted: gone });
    assert_eq!(
        contents(&sampler),
        vec![(5, fives.clone()), (2, vec![5, 6]), (7, vec![9])]
    );
    assert_eq!(sampler.counts(), vec![(5, 1), (2, 2), (7, 1)]);

    // k_c = 4 / 3 = 1: classes 7 and 5 are at their share.
    assert_eq!(offer(&mut sampler, 10, 7), Offer::Refused);
    assert_eq!(offer(&mut sampler, 11, 5), Offer::Refused);

    // New class 9: class 2 is now the largest.
    let mut twos = vec![5, 6];
    let gone = twos.remove(twin.below(2) as usize);
    assert_eq!(
        offer(&mut sampler, 12, 9),
        Offer::Replaced { evicted: gone }
    );
    assert_eq!(
        contents(&sampler),
        vec![
            (5, fives.clone()),
            (2, twos.clone()),
            (7, vec![9]),
            (9, vec![12])
        ]
    );
    assert_eq!(sampler.counts(), vec![(5, 1), (2, 1), (7, 1), (9, 1)]);
    let mut expected = fives;
    expected.extend(twos);
    expected.extend([9, 12]);
    assert_eq!(sampler.indices(), expected);
}

#[test]
fn a_class_at_its_share_is_refused_while_the_memory_has_room() {
    let mut sampler = GreedySampler::new(5);
    let mut rng = SplitMix64::new(0);
    for (i, label) in [0, 0, 1, 1].into_iter().enumerate() {
        assert_eq!(sampler.offer(i as i64, label, &mut rng), Offer::Stored);
    }
    // k_c = 5 / 2 = 2 and class 0 holds 2: refused with one slot free.
    assert_eq!(sampler.offer(4, 0, &mut rng), Offer::Refused);
    assert_eq!(sampler.counts(), vec![(0, 2), (1, 2)]);
    // A new class takes the free slot without evicting.
    assert_eq!(sampler.offer(5, 3, &mut rng), Offer::Stored);
    assert_eq!(sampler.len(), 5);
}

#[test]
fn every_task_trains_from_the_initial_weights_on_the_memory_alone() {
    let fx = MethodFixture::new();
    let initial = snapshot(&fx.network);
    let mut method = gdumb(6);
    method.before_task(&fx.task(0)).unwrap();
    assert_eq!(method.sampler().counts().len(), 2);
    assert_eq!(
        method.training_indices(&fx.task(0)),
        method.sampler().indices()
    );
    assert!(method.fresh_optimizer_each_task() && method.capturable());
    // Training moves the weights; the next task starts from the recorded ones again.
    {
        let _no_grad = tch::no_grad_guard();
        for (_, p) in fx.network.vars.variables() {
            let _ = p.shallow_clone().g_add_scalar_(0.5);
        }
    }
    method.before_task(&fx.task(1)).unwrap();
    for (name, value) in snapshot(&fx.network) {
        assert!(value.equal(&initial[&name]), "{name} was not reset");
    }
    // Four classes seen, 6 / 4 = 1 per class.
    let counts = method.sampler().counts();
    assert_eq!(counts.len(), 4);
    assert!(counts.iter().all(|&(_, n)| n >= 1), "{counts:?}");
    assert_eq!(method.sampler().len(), 6);
    let labels = fx.stream.train_index_labels();
    for (class, stored) in method.sampler().classes() {
        assert!(
            stored
                .iter()
                .all(|&i| i64::from(labels[i as usize]) == *class)
        );
    }
}

#[test]
fn unseen_classes_fall_below_every_seen_one_in_their_own_order() {
    let logits = Tensor::from_slice(&[1.0f32, 5.0, 3.0, -2.0, 0.0, 4.0]).view([2, 3]);
    let seen = Tensor::from_slice(&[1u8, 0, 0])
        .to_kind(Kind::Bool)
        .view([1, 3]);
    let masked = mask_unseen(&logits, &seen);
    // Row ranges 4 and 6: unseen logits move down by 5 and 7.
    let expected = Tensor::from_slice(&[1.0f32, 0.0, -2.0, -2.0, -7.0, -3.0]).view([2, 3]);
    assert!(masked.allclose(&expected, 1e-6, 1e-6, false), "{masked}");
    assert_eq!(
        Vec::<i64>::try_from(&masked.argmax(-1, false)).unwrap(),
        vec![0, 0]
    );

    let fx = MethodFixture::new();
    let mut method = gdumb(10);
    let inputs = fx.batch(0, 4).1.inputs;
    assert!(method.eval_logits(&fx.network, &inputs).is_none());
    method.before_task(&fx.task(0)).unwrap();
    let scores = method.eval_logits(&fx.network, &inputs).unwrap();
    let predictions = Vec::<i64>::try_from(&scores.argmax(-1, false)).unwrap();
    let seen: Vec<i64> = method.sampler().counts().iter().map(|c| c.0).collect();
    assert!(
        predictions.iter().all(|p| seen.contains(p)),
        "{predictions:?}"
    );
    let mut unmasked = Gdumb::new(Params {
        memory_size: 10,
        mask_unseen: false,
    })
    .unwrap();
    unmasked.before_task(&fx.task(0)).unwrap();
    assert!(unmasked.eval_logits(&fx.network, &inputs).is_none());
}

#[test]
fn state_round_trip_continues_the_run_exactly() {
    let fx = MethodFixture::new();
    let initial = snapshot(&fx.network);
    let mut original = gdumb(7);
    assert!(original.state().is_empty());
    original.before_task(&fx.task(0)).unwrap();
    original.before_task(&fx.task(1)).unwrap();
    let state = original.state();
    let mut names: Vec<&str> = state.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    assert!(names.contains(&"memory.classes") && names.contains(&"memory.indices"));
    assert!(names.contains(&"memory.class_counts"));
    assert_eq!(names.len(), 3 + initial.len());

    let mut restored = gdumb(7);
    restored.load_state(state).unwrap();
    assert_eq!(restored.sampler(), original.sampler());
    for (name, value) in restored.initial_weights().unwrap() {
        assert!(value.equal(&initial[name]), "{name}");
    }
    let again = restored.state();
    for ((a, x), (b, y)) in original.state().iter().zip(&again) {
        assert_eq!(a, b);
        assert!(x.equal(y), "{a}");
    }

    // Both continue alike from trained (here: moved) weights.
    {
        let _no_grad = tch::no_grad_guard();
        for (_, p) in fx.network.vars.variables() {
            let _ = p.shallow_clone().g_mul_scalar_(3.0);
        }
    }
    restored.before_task(&fx.task(2)).unwrap();
    for (name, value) in snapshot(&fx.network) {
        assert!(value.equal(&initial[&name]), "{name} was not reset");
    }
    original.before_task(&fx.task(2)).unwrap();
    assert_eq!(restored.sampler(), original.sampler());

    // Malformed states are refused.
    let mut fresh = gdumb(7);
    let mut state = original.state();
    state.retain(|(n, _)| n.starts_with("memory."));
    let error = fresh.load_state(state).unwrap_err().to_string();
    assert!(error.contains("no initial weights"), "{error}");
    let mut state = original.state();
    state.retain(|(n, _)| n != "memory.class_counts");
    let error = fresh.load_state(state).unwrap_err().to_string();
    assert!(error.contains("memory.class_counts"), "{error}");
    let error = gdumb(3)
        .load_state(original.state())
        .unwrap_err()
        .to_string();
    assert!(error.contains("exceed `memory_size` 3"), "{error}");
    fresh.load_state(Vec::new()).unwrap();
    assert!(fresh.sampler().is_empty() && fresh.initial_weights().is_none());
}

#[test]
fn bad_hyper_parameters_are_refused_by_name() {
    let error = method("memory_size = 0").err().unwrap().to_string();
    assert!(
        error.contains("`memory_size` must be at least 1"),
        "{error}"
    );
    let error = method("memory_size = 1152921504606846976")
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("method.memory_size"), "{error}");
    let error = method("mask_unseen = 1").err().unwrap().to_string();
    assert!(error.contains("mask_unseen"), "{error}");
    let error = method("memory = 10").err().unwrap().to_string();
    assert!(error.contains("unknown key `memory`"), "{error}");
    assert_eq!(Params::default().memory_size, 500);
    assert!(Params::default().mask_unseen);
    method(DESCRIPTOR.example).unwrap();
}
