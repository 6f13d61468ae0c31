//! The validated plan: every default resolved, dataset facts from `retain-data`'s table.

use super::*;

/// The smallest file of each kind of stream: every optional key absent.
const SPLIT: &str = r#"
name = "t"
[stream]
kind = "split"
dataset = "mnist"
tasks = 5
classes_per_task = 2
[model]
kind = "mlp"
hidden = [100]
[method]
name = "naive"
"#;

fn minimal(kind: &str) -> String {
    match kind {
        "split" => SPLIT.to_owned(),
        _ => SPLIT
            .replace("kind = \"split\"", &format!("kind = \"{kind}\""))
            .replace("classes_per_task = 2\n", ""),
    }
}

fn plan_of(text: &str, sets: &[&str]) -> ExperimentPlan {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    ExperimentPlan::from_source(text, "exp.toml", &sets).unwrap_or_else(|e| panic!("{e}"))
}

type Read = fn(&ExperimentPlan) -> String;

/// One row per default: the file (the minimal one of a kind of stream, or a text), overrides,
/// what is read from the plan, and the value it must have.
#[test]
fn every_default_is_resolved_in_the_plan() {
    let teacher = [
        "pretrain.teacher.kind=\"mlp\"",
        "pretrain.teacher.hidden=[10]",
        "pretrain.teacher.checkpoint=\"t.safetensors\"",
    ];
    let resnet = SPLIT.replace("kind = \"mlp\"\nhidden = [100]", "kind = \"resnet18\"");
    let cases: Vec<(&str, Vec<&str>, Read, &str)> = vec![
        // The experiment's top-level keys.
        ("split", vec![], |p| format!("{}", p.experiment().seed), "0"),
        (
            "split",
            vec![],
            |p| p.experiment().device.to_string(),
            "auto",
        ),
        (
            "split",
            vec![],
            |p| p.experiment().data_root.display().to_string(),
            "datasets",
        ),
        (
            "split",
            vec![],
            |p| p.experiment().output.display().to_string(),
            "results",
        ),
        // [stream], every kind.
        (
            "split",
            vec![],
            |p| format!("{:?}", p.stream().kind()),
            "Split",
        ),
        (
            "split",
            vec![],
            |p| format!("{:?}", p.stream().scenario()),
            "Split { task_classes: [2, 2, 2, 2, 2], class_order: Named(Natural), labels: Global }",
        ),
        (
            "split",
            vec!["stream.labels=\"within_task\""],
            |p| format!("{:?}", p.stream().scenario()),
            "Split { task_classes: [2, 2, 2, 2, 2], class_order: Named(Natural), labels: WithinTask }",
        ),
        (
            "split",
            vec!["stream.labels=\"within_task\""],
            |p| format!("{:?} {}", p.stream().readouts(), p.outputs()),
            "[DomainIl] 2",
        ),
        (
            "split",
            vec!["stream.labels=\"within_task\"", "stream.readouts=[]"],
            |p| format!("{:?}", p.stream().readouts()),
            "[DomainIl]",
        ),
        (
            "split",
            vec!["stream.labels=\"global\""],
            |p| format!("{:?} {}", p.stream().readouts(), p.outputs()),
            "[ClassIl, TaskIl] 10",
        ),
        (
            "split",
            vec![],
            |p| format!("{:?}", p.stream().readouts()),
            "[ClassIl, TaskIl]",
        ),
        (
            "split",
            vec!["stream.readouts=[]"],
            |p| format!("{:?}", p.stream().readouts()),
            "[ClassIl, TaskIl]",
        ),
        (
            "split",
            vec![],
            |p| format!("{:?}", p.stream().augment()),
            "AugmentConfig { crop_padding: 0, flip: false }",
        ),
        (
            "split",
            vec![],
            |p| format!("{:?}", p.stream().evaluate_on()),
            "Test",
        ),
        (
            "split",
            vec![],
            |p| format!("{:?}", p.stream().validation_fraction()),
            "None",
        ),
        (
            "split",
            vec![],
            |p| {
                let s = p.stream();
                format!(
                    "{:?} {:?}",
                    s.train_samples_per_task(),
                    s.test_samples_per_task()
                )
            },
            "None None",
        ),
        (
            "permuted",
            vec![],
            |p| format!("{:?}", p.stream().scenario()),
            "Permuted { first_task_unpermuted: false }",
        ),
        (
            "permuted",
            vec![],
            |p| format!("{:?}", p.stream().classes_per_task()),
            "None",
        ),
        (
            "permuted",
            vec![],
            |p| format!("{:?}", p.stream().readouts()),
            "[DomainIl]",
        ),
        (
            "rotated",
            vec![],
            |p| format!("{:?}", p.stream().scenario()),
            "Rotated { angles: Named(Even), angle_range: [0.0, 180.0] }",
        ),
        (
            "rotated",
            vec![],
            |p| format!("{:?}", p.stream().readouts()),
            "[DomainIl]",
        ),
        // [model].
        (
            "split",
            vec![],
            |p| format!("{:?}", p.experiment().model.init()),
            "Reference",
        ),
        (
            &resnet,
            vec![],
            |p| format!("{:?}", p.experiment().model),
            "Resnet18 { nf: 64, checkpoint: None, checkpoint_sha256: None, init: Reference }",
        ),
        // [training], absent altogether.
        (
            "split",
            vec![],
            |p| {
                let t = &p.experiment().training;
                format!(
                    "{} {} {} {} {} {:?} {:?} {:?}",
                    t.epochs,
                    t.batch_size,
                    t.eval_batch_size,
                    t.flat_optimizer,
                    t.cuda_graph,
                    t.loss,
                    t.precision,
                    t.memory_format
                )
            },
            "1 10 1000 true true ClassIl Fp32 Contiguous",
        ),
        (
            "split",
            vec![],
            |p| format!("{:?}", p.experiment().training.optimizer),
            "Sgd { lr: 0.01, momentum: 0.0, weight_decay: 0.0 }",
        ),
        // [pretrain]: every key from [training] and [stream].
        ("split", vec![], |p| format!("{:?}", p.pretrain()), "None"),
        (
            "split",
            vec![
                "pretrain.classes=[3, 1]",
                "training.epochs=3",
                "training.batch_size=7",
                "training.eval_batch_size=99",
                "training.optimizer.kind=\"adam\"",
                "training.optimizer.lr=0.5",
            ],
            |p| format!("{:?}", p.pretrain().unwrap()),
            "PretrainPlan { dataset: Mnist, classes: [1, 3], epochs: 3, batch_size: 7, \
             eval_batch_size: 99, optimizer: Adam { lr: 0.5, weight_decay: 0.0 }, \
             distillation: None, divergence_factor: 1000000.0 }",
        ),
        (
            "split",
            vec!["pretrain.epochs=2"],
            |p| {
                let stage = p.pretrain().unwrap();
                format!("{:?} {:?}", stage.dataset, stage.classes)
            },
            "Mnist [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]",
        ),
        (
            "split",
            teacher.to_vec(),
            |p| {
                let d = p.pretrain().unwrap().distillation.as_ref().unwrap();
                format!("{} {}", d.temperature, d.hard_weight)
            },
            "2 0",
        ),
        // Dataset facts.
        (
            "split",
            vec![],
            |p| format!("{} {:?}", p.outputs(), p.image_shape()),
            "10 [1, 28, 28]",
        ),
        (
            "split",
            vec!["stream.dataset=\"cifar100-coarse\""],
            |p| format!("{} {:?}", p.outputs(), p.image_shape()),
            "20 [3, 32, 32]",
        ),
    ];
    for (file, sets, read, expected) in cases {
        let text = match file {
            "split" | "permuted" | "rotated" => minimal(file),
            text => text.to_owned(),
        };
        assert_eq!(
            read(&plan_of(&text, &sets)),
            expected,
            "{file} with {sets:?}"
        );
    }
}

