//! MAS on real data, at reduced scale: 3 Split-MNIST tasks of 500 training samples.
//!
//! The literature (Hsu et al. 2018, Split-MNIST): MAS keeps task-incremental accuracy far
//! above naive fine-tuning's, while class-incremental accuracy stays at naive's level (MAS
//! 99.22 / 19.52 task-IL / class-IL against SGD's 97.98 / 19.46; naive forgets more at the
//! reduced scale here): the penalty keeps old tasks' features, but not the old classes'
//! outputs from being out-scored by new ones.
//!
//! Measured (`λ = 1`, one epoch at batch 10 with Adam at 0.001): task-IL ACC / BWT
//! 0.956 / +0.022 against naive's 0.727 / −0.355 (seed 0), 0.812 / −0.120 against 0.714 /
//! −0.353 (seed 1); class-IL ACC 0.494 / 0.578 against 0.316 / 0.301. At this short training, unlike the
//! literature's longer runs, class-IL ACC is also above naive's (0.494 vs 0.316; λ = 0.1:
//! 0.558; λ = 0.01: 0.322 with task-IL only 0.782), so the test asserts only that class-IL
//! stays far below task-IL, not that it equals naive's.

use std::collections::BTreeMap;

use retain_config::Readout;
use retain_metrics::{AccuracyMatrix, BwtConvention};
use retain_train::testkit::{mnist, run_on, split_mnist};

fn run(method_toml: &str, seed: u64) -> BTreeMap<Readout, AccuracyMatrix> {
    let experiment = split_mnist(3, 500, 300, seed, method_toml, &[]);
    let params = &experiment.method.params;
    let mut method = match experiment.method.name.as_str() {
        "naive" => retain_method_naive::from_params(params),
        _ => retain_method_mas::from_params(params),
    }
    .unwrap();
    run_on(&experiment, &mnist(), method.as_mut()).unwrap()
}

#[test]
fn mas_keeps_task_il_accuracy_far_above_naive() {
    for seed in [0, 1] {
        let naive = run(r#"name = "naive""#, seed);
        let mas = run(
            &format!(
                "name = \"mas\"\nlambda = {}",
                std::env::var("MAS_L").unwrap_or("1.0".into())
            ),
            seed,
        );
        let (n, s) = (&naive[&Readout::TaskIl], &mas[&Readout::TaskIl]);
        let (n_bwt, s_bwt) = (
            n.bwt(BwtConvention::Paper).unwrap(),
            s.bwt(BwtConvention::Paper).unwrap(),
        );
        let (n_cil, s_cil) = (naive[&Readout::ClassIl].acc(), mas[&Readout::ClassIl].acc());
        let summary = format!(
            "seed {seed}: task-IL ACC/BWT: MAS {:.3}/{s_bwt:.3}, naive {:.3}/{n_bwt:.3}; class-IL ACC: MAS {s_cil:.3}, naive {n_cil:.3}",
            s.acc(),
            n.acc()
        );
        eprintln!("{summary}");
        assert!(n_bwt < -0.15, "naive forgets in task-IL: {summary}");
        assert!(s_bwt > n_bwt + 0.15, "{summary}");
        assert!(s.acc() > n.acc() + 0.06, "{summary}");
        // Without a task id the old classes are still out-scored by the new ones: class-IL stays
        // far below task-IL.
        assert!(s_cil < s.acc() - 0.15, "{summary}");
    }
}
