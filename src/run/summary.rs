//! The tables `retain run` prints after a run: each read-out's accuracy matrix and the
//! metrics.

use retain_config::Readout;
use retain_metrics::AccuracyMatrix;
use retain_train::RunOutcome;

use crate::tables::print_table;

/// Prints each read-out's accuracy matrix and a metrics table.
pub fn print_run(matrices: &[(Readout, AccuracyMatrix)], outcome: &RunOutcome) {
    for (readout, matrix) in matrices {
        println!(
            "\naccuracy (%), {} read-out: rows = after training task, columns = evaluated task",
            readout.as_str()
        );
        let mut rows = vec![
            std::iter::once(String::new())
                .chain((1..=matrix.tasks()).map(|j| format!("T{j}")))
                .collect::<Vec<_>>(),
        ];
        for i in 0..=matrix.tasks() {
            let label = if i == 0 {
                "init".to_owned()
            } else {
                format!("after T{i}")
            };
            rows.push(
                std::iter::once(label)
                    .chain(matrix.row(i).iter().map(|a| format!("{:.1}", a * 100.0)))
                    .collect(),
            );
        }
        print_table(&rows);
    }
    println!("\nmetrics (%; BWT/FWT divided by T-1, forgetting = max over earlier rows)");
    let mut rows = vec![
        [
            "read-out",
            "ACC",
            "BWT",
            "FWT",
            "forgetting",
            "avg inc. ACC",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect::<Vec<_>>(),
    ];
    let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:+.2}", v * 100.0));
    for (readout, matrix) in matrices {
        let s = matrix.summary();
        rows.push(vec![
            readout.as_str().to_owned(),
            format!("{:.2}", s.acc * 100.0),
            pct(s.bwt),
            pct(s.fwt),
            pct(s.forgetting),
            format!("{:.2}", s.average_incremental_accuracy * 100.0),
        ]);
    }
    print_table(&rows);
    println!(
        "\n{} steps, {:.1} µs/step, {:.2}s total",
        outcome.steps(),
        outcome.seconds_per_step() * 1e6,
        outcome.total_seconds
    );
}
