//! SimpleCIL on real data, at reduced scale: a small vision transformer pre-trained on MNIST
//! digits 0–4 (a `[pretrain]` stage), then class-incremental on digits 5–8 in 2 tasks of 2
//! classes (300 training samples each), class-IL.
//!
//! The model is testkit's `SMALL_VIT` with width 32 instead of 16 (7×7 patches, 2 blocks of 2
//! heads, MLP width 64): 32-dimensional features leave the prototypes of unseen digits more
//! room than 16. The paper's picture (Zhou et al. 2024): the frozen pre-trained features with
//! class-mean prototypes keep every class seen, where fine-tuning the same pre-trained network
//! on each task in turn predicts only the last task's classes (class-IL ≈ 1/tasks). SimpleCIL
//! trains nothing, so the backbone is the stage's; its accuracy measures how well features
//! learned on 0–4 separate 5–8.
//!
//! Measured (stage of 1 epoch over the ~30k training images of 0–4, Adam 0.002, batch 32;
//! seeds 0/1/2): stage accuracy 0.96, 0.94, 0.95; SimpleCIL class-IL 0.72, 0.64, 0.67
//! (task-IL 0.91, 0.83, 0.87); naive fine-tuning from the same stage class-IL 0.40, 0.36, 0.38
//! (task-IL 0.68, 0.66, 0.71). The test runs seeds 0 and 1 (each seed trains the stage twice,
//! once per method, which is most of its time).

use retain_train::Readout;
use retain_train::testkit::{mnist, run_on_pretrained, split_mnist_with};

const VIT: &str =
    "kind = \"vit\"\npatch = 7\ndim = 32\ndepth = 2\nheads = 2\nmlp_dim = 64\ninit = \"kaiming\"";

/// `(stage accuracy, final class-IL accuracy, final task-IL accuracy)`.
fn run(method_toml: &str, seed: u64) -> (f64, f64, f64) {
    let experiment = split_mnist_with(
        VIT,
        2,
        300,
        300,
        seed,
        method_toml,
        &[
            "stream.class_order=[5, 6, 7, 8, 9, 0, 1, 2, 3, 4]",
            "pretrain={classes=[0, 1, 2, 3, 4], epochs=1, batch_size=32, optimizer={kind=\"adam\", lr=0.002}}",
        ],
    );
    let params = &experiment.method.params;
    let mut method = if method_toml.contains("naive") {
        retain_method_naive::from_params(params)
    } else {
        retain_method_simplecil::from_params(params)
    }
    .unwrap();
    let (stage, matrices) = run_on_pretrained(&experiment, &mnist(), method.as_mut()).unwrap();
    (
        stage,
        matrices[&Readout::ClassIl].acc(),
        matrices[&Readout::TaskIl].acc(),
    )
}

#[test]
fn simplecil_prototypes_on_pretrained_features_beat_naive_fine_tuning_in_class_il() {
    for seed in [0, 1] {
        let (stage, cil, til) = run("name = \"simplecil\"", seed);
        let (naive_stage, naive_cil, naive_til) = run("name = \"naive\"", seed);
        let summary = format!(
            "seed {seed}: stage {stage:.3}; SimpleCIL class_il {cil:.3}, task_il {til:.3}; \
             naive class_il {naive_cil:.3}, task_il {naive_til:.3} (stage {naive_stage:.3})"
        );
        eprintln!("{summary}");
        assert!(stage > 0.9, "the stage learned digits 0-4: {summary}");
        // Chance over the 4 classes seen is 0.25.
        assert!(naive_cil < 0.5, "naive forgets the first task: {summary}");
        assert!(cil > 0.55, "{summary}");
        assert!(cil > naive_cil + 0.2, "{summary}");
    }
}
