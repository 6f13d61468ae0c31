//! Batches: gathering, normalisation, epoch order, dataset checks, CUDA against CPU.

use super::*;
use retain_config::Readout;

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
