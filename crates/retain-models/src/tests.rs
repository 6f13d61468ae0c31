use super::*;
use retain_config::ModelConfig;
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

fn shapes(vs: &nn::VarStore) -> Vec<(String, Vec<i64>)> {
    let mut names: Vec<(String, Vec<i64>)> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.size()))
        .collect();
    names.sort();
    names
}

#[test]
fn mlp_has_stable_names_and_shapes() {
    let vs = nn::VarStore::new(Device::Cpu);
    let model = build(
        &ModelConfig::Mlp {
            hidden: vec![100, 100],
            checkpoint: None,
            checkpoint_sha256: None,
            init: retain_config::InitScheme::Reference,
        },
        &vs.root(),
        [1, 28, 28],
        10,
    );
    assert_eq!(
        shapes(&vs),
        vec![
            ("head.bias".to_owned(), vec![10]),
            ("head.weight".to_owned(), vec![10, 100]),
            ("hidden.0.bias".to_owned(), vec![100]),
            ("hidden.0.weight".to_owned(), vec![100, 784]),
            ("hidden.1.bias".to_owned(), vec![100]),
            ("hidden.1.weight".to_owned(), vec![100, 100]),
        ]
    );
    let out = model.forward_t(
        &Tensor::zeros([3, 1, 28, 28], (Kind::Float, Device::Cpu)),
        false,
    );
    assert_eq!(out.size(), vec![3, 10]);
    assert_eq!(model.outputs(), 10);
    assert_eq!(model.head_name(), "head");
}

/// The names and shapes of PyTorch's `state_dict` for Mammoth's / GEM's `ResNet18`
/// (less `num_batches_tracked`), written out from the architecture.
fn expected_resnet18(channels: i64, nf: i64, classes: i64) -> Vec<(String, Vec<i64>)> {
    let mut expected = Vec::new();
    let mut bn = |prefix: &str, c: i64| {
        for leaf in ["weight", "bias", "running_mean", "running_var"] {
            expected.push((format!("{prefix}.{leaf}"), vec![c]));
        }
    };
    bn("bn1", nf);
    let mut convs = vec![("conv1.weight".to_owned(), vec![nf, channels, 3, 3])];
    let mut width = nf;
    for stage in 0..4 {
        let planes = nf << stage;
        for block in 0..2 {
            let p = format!("layer{}.{block}", stage + 1);
            convs.push((format!("{p}.conv1.weight"), vec![planes, width, 3, 3]));
            convs.push((format!("{p}.conv2.weight"), vec![planes, planes, 3, 3]));
            bn(&format!("{p}.bn1"), planes);
            bn(&format!("{p}.bn2"), planes);
            if width != planes {
                convs.push((format!("{p}.shortcut.0.weight"), vec![planes, width, 1, 1]));
                bn(&format!("{p}.shortcut.1"), planes);
            }
            width = planes;
        }
    }
    expected.extend(convs);
    expected.push(("linear.weight".to_owned(), vec![classes, 8 * nf]));
    expected.push(("linear.bias".to_owned(), vec![classes]));
    expected.sort();
    expected
}

#[test]
fn resnet18_has_pytorch_names_shapes_and_size() {
    for (nf, classes, parameters) in [(64, 10, 11_173_962), (20, 100, 1_109_240)] {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = build(
            &ModelConfig::Resnet18 {
                nf,
                checkpoint: None,
                checkpoint_sha256: None,
                init: retain_config::InitScheme::Reference,
            },
            &vs.root(),
            [3, 32, 32],
            classes,
        );
        let expected = expected_resnet18(3, nf as i64, classes as i64);
        assert_eq!(shapes(&vs), expected);
        // As PyTorch counts them for the same architecture (fixtures/resnet_reference.py):
        // 102 state_dict entries besides `num_batches_tracked`, and these many parameters.
        assert_eq!(expected.len(), 102);
        let count: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        assert_eq!(count, parameters, "nf = {nf}");
        assert_eq!(model.outputs(), classes);
        assert_eq!(model.head_name(), "linear");
        let out = model.forward_t(
            &Tensor::zeros([2, 3, 32, 32], (Kind::Float, Device::Cpu)),
            true,
        );
        assert_eq!(out.size(), vec![2, classes as i64]);
    }
    // One-channel 28×28 images (MNIST) go through the same network.
    let vs = nn::VarStore::new(Device::Cpu);
    let model = build(
        &ModelConfig::Resnet18 {
            nf: 4,
            checkpoint: None,
            checkpoint_sha256: None,
            init: retain_config::InitScheme::Reference,
        },
        &vs.root(),
        [1, 28, 28],
        10,
    );
    let out = model.forward_t(
        &Tensor::ones([5, 1, 28, 28], (Kind::Float, Device::Cpu)),
        false,
    );
    assert_eq!(out.size(), vec![5, 10]);
}

