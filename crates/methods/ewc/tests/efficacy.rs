//! EWC on real data, at reduced scale: 3 Split-MNIST tasks of 500 training samples.
//!
//! EWC was designed for domain-incremental streams (Permuted-MNIST), which the stream crate
//! does not offer yet; so this checks the scenario where a quadratic penalty also applies on
//! Split-MNIST: the task-incremental read-out, where naive fine-tuning's features drift and
//! earlier tasks' within-task accuracy drops. With a large `λ`, EWC keeps backward transfer
//! close to 0.

use retain_config::Readout;
use retain_metrics::{AccuracyMatrix, BwtConvention};
use retain_train::testkit::{mnist, run_on, split_mnist};

fn task_il(method_toml: &str) -> AccuracyMatrix {
    let experiment = split_mnist(3, 500, 300, 0, method_toml, &[]);
    let params = &experiment.method.params;
    let mut method = match experiment.method.name.as_str() {
        "naive" => retain_method_naive::from_params(params),
        "online-ewc" => retain_method_ewc::from_params_online(params),
        _ => retain_method_ewc::from_params(params),
    }
    .unwrap();
    let mut matrices = run_on(&experiment, &mnist(), method.as_mut()).unwrap();
    matrices.remove(&Readout::TaskIl).unwrap()
}

#[test]
fn large_lambda_keeps_task_il_backward_transfer_near_zero() {
    let naive = task_il(r#"name = "naive""#);
    let naive_bwt = naive.bwt(BwtConvention::Paper).unwrap();
    for toml in [
        "name = \"ewc\"\nlambda = 100000.0\nfisher_samples = 200",
        "name = \"online-ewc\"\nlambda = 100000.0\ngamma = 1.0\nfisher_samples = 200",
    ] {
        let ewc = task_il(toml);
        let bwt = ewc.bwt(BwtConvention::Paper).unwrap();
        let summary = format!(
            "{toml}: task-IL BWT {bwt:.3}, ACC {:.3}; naive BWT {naive_bwt:.3}, ACC {:.3}",
            ewc.acc(),
            naive.acc()
        );
        eprintln!("{summary}");
        assert!(naive_bwt < -0.15, "naive forgets: {summary}");
        assert!(bwt > -0.10 && bwt > naive_bwt + 0.15, "{summary}");
        assert!(ewc.acc() > naive.acc() + 0.08, "{summary}");
    }
}
