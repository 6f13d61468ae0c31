use super::*;
use retain_stream::seed::SplitMix64;

fn to_vec(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t).unwrap()
}

/// Algorithm R, sample by sample, on the host: the reference the device buffer must match.
fn sequential_reference(capacity: usize, seed: u64, items: &[i64]) -> Vec<i64> {
    let mut schedule = ReservoirSchedule::new(capacity, seed).unwrap();
    let mut slots = vec![-1; capacity];
    for &item in items {
        if let Some(slot) = schedule.next_slot() {
            slots[slot] = item;
        }
    }
    slots.retain(|&s| s >= 0);
    slots
}

#[test]
fn reservoir_inclusion_is_uniform() {
    // 1000 items through a buffer of 100, 20 000 seeds: each item is kept with probability
    // 0.1, so its count c_i is Binomial(20 000, 0.1): mean 2000, sd 42.4. Two checks:
    // * every frequency within 0.1 ± 0.01 (4.7 sd; P(any of 1000 outside) ≈ 3e-3);
    // * Pearson's χ² = Σ (c_i − 2000)² / (20 000 · 0.1 · 0.9) below 1201, the 1 − 1e-5
    //   quantile of χ² with 999 degrees of freedom (Wilson–Hilferty).
    let (items, capacity, runs) = (1000usize, 100usize, 20_000u64);
    let mut counts = vec![0u32; items];
    for seed in 0..runs {
        let mut schedule = ReservoirSchedule::new(capacity, seed).unwrap();
        let mut slots = vec![usize::MAX; capacity];
        for item in 0..items {
            if let Some(slot) = schedule.next_slot() {
                slots[slot] = item;
            }
        }
        assert_eq!(schedule.seen(), items as u64);
        for item in slots {
            counts[item] += 1;
        }
    }
    let expected = runs as f64 * 0.1;
    let mut chi2 = 0.0;
    for (item, &count) in counts.iter().enumerate() {
        let frequency = f64::from(count) / runs as f64;
        assert!(
            (frequency - 0.1).abs() < 0.01,
            "item {item} kept with frequency {frequency}"
        );
        chi2 += (f64::from(count) - expected).powi(2) / (expected * 0.9);
    }
    assert!(chi2 < 1201.0, "χ² = {chi2}");
    // The early items are not favoured: the first and last hundred are kept equally often.
    let first: u32 = counts[..100].iter().sum();
    let last: u32 = counts[900..].iter().sum();
    assert!((f64::from(first) / f64::from(last) - 1.0).abs() < 0.02);
}

#[test]
fn schedule_fills_in_order_then_replaces() {
    let mut schedule = ReservoirSchedule::new(3, 1).unwrap();
    assert_eq!(
        (0..3).map(|_| schedule.next_slot()).collect::<Vec<_>>(),
        vec![Some(0), Some(1), Some(2)]
    );
    // Sample n = 3 is kept with probability 3/4; over many draws that frequency shows.
    let mut kept = 0;
    for seed in 0..4000 {
        let mut s = ReservoirSchedule::new(3, seed).unwrap();
        for _ in 0..3 {
            s.next_slot();
        }
        kept += u32::from(s.next_slot().is_some());
    }
    // Binomial(4000, 0.75): sd 27.4; ±150 is 5.5 sd.
    assert!((2850..=3150).contains(&kept), "{kept}");
}

#[test]
fn device_reservoir_matches_the_sequential_algorithm() {
    let (capacity, seed) = (50, 9);
    let items: Vec<i64> = (0..3000).map(|i| 3 * i + 7).collect();
    let mut reservoir = Reservoir::new(capacity, Some(2), seed, Device::Cpu).unwrap();
    assert!(reservoir.is_empty());
    let mut sizes = SplitMix64::new(4);
    let mut start = 0;
    while start < items.len() {
        // Batches of 1..=37 rows, and one of 1500 (many slot collisions).
        let len = if start == 1000 {
            1500
        } else {
            1 + sizes.below(37) as usize
        }
        .min(items.len() - start);
        let batch = Tensor::from_slice(&items[start..start + len]);
        let logits = Tensor::stack(
            &[batch.to_kind(Kind::Float), -batch.to_kind(Kind::Float)],
            1,
        );
        reservoir.add(&batch, Some(&logits)).unwrap();
        start += len;
    }
    assert_eq!(reservoir.offered(), 3000);
    assert_eq!(reservoir.len(), capacity);
    let stored = to_vec(&reservoir.indices());
    assert_eq!(stored, sequential_reference(capacity, seed, &items));
    // Each slot's logits are the ones recorded with the sample that is in it.
    let logits = Vec::<f32>::try_from(reservoir.logits().unwrap().flatten(0, -1)).unwrap();
    for (slot, &index) in stored.iter().enumerate() {
        assert_eq!(logits[2 * slot], index as f32);
        assert_eq!(logits[2 * slot + 1], -(index as f32));
    }
}

