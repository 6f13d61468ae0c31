//! LUCIR on real data, at reduced scale: 5 Split-MNIST tasks of 500 training samples, the
//! testkit's MLP, one epoch per task, over three seeds.
//!
//! Naive fine-tuning forgets every earlier task in the class-incremental read-out (it predicts
//! the last task's classes). LUCIR's exemplars, its less-forget constraint and its margin
//! ranking loss keep the old classes competitive with the new ones, in both of the paper's
//! read-outs: the cosine classifier ("CNN") and the nearest mean of exemplars ("NME").

use std::collections::BTreeMap;

use retain_config::Readout;
use retain_metrics::AccuracyMatrix;
use retain_train::testkit::{mnist, run_on, split_mnist};

fn run(seed: u64, method_toml: &str, readouts: &str) -> BTreeMap<Readout, AccuracyMatrix> {
    let experiment = split_mnist(
        5,
        500,
        300,
        seed,
        method_toml,
        &[readouts, "training.epochs=3"],
    );
    let params = &experiment.method.params;
    let mut method = match experiment.method.name.as_str() {
        "naive" => retain_method_naive::from_params(params),
        _ => retain_method_lucir::from_params(params),
    }
    .unwrap();
    run_on(&experiment, &mnist(), method.as_mut()).unwrap()
}

#[test]
fn lucir_keeps_class_incremental_accuracy_far_above_naive() {
    for seed in [0, 1, 2] {
        let naive = run(seed, r#"name = "naive""#, r#"stream.readouts=["class_il"]"#);
        let lucir = run(
            seed,
            r#"name = "lucir""#,
            r#"stream.readouts=["class_il", "ncm"]"#,
        );
        let n = naive[&Readout::ClassIl].acc();
        let (cnn, nme) = (lucir[&Readout::ClassIl].acc(), lucir[&Readout::Ncm].acc());
        let summary = format!(
            "seed {seed}: class-IL ACC LUCIR (CNN) {cnn:.3}, LUCIR (NME) {nme:.3}, naive {n:.3}"
        );
        eprintln!("{summary}");
        assert!(n < 0.25, "naive forgets: {summary}");
        assert!(cnn > n + 0.25, "{summary}");
        assert!(nme > n + 0.3, "{summary}");
    }
}
