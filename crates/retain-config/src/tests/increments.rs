//! Split streams whose tasks have unequal class counts (`classes_per_task` as a list,
//! `first_task_classes`), and the literature's class-order presets.

use super::*;

/// CIFAR-100 in the B50-Inc10 shape's file, before any key under test.
const CIFAR100: &str = r#"
name = "t"
[stream]
kind = "split"
dataset = "cifar100"
tasks = 6
classes_per_task = 10
[model]
kind = "mlp"
hidden = [10]
[method]
name = "naive"
"#;

fn plan(text: &str, sets: &[&str]) -> Result<ExperimentPlan, ConfigError> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    ExperimentPlan::from_source(text, "exp.toml", &sets)
}

/// The key and message of a refusal.
fn refusal(text: &str, sets: &[&str]) -> (String, String) {
    match plan(text, sets) {
        Err(ConfigError::Invalid { key, message, .. }) => (key, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_list_gives_each_task_its_own_class_count() {
    let p = plan(
        CIFAR100,
        &["stream.classes_per_task=[50, 10, 10, 10, 10, 10]"],
    )
    .unwrap();
    assert_eq!(
        p.stream().classes_per_task(),
        Some(&[50, 10, 10, 10, 10, 10][..])
    );
    assert_eq!(p.stream().stream_classes(), Some(100));
    assert_eq!(p.stream().tasks(), 6);
    // The head still covers every class of the dataset.
    assert_eq!(p.outputs(), 100);
    // The list is kept as a list in the resolved file, which reads back to the same plan.
    let resolved = p.experiment().to_resolved_toml();
    assert!(resolved.contains("classes_per_task = [\n"), "{resolved}");
    assert_eq!(plan(&resolved, &[]).unwrap().stream(), p.stream());
}

#[test]
fn first_task_classes_makes_a_large_first_task() {
    let p = plan(CIFAR100, &["stream.first_task_classes=50"]).unwrap();
    assert_eq!(
        p.stream().classes_per_task(),
        Some(&[50, 10, 10, 10, 10, 10][..])
    );
    let list = plan(
        CIFAR100,
        &["stream.classes_per_task=[50, 10, 10, 10, 10, 10]"],
    )
    .unwrap();
    assert_eq!(p.stream(), list.stream(), "both forms plan the same stream");
    // One task: only the first task's count matters.
    let one = plan(
        CIFAR100,
        &["stream.first_task_classes=50", "stream.tasks=1"],
    )
    .unwrap();
    assert_eq!(one.stream().classes_per_task(), Some(&[50][..]));
    let resolved = p.experiment().to_resolved_toml();
    assert!(resolved.contains("first_task_classes = 50"), "{resolved}");
}

#[test]
fn an_existing_file_resolves_as_before_without_the_new_keys() {
    let exp = load(SPLIT_MNIST).unwrap();
    let resolved = exp.to_resolved_toml();
    assert!(resolved.contains("classes_per_task = 2\n"), "{resolved}");
    assert!(!resolved.contains("first_task_classes"), "{resolved}");
    let p = plan(SPLIT_MNIST, &[]).unwrap();
    assert_eq!(p.stream().classes_per_task(), Some(&[2; 5][..]));
}

#[test]
fn a_list_must_have_one_entry_per_task() {
    let (key, message) = refusal(CIFAR100, &["stream.classes_per_task=[50, 10, 10]"]);
    assert_eq!(key, "stream.classes_per_task");
    assert!(message.contains("`stream.tasks` = 6"), "{message}");
    assert!(message.contains("3 tasks"), "{message}");
    let (key, _) = refusal(CIFAR100, &["stream.classes_per_task=[]"]);
    assert_eq!(key, "stream.classes_per_task");
}

#[test]
fn zero_classes_are_refused_naming_the_key() {
    let (key, message) = refusal(
        CIFAR100,
        &["stream.classes_per_task=[50, 10, 0, 10, 10, 10]"],
    );
    assert_eq!(key, "stream.classes_per_task");
    assert!(message.contains("entry 2 (task 3) is 0"), "{message}");
    let (key, _) = refusal(CIFAR100, &["stream.first_task_classes=0"]);
    assert_eq!(key, "stream.first_task_classes");
    let (key, _) = refusal(
        CIFAR100,
        &["stream.first_task_classes=50", "stream.classes_per_task=0"],
    );
    assert_eq!(key, "stream.classes_per_task");
    // A negative count is no number of classes.
    let err = plan(
        CIFAR100,
        &["stream.classes_per_task=[50, -10, 10, 10, 10, 10]"],
    )
    .unwrap_err();
    assert!(err.to_string().contains("stream.classes_per_task"), "{err}");
}

#[test]
fn more_classes_than_the_dataset_has_are_refused_naming_the_key() {
    let (key, message) = refusal(
        CIFAR100,
        &["stream.classes_per_task=[60, 10, 10, 10, 10, 10]"],
    );
    assert_eq!(key, "stream.classes_per_task");
    assert!(
        message.ends_with("need 110 classes, but cifar100 has 100"),
        "{message}"
    );
    let (key, message) = refusal(CIFAR100, &["stream.first_task_classes=51"]);
    assert_eq!(key, "stream.first_task_classes");
    assert!(
        message.contains("`stream.first_task_classes` = 51 + (`stream.tasks` − 1) = 5 × `stream.classes_per_task` = 10 need 101 classes"),
        "{message}"
    );
    // An overflowing count is refused, not wrapped.
    let (key, message) = refusal(
        CIFAR100,
        &[
            "stream.first_task_classes=1",
            "stream.classes_per_task=9223372036854775807",
        ],
    );
    assert_eq!(key, "stream.first_task_classes");
    assert!(message.contains("more than 2^64"), "{message}");
}

#[test]
fn both_forms_together_are_refused_naming_first_task_classes() {
    let (key, message) = refusal(
        CIFAR100,
        &[
            "stream.classes_per_task=[50, 10, 10, 10, 10, 10]",
            "stream.first_task_classes=50",
        ],
    );
    assert_eq!(key, "stream.first_task_classes");
    assert!(message.contains("stream.classes_per_task"), "{message}");
}

#[test]
fn unequal_tasks_are_split_stream_keys_with_global_labels() {
    let permuted = SPLIT_MNIST
        .replace("kind = \"split\"", "kind = \"permuted\"")
        .replace("classes_per_task = 2\n", "")
        .replace("class_order = \"natural\"\n", "")
        .replace("readouts = [\"class_il\", \"task_il\"]\n", "");
    let (key, _) = refusal(&permuted, &["stream.first_task_classes=5"]);
    assert_eq!(key, "stream.first_task_classes");
    let (key, _) = refusal(&permuted, &["stream.classes_per_task=[2, 2, 2, 2, 2]"]);
    assert_eq!(key, "stream.classes_per_task");
    // Within-task labels share one label space, so every task needs as many classes.
    let (key, message) = refusal(
        SPLIT_MNIST,
        &[
            "stream.labels=\"within_task\"",
            "stream.readouts=[]",
            "stream.classes_per_task=[4, 2, 2, 1, 1]",
        ],
    );
    assert_eq!(key, "stream.labels");
    assert!(message.contains("[4, 2, 2, 1, 1]"), "{message}");
    // Equal counts given as a list are fine there.
    let p = plan(
        SPLIT_MNIST,
        &[
            "stream.labels=\"within_task\"",
            "stream.readouts=[]",
            "stream.classes_per_task=[2, 2, 2, 2, 2]",
        ],
    )
    .unwrap();
    assert_eq!(p.outputs(), 2);
}

/// The first entries `np.random.seed(1993); np.random.permutation(100)` printed.
const ICARL_HEAD: [u32; 12] = [68, 56, 78, 8, 23, 84, 90, 65, 74, 76, 40, 89];

#[test]
fn the_icarl_order_is_a_permutation_of_cifar100_as_numpy_draws_it() {
    let mut sorted = ICARL_CIFAR100_ORDER;
    sorted.sort_unstable();
    assert_eq!(sorted.to_vec(), (0..100).collect::<Vec<u32>>());
    assert_eq!(ICARL_CIFAR100_ORDER[..12], ICARL_HEAD);
    assert_eq!(ICARL_CIFAR100_ORDER[99], 33);
    let p = plan(
        CIFAR100,
        &[
            "stream.class_order=\"icarl\"",
            "stream.first_task_classes=50",
        ],
    )
    .unwrap();
    let Scenario::Split { class_order, .. } = p.stream().scenario() else {
        panic!("a split stream")
    };
    assert_eq!(class_order, &ClassOrder::Named(ClassOrderName::Icarl));
    let resolved = p.experiment().to_resolved_toml();
    assert!(resolved.contains("class_order = \"icarl\""), "{resolved}");
}

#[test]
fn the_icarl_order_is_refused_on_other_datasets_naming_the_key() {
    for dataset in ["mnist", "cifar10", "cifar100-coarse"] {
        let text = CIFAR100
            .replace(
                "dataset = \"cifar100\"",
                &format!("dataset = \"{dataset}\""),
            )
            .replace("tasks = 6", "tasks = 2")
            .replace("classes_per_task = 10", "classes_per_task = 2");
        let (key, message) = refusal(&text, &["stream.class_order=\"icarl\""]);
        assert_eq!(key, "stream.class_order", "{dataset}");
        assert!(message.contains(dataset), "{message}");
    }
}
