//! Joint training on real data, at reduced scale: 3 Split-MNIST tasks of 500 training
//! samples. Training on every task so far is the upper bound naive fine-tuning is measured
//! against: in class-incremental read-out it keeps all classes, naive keeps only the last
//! task's.

use retain_config::Readout;
use retain_metrics::{AccuracyMatrix, BwtConvention};
use retain_train::testkit::{mnist, run_on, split_mnist};

fn class_il(method_toml: &str) -> AccuracyMatrix {
    let experiment = split_mnist(3, 500, 300, 0, method_toml, &[]);
    let params = &experiment.method.params;
    let mut method = match experiment.method.name.as_str() {
        "naive" => retain_method_naive::from_params(params),
        _ => retain_method_joint::from_params(params),
    }
    .unwrap();
    let mut matrices = run_on(&experiment, &mnist(), method.as_mut()).unwrap();
    matrices.remove(&Readout::ClassIl).unwrap()
}

#[test]
fn joint_beats_naive_in_class_il() {
    let naive = class_il(r#"name = "naive""#);
    let joint = class_il(r#"name = "joint""#);
    let summary = format!(
        "class-IL ACC/BWT: joint {:.3}/{:.3}, naive {:.3}/{:.3}",
        joint.acc(),
        joint.bwt(BwtConvention::Paper).unwrap(),
        naive.acc(),
        naive.bwt(BwtConvention::Paper).unwrap()
    );
    eprintln!("{summary}");
    assert!(naive.acc() < 0.45, "naive forgets earlier tasks: {summary}");
    assert!(
        joint.acc() > 0.85 && joint.acc() > naive.acc() + 0.40,
        "{summary}"
    );
    assert!(
        joint.bwt(BwtConvention::Paper).unwrap() > -0.10,
        "{summary}"
    );
}