#[test]
fn reservoir_fills_before_replacing_and_samples_distinct_slots() {
    let mut reservoir = Reservoir::new(10, None, 0, Device::Cpu).unwrap();
    assert!(reservoir.sample(4).is_none());
    reservoir
        .add(&Tensor::from_slice(&[5i64, 6, 7]), None)
        .unwrap();
    assert_eq!(to_vec(&reservoir.indices()), vec![5, 6, 7]);
    // Asking for more than is stored returns everything, once.
    let mut all = to_vec(&reservoir.sample(8).unwrap().indices);
    all.sort_unstable();
    assert_eq!(all, vec![5, 6, 7]);
    let replay = reservoir.sample(2).unwrap();
    let drawn = to_vec(&replay.indices);
    assert_eq!(drawn.len(), 2);
    assert_ne!(drawn[0], drawn[1]);
    assert!(drawn.iter().all(|i| [5, 6, 7].contains(i)));
    assert!(replay.logits.is_none());
}

#[test]
fn reservoir_rejects_bad_input() {
    assert_eq!(
        Reservoir::new(0, None, 0, Device::Cpu).unwrap_err(),
        MemoryError::ZeroCapacity {
            what: "reservoir capacity"
        }
    );
    let mut reservoir = Reservoir::new(4, Some(3), 0, Device::Cpu).unwrap();
    let batch = Tensor::from_slice(&[1i64, 2]);
    let err = reservoir
        .add(
            &batch,
            Some(&Tensor::zeros([2, 2], (Kind::Float, Device::Cpu))),
        )
        .unwrap_err();
    assert_eq!(
        err,
        MemoryError::Shape {
            what: "reservoir logits",
            expected: vec![2, 3],
            got: vec![2, 2]
        }
    );
    assert!(reservoir.add(&batch, None).is_err());
    assert!(reservoir.is_empty(), "a rejected batch is not offered");
}

#[test]
fn class_balanced_memory_shares_capacity_equally() {
    // Labels: indices 0..30 class 0, 30..35 class 1, 35..85 class 2, 85..135 class 3.
    let mut labels = vec![0u8; 30];
    labels.extend([1u8; 5]);
    labels.extend([2u8; 50]);
    labels.extend([3u8; 50]);
    let mut memory = ClassBalanced::new(20, 3, Device::Cpu).unwrap();
    let task1: Vec<i64> = (0..35).collect();
    memory.add_task(&task1, &labels).unwrap();
    // Class 1 has only 5 samples: class 0 takes the other 15.
    assert_eq!(
        memory.class_counts(),
        [(0, 15), (1, 5)].into_iter().collect()
    );
    let first = memory.host_indices();
    let task2: Vec<i64> = (35..135).collect();
    memory.add_task(&task2, &labels).unwrap();
    assert_eq!(
        memory.class_counts(),
        [(0, 5), (1, 5), (2, 5), (3, 5)].into_iter().collect()
    );
    let kept = memory.host_indices();
    assert_eq!(kept.len(), 20);
    for &i in &kept {
        // Earlier classes only shrink: what they keep was kept before.
        if labels[i as usize] < 2 {
            assert!(first.contains(&i), "{i} appeared from nowhere");
        }
    }
    let mut distinct = kept.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 20);
    assert_eq!(to_vec(memory.indices()), kept);
    // Sampled replay batches hold stored samples only.
    let drawn = to_vec(&memory.sample(7).unwrap().indices);
    assert_eq!(drawn.len(), 7);
    assert!(drawn.iter().all(|i| kept.contains(i)));

    // Capacity 10 over 3 abundant classes: shares 4, 3, 3.
    let mut memory = ClassBalanced::new(10, 3, Device::Cpu).unwrap();
    memory
        .add_task(&(35..135).collect::<Vec<_>>(), &labels)
        .unwrap();
    memory
        .add_task(&(0..30).collect::<Vec<_>>(), &labels)
        .unwrap();
    let mut shares: Vec<usize> = memory.class_counts().into_values().collect();
    shares.sort_unstable();
    assert_eq!(shares, vec![3, 3, 4]);
}

