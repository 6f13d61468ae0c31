//! iCaRL on real data, at reduced scale: 3 Split-MNIST tasks of 500 training samples, class-IL.
//!
//! The literature's picture (Rebuffi et al. 2017; Buzzega et al. 2020): with a small memory of
//! herded exemplars and distillation, the nearest-mean-of-exemplars classifier keeps the old
//! classes apart from the new ones, where naive fine-tuning only predicts the last task's
//! classes (class-IL accuracy ≈ 1/tasks). Measured (memory 200, seeds 0/1/2): `ncm` 0.79,
//! 0.86, 0.87; the network's `class_il` 0.58, 0.50, 0.48; naive `class_il` 0.32, 0.30, 0.32.

use std::collections::BTreeMap;

use retain_config::Readout;
use retain_metrics::AccuracyMatrix;
use retain_train::testkit::{mnist, run_on, split_mnist};

const READOUTS: &str = r#"stream.readouts=["class_il", "task_il", "ncm"]"#;

fn run(method_toml: &str, seed: u64) -> BTreeMap<Readout, AccuracyMatrix> {
    let naive = method_toml.contains("naive");
    let overrides: &[&str] = if naive { &[] } else { &[READOUTS] };
    let experiment = split_mnist(3, 500, 300, seed, method_toml, overrides);
    let params = &experiment.method.params;
    let mut method = if naive {
        retain_method_naive::from_params(params)
    } else {
        retain_method_icarl::from_params(params)
    }
    .unwrap();
    run_on(&experiment, &mnist(), method.as_mut()).unwrap()
}

#[test]
fn icarl_nearest_mean_read_out_beats_naive_fine_tuning_in_class_il() {
    for seed in [0, 1, 2] {
        let naive = run(r#"name = "naive""#, seed);
        let icarl = run("name = \"icarl\"\nmemory_size = 200", seed);
        let naive_cil = naive[&Readout::ClassIl].acc();
        let (ncm, cil, til) = (
            icarl[&Readout::Ncm].acc(),
            icarl[&Readout::ClassIl].acc(),
            icarl[&Readout::TaskIl].acc(),
        );
        let summary = format!(
            "seed {seed}: iCaRL ncm {ncm:.3}, class_il {cil:.3}, task_il {til:.3}; naive class_il {naive_cil:.3}"
        );
        eprintln!("{summary}");
        assert!(naive_cil < 0.45, "naive forgets: {summary}");
        assert!(ncm > naive_cil + 0.30, "{summary}");
        assert!(ncm > 0.70, "{summary}");
        // The network's own read-out keeps more than naive's too, but less than the means.
        assert!(cil > naive_cil + 0.10, "{summary}");
        assert!(ncm > cil + 0.10, "{summary}");
    }
}