#[test]
fn given_values_replace_the_defaults() {
    let split = plan_of(
        SPLIT,
        &[
            "stream.class_order=\"seeded\"",
            "stream.augment.flip=true",
            "stream.readouts=[\"task_il\"]",
        ],
    );
    assert_eq!(
        split.stream().scenario(),
        &Scenario::Split {
            task_classes: vec![2; 5],
            class_order: ClassOrder::Named(ClassOrderName::Seeded),
            labels: SplitLabels::Global,
        }
    );
    assert!(split.stream().augment().flip);
    assert_eq!(split.stream().readouts(), [Readout::TaskIl]);
    let rotated = plan_of(
        &minimal("rotated"),
        &["stream.angles=\"seeded\"", "stream.angle_range=[10, 20]"],
    );
    assert_eq!(
        rotated.stream().scenario(),
        &Scenario::Rotated {
            angles: Angles::Named(AnglesName::Seeded),
            angle_range: [10.0, 20.0],
        }
    );
    let permuted = plan_of(&minimal("permuted"), &["stream.first_task_unpermuted=true"]);
    assert_eq!(
        permuted.stream().scenario(),
        &Scenario::Permuted {
            first_task_unpermuted: true
        }
    );
    let stage = plan_of(
        SPLIT,
        &[
            "pretrain.epochs=4",
            "pretrain.temperature=5.0",
            "pretrain.hard_weight=0.25",
            "pretrain.teacher.kind=\"mlp\"",
            "pretrain.teacher.hidden=[10]",
            "pretrain.teacher.checkpoint=\"t.safetensors\"",
        ],
    );
    let stage = stage.pretrain().unwrap();
    assert_eq!(stage.epochs, 4);
    let d = stage.distillation.as_ref().unwrap();
    assert_eq!((d.temperature, d.hard_weight), (5.0, 0.25));
}