#[test]
fn class_balanced_memory_rejects_unknown_samples() {
    let mut memory = ClassBalanced::new(4, 0, Device::Cpu).unwrap();
    assert_eq!(
        memory.add_task(&[0, 9], &[1, 2, 3]).unwrap_err(),
        MemoryError::IndexOutOfRange { index: 9, len: 3 }
    );
    assert!(ClassBalanced::new(0, 0, Device::Cpu).is_err());
}

#[test]
fn episodic_memory_keeps_a_subset_per_task() {
    let mut memory = EpisodicMemory::new(3, 5, Device::Cpu).unwrap();
    let first = to_vec(memory.add_task(&(10..20).collect::<Vec<_>>()));
    assert_eq!(first.len(), 3);
    assert!(first.windows(2).all(|w| w[0] < w[1]));
    assert!(first.iter().all(|i| (10..20).contains(i)));
    // Fewer samples than the budget: all of them.
    assert_eq!(to_vec(memory.add_task(&[40, 41])), vec![40, 41]);
    assert_eq!(memory.len(), 2);
    assert_eq!(memory.host()[0], first);
    assert_eq!(
        EpisodicMemory::new(0, 0, Device::Cpu)
            .unwrap_err()
            .to_string(),
        "memories per task must be at least 1 (got 0)"
    );
}

#[test]
fn flat_gradients_follow_parameter_order_and_write_back() {
    use gradients::{flat_grad, flat_grad_of, write_grad};
    let a = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
    let b = Tensor::from_slice(&[3.0f32])
        .view([1, 1])
        .set_requires_grad(true);
    let params = [a.shallow_clone(), b.shallow_clone()];
    // d/da Σa² = 2a = (2, 4); d/db 2Σb = 2.
    let loss = (&a * &a).sum(Kind::Float) + b.sum(Kind::Float) * 2.0;
    let flat = flat_grad_of(&loss, &params);
    assert_eq!(Vec::<f32>::try_from(&flat).unwrap(), vec![2.0, 4.0, 2.0]);
    assert!(!a.grad().defined(), "flat_grad_of leaves p.grad() alone");
    // Only `a` gets a gradient: `b`'s counts as zeros and is skipped on write-back.
    (&a * 3.0).sum(Kind::Float).backward();
    assert_eq!(
        Vec::<f32>::try_from(&flat_grad(&params)).unwrap(),
        vec![3.0, 3.0, 0.0]
    );
    write_grad(&params, &Tensor::from_slice(&[7.0f32, -1.0, 5.0]));
    assert_eq!(Vec::<f32>::try_from(&a.grad()).unwrap(), vec![7.0, -1.0]);
    assert!(!b.grad().defined());
}

/// Gradients kept as consecutive views of one buffer (the trainer's flat optimiser's layout)
/// are viewed as one vector without a copy and written back with one; gradients in storages
/// of their own are not, and take the copying path with the same values.
#[test]
fn gradients_in_one_buffer_are_viewed_whole() {
    use gradients::{flat_grad, flat_grad_view, write_grad};
    let a = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
    let b = Tensor::from_slice(&[3.0f32, 4.0, 5.0])
        .view([3, 1])
        .set_requires_grad(true);
    let params = [a.shallow_clone(), b.shallow_clone()];
    let loss = || (&a * 2.0).sum(Kind::Float) + (&b * &b).sum(Kind::Float);
    loss().backward();
    assert!(flat_grad_view(&params).is_none(), "two storages");
    assert!(
        flat_grad_view(&params[1..]).is_some(),
        "one gradient is its own span"
    );
    // Re-point both gradients at one buffer, as the flat optimiser does.
    let buffer = Tensor::zeros([5], (Kind::Float, Device::Cpu));
    buffer.narrow(0, 0, 2).copy_(&a.grad());
    buffer.narrow(0, 2, 3).copy_(&b.grad().flatten(0, -1));
    a.grad().set_data(&buffer.narrow(0, 0, 2));
    b.grad().set_data(&buffer.narrow(0, 2, 3).view([3, 1]));
    let view = flat_grad_view(&params).expect("consecutive views of one buffer");
    assert_eq!(
        Vec::<f32>::try_from(&view).unwrap(),
        vec![2.0, 2.0, 6.0, 8.0, 10.0]
    );
    assert_eq!(view, flat_grad(&params));
    assert!(
        flat_grad_view(&[b.shallow_clone(), a.shallow_clone()]).is_none(),
        "order counts"
    );
    write_grad(&params, &Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0]));
    assert_eq!(
        Vec::<f32>::try_from(&buffer).unwrap(),
        vec![1.0, 2.0, 3.0, 4.0, 5.0]
    );
    assert_eq!(
        Vec::<f32>::try_from(&b.grad().flatten(0, -1)).unwrap(),
        vec![3.0, 4.0, 5.0]
    );
}

