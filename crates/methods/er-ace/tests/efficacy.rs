//! ER-ACE on real data, at reduced scale: 5 Split-MNIST tasks of 1000 training samples, one
//! epoch, a reservoir of 100 samples (10 per class at the end), class-incremental.
//!
//! The literature's picture (Caccia et al. 2022; Mammoth's and Avalanche's benchmarks):
//! rehearsal lifts class-incremental accuracy far above naive fine-tuning, and the asymmetric
//! cross-entropy does at least as well as plain experience replay, more so at small buffers,
//! because the incoming batch no longer pushes the old classes' logits down. Measured here on
//! seeds 0–5 (class-IL ACC, naive / replay / ER-ACE): 0.19/0.77/0.77, 0.19/0.74/0.80,
//! 0.12/0.68/0.82, 0.19/0.69/0.79, 0.19/0.75/0.81, 0.19/0.72/0.81; per seed ER-ACE is at most
//! 0.01 below replay and up to 0.14 above. The test runs seeds 0–2 and asserts the wide
//! margin over naive per seed, and over replay only on the mean (a single seed can tie).

use retain_config::Readout;
use retain_train::testkit::{mnist, run_on, split_mnist};

/// Final class-IL and task-IL accuracy of `method_toml` on `seed`.
fn run(seed: u64, method_toml: &str) -> (f64, f64) {
    let experiment = split_mnist(5, 1000, 300, seed, method_toml, &[]);
    let params = &experiment.method.params;
    let mut method = match experiment.method.name.as_str() {
        "naive" => retain_method_naive::from_params(params),
        "replay" => retain_method_replay::from_params(params),
        _ => retain_method_er_ace::from_params(params),
    }
    .unwrap();
    let matrices = run_on(&experiment, &mnist(), method.as_mut()).unwrap();
    (
        matrices[&Readout::ClassIl].acc(),
        matrices[&Readout::TaskIl].acc(),
    )
}

#[test]
fn er_ace_beats_naive_widely_and_replay_on_average_in_class_il() {
    let memory = "buffer_size = 100\nreplay_batch_size = 10";
    let mut means = [0.0f64; 3];
    let seeds = [0, 1, 2];
    for seed in seeds {
        let naive = run(seed, r#"name = "naive""#);
        let replay = run(seed, &format!("name = \"replay\"\n{memory}"));
        let ace = run(seed, &format!("name = \"er-ace\"\n{memory}"));
        let summary = format!(
            "seed {seed}: class-IL ACC naive {:.3}, replay {:.3}, ER-ACE {:.3}; task-IL ACC naive \
             {:.3}, replay {:.3}, ER-ACE {:.3}",
            naive.0, replay.0, ace.0, naive.1, replay.1, ace.1
        );
        eprintln!("{summary}");
        assert!(ace.0 > naive.0 + 0.4, "{summary}");
        assert!(ace.0 > replay.0 - 0.05, "{summary}");
        assert!(ace.1 > naive.1 + 0.15, "{summary}");
        for (mean, acc) in means.iter_mut().zip([naive.0, replay.0, ace.0]) {
            *mean += acc / seeds.len() as f64;
        }
    }
    let [naive, replay, ace] = means;
    let summary =
        format!("mean class-IL ACC: naive {naive:.3}, replay {replay:.3}, ER-ACE {ace:.3}");
    eprintln!("{summary}");
    assert!(ace > replay + 0.02, "{summary}");
}
