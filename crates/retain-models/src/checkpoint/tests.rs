use super::*;
use crate::{Backbone, Mlp, ResNet};
use tch::Kind;
use tch::nn::ModuleT;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("retain-models-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn mlp(seed: i64, hidden: &[usize]) -> (nn::VarStore, Mlp) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Mlp::new(&vs.root(), 6, hidden, 3);
    (vs, model)
}

#[test]
fn save_then_load_reproduces_the_forward_pass_bitwise() {
    let (source, model) = mlp(1, &[5, 4]);
    let (target, copy) = mlp(2, &[5, 4]);
    let xs = Tensor::randn([8, 1, 2, 3], (Kind::Float, Device::Cpu));
    let expected = model.forward_t(&xs, false);
    assert!(!copy.forward_t(&xs, false).equal(&expected));
    let path = temp_path("roundtrip.safetensors");
    save(&source, &path).unwrap();
    load(&target, &path).unwrap();
    assert!(copy.forward_t(&xs, false).equal(&expected));
    // Loading keeps the variables trainable.
    assert!(
        target
            .trainable_variables()
            .iter()
            .all(|t| t.requires_grad())
    );
    assert_eq!(target.trainable_variables().len(), 6);
}

#[test]
fn batch_norm_statistics_travel_with_the_weights() {
    tch::manual_seed(3);
    let source = nn::VarStore::new(Device::Cpu);
    let model = ResNet::resnet18(&source.root(), 3, 2, 4);
    let xs = Tensor::randn([4, 3, 8, 8], (Kind::Float, Device::Cpu)) * 2.0 + 1.0;
    // Training mode updates the running statistics, which evaluation then uses.
    let _ = model.forward_t(&xs, true);
    let expected = model.forward_t(&xs, false);
    let path = temp_path("resnet.safetensors");
    save(&source, &path).unwrap();
    tch::manual_seed(4);
    let target = nn::VarStore::new(Device::Cpu);
    let copy = ResNet::resnet18(&target.root(), 3, 2, 4);
    load(&target, &path).unwrap();
    assert!(copy.forward_t(&xs, false).equal(&expected));
    assert_eq!(copy.outputs(), 4);
}

#[test]
fn a_file_of_another_architecture_is_refused_with_the_full_listing() {
    let (source, _) = mlp(1, &[5]);
    let path = temp_path("other.safetensors");
    // One hidden layer of 5 instead of [5, 4], plus an extra tensor.
    let mut tensors = named_variables(&source);
    tensors.push((
        "extra.scale".to_owned(),
        Tensor::ones([2], (Kind::Float, Device::Cpu)),
    ));
    write(&tensors, &path).unwrap();
    let (target, _) = mlp(2, &[5, 4]);
    let before: Vec<Tensor> = named_variables(&target)
        .iter()
        .map(|(_, t)| t.copy())
        .collect();
    let err = load(&target, &path).unwrap_err();
    match &err {
        CheckpointError::Mismatch { mismatch, .. } => assert_eq!(
            *mismatch,
            Mismatch {
                missing: vec!["hidden.1.bias".into(), "hidden.1.weight".into()],
                unexpected: vec!["extra.scale".into()],
                shapes: vec![("head.weight".into(), vec![3, 4], vec![3, 5])],
            }
        ),
        other => panic!("expected a mismatch, got {other}"),
    }
    let message = err.to_string();
    assert!(message.contains("other.safetensors does not match the architecture"));
    assert!(message.contains("missing [hidden.1.bias, hidden.1.weight]"));
    assert!(message.contains("unexpected [extra.scale]"));
    assert!(message.contains("shape of head.weight: expected [3, 4], file has [3, 5]"));
    // Nothing was loaded.
    for ((_, now), then) in named_variables(&target).iter().zip(&before) {
        assert!(now.equal(then));
    }
}

#[test]
fn a_missing_or_corrupt_file_names_the_path() {
    let (target, _) = mlp(2, &[5, 4]);
    let err = load(&target, Path::new("no/such/weights.safetensors")).unwrap_err();
    assert!(
        err.to_string().contains("no/such/weights.safetensors"),
        "{err}"
    );
    let path = temp_path("corrupt.safetensors");
    std::fs::write(&path, b"not a safetensors file").unwrap();
    let err = load(&target, &path).unwrap_err();
    assert!(matches!(err, CheckpointError::Io { .. }), "{err}");
    assert!(err.to_string().contains("corrupt.safetensors"), "{err}");
}

/// `fixtures/mlp_reference.py` saved a PyTorch MLP's `state_dict` and its outputs on fixed
/// inputs; the same file loads into retain's MLP by name and gives the same outputs.
#[test]
fn a_pytorch_state_dict_loads_and_matches_pytorch_outputs() {
    let (target, model) = mlp(5, &[5, 4]);
    load(&target, &fixture("mlp_reference.safetensors")).unwrap();
    let io: std::collections::HashMap<String, Tensor> =
        read(&fixture("mlp_reference_io.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let (inputs, expected) = (&io["inputs"], &io["outputs"]);
    assert_eq!(inputs.size(), vec![4, 1, 2, 3]);
    assert_eq!(expected.size(), vec![4, 3]);
    let outputs = model.forward_t(inputs, false);
    let worst = (&outputs - expected).abs().max().double_value(&[]);
    assert!(worst <= 1e-6, "largest difference from PyTorch: {worst}");
    // The reference is not trivially small.
    assert!(expected.abs().max().double_value(&[]) > 0.1);
}

/// A checkpoint is written beside its destination and moved into place: overwriting one
/// leaves the new contents and no temporary file, and when the move fails (the destination
/// is a directory) the error names the checkpoint and the failed step, and the temporary
/// file is gone.
#[test]
fn checkpoints_are_written_atomically_and_a_failed_write_names_the_step() {
    let dir = temp_path("atomic");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("weights.safetensors");
    let one = |value: f32| vec![("w".to_owned(), Tensor::from_slice(&[value]))];
    write(&one(1.0), &path).unwrap();
    write(&one(2.0), &path).unwrap();
    assert!(
        read(&path).unwrap()[0]
            .1
            .equal(&Tensor::from_slice(&[2.0f32]))
    );
    let listing = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(listing(), ["weights.safetensors"]);

    let occupied = dir.join("occupied.safetensors");
    std::fs::create_dir(&occupied).unwrap();
    let err = write(&one(3.0), &occupied).unwrap_err();
    assert!(matches!(err, CheckpointError::Write { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("occupied.safetensors"), "{message}");
    assert!(message.contains("cannot move into place"), "{message}");
    assert_eq!(listing(), ["occupied.safetensors", "weights.safetensors"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
