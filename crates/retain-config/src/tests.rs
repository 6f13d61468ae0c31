use super::*;
use std::path::Path;

mod blurry;
mod increments;
mod labels;
mod plan;

const SPLIT_MNIST: &str = include_str!("../../../experiments/split-mnist.toml");

fn load(text: &str) -> Result<Experiment, ConfigError> {
    Experiment::from_source(text, "exp.toml", &[])
}

#[test]
fn the_shipped_split_mnist_experiment_parses() {
    let exp = load(SPLIT_MNIST).unwrap();
    assert_eq!(exp.name, "split-mnist");
    assert_eq!(exp.stream.tasks, 5);
    assert_eq!(exp.stream.readouts, vec![Readout::ClassIl, Readout::TaskIl]);
    assert_eq!(
        exp.model,
        ModelConfig::Mlp {
            hidden: vec![100, 100],
            checkpoint: None,
            checkpoint_sha256: None,
            init: InitScheme::Reference,
        }
    );
    assert_eq!(exp.method.name, "naive");
    assert!(exp.method.params.is_empty());
}

#[test]
fn unknown_key_is_rejected_with_its_name_and_line() {
    let text = SPLIT_MNIST.replace("epochs = 1", "epochs = 1\nepochz = 2");
    let line = 1 + text.lines().position(|l| l.starts_with("epochz")).unwrap();
    let err = load(&text).unwrap_err().to_string();
    assert!(err.contains("epochz"), "{err}");
    assert!(err.contains(&format!("exp.toml:{line}")), "{err}");
}

#[test]
fn wrong_type_names_the_line() {
    let text = SPLIT_MNIST.replace("tasks = 5", "tasks = \"five\"");
    let line = 1 + text.lines().position(|l| l.starts_with("tasks")).unwrap();
    let err = load(&text).unwrap_err().to_string();
    assert!(err.contains(&format!("exp.toml:{line}")), "{err}");
}