#[test]
fn the_plan_agrees_with_the_loaded_experiment_and_its_own_validation() {
    for kind in ["split", "permuted", "rotated"] {
        let text = minimal(kind);
        let plan = plan_of(&text, &[]);
        let experiment = Experiment::from_source(&text, "exp.toml", &[]).unwrap();
        assert_eq!(plan.experiment(), &experiment);
        // The loaded experiment names its read-outs, so its resolved TOML does too.
        assert_eq!(experiment.stream.readouts, plan.stream().readouts());
        assert_eq!(experiment.plan().unwrap(), plan);
        assert_eq!(plan.pretrain().cloned(), experiment.pretrain_plan());
        assert_eq!(experiment.stream.plan().unwrap(), *plan.stream());
    }
    let shipped = plan_of(SPLIT_MNIST, &[]);
    assert_eq!(shipped.experiment(), &load(SPLIT_MNIST).unwrap());
}

#[test]
fn a_raw_stream_config_is_checked_and_resolved_on_its_own() {
    let mut config = StreamConfig::split(DatasetName::Cifar100, 20, 5, Vec::new());
    let plan = config.plan().unwrap();
    assert_eq!(plan.classes_per_task(), Some(&[5; 20][..]));
    assert_eq!(plan.stream_classes(), Some(100));
    assert_eq!(plan.readouts(), [Readout::ClassIl, Readout::TaskIl]);
    assert_eq!(plan.classes(), 100);
    config.classes_per_task = None;
    let err = config.plan().unwrap_err();
    let ConfigError::Invalid { origin, key, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        (origin.as_str(), key.as_str()),
        ("[stream]", "stream.classes_per_task")
    );
}

/// Each dataset name maps to its entry of `retain-data`'s table, and validation counts the
/// classes and measures the images that entry gives.
#[test]
fn dataset_facts_come_from_the_retain_data_table() {
    for name in DatasetName::ALL {
        let spec = retain_data::DatasetSpec::by_name(name.as_str()).unwrap();
        assert!(std::ptr::eq(name.spec(), spec), "{name:?}");
        assert_eq!(name.classes(), spec.classes);
        assert_eq!(name.image_shape(), spec.shape);
        assert_eq!(dataset_classes(name), spec.classes);
        assert_eq!(dataset_shape(name), spec.shape);
        // The file's spelling of the name is the table's.
        let parsed: DatasetName = toml::Value::String(spec.name.to_owned())
            .try_into()
            .unwrap();
        assert_eq!(parsed, name);

        // One class per task: exactly the table's count fits, one more does not.
        let at = |tasks: usize| {
            minimal("split")
                .replace(
                    "dataset = \"mnist\"",
                    &format!("dataset = \"{}\"", spec.name),
                )
                .replace("tasks = 5", &format!("tasks = {tasks}"))
                .replace("classes_per_task = 2", "classes_per_task = 1")
        };
        let plan = plan_of(&at(spec.classes), &[]);
        assert_eq!(plan.outputs(), spec.classes);
        assert_eq!(plan.image_shape(), spec.shape);
        let err = load(&at(spec.classes + 1)).unwrap_err().to_string();
        assert!(
            err.contains(&format!("but {} has {}", spec.name, spec.classes)),
            "{err}"
        );
    }
    // Every dataset of the table can be named in an experiment.
    for spec in retain_data::DATASETS {
        assert!(
            DatasetName::ALL
                .iter()
                .any(|d| std::ptr::eq(d.spec(), *spec)),
            "{} has no DatasetName",
            spec.name
        );
    }
}
