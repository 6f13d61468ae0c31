//! GDumb on real data, at reduced scale: 5 Split-MNIST tasks of 500 training samples.
//!
//! A network trained from scratch on a class-balanced memory of 500 samples (50 per class
//! once all ten are seen) tells every class seen so far apart, where naive fine-tuning
//! predicts only the latest task's classes: class-incremental accuracy far above naive's.

use std::collections::BTreeMap;

use retain_config::Readout;
use retain_metrics::AccuracyMatrix;
use retain_train::testkit::{mnist, run_on, split_mnist};

fn run(method_toml: &str, seed: u64, overrides: &[&str]) -> BTreeMap<Readout, AccuracyMatrix> {
    let experiment = split_mnist(5, 500, 300, seed, method_toml, overrides);
    let params = &experiment.method.params;
    let mut method = match experiment.method.name.as_str() {
        "naive" => retain_method_naive::from_params(params),
        _ => retain_method_gdumb::from_params(params),
    }
    .unwrap();
    run_on(&experiment, &mnist(), method.as_mut()).unwrap()
}

#[test]
fn gdumb_is_far_above_naive_in_class_il() {
    for seed in [0, 1, 2] {
        let naive = run(r#"name = "naive""#, seed, &[]);
        // GDumb's fitting: several passes over its memory before each evaluation.
        let gdumb = run(
            "name = \"gdumb\"\nmemory_size = 500",
            seed,
            &["training.epochs=10"],
        );
        let (n, g) = (
            naive[&Readout::ClassIl].acc(),
            gdumb[&Readout::ClassIl].acc(),
        );
        let (n_til, g_til) = (naive[&Readout::TaskIl].acc(), gdumb[&Readout::TaskIl].acc());
        let summary = format!(
            "seed {seed}: class-IL ACC GDumb {g:.3}, naive {n:.3}; task-IL ACC GDumb {g_til:.3}, naive {n_til:.3}"
        );
        eprintln!("{summary}");
        assert!(n < 0.3, "naive forgets in class-IL: {summary}");
        assert!(g > n + 0.4, "{summary}");
        assert!(g_til > 0.9, "{summary}");
    }
}
