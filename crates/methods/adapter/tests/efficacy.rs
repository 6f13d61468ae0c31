//! Bottleneck adapters per task on real data, at reduced scale: 3 Split-MNIST tasks of 1000
//! training samples on a small random vision transformer. In its own test binary, so that
//! torch's global generator (the initialisation) is not shared with concurrent tests and the
//! numbers are reproducible.
//!
//! With the true task id choosing each task's adapters and head over a frozen backbone,
//! task-IL accuracy on a finished task never changes, while naive fine-tuning's shared
//! weights drift and the first task's accuracy drops.

use std::collections::BTreeMap;

use retain_config::{Experiment, Readout};
use retain_method_adapter::Adapter;
use retain_metrics::AccuracyMatrix;
use retain_train::testkit::{TaskStarts, mnist, snapshot, split_mnist_vit, stream_and_network};
use retain_train::{Method, Network, Silent, parse_params, run};
use tch::Tensor;

/// 3 Split-MNIST tasks of 1000 training samples on the small vision transformer, 5 epochs
/// per task with Adam at learning rate 0.01.
fn vit_split_mnist(method_toml: &str) -> Experiment {
    split_mnist_vit(
        3,
        1000,
        200,
        0,
        method_toml,
        &["training.optimizer.lr=0.01", "training.epochs=5"],
    )
}

/// Trains `method` on `experiment`; returns the task-IL accuracy matrix, the variables before
/// and after, and the network.
fn train(
    experiment: &Experiment,
    method: &mut dyn Method,
) -> (AccuracyMatrix, BTreeMap<String, Tensor>, Network) {
    let (stream, net) = stream_and_network(experiment, &mnist());
    let before = snapshot(&net);
    let outcome = run(experiment, &stream, &net, method, &mut Silent).unwrap();
    let task_il = outcome.counts[&Readout::TaskIl].accuracy().unwrap();
    (task_il, before, net)
}

#[test]
fn training_changes_only_adapters_and_head_and_task_il_never_forgets_where_naive_does() {
    let experiment = vit_split_mnist("name = \"adapter\"\nwidth = 8");
    let params = parse_params("adapter", &experiment.method.params).unwrap();
    let mut method = TaskStarts::new(Adapter::new(params).unwrap());
    let (accuracy, before, net) = train(&experiment, &mut method);
    let after = snapshot(&net);
    for (name, value) in &before {
        if !name.starts_with("head.") {
            assert!(after[name].equal(value), "{name} is bit-identical");
        }
    }
    assert!(!after["head.weight"].equal(&before["head.weight"]));
    let added: Vec<&String> = after.keys().filter(|n| !before.contains_key(*n)).collect();
    assert_eq!(added.len(), 16);
    assert!(added.iter().all(|n| n.starts_with("adapter.")));
    // Every adapter variable trained away from where its task started, in every task.
    let bank = method.method.bank();
    assert_eq!(bank.stored_tasks(), 3);
    assert_eq!(bank.method_variables().len(), 16);
    for task in 0..3 {
        let stored = bank.stored(task).unwrap();
        for name in bank.method_variables() {
            let (_, value) = stored.iter().find(|(n, _)| *n == name).unwrap();
            assert!(
                !value.equal(&method.starts[task][&name]),
                "task {task}: {name}"
            );
        }
    }

    let naive_experiment = vit_split_mnist("name = \"naive\"");
    let mut naive = retain_method_naive::from_params(&naive_experiment.method.params).unwrap();
    let (naive, _, _) = train(&naive_experiment, naive.as_mut());
    let summary = format!(
        "task-IL: adapter diagonal {:?}, last row {:?}; naive diagonal {:?}, last row {:?}",
        accuracy.diagonal(),
        accuracy.row(3),
        naive.diagonal(),
        naive.row(3)
    );
    eprintln!("{summary}");
    for task in 1..=3 {
        for row in task + 1..=3 {
            assert_eq!(accuracy.r(row, task), accuracy.r(task, task), "{summary}");
        }
        // Chance is 0.5; the backbone is random and frozen (2 against 3 is the hardest).
        assert!(
            accuracy.r(task, task) > 0.75,
            "learns task {task}: {summary}"
        );
    }
    assert!(
        naive.r(3, 1) < naive.r(1, 1) - 0.1,
        "naive forgets: {summary}"
    );
    assert!(accuracy.r(3, 1) > naive.r(3, 1) + 0.1, "{summary}");
}
