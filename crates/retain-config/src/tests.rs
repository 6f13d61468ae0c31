use super::*;

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
            hidden: vec![100, 100]
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
        load(&ok).unwrap().stream.class_order,
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
