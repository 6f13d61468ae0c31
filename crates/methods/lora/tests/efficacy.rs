//! LoRA per task on real data, at reduced scale: 3 Split-MNIST tasks of 500 training samples.
//!
//! With the true task id choosing each task's adapters and head over a frozen backbone,
//! task-IL accuracy on a finished task never changes (backward transfer exactly 0), while
//! naive fine-tuning's shared weights drift and earlier tasks' accuracy drops.

use retain_config::Readout;
use retain_metrics::{AccuracyMatrix, BwtConvention};
use retain_train::testkit::{mnist, run_on, split_mnist};

fn task_il(method_toml: &str) -> AccuracyMatrix {
    let experiment = split_mnist(3, 500, 300, 0, method_toml, &[]);
    let params = &experiment.method.params;
    let mut method = match experiment.method.name.as_str() {
        "naive" => retain_method_naive::from_params(params),
        _ => retain_method_lora::from_params(params),
    }
    .unwrap();
    let mut matrices = run_on(&experiment, &mnist(), method.as_mut()).unwrap();
    matrices.remove(&Readout::TaskIl).unwrap()
}

#[test]
fn lora_per_task_does_not_forget_in_task_il_where_naive_does() {
    let naive = task_il(r#"name = "naive""#);
    let lora = task_il("name = \"lora\"\nrank = 8\nalpha = 16.0");
    let naive_bwt = naive.bwt(BwtConvention::Paper).unwrap();
    let bwt = lora.bwt(BwtConvention::Paper).unwrap();
    let summary = format!(
        "task-IL: lora BWT {bwt:.4}, ACC {:.3}, diagonal {:?}; naive BWT {naive_bwt:.3}, ACC {:.3}",
        lora.acc(),
        lora.diagonal(),
        naive.acc()
    );
    eprintln!("{summary}");
    // Exactly no forgetting: every finished task keeps its accuracy.
    for task in 1..=3 {
        for row in task + 1..=3 {
            assert_eq!(lora.r(row, task), lora.r(task, task), "{summary}");
        }
    }
    assert_eq!(bwt, 0.0, "{summary}");
    // It learns each task on the frozen random backbone.
    assert!(lora.diagonal().iter().all(|&a| a > 0.9), "{summary}");
    assert!(naive_bwt < -0.15, "naive forgets: {summary}");
    assert!(lora.acc() > naive.acc() + 0.1, "{summary}");
}