#[test]
fn semantic_errors_name_key_and_line() {
    let text = SPLIT_MNIST.replace("tasks = 5", "tasks = 6");
    let line = 1 + text.lines().position(|l| l.starts_with("tasks")).unwrap();
    let err = load(&text).unwrap_err();
    let ConfigError::Invalid {
        origin,
        key,
        message,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(key, "stream.tasks");
    assert_eq!(origin, &format!("exp.toml:{line}"));
    assert!(message.contains("12 classes"), "{message}");
}

#[test]
fn explicit_class_orders_are_checked() {
    let dup = SPLIT_MNIST.replace(
        "class_order = \"natural\"",
        "class_order = [0, 1, 1, 2, 3, 4, 5, 6, 7, 8]",
    );
    assert!(load(&dup).unwrap_err().to_string().contains("listed twice"));
    let big = SPLIT_MNIST.replace("class_order = \"natural\"", "class_order = [10]");
    assert!(
        load(&big)
            .unwrap_err()
            .to_string()
            .contains("class 10 does not exist")
    );
    let ok = SPLIT_MNIST.replace(
        "class_order = \"natural\"",
        "class_order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]",
    );
    assert_eq!(
        load(&ok).unwrap().stream.class_order(),
        ClassOrder::Explicit(vec![9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    );
}

#[test]
fn devices_parse() {
    assert_eq!("auto".parse::<DeviceSpec>(), Ok(DeviceSpec::Auto));
    assert_eq!("cuda:3".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(3)));
    assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
    assert!("gpu".parse::<DeviceSpec>().is_err());
    let text = SPLIT_MNIST.replace("device = \"auto\"", "device = \"tpu\"");
    assert!(
        load(&text)
            .unwrap_err()
            .to_string()
            .contains("unknown device `tpu`")
    );
}

#[test]
fn overrides_apply_and_are_validated() {
    let sets = [
        "stream.tasks=2".to_owned(),
        "training.optimizer.lr=0.1".to_owned(),
        "device=cpu".to_owned(),
    ];
    let exp = Experiment::from_source(SPLIT_MNIST, "exp.toml", &sets).unwrap();
    assert_eq!(exp.stream.tasks, 2);
    assert_eq!(exp.device, DeviceSpec::Cpu);
    assert!(matches!(exp.training.optimizer, OptimizerConfig::Sgd { lr, .. } if lr == 0.1));

    let bad = Experiment::from_source(
        SPLIT_MNIST,
        "exp.toml",
        &["training.optimizer.lr=-1".to_owned()],
    );
    let err = bad.unwrap_err().to_string();
    assert!(
        err.contains("training.optimizer.lr") && err.contains("overrides"),
        "{err}"
    );
    let unknown =
        Experiment::from_source(SPLIT_MNIST, "exp.toml", &["training.epochz=1".to_owned()]);
    assert!(unknown.unwrap_err().to_string().contains("epochz"));
    let malformed = Experiment::from_source(SPLIT_MNIST, "exp.toml", &["training".to_owned()]);
    assert!(matches!(malformed, Err(ConfigError::Override { .. })));
}

#[test]
fn resolved_config_round_trips_with_defaults_filled_in() {
    let exp = load(SPLIT_MNIST).unwrap();
    let resolved = exp.to_resolved_toml();
    assert!(resolved.contains("data_root"), "{resolved}");
    assert_eq!(load(&resolved).unwrap(), exp);
}

/// Every experiment file shipped in `experiments/` parses and validates, so a broken file is
/// caught here rather than at the start of a long run.
#[test]
fn every_shipped_experiment_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // Grid files (`[grid]` axes) are checked by retain-grid, which owns that table.
        if path.extension().is_some_and(|e| e == "toml") && !text.contains("\n[grid]") {
            let exp = Experiment::load(&path, &[]).unwrap_or_else(|e| panic!("{e}"));
            let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
            // Method variants of one benchmark (`split-mnist-replay.toml`) share its name, so
            // their runs sit side by side under `results/split-mnist/`.
            assert!(
                stem.starts_with(&exp.name),
                "{}: name `{}` is not the file's name or its prefix",
                path.display(),
                exp.name
            );
            names.push(stem);
        }
    }
    for expected in [
        "perm-mnist",
        "rot-mnist",
        "split-cifar",
        "split-cifar100",
        "split-fashion-mnist",
        "split-mnist",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

const PERMUTED: &str = r#"
name = "p"
[stream]
kind = "permuted"
dataset = "mnist"
tasks = 20
train_samples_per_task = 1000
[model]
kind = "mlp"
hidden = [100, 100]
[method]
name = "naive"
"#;

#[test]
fn permuted_streams_default_to_the_domain_il_readout() {
    let exp = load(PERMUTED).unwrap();
    assert_eq!(exp.stream.kind, StreamKind::Permuted);
    assert_eq!(exp.stream.readouts, vec![Readout::DomainIl]);
    assert!(!exp.stream.first_task_unpermuted);
    // The resolved file names the read-out explicitly and reloads to the same experiment.
    let resolved = exp.to_resolved_toml();
    assert!(
        resolved.contains("readouts = [\"domain_il\"]"),
        "{resolved}"
    );
    assert_eq!(load(&resolved).unwrap(), exp);
}

#[test]
fn opt_in_readouts_parse_on_every_kind_and_are_never_defaults() {
    let opt_in = "readouts = [\"class_il\", \"task_inferred\", \"task_inference\", \"merged\"]";
    let exp = load(&SPLIT_MNIST.replace("readouts = [\"class_il\", \"task_il\"]", opt_in)).unwrap();
    assert_eq!(
        exp.stream.readouts,
        [
            Readout::ClassIl,
            Readout::TaskInferred,
            Readout::TaskInference,
            Readout::Merged
        ]
    );
    assert_eq!(load(&exp.to_resolved_toml()).unwrap(), exp);
    let text = PERMUTED.replace(
        "tasks = 20",
        "tasks = 20\nreadouts = [\"domain_il\", \"merged\", \"task_inferred\"]",
    );
    assert_eq!(load(&text).unwrap().stream.readouts.len(), 3);
    for kind in [StreamKind::Split, StreamKind::Permuted, StreamKind::Rotated] {
        assert!(kind.readouts().iter().all(|r| !r.is_opt_in()));
        assert!(kind.accepts(Readout::Merged) && kind.accepts(Readout::TaskInference));
    }
    assert_eq!(Readout::TaskInference.as_str(), "task_inference");
}

#[test]
fn split_only_keys_are_rejected_on_domain_streams() {
    let text = PERMUTED.replace("tasks = 20", "tasks = 20\nclasses_per_task = 2");
    let err = load(&text).unwrap_err().to_string();
    assert!(
        err.contains("exp.toml:7") && err.contains("`stream.classes_per_task`"),
        "{err}"
    );
    let text = PERMUTED.replace("tasks = 20", "tasks = 20\nreadouts = [\"class_il\"]");
    let err = load(&text).unwrap_err().to_string();
    assert!(
        err.contains("`class_il` does not apply to a `permuted` stream (use domain_il)"),
        "{err}"
    );
    let text = PERMUTED.replace("tasks = 20", "tasks = 20\nangles = [0, 90]");
    let err = load(&text).unwrap_err().to_string();
    assert!(err.contains("applies to rotated streams only"), "{err}");
    let err = load(&SPLIT_MNIST.replace("tasks = 5", "tasks = 5\nfirst_task_unpermuted = true"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("applies to permuted streams only"), "{err}");
    let err = load(&SPLIT_MNIST.replace(
        "readouts = [\"class_il\", \"task_il\"]",
        "readouts = [\"domain_il\"]",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("use class_il, task_il"), "{err}");
    let err = load(&SPLIT_MNIST.replace("classes_per_task = 2\n", ""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("a split stream needs it"), "{err}");
}

#[test]
fn rotated_angles_are_checked() {
    let rotated = PERMUTED.replace("\"permuted\"", "\"rotated\"");
    let exp = load(&rotated).unwrap();
    assert_eq!(exp.stream.angles(), Angles::Named(AnglesName::Even));
    assert_eq!(exp.stream.angle_range(), [0.0, 180.0]);
    let three = rotated.replace("tasks = 20", "tasks = 3\nangles = [0, 90.5, 180]");
    assert_eq!(
        load(&three).unwrap().stream.angles(),
        Angles::Explicit(vec![0.0, 90.5, 180.0])
    );
    let err = load(&rotated.replace("tasks = 20", "tasks = 20\nangles = [0, 90]"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("lists 2 angles for 20 tasks"), "{err}");
    let seeded = rotated.replace(
        "tasks = 20",
        "tasks = 20\nangles = \"seeded\"\nangle_range = [10, 5]",
    );
    let err = load(&seeded).unwrap_err().to_string();
    assert!(
        err.contains("`stream.angle_range`") && err.contains("lo ≤ hi"),
        "{err}"
    );
}

#[test]
fn validation_split_settings_are_checked() {
    let on_validation = PERMUTED.replace("tasks = 20", "tasks = 20\nevaluate_on = \"validation\"");
    let err = load(&on_validation).unwrap_err().to_string();
    assert!(err.contains("needs `stream.validation_fraction`"), "{err}");
    let with_fraction =
        on_validation.replace("tasks = 20", "tasks = 20\nvalidation_fraction = 0.1");
    let exp = load(&with_fraction).unwrap();
    assert_eq!(exp.stream.evaluate_on, EvaluateOn::Validation);
    assert_eq!(exp.stream.validation_fraction, Some(0.1));
    let err = load(&with_fraction.replace("= 0.1", "= 1.0"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 is outside (0, 1)"), "{err}");
}

#[test]
fn cifar_resnet_and_augmentation_parse() {
    let text = SPLIT_MNIST
        .replace("dataset = \"mnist\"", "dataset = \"cifar100\"")
        .replace("tasks = 5", "tasks = 20")
        .replace("classes_per_task = 2", "classes_per_task = 5")
        .replace(
            "kind = \"mlp\"\nhidden = [100, 100]",
            "kind = \"resnet18\"\nnf = 20",
        )
        .replace(
            "[model]",
            "[stream.augment]\ncrop_padding = 4\nflip = true\n\n[model]",
        );
    let exp = load(&text).unwrap();
    assert_eq!(exp.stream.dataset, DatasetName::Cifar100);
    assert_eq!(exp.stream.dataset.as_str(), "cifar100");
    assert_eq!(
        exp.model,
        ModelConfig::Resnet18 {
            nf: 20,
            checkpoint: None,
            checkpoint_sha256: None,
            init: InitScheme::Reference,
        }
    );
    assert_eq!(
        exp.stream.augment(),
        AugmentConfig {
            crop_padding: 4,
            flip: true
        }
    );
    let default_nf = text.replace("nf = 20", "");
    assert_eq!(
        load(&default_nf).unwrap().model,
        ModelConfig::Resnet18 {
            nf: 64,
            checkpoint: None,
            checkpoint_sha256: None,
            init: InitScheme::Reference,
        }
    );
    let too_much = text.replace("crop_padding = 4", "crop_padding = 32");
    let line = 1 + too_much
        .lines()
        .position(|l| l.starts_with("crop_padding"))
        .unwrap();
    let err = load(&too_much).unwrap_err().to_string();
    assert!(
        err.contains(&format!("exp.toml:{line}")) && err.contains("32×32 images of cifar100"),
        "{err}"
    );
    let coarse = text
        .replace("\"cifar100\"", "\"cifar100-coarse\"")
        .replace("tasks = 20", "tasks = 4");
    assert_eq!(
        load(&coarse).unwrap().stream.dataset,
        DatasetName::Cifar100Coarse
    );
    let err = load(&text.replace("tasks = 20", "tasks = 21"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("but cifar100 has 100"), "{err}");
}

#[test]
fn model_checkpoint_is_optional_and_parsed() {
    assert_eq!(load(SPLIT_MNIST).unwrap().model.checkpoint(), None);
    let text = SPLIT_MNIST.replace(
        "hidden = [100, 100]",
        "hidden = [100, 100]\ncheckpoint = \"weights/task1.safetensors\"",
    );
    assert_ne!(text, SPLIT_MNIST);
    let exp = load(&text).unwrap();
    assert_eq!(
        exp.model.checkpoint(),
        Some(std::path::Path::new("weights/task1.safetensors"))
    );
}

#[test]
fn a_vision_transformer_takes_defaults_and_checks_its_shape() {
    let vit = SPLIT_MNIST.replace("kind = \"mlp\"\nhidden = [100, 100]", "kind = \"vit\"");
    assert_ne!(vit, SPLIT_MNIST, "the shipped config names an MLP");
    assert_eq!(
        load(&vit).unwrap().model,
        ModelConfig::Vit {
            preset: None,
            patch: None,
            dim: None,
            depth: None,
            heads: None,
            mlp_dim: None,
            image_size: None,
            channels: None,
            normalize: None,
            mean: None,
            std: None,
            checkpoint: None,
            checkpoint_sha256: None,
            init: InitScheme::Reference,
        }
    );
    assert_eq!(
        load(&vit).unwrap().model.vit().unwrap().unwrap(),
        crate::VitSpec {
            patch: 4,
            dim: 64,
            depth: 4,
            heads: 4,
            mlp_dim: 128,
            image_size: None,
            channels: None,
            normalize: None,
        }
    );
    let bad_patch = vit.replace("kind = \"vit\"", "kind = \"vit\"\npatch = 5");
    let err = load(&bad_patch).unwrap_err().to_string();
    assert!(
        err.contains("model.patch") && err.contains("28×28 images"),
        "{err}"
    );
    let bad_heads = vit.replace("kind = \"vit\"", "kind = \"vit\"\ndim = 30\nheads = 4");
    let err = load(&bad_heads).unwrap_err().to_string();
    assert!(
        err.contains("model.dim") && err.contains("not a multiple"),
        "{err}"
    );
}

#[test]
fn a_vit_preset_sets_timm_shapes_and_refuses_contradicting_keys() {
    let vit = SPLIT_MNIST.replace("kind = \"mlp\"\nhidden = [100, 100]", "kind = \"vit\"");
    let with = |extra: &str| vit.replace("kind = \"vit\"", &format!("kind = \"vit\"\n{extra}"));
    for (preset, dim, heads) in [
        ("vit_tiny_patch16_224", 192, 3),
        ("vit_small_patch16_224", 384, 6),
        ("vit_base_patch16_224", 768, 12),
    ] {
        let text = with(&format!("preset = \"{preset}\"\nnormalize = \"imagenet\""));
        let spec = load(&text).unwrap().model.vit().unwrap().unwrap();
        assert_eq!(
            spec,
            crate::VitSpec {
                patch: 16,
                dim,
                depth: 12,
                heads,
                mlp_dim: 4 * dim,
                image_size: Some(224),
                channels: Some(3),
                normalize: Some((vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225])),
            }
        );
        assert_eq!(spec.input_shape([1, 28, 28]), [3, 224, 224]);
    }
    // A key equal to the preset's value is accepted; one that differs is refused by name.
    load(&with("preset = \"vit_tiny_patch16_224\"\ndim = 192")).unwrap();
    for (extra, key) in [
        ("dim = 100", "model.dim"),
        ("image_size = 32", "model.image_size"),
        ("heads = 4", "model.heads"),
    ] {
        let err = load(&with(&format!(
            "preset = \"vit_tiny_patch16_224\"\n{extra}"
        )))
        .unwrap_err()
        .to_string();
        assert!(err.contains(key) && err.contains("contradicts"), "{err}");
    }
    let err = load(&with("preset = \"vit_huge\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("vit_huge"), "{err}");
    let spec = load(&with(
        "normalize = \"inception\"\nimage_size = 32\nchannels = 3",
    ))
    .unwrap()
    .model
    .vit()
    .unwrap()
    .unwrap();
    assert_eq!(spec.normalize, Some((vec![0.5; 3], vec![0.5; 3])));
    assert_eq!(spec.input_shape([1, 28, 28]), [3, 32, 32]);
    for (extra, key) in [
        (
            "normalize = \"imagenet\"\nmean = [0.5]\nstd = [0.5]",
            "model.mean",
        ),
        ("mean = [0.5]", "model.std"),
        ("mean = [0.5, 0.5]\nstd = [0.5, 0.5]", "model.mean"),
        ("mean = [0.5]\nstd = [0.0]", "model.std"),
        ("image_size = 30\npatch = 4", "model.image_size"),
        ("channels = 0", "model.channels"),
        ("normalize = \"imagenet\"", "model.normalize"),
    ] {
        let err = load(&with(extra)).unwrap_err().to_string();
        assert!(err.contains(key), "{extra}: {err}");
    }
    load(&with("mean = [0.5]\nstd = [0.25]\nchannels = 1")).unwrap();
}

#[test]
fn a_checkpoint_hash_must_be_a_sha256_of_a_named_checkpoint() {
    let with = |extra: &str| {
        SPLIT_MNIST.replace(
            "hidden = [100, 100]",
            &format!("hidden = [100, 100]\n{extra}"),
        )
    };
    let hash = "ab".repeat(32);
    let err = load(&with(&format!("checkpoint_sha256 = \"{hash}\"")))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.checkpoint_sha256") && err.contains("no `checkpoint`"),
        "{err}"
    );
    let err = load(&with(
        "checkpoint = \"w.safetensors\"\ncheckpoint_sha256 = \"abc\"",
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("model.checkpoint_sha256") && err.contains("64 hex"),
        "{err}"
    );
    let exp = load(&with(&format!(
        "checkpoint = \"w.safetensors\"\ncheckpoint_sha256 = \"{hash}\""
    )))
    .unwrap();
    assert_eq!(exp.model.checkpoint_sha256(), Some(hash.as_str()));
}

const PRETRAIN_FASHION: &str = include_str!("../../../experiments/pretrain-fashion-half.toml");

#[test]
fn pretrain_defaults_come_from_training_and_stream() {
    let text = format!("{SPLIT_MNIST}\n[pretrain]\nclasses = [3, 1]\n");
    let exp = load(&text).unwrap();
    let plan = exp.pretrain_plan().unwrap();
    assert_eq!(plan.dataset, DatasetName::Mnist);
    assert_eq!(plan.classes, vec![1, 3]);
    assert_eq!(plan.epochs, exp.training.epochs);
    assert_eq!(plan.batch_size, exp.training.batch_size);
    assert_eq!(plan.optimizer, exp.training.optimizer);
    assert_eq!(plan.distillation, None);
    assert_eq!(load(SPLIT_MNIST).unwrap().pretrain_plan(), None);
    // The resolved config keeps the table and reads back to the same experiment.
    assert_eq!(load(&exp.to_resolved_toml()).unwrap(), exp);

    let fashion = load(PRETRAIN_FASHION).unwrap().pretrain_plan().unwrap();
    assert_eq!(fashion.classes, vec![0, 1, 2, 3, 4]);
    assert_eq!(fashion.dataset, DatasetName::FashionMnist);
}

#[test]
fn distillation_defaults() {
    let text = format!(
        "{SPLIT_MNIST}\n[pretrain]\n[pretrain.teacher]\nkind = \"mlp\"\nhidden = [400]\ncheckpoint = \"t.safetensors\"\n"
    );
    let plan = load(&text).unwrap().pretrain_plan().unwrap();
    let d = plan.distillation.unwrap();
    assert_eq!(d.temperature, DEFAULT_TEMPERATURE);
    assert_eq!(d.hard_weight, 0.0);
    assert_eq!(d.teacher.checkpoint(), Some(Path::new("t.safetensors")));
    assert_eq!(plan.classes, (0..10).collect::<Vec<u32>>());
}

/// The error of `[pretrain]` body `body` (appended to Split-MNIST): key, and the line the
/// message points at.
fn pretrain_error(body: &str) -> (String, String, String) {
    let text = format!("{SPLIT_MNIST}\n[pretrain]\n{body}\n");
    match load(&text).unwrap_err() {
        ConfigError::Invalid {
            origin,
            key,
            message,
        } => (key, origin, message),
        other => (String::new(), String::new(), other.to_string()),
    }
}

fn line_of(text: &str, needle: &str) -> String {
    let text = format!("{SPLIT_MNIST}\n[pretrain]\n{text}\n");
    format!(
        "exp.toml:{}",
        text.lines().count()
            - text
                .lines()
                .rev()
                .position(|l| l.starts_with(needle))
                .unwrap()
    )
}

#[test]
fn pretrain_errors_name_key_and_line() {
    let body = "classes = [0, 12]";
    let (key, origin, message) = pretrain_error(body);
    assert_eq!(key, "pretrain.classes");
    assert_eq!(origin, line_of(body, "classes"));
    assert!(message.contains("class 12 does not exist"), "{message}");

    let (key, _, message) = pretrain_error("classes = [2, 2]");
    assert_eq!(key, "pretrain.classes");
    assert!(message.contains("listed twice"), "{message}");

    let (key, _, message) = pretrain_error("dataset = \"cifar10\"");
    assert_eq!(key, "pretrain.dataset");
    assert!(
        message.contains("3×32×32") && message.contains("1×28×28"),
        "{message}"
    );

    let (key, _, _) = pretrain_error("epochs = 0");
    assert_eq!(key, "pretrain.epochs");

    let (key, _, message) = pretrain_error("temperature = 3.0");
    assert_eq!(key, "pretrain.temperature");
    assert!(message.contains("distillation only"), "{message}");

    let teacher =
        "[pretrain.teacher]\nkind = \"mlp\"\nhidden = [400]\ncheckpoint = \"t.safetensors\"";
    let body = format!("temperature = 0.0\n{teacher}");
    let (key, origin, message) = pretrain_error(&body);
    assert_eq!(key, "pretrain.temperature");
    assert_eq!(origin, line_of(&body, "temperature"));
    assert!(message.contains("positive"), "{message}");
    let (key, _, _) = pretrain_error(&format!("temperature = -1.0\n{teacher}"));
    assert_eq!(key, "pretrain.temperature");
    let (key, _, _) = pretrain_error(&format!("hard_weight = 1.5\n{teacher}"));
    assert_eq!(key, "pretrain.hard_weight");

    // A teacher without weights: the error points at the teacher's table.
    let body = "[pretrain.teacher]\nkind = \"mlp\"\nhidden = [400]";
    let (key, origin, message) = pretrain_error(body);
    assert_eq!(key, "pretrain.teacher.checkpoint");
    assert_eq!(origin, line_of(body, "[pretrain.teacher]"));
    assert!(message.contains("checkpoint"), "{message}");

    let (key, _, _) = pretrain_error(
        "[pretrain.teacher]\nkind = \"mlp\"\nhidden = [0]\ncheckpoint = \"t.safetensors\"",
    );
    assert_eq!(key, "pretrain.teacher.hidden");

    let (key, _, _) = pretrain_error("[pretrain.optimizer]\nkind = \"sgd\"\nlr = 0.0");
    assert_eq!(key, "pretrain.optimizer.lr");

    let (_, _, message) = pretrain_error("epoch = 2");
    assert!(message.contains("epoch"), "{message}");
}

#[test]
fn pretrain_labels_must_fit_the_stream_head() {
    // CIFAR-100 has the CIFAR-10 image shape but a model for a CIFAR-10 stream has 10 outputs.
    let text = r#"
name = "x"
[stream]
kind = "split"
dataset = "cifar10"
tasks = 5
classes_per_task = 2
[model]
kind = "resnet18"
[method]
name = "naive"
[pretrain]
dataset = "cifar100"
"#;
    let err = load(text).unwrap_err();
    let ConfigError::Invalid { key, message, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(key, "pretrain.dataset");
    assert!(message.contains("10 outputs"), "{message}");
    let fits = text.replace(
        "dataset = \"cifar100\"",
        "dataset = \"cifar100\"\nclasses = [0, 9]",
    );
    assert!(load(&fits).is_ok());
}

#[test]
fn task_il_loss_and_init_scheme_parse_and_task_il_needs_a_split_stream() {
    let text = SPLIT_MNIST
        .replace("epochs = 1", "epochs = 1\nloss = \"task_il\"")
        .replace(
            "hidden = [100, 100]",
            "hidden = [100, 100]\ninit = \"kaiming\"",
        );
    let exp = load(&text).unwrap();
    assert_eq!(exp.training.loss, TrainingLoss::TaskIl);
    assert_eq!(exp.model.init(), InitScheme::Kaiming);
    // Defaults: the class-IL loss and the reference initialisation.
    let exp = load(SPLIT_MNIST).unwrap();
    assert_eq!(exp.training.loss, TrainingLoss::ClassIl);
    assert_eq!(exp.model.init(), InitScheme::Reference);
    let bad = text.replace("init = \"kaiming\"", "init = \"xavier\"");
    let err = load(&bad).unwrap_err().to_string();
    assert!(err.contains("xavier"), "{err}");
    let permuted = text
        .replace("kind = \"split\"", "kind = \"permuted\"")
        .replace("classes_per_task = 2\n", "")
        .replace("class_order = \"natural\"\n", "")
        .replace(
            "readouts = [\"class_il\", \"task_il\"]",
            "readouts = [\"domain_il\"]",
        );
    let err = load(&permuted).unwrap_err().to_string();
    assert!(err.contains("training.loss"), "{err}");
    assert!(
        err.contains("`task_il` needs tasks with classes of their own"),
        "{err}"
    );
}

#[test]
fn precision_and_memory_format_parse_and_channels_last_needs_convolutions() {
    let exp = load(SPLIT_MNIST).unwrap();
    assert_eq!(exp.training.precision, Precision::Fp32);
    assert_eq!(exp.training.memory_format, MemoryFormat::Contiguous);
    let bf16 = SPLIT_MNIST.replace("epochs = 1", "epochs = 1\nprecision = \"bf16\"");
    assert_eq!(load(&bf16).unwrap().training.precision, Precision::Bf16);
    let err = load(&SPLIT_MNIST.replace("epochs = 1", "epochs = 1\nprecision = \"fp16\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("fp16"), "{err}");
    let channels_last = SPLIT_MNIST.replace(
        "epochs = 1",
        "epochs = 1\nmemory_format = \"channels_last\"",
    );
    let err = load(&channels_last).unwrap_err().to_string();
    assert!(err.contains("training.memory_format"), "{err}");
    assert!(err.contains("`mlp` model has none"), "{err}");
    let resnet =
        channels_last.replace("kind = \"mlp\"\nhidden = [100, 100]", "kind = \"resnet18\"");
    assert_eq!(
        load(&resnet).unwrap().training.memory_format,
        MemoryFormat::ChannelsLast
    );
}

#[test]
fn tasks_times_classes_per_task_overflowing_is_refused_naming_both_keys() {
    let text = SPLIT_MNIST
        .replace("tasks = 5", "tasks = 4611686018427387904")
        .replace("classes_per_task = 2", "classes_per_task = 4");
    let err = load(&text).unwrap_err();
    let ConfigError::Invalid { key, message, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(key, "stream.tasks");
    assert!(message.contains("stream.classes_per_task"), "{message}");
    assert!(message.contains("more than 2^64"), "{message}");
}

#[test]
fn a_readout_listed_twice_is_refused_naming_the_key() {
    let text = SPLIT_MNIST.replace(
        "readouts = [\"class_il\", \"task_il\"]",
        "readouts = [\"class_il\", \"class_il\"]",
    );
    let line = 1 + text
        .lines()
        .position(|l| l.starts_with("readouts"))
        .unwrap();
    let err = load(&text).unwrap_err();
    let ConfigError::Invalid {
        origin,
        key,
        message,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(key, "stream.readouts");
    assert_eq!(origin, &format!("exp.toml:{line}"));
    assert!(message.contains("`class_il` is listed twice"), "{message}");
}

#[test]
fn a_model_whose_weights_exceed_the_host_memory_is_refused_naming_the_key() {
    let text = SPLIT_MNIST.replace("hidden = [100, 100]", "hidden = [1000000000000]");
    let err = load(&text).unwrap_err();
    let ConfigError::Invalid { key, message, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(key, "model.hidden");
    assert!(
        message.contains("`model.hidden` = [1000000000000] needs at least"),
        "{message}"
    );
    assert!(message.contains("more than this host's"), "{message}");
    // Widths whose product overflows any integer are refused too.
    let text = SPLIT_MNIST.replace(
        "hidden = [100, 100]",
        "hidden = [9223372036854775807, 9223372036854775807, 9223372036854775807]",
    );
    let err = load(&text).unwrap_err().to_string();
    assert!(err.contains("more memory than can be counted"), "{err}");
}

#[test]
fn epochs_beyond_the_step_cap_are_refused_naming_the_key() {
    let text = SPLIT_MNIST.replace("epochs = 1", "epochs = 1000000000000");
    let err = load(&text).unwrap_err();
    let ConfigError::Invalid { key, message, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(key, "training.epochs");
    assert!(
        message.contains("`training.epochs` = 1000000000000"),
        "{message}"
    );
    assert!(
        message.contains("more than the cap of 1000000000"),
        "{message}"
    );
    // 6000 batches of 10 over MNIST's 60000 training images: 166666 epochs fit, 166667 not.
    let fits = SPLIT_MNIST.replace("epochs = 1", "epochs = 166666");
    assert!(load(&fits).is_ok());
    let over = SPLIT_MNIST.replace("epochs = 1", "epochs = 166667");
    assert!(load(&over).is_err());
}

#[test]
fn folder_names_that_leave_their_parent_are_refused() {
    for bad in ["", "../../x", "..", ".hidden", "a/b", "a\\b", "/abs"] {
        let err = check_folder_name(bad).unwrap_err();
        assert!(err.contains(&format!("`{bad}`")), "{err}");
    }
    for good in ["naive-seed0", "a.b", "lr=0.01,seed=1"] {
        assert_eq!(check_folder_name(good), Ok(()));
    }
    let text = SPLIT_MNIST.replace("name = \"split-mnist\"", "name = \"../x\"");
    let err = load(&text).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Invalid { key, .. } if key == "name"),
        "{err}"
    );
}

#[test]
fn every_u64_seed_is_accepted_and_round_trips() {
    for (written, seed) in [
        ("seed = 7", 7),
        ("seed = \"9223372036854775808\"", 9_223_372_036_854_775_808),
        ("seed = \"18446744073709551615\"", u64::MAX),
    ] {
        let exp = load(&SPLIT_MNIST.replace("seed = 0", written)).unwrap();
        assert_eq!(exp.seed, seed);
        let again = load(&exp.to_resolved_toml()).unwrap();
        assert_eq!(again.seed, seed);
    }
    // An override's bare value that TOML cannot hold as an integer reads as its digits.
    let exp = Experiment::from_source(
        SPLIT_MNIST,
        "exp.toml",
        &["seed=18446744073709551615".into()],
    )
    .unwrap();
    assert_eq!(exp.seed, u64::MAX);
}

#[test]
fn a_seed_out_of_range_names_the_key_and_the_accepted_values() {
    for bad in [
        "seed = -1",
        "seed = \"18446744073709551616\"",
        "seed = 9223372036854775808",
        "seed = 1.5",
    ] {
        let text = SPLIT_MNIST.replace("seed = 0", bad);
        let line = 1 + text.lines().position(|l| l.starts_with("seed")).unwrap();
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains(&format!("exp.toml:{line}")), "{bad}: {err}");
        assert!(
            err.contains("`seed` must be an integer from 0 to 18446744073709551615"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn an_angle_range_of_other_than_two_numbers_is_refused_naming_the_key() {
    let rotated = include_str!("../../../experiments/rot-mnist.toml");
    for (bad, count) in [("[0, 90, 180]", "not 3"), ("[0]", "not 1")] {
        let text = rotated.replace(
            "angle_range = [0.0, 180.0]",
            &format!("angle_range = {bad}"),
        );
        let line = 1 + text
            .lines()
            .position(|l| l.starts_with("angle_range"))
            .unwrap();
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains(&format!("exp.toml:{line}")), "{err}");
        assert!(
            err.contains("`stream.angle_range` must list exactly two numbers"),
            "{err}"
        );
        assert!(err.contains(count), "{err}");
    }
    let ok = rotated.replace("angle_range = [0.0, 180.0]", "angle_range = [0, 90]");
    assert_eq!(load(&ok).unwrap().stream.angle_range, Some([0.0, 90.0]));
}

#[test]
fn divergence_factor_defaults_to_a_million_and_must_be_finite_above_one() {
    assert_eq!(load(SPLIT_MNIST).unwrap().training.divergence_factor, 1e6);
    let text = SPLIT_MNIST.replace("epochs = 1", "epochs = 1\ndivergence_factor = 50.0");
    assert_eq!(load(&text).unwrap().training.divergence_factor, 50.0);
    for bad in ["1.0", "0.5", "-3.0", "inf", "nan"] {
        let text = SPLIT_MNIST.replace(
            "epochs = 1",
            &format!("epochs = 1\ndivergence_factor = {bad}"),
        );
        let line = 1 + text
            .lines()
            .position(|l| l.starts_with("divergence_factor"))
            .unwrap();
        let err = load(&text).unwrap_err();
        let ConfigError::Invalid { origin, key, .. } = &err else {
            panic!("{bad}: {err}")
        };
        assert_eq!(key, "training.divergence_factor", "{bad}");
        assert_eq!(origin, &format!("exp.toml:{line}"), "{bad}");
        assert!(err.to_string().contains("finite number above 1"), "{err}");
    }
}

/// The message of `text`'s load error, with the line of the first line starting with
/// `line_start`.
fn error_and_line(text: &str, line_start: &str) -> (String, usize) {
    let line = 1 + text
        .lines()
        .position(|l| l.starts_with(line_start))
        .unwrap();
    (load(text).unwrap_err().to_string(), line)
}

#[test]
fn a_type_error_names_the_full_key_and_its_line() {
    let text = SPLIT_MNIST.replace("epochs = 1", "epochs = \"five\"");
    let (err, line) = error_and_line(&text, "epochs");
    assert_eq!(
        err,
        format!("exp.toml:{line}: training.epochs: invalid type: string \"five\", expected usize")
    );
    let text = SPLIT_MNIST.replace("tasks = 5", "tasks = \"five\"");
    let (err, line) = error_and_line(&text, "tasks");
    assert!(
        err.starts_with(&format!("exp.toml:{line}: stream.tasks: invalid type")),
        "{err}"
    );
}

#[test]
fn a_type_error_in_a_list_names_the_element() {
    let text = format!("{SPLIT_MNIST}\n[pretrain]\nclasses = [1, \"two\"]\n");
    let (err, line) = error_and_line(&text, "classes = [");
    assert_eq!(
        err,
        format!("exp.toml:{line}: pretrain.classes[1]: invalid type: string \"two\", expected u32")
    );
    let text = SPLIT_MNIST.replace(
        "readouts = [\"class_il\", \"task_il\"]",
        "readouts = [\"class_il\", 7]",
    );
    let (err, line) = error_and_line(&text, "readouts");
    assert!(
        err.starts_with(&format!("exp.toml:{line}: stream.readouts[1]: ")),
        "{err}"
    );
}

#[test]
fn an_override_with_the_wrong_type_names_the_full_key() {
    let err = Experiment::from_source(
        SPLIT_MNIST,
        "exp.toml",
        &["training.batch_size=\"ten\"".into()],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(": training.batch_size: invalid type: string \"ten\", expected usize"),
        "{err}"
    );
}

#[test]
fn a_name_or_list_key_says_what_it_accepts() {
    let cases = [
        (
            "class_order = \"random\"",
            "stream.class_order: unknown class order `random`, expected \"natural\", \"seeded\", \"icarl\" or a list of classes such as [3, 1, 4, 0, 2]",
        ),
        (
            "class_order = 5",
            "stream.class_order: invalid type: integer `5`, expected \"natural\", \"seeded\", \"icarl\" or a list of classes such as [3, 1, 4, 0, 2]",
        ),
        (
            "class_order = [0, 1, \"two\"]",
            "stream.class_order[2]: invalid type: string \"two\", expected u32",
        ),
    ];
    for (given, message) in cases {
        let text = SPLIT_MNIST.replace("class_order = \"natural\"", given);
        let (err, line) = error_and_line(&text, "class_order");
        assert_eq!(err, format!("exp.toml:{line}: {message}"));
        assert!(!err.contains("did not match any variant"), "{err}");
    }
    let text = SPLIT_MNIST.replace(
        "classes_per_task = 2\nclass_order = \"natural\"",
        "angles = true",
    );
    let (err, line) = error_and_line(&text, "angles");
    assert_eq!(
        err,
        format!(
            "exp.toml:{line}: stream.angles: invalid type: boolean `true`, expected \"even\", \"seeded\" or a list of angles in degrees such as [0, 45, 90]"
        )
    );
    // Both forms still read.
    for (given, order) in [
        (
            "class_order = \"seeded\"",
            ClassOrder::Named(ClassOrderName::Seeded),
        ),
        (
            "class_order = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]",
            ClassOrder::Explicit((0..10).rev().collect()),
        ),
    ] {
        let exp = load(&SPLIT_MNIST.replace("class_order = \"natural\"", given)).unwrap();
        assert_eq!(exp.stream.class_order, Some(order));
    }
}

/// The experiment with `lines` added under `[training]`.
fn with_training(lines: &str) -> String {
    SPLIT_MNIST.replace("[training]\n", &format!("[training]\n{lines}\n"))
}

fn invalid_key(text: &str) -> (String, String) {
    match load(text).unwrap_err() {
        ConfigError::Invalid { key, message, .. } => (key, message),
        other => panic!("{other}"),
    }
}

#[test]
fn online_training_parses_and_defaults_to_offline() {
    let offline = load(SPLIT_MNIST).unwrap();
    assert!(!offline.training.online);
    assert_eq!(offline.training.eval_every, None);
    assert_eq!(offline.training.anytime_every(), None);
    // The resolved configuration of an offline run names none of the online keys.
    let resolved = offline.to_resolved_toml();
    assert!(!resolved.contains("online"), "{resolved}");
    assert!(!resolved.contains("eval_every"), "{resolved}");
    let online = load(&with_training("online = true\neval_every = 50")).unwrap();
    assert!(online.training.online);
    assert_eq!(online.training.anytime_every(), Some(50));
    // A-GEM's β of 10 mini-batches.
    assert_eq!(online.training.lca_beta(), 10);
    let beta = load(&with_training(
        "online = true\neval_every = 5\nlca_beta = 20",
    ))
    .unwrap();
    assert_eq!(beta.training.lca_beta(), 20);
    // Overrides reach the keys as in the command line's `--set`.
    let set = Experiment::from_source(
        SPLIT_MNIST,
        "exp.toml",
        &[
            "training.online=true".to_owned(),
            "training.eval_every=50".to_owned(),
        ],
    )
    .unwrap();
    assert_eq!(set.training.anytime_every(), Some(50));
}

#[test]
fn online_training_refusals_name_the_key() {
    let (key, message) = invalid_key(&with_training("online = true"));
    assert_eq!(key, "training.eval_every");
    assert!(message.contains("needs `eval_every`"), "{message}");
    let (key, message) = invalid_key(&with_training("online = true\neval_every = 0"));
    assert_eq!(key, "training.eval_every");
    assert!(message.contains("at least 1"), "{message}");
    let text = with_training("online = true\neval_every = 10").replace("epochs = 1", "epochs = 2");
    let (key, message) = invalid_key(&text);
    assert_eq!(key, "training.epochs");
    assert!(message.contains("exactly once"), "{message}");
    let (key, message) = invalid_key(&with_training("eval_every = 10"));
    assert_eq!(key, "training.eval_every");
    assert!(message.contains("online = true"), "{message}");
    let (key, _) = invalid_key(&with_training("lca_beta = 10"));
    assert_eq!(key, "training.lca_beta");
    // The error points at the key's line.
    let err = load(&with_training("online = true\neval_every = 0"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("exp.toml:"), "{err}");
}
