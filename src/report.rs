//! Plain-text tables for the terminal.

use retain_config::Readout;
use retain_metrics::AccuracyMatrix;
use retain_train::RunOutcome;

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

/// Numbers right-aligned, text (and the first column) left-aligned, header underlined.
pub fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let numeric = |s: &str| {
        s.is_empty()
            || s == "-"
            || s.split('/')
                .all(|p| p.trim_start_matches('+').parse::<f64>().is_ok())
    };
    let text_column: Vec<bool> = (0..columns)
        .map(|c| {
            c == 0
                || rows
                    .iter()
                    .skip(1)
                    .filter_map(|r| r.get(c))
                    .any(|s| !numeric(s))
        })
        .collect();
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (n, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if text_column[c] {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        println!("  {}", line.join("  "));
        if n == 0 {
            println!(
                "  {}",
                widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("  ")
            );
        }
    }
}