#[test]
fn a_low_rank_adapter_adds_scale_b_a_to_the_weight() {
    tch::manual_seed(11);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Mlp::new(&vs.root(), 6, &[5], 3);
    assert_eq!(
        model.adaptable_layers(),
        vec![("head".to_owned(), [3, 5]), ("hidden.0".to_owned(), [5, 6])]
    );
    let xs = Tensor::randn([4, 1, 2, 3], (Kind::Float, Device::Cpu));
    let plain = model.forward_t(&xs, false);
    let opts = (Kind::Float, Device::Cpu);
    // B = 0: the output does not change at all.
    let zero = LowRank {
        a: Tensor::randn([2, 6], opts),
        b: Tensor::zeros([5, 2], opts),
        scale: 4.0,
    };
    assert!(model.set_adapter("hidden.0", Some(zero)));
    assert!(model.forward_t(&xs, false).equal(&plain));
    // Non-zero B: the same as the merged weight W + scale · B A.
    let (a, b) = (Tensor::randn([2, 6], opts), Tensor::randn([5, 2], opts));
    let merged_weight = vs.variables()["hidden.0.weight"].detach() + b.matmul(&a) * 0.5;
    let adapter = LowRank { a, b, scale: 0.5 };
    assert!(model.set_adapter("hidden.0", Some(adapter)));
    let unmerged = model.forward_t(&xs, false);
    assert!(!unmerged.allclose(&plain, 1e-3, 1e-3, false));
    let by_hand = xs
        .flatten(1, -1)
        .linear(&merged_weight, Some(&vs.variables()["hidden.0.bias"]))
        .relu()
        .linear(
            &vs.variables()["head.weight"],
            Some(&vs.variables()["head.bias"]),
        );
    assert!(unmerged.allclose(&by_hand, 1e-5, 1e-6, false));
    // Detaching restores the plain layer; unknown names are refused.
    assert!(model.set_adapter("hidden.0", None));
    assert!(model.forward_t(&xs, false).equal(&plain));
    assert!(!model.set_adapter("hidden.1", None));
    assert!(!model.set_adapter("conv1", None));
}

/// A model that declares its samples independent gives, in training mode, each batch the
/// outputs of its own pass when batches share one pass; the ResNet, whose batch norm
/// mixes the samples of a batch, does not declare it, and indeed does not.
#[test]
fn samples_independent_models_give_shared_passes_each_batch_own_outputs() {
    let configs = [
        ("kind = \"mlp\"\nhidden = [32, 16]", [1, 28, 28], true),
        (
            "kind = \"vit\"\npatch = 7\ndim = 16\ndepth = 2\nheads = 2\nmlp_dim = 32",
            [1, 28, 28],
            true,
        ),
        ("kind = \"resnet18\"\nnf = 4", [3, 8, 8], false),
    ];
    for (source, [c, h, w], independent) in configs {
        let config: ModelConfig = toml::from_str(source).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let model = build(&config, &vs.root(), [c, h, w], 10);
        assert_eq!(model.samples_independent(), independent, "{source}");
        let shape = [10, c as i64, h as i64, w as i64];
        let a = Tensor::linspace(
            -2.0,
            2.0,
            shape.iter().product(),
            (Kind::Float, Device::Cpu),
        )
        .view(shape);
        let b = a.flip([0]).sin() * 3.0;
        let shared = model.forward_t(&Tensor::cat(&[&a, &b], 0), true);
        let separate = Tensor::cat(&[model.forward_t(&a, true), model.forward_t(&b, true)], 0);
        assert_eq!(
            shared.allclose(&separate, 1e-5, 1e-5, false),
            independent,
            "{source}"
        );
    }
}

#[test]
fn batch_norm_follows_the_train_flag() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = build(
        &ModelConfig::Resnet18 {
            nf: 4,
            checkpoint: None,
            checkpoint_sha256: None,
            init: retain_config::InitScheme::Reference,
        },
        &vs.root(),
        [3, 8, 8],
        10,
    );
    let running_mean = || vs.variables()["bn1.running_mean"].copy();
    let xs = Tensor::randn([6, 3, 8, 8], (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
    let before = running_mean();
    let eval_a = model.forward_t(&xs, false);
    // Evaluation mode neither updates running statistics nor depends on the batch.
    assert!(running_mean().equal(&before));
    let single = model.forward_t(&xs.narrow(0, 0, 1), false);
    assert!(single.allclose(&eval_a.narrow(0, 0, 1), 1e-5, 1e-5, false));
    // Training mode normalises with batch statistics and updates the running mean.
    let train = model.forward_t(&xs, true);
    assert!(!running_mean().equal(&before));
    assert!(!train.allclose(&eval_a, 1e-3, 1e-3, false));
    let train_single = model.forward_t(&xs.narrow(0, 0, 2), true);
    assert!(!train_single.allclose(&train.narrow(0, 0, 2), 1e-3, 1e-3, false));
}
