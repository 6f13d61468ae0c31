//! LwF on real data, at reduced scale: 3 Split-MNIST tasks of 500 training samples.
//!
//! The literature's picture (van de Ven et al. 2019; Hsu et al. 2018): distilling the previous
//! model's outputs on new data preserves how old classes are told apart from each other, so
//! the task-incremental read-out keeps its accuracy, but it does not stop new classes from
//! out-scoring old ones, so class-incremental accuracy stays at naive fine-tuning's level.

use std::collections::BTreeMap;

use retain_config::Readout;
use retain_metrics::{AccuracyMatrix, BwtConvention};
use retain_train::testkit::{mnist, run_on, split_mnist};

fn run(method_toml: &str) -> BTreeMap<Readout, AccuracyMatrix> {
    let experiment = split_mnist(3, 500, 300, 0, method_toml, &[]);
    let params = &experiment.method.params;
    let mut method = match experiment.method.name.as_str() {
        "naive" => retain_method_naive::from_params(params),
        _ => retain_method_lwf::from_params(params),
    }
    .unwrap();
    run_on(&experiment, &mnist(), method.as_mut()).unwrap()
}

#[test]
fn lwf_helps_task_il_but_not_class_il() {
    let naive = run(r#"name = "naive""#);
    let lwf = run("name = \"lwf\"\nalpha = 1.0\ntemperature = 2.0");
    let (n, l) = (&naive[&Readout::TaskIl], &lwf[&Readout::TaskIl]);
    let (n_bwt, l_bwt) = (
        n.bwt(BwtConvention::Paper).unwrap(),
        l.bwt(BwtConvention::Paper).unwrap(),
    );
    let (n_cil, l_cil) = (naive[&Readout::ClassIl].acc(), lwf[&Readout::ClassIl].acc());
    let summary = format!(
        "task-IL ACC/BWT: LwF {:.3}/{l_bwt:.3}, naive {:.3}/{n_bwt:.3}; class-IL ACC: LwF {l_cil:.3}, naive {n_cil:.3}",
        l.acc(),
        n.acc()
    );
    eprintln!("{summary}");
    assert!(n_bwt < -0.15, "naive forgets in task-IL: {summary}");
    assert!(l_bwt > n_bwt + 0.15, "{summary}");
    assert!(l.acc() > n.acc() + 0.08, "{summary}");
    assert!(l_cil < 0.5 && (l_cil - n_cil).abs() < 0.10, "{summary}");
}
