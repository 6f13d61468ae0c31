//! CODA-Prompt on real data, at reduced scale, class-incremental: a small vision transformer
//! (width 32, 2 blocks) pre-trained by a `[pretrain]` stage on MNIST digits 0–4, then two
//! tasks of the digits {5, 6} and {7, 8} without task id at test time. In its own test binary,
//! so that torch's global generator is not shared with concurrent tests.
//!
//! Naive fine-tuning of the whole network from the same pre-trained weights overwrites the
//! first task: its class-IL accuracy ends near half. CODA-Prompt keeps the backbone frozen,
//! trains the head on the current task's classes only and freezes each task's prompt
//! components, so the first task's digits stay mostly recognised. Its second task is the
//! weaker one at this scale: trained against its own classes only (the reference's masked
//! cross-entropy), its logits are not calibrated against the first task's, and the new
//! components also shift the first task's prompts. Width 32 rather than the testkit's 16
//! gives room for a pool of 10 orthogonal keys and a better query.

use retain_config::Readout;
use retain_method_coda_prompt::{CodaPrompt, DESCRIPTOR};
use retain_train::testkit::{mnist, run_on_pretrained, split_mnist_with};

const MODEL: &str =
    "kind = \"vit\"\npatch = 7\ndim = 32\ndepth = 2\nheads = 2\nmlp_dim = 64\ninit = \"kaiming\"";

fn experiment(seed: u64, method: &str) -> retain_config::Experiment {
    split_mnist_with(
        MODEL,
        2,
        500,
        300,
        seed,
        method,
        &[
            "stream.class_order=[5, 6, 7, 8, 9, 0, 1, 2, 3, 4]",
            "pretrain={classes=[0, 1, 2, 3, 4], epochs=2, batch_size=32, optimizer={kind=\"adam\", lr=0.002}}",
            "training.epochs=2",
            "training.optimizer.lr=0.005",
        ],
    )
}

#[test]
fn class_il_stays_far_above_chance_and_above_naive_fine_tuning() {
    let seed = 0;
    let coda_toml = "name = \"coda-prompt\"\npool_size = 10\nlength = 4";
    let coda_experiment = experiment(seed, coda_toml);
    let params = DESCRIPTOR.parse(&coda_experiment.method.params).unwrap();
    let mut coda = CodaPrompt::new(params).unwrap();
    let (stage, coda_matrices) = run_on_pretrained(&coda_experiment, &mnist(), &mut coda).unwrap();
    let mut naive = retain_method_naive::from_params(&toml::Table::new()).unwrap();
    let (_, naive_matrices) = run_on_pretrained(
        &experiment(seed, "name = \"naive\""),
        &mnist(),
        naive.as_mut(),
    )
    .unwrap();
    let coda_il = &coda_matrices[&Readout::ClassIl];
    let naive_il = &naive_matrices[&Readout::ClassIl];
    eprintln!(
        "seed {seed}: stage {stage:.3}; class-IL final accuracy: coda-prompt {:.3} (rows {:?} / {:?}), naive {:.3} (rows {:?} / {:?})",
        coda_il.acc(),
        coda_il.row(1),
        coda_il.row(2),
        naive_il.acc(),
        naive_il.row(1),
        naive_il.row(2),
    );
    assert!(stage > 0.9, "the stage learned digits 0-4: {stage}");
    // Chance is 1/4 over the four classes seen. Measured final class-IL accuracy over seeds
    // 0, 1, 2: coda-prompt 0.732, 0.575, 0.633; naive 0.470, 0.468, 0.470 (naive keeps
    // nothing of the first task). The margins asserted hold for each of them.
    assert!(coda_il.acc() > 0.5, "{coda_il:?}");
    assert!(
        coda_il.acc() > naive_il.acc() + 0.05,
        "{coda_il:?} vs {naive_il:?}"
    );
}
