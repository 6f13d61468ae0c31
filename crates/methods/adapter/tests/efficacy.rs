//! Bottleneck adapters per task on real data, at reduced scale: 3 Split-MNIST tasks of 1000
//! training samples on a small random vision transformer. In its own test binary, so that
//! torch's global generator (the initialisation) is not shared with concurrent tests and the
//! numbers are reproducible.
//!
//! With the true task id choosing each task's adapters and head over a frozen backbone,
//! task-IL accuracy on a finished task never changes, while naive fine-tuning's shared
//! weights drift and the first task's accuracy drops.

use retain_method_adapter::{Adapter, DESCRIPTOR};
use retain_peft::conformance::assert_per_task_contract;
use retain_train::testkit::small_vit_split_mnist;

#[test]
fn training_changes_only_adapters_and_head_and_task_il_never_forgets_where_naive_does() {
    let experiment = small_vit_split_mnist(3, 1000, 5, "name = \"adapter\"\nwidth = 8");
    let params = DESCRIPTOR.parse(&experiment.method.params).unwrap();
    let mut naive = retain_method_naive::from_params(&toml::Table::new()).unwrap();
    let (added, _) = assert_per_task_contract(
        &experiment,
        Adapter::new(params).unwrap(),
        naive.as_mut(),
        0.75,
    );
    assert_eq!(added.len(), 16);
    assert!(added.iter().all(|n| n.starts_with("adapter.")));
}
