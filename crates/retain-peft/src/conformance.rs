//! The contract every per-task method on a [`TaskBank`] keeps, as checks its crates' tests
//! call (feature `testkit`), so that adapters, prompts and prefixes are held to one standard.

use retain_config::Experiment;
use retain_metrics::AccuracyMatrix;
use retain_train::testkit::{
    TaskStarts, mnist, mnist_shaped_inputs, snapshot, stream_and_network, task_context,
    train_task_il,
};
use retain_train::{Method, Selection};

use crate::Banked;

/// Trains `method` on `experiment` (a 3-task stream) and checks the per-task contract:
/// every variable present before training other than the head's is bit-identical after it;
/// the head and every method variable trained away from where each task started; the task-IL
/// accuracy of a finished task never changes and is above `min_accuracy` when learnt; and the
/// same stream under `naive` fine-tuning forgets the first task by more than 10 points and
/// ends more than 10 points below the method on it. Returns the names of the variables the
/// method added, sorted, and the method's task-IL accuracy matrix, for the crate's own checks.
pub fn assert_per_task_contract<M: Banked>(
    experiment: &Experiment,
    method: M,
    naive: &mut dyn Method,
    min_accuracy: f64,
) -> (Vec<String>, AccuracyMatrix) {
    let mut method = TaskStarts::new(method);
    let (accuracy, before, net) = train_task_il(experiment, &mut method);
    let after = snapshot(&net);
    for (name, value) in &before {
        if !name.starts_with("head.") {
            assert!(after[name].equal(value), "{name} is bit-identical");
        }
    }
    assert!(!after["head.weight"].equal(&before["head.weight"]));
    let added: Vec<String> = after
        .keys()
        .filter(|n| !before.contains_key(*n))
        .cloned()
        .collect();
    let bank = method.method.bank();
    assert_eq!(bank.stored_tasks(), 3);
    assert_eq!(bank.method_variables(), added);
    for task in 0..3 {
        let stored = bank.stored(task).expect("every task is stored");
        for name in bank.method_variables() {
            let (_, value) = stored.iter().find(|(n, _)| *n == name).unwrap();
            assert!(
                !value.equal(&method.starts[task][&name]),
                "task {task}: {name} trained"
            );
        }
    }

    let (naive, _, _) = train_task_il(experiment, naive);
    let summary = format!(
        "task-IL: {} diagonal {:?}, last row {:?}; naive diagonal {:?}, last row {:?}",
        method.method.name(),
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
        assert!(
            accuracy.r(task, task) > min_accuracy,
            "learns task {task}: {summary}"
        );
    }
    assert!(
        naive.r(3, 1) < naive.r(1, 1) - 0.1,
        "naive forgets: {summary}"
    );
    assert!(accuracy.r(3, 1) > naive.r(3, 1) + 0.1, "{summary}");
    (added, accuracy)
}

/// Trains a method from `make` on `experiment` (at least 2 tasks) and checks selection and
/// checkpoints: selecting task 0 changes the outputs, selecting the last task gives the live
/// ones, `Selection::Latest` restores every variable bit for bit; the network saved and loaded
/// into a fresh one, with the state loaded into a fresh method, reproduces both outputs.
pub fn assert_selection_and_state_round_trip<M: Method>(
    experiment: &Experiment,
    make: impl Fn() -> M,
) {
    let tasks = experiment.stream.tasks;
    let mut method = make();
    let (_, _, net) = train_task_il(experiment, &mut method);
    let xs = mnist_shaped_inputs();
    let latest = net.model.forward_t(&xs, false);
    let live = snapshot(&net);
    method.select(&net, Selection::Task(0)).unwrap();
    let first = net.model.forward_t(&xs, false);
    assert!(!first.equal(&latest), "task 0's variables differ");
    method.select(&net, Selection::Task(tasks - 1)).unwrap();
    assert!(net.model.forward_t(&xs, false).equal(&latest));
    method.select(&net, Selection::Latest).unwrap();
    let restored = snapshot(&net);
    for (name, value) in &live {
        assert!(restored[name].equal(value), "{name} restored");
    }

    let path = std::env::temp_dir().join(format!(
        "{}-{}-{:?}.safetensors",
        method.name(),
        std::process::id(),
        std::thread::current().id()
    ));
    net.save(&path).unwrap();
    let (stream, fresh) = stream_and_network(experiment, &mnist());
    let mut loaded = make();
    loaded.load_state(method.state()).unwrap();
    loaded
        .before_task(&task_context(&fresh, &stream, 0))
        .unwrap();
    fresh.load(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    loaded.select(&fresh, Selection::Task(0)).unwrap();
    assert!(fresh.model.forward_t(&xs, false).equal(&first));
    loaded.select(&fresh, Selection::Latest).unwrap();
    assert!(fresh.model.forward_t(&xs, false).equal(&latest));
}
