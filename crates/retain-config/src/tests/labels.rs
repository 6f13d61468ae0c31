//! `stream.labels`: split streams labelled within their tasks (domain-incremental
//! Split-MNIST), their defaults and what they refuse.

use super::*;

/// Split-MNIST labelled within its tasks, read-outs left to the default.
fn within_task() -> String {
    SPLIT_MNIST.replace(
        "readouts = [\"class_il\", \"task_il\"]",
        "labels = \"within_task\"",
    )
}

fn invalid(text: &str) -> (String, String, String) {
    match load(text).unwrap_err() {
        ConfigError::Invalid {
            origin,
            key,
            message,
        } => (origin, key, message),
        err => panic!("not a validation error: {err}"),
    }
}

fn line_of(text: &str, prefix: &str) -> String {
    let line = 1 + text.lines().position(|l| l.starts_with(prefix)).unwrap();
    format!("exp.toml:{line}")
}

#[test]
fn labels_default_to_global_and_within_task_defaults_to_the_domain_il_readout() {
    let global = load(SPLIT_MNIST).unwrap();
    assert_eq!(global.stream.labels, None);
    assert_eq!(global.stream.labels(), SplitLabels::Global);
    assert_eq!(global.stream.outputs(), 10);
    assert!(!global.stream.is_domain_incremental());
    assert!(!global.to_resolved_toml().contains("labels"));

    let exp = load(&within_task()).unwrap();
    assert_eq!(exp.stream.labels, Some(SplitLabels::WithinTask));
    assert_eq!(exp.stream.readouts, [Readout::DomainIl]);
    assert_eq!(exp.stream.outputs(), 2);
    assert!(exp.stream.is_domain_incremental());
    let plan = exp.plan().unwrap();
    assert_eq!(plan.outputs(), 2);
    assert_eq!(plan.stream().labels(), SplitLabels::WithinTask);
    assert_eq!(plan.stream().classes(), 10);
    // The resolved file names the label space and the read-out, and reloads to the same
    // experiment.
    let resolved = exp.to_resolved_toml();
    assert!(resolved.contains("labels = \"within_task\""), "{resolved}");
    assert!(
        resolved.contains("readouts = [\"domain_il\"]"),
        "{resolved}"
    );
    assert_eq!(load(&resolved).unwrap(), exp);

    // Three tasks of three classes: three outputs.
    let wide = within_task()
        .replace("tasks = 5", "tasks = 3")
        .replace("classes_per_task = 2", "classes_per_task = 3");
    assert_eq!(load(&wide).unwrap().plan().unwrap().outputs(), 3);
    // Opt-in read-outs stay available.
    let opt_in = within_task().replace(
        "labels = \"within_task\"",
        "labels = \"within_task\"\nreadouts = [\"domain_il\", \"merged\"]",
    );
    assert_eq!(load(&opt_in).unwrap().stream.readouts.len(), 2);
}

#[test]
fn class_and_task_il_readouts_are_refused_within_tasks_naming_both_keys() {
    for readout in ["class_il", "task_il"] {
        let text = within_task().replace(
            "labels = \"within_task\"",
            &format!("labels = \"within_task\"\nreadouts = [\"domain_il\", \"{readout}\"]"),
        );
        let (origin, key, message) = invalid(&text);
        assert_eq!(key, "stream.readouts");
        assert_eq!(origin, line_of(&text, "readouts"));
        assert!(
            message.contains(&format!("`{readout}` does not apply"))
                && message.contains("`stream.labels = \"within_task\"`")
                && message.contains("share 2 labels")
                && message.contains("(use domain_il)"),
            "{message}"
        );
    }
    // Split-MNIST as shipped lists class_il and task_il: labelling it within its tasks
    // asks for read-outs that no longer apply.
    let text = SPLIT_MNIST.replace("tasks = 5", "tasks = 5\nlabels = \"within_task\"");
    let (_, key, _) = invalid(&text);
    assert_eq!(key, "stream.readouts");
    // Global labels keep refusing domain_il on a split stream.
    let text = SPLIT_MNIST.replace(
        "readouts = [\"class_il\", \"task_il\"]",
        "labels = \"global\"\nreadouts = [\"domain_il\"]",
    );
    let (_, key, message) = invalid(&text);
    assert_eq!(key, "stream.readouts");
    assert!(message.contains("use class_il, task_il"), "{message}");
}

#[test]
fn labels_are_refused_on_other_kinds_and_unknown_values_are_named() {
    for labels in ["global", "within_task"] {
        let text = PERMUTED.replace("tasks = 20", &format!("tasks = 20\nlabels = \"{labels}\""));
        let (origin, key, message) = invalid(&text);
        assert_eq!(key, "stream.labels");
        assert_eq!(origin, line_of(&text, "labels"));
        assert!(
            message.contains("applies to split streams only"),
            "{message}"
        );
    }
    let err = load(&within_task().replace("within_task", "per_task"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("stream.labels") && err.contains("per_task"),
        "{err}"
    );
}

#[test]
fn the_task_il_loss_and_a_pretrain_stage_are_refused_within_tasks() {
    let text = within_task().replace("epochs = 1", "epochs = 1\nloss = \"task_il\"");
    let (_, key, message) = invalid(&text);
    assert_eq!(key, "training.loss");
    assert!(
        message.contains("`stream.labels = \"within_task\"`"),
        "{message}"
    );

    let text = format!(
        "{}\n[pretrain]\ndataset = \"fashion-mnist\"\nclasses = [0, 1]\n",
        within_task()
    );
    let (origin, key, message) = invalid(&text);
    assert_eq!(key, "stream.labels");
    assert_eq!(origin, line_of(&text, "labels"));
    assert!(message.contains("[pretrain]"), "{message}");
}