#[test]
fn replay_draws_come_from_the_memory_seed_not_torchs_generator() {
    let fill = |seed: u64| {
        let mut reservoir = Reservoir::new(50, None, seed, Device::Cpu).unwrap();
        reservoir
            .add(&Tensor::arange(50, (Kind::Int64, Device::Cpu)), None)
            .unwrap();
        reservoir
    };
    let draws = |reservoir: &mut Reservoir| -> Vec<Vec<i64>> {
        (0..5)
            .map(|_| to_vec(&reservoir.sample(10).unwrap().indices))
            .collect()
    };
    let (mut a, mut b) = (fill(7), fill(7));
    tch::manual_seed(1);
    let first = draws(&mut a);
    tch::manual_seed(2);
    assert_eq!(first, draws(&mut b), "torch's generator must not matter");
    assert_ne!(first, draws(&mut fill(8)), "another seed, other draws");
    // Successive draws differ, and every draw holds distinct slots.
    assert_ne!(first[0], first[1]);
    for draw in &first {
        let mut distinct = draw.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 10);
    }
}

#[test]
fn sampled_slots_are_uniform_over_the_memory() {
    // 4000 draws of 5 slots out of 20: each slot expected 1000 times (sd ≈ 27); allow 5 sd.
    let mut counts = [0u32; 20];
    for key in 0..4000u32 {
        let key = Tensor::from(i64::from(key.wrapping_mul(2_654_435_761)));
        let slots = to_vec(&sample_slots(20, None, 5, &key));
        for s in slots {
            counts[s as usize] += 1;
        }
    }
    for count in counts {
        assert!((865..=1135).contains(&count), "{counts:?}");
    }
}

#[test]
fn a_filling_memory_draws_the_permutation_of_its_filled_slots() {
    // Slots at or beyond `filled` are never drawn, and the filled ones come in the order a
    // memory of exactly `filled` slots would draw them: a growing reservoir samples as a
    // full one of its current size would.
    for key in [3i64, 77, 123_456] {
        let key = Tensor::from(key);
        for filled in [1i64, 7, 20] {
            let masked = to_vec(&sample_slots(
                40,
                Some(&Tensor::from(filled)),
                filled.min(5),
                &key,
            ));
            assert_eq!(
                masked,
                to_vec(&sample_slots(filled, None, filled.min(5), &key))
            );
            assert!(masked.iter().all(|&s| s < filled), "{masked:?}");
        }
    }
}

#[test]
fn the_host_mirror_of_a_reservoir_resyncs_from_the_device() {
    let mut reservoir = Reservoir::new(8, None, 3, Device::Cpu).unwrap();
    reservoir
        .add(&Tensor::arange(5, (Kind::Int64, Device::Cpu)), None)
        .unwrap();
    assert_eq!((reservoir.offered(), reservoir.len()), (5, 5));
    // What a replayed graph step does: the device count advances, the host's does not.
    let _ = reservoir.offered.g_add_scalar_(6);
    assert_eq!(reservoir.offered(), 5);
    reservoir.sync();
    assert_eq!((reservoir.offered(), reservoir.len()), (11, 8));
    // Draws are counted on the device.
    assert_eq!(reservoir.draws(), 0);
    reservoir.sample(3).unwrap();
    reservoir.sample(3).unwrap();
    assert_eq!(reservoir.draws(), 2);
}

/// Through its named tensors, as a checkpoint carries it.
fn through_tensors(tensors: Vec<(String, Tensor)>) -> StateReader {
    StateReader::new(tensors).unwrap()
}

#[test]
fn a_restored_reservoir_keeps_replaces_and_draws_as_the_original() {
    let mut original = Reservoir::new(6, Some(2), 9, Device::Cpu).unwrap();
    let batch = |start: i64| Tensor::arange_start(start, start + 4, (Kind::Int64, Device::Cpu));
    let logits = |start: i64| {
        batch(start)
            .to_kind(Kind::Float)
            .view([2, 2])
            .repeat([2, 1])
    };
    original.add(&batch(0), Some(&logits(0))).unwrap();
    original.add(&batch(4), Some(&logits(4))).unwrap();
    original.sample(3).unwrap();

    let mut reader = through_tensors(original.snapshot().tensors("memory."));
    let state = ReservoirState::read(&mut reader, "memory.", 6, true).unwrap();
    reader.finish().unwrap();
    assert_eq!((state.offered, state.draws), (8, 1));
    let mut restored = Reservoir::restore(6, Some(2), 9, Device::Cpu, &state).unwrap();
    for start in [8, 12, 16] {
        original.add(&batch(start), Some(&logits(start))).unwrap();
        restored.add(&batch(start), Some(&logits(start))).unwrap();
        let (a, b) = (original.sample(4).unwrap(), restored.sample(4).unwrap());
        assert_eq!(to_vec(&a.indices), to_vec(&b.indices));
        assert!(a.logits.unwrap().equal(&b.logits.unwrap()));
    }
    assert_eq!(to_vec(&original.indices()), to_vec(&restored.indices()));

    // A state of another size or kind is refused, naming what is wrong.
    let mut reader = through_tensors(original.snapshot().tensors("memory."));
    assert_eq!(
        ReservoirState::read(&mut reader, "memory.", 5, true)
            .unwrap_err()
            .to_string(),
        "malformed state: `memory.indices` holds 6 samples, but a reservoir of 5 slots offered 20 holds 5"
    );
    let mut reader = through_tensors(original.snapshot().tensors("memory."));
    ReservoirState::read(&mut reader, "memory.", 6, false).unwrap();
    assert_eq!(
        reader.finish().unwrap_err().to_string(),
        "malformed state: unexpected tensor(s) `memory.logits`"
    );
    let mut reader = through_tensors(vec![("memory.indices".into(), Tensor::from(1.0f32))]);
    assert_eq!(
        ReservoirState::read(&mut reader, "memory.", 6, false)
            .unwrap_err()
            .to_string(),
        "malformed state: `memory.indices` must be Int64 with 1 dimension(s), found Float of shape []"
    );
}

#[test]
fn restored_class_balanced_and_episodic_memories_continue_as_the_originals() {
    let labels: Vec<u8> = (0..60).map(|i| (i % 6) as u8).collect();
    let mut original = ClassBalanced::new(10, 4, Device::Cpu).unwrap();
    original
        .add_task(&(0..20).collect::<Vec<_>>(), &labels)
        .unwrap();
    original.sample(3).unwrap();
    let mut reader = through_tensors(original.snapshot().tensors("m."));
    let state = ClassBalancedState::read(&mut reader, "m.", 10).unwrap();
    reader.finish().unwrap();
    assert_eq!(state, original.snapshot());
    let mut restored = ClassBalanced::restore(10, 4, Device::Cpu, &state).unwrap();
    assert_eq!(
        to_vec(&original.sample(5).unwrap().indices),
        to_vec(&restored.sample(5).unwrap().indices)
    );
    let task2: Vec<i64> = (20..60).collect();
    original.add_task(&task2, &labels).unwrap();
    restored.add_task(&task2, &labels).unwrap();
    assert_eq!(original.host_indices(), restored.host_indices());
    assert_eq!(
        to_vec(&original.sample(5).unwrap().indices),
        to_vec(&restored.sample(5).unwrap().indices)
    );
    let mut tensors = original.snapshot().tensors("m.");
    tensors[1].1 = Tensor::from_slice(&[1i64, 1]);
    assert!(
        ClassBalancedState::read(&mut through_tensors(tensors), "m.", 10)
            .unwrap_err()
            .to_string()
            .starts_with("malformed state: `m.classes` lists 6 classes but `m.class_counts` 2")
    );

    let mut original = EpisodicMemory::new(3, 5, Device::Cpu).unwrap();
    original.add_task(&(10..20).collect::<Vec<_>>());
    let mut reader = through_tensors(original.snapshot().tensors("m."));
    let state = EpisodicState::read(&mut reader, "m.", 3).unwrap();
    reader.finish().unwrap();
    let mut restored = EpisodicMemory::restore(3, 5, Device::Cpu, &state).unwrap();
    let next: Vec<i64> = (30..50).collect();
    assert_eq!(
        to_vec(original.add_task(&next)),
        to_vec(restored.add_task(&next))
    );
    assert_eq!(original.host(), restored.host());
    let mut reader = through_tensors(original.snapshot().tensors("m."));
    assert_eq!(
        EpisodicState::read(&mut reader, "m.", 2)
            .unwrap_err()
            .to_string(),
        "malformed state: `m.task0` holds 3 samples, more than `memories_per_task` = 2"
    );
}
