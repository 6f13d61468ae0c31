//! `retain check`: a collected grid against a stored baseline.

use anyhow::{Result, anyhow};

use crate::cli::CheckArgs;
use crate::collected::Collected;
use crate::tables::print_table;
use crate::usage::UsageError;

/// `retain check`: every baseline metric within its tolerance, or exit status 1 with what
/// moved and by how much.
pub fn execute(args: &CheckArgs) -> Result<()> {
    let collected = Collected::load(&args.results)?;
    let origin = args.baseline.display().to_string();
    let text = std::fs::read_to_string(&args.baseline)
        .map_err(|e| UsageError::new(format!("cannot read baseline {origin}: {e}")))?;
    let entries =
        retain_grid::parse_baseline(&text, &origin).map_err(|e| UsageError::new(e.to_string()))?;
    let comparisons = retain_grid::compare(&entries, |metric, method, scenario| {
        collected
            .method_mean(metric, method, scenario)
            .map(|mean| mean * 100.0)
    });
    let mut rows = vec![
        [
            "metric",
            "method",
            "read-out",
            "baseline",
            "tolerance",
            "observed",
            "change",
            "",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect::<Vec<_>>(),
    ];
    for c in &comparisons {
        let e = &c.entry;
        rows.push(vec![
            e.metric.clone(),
            e.method.clone(),
            e.scenario.clone(),
            format!("{:.2}", e.value),
            format!("±{:.2}", e.tolerance),
            c.observed
                .map_or("missing".to_owned(), |o| format!("{o:.2}")),
            c.delta().map_or("-".to_owned(), |d| format!("{d:+.2}")),
            if c.passed() { "ok" } else { "MOVED" }.to_owned(),
        ]);
    }
    println!("{} against {origin} (percent)\n", args.results.display());
    print_table(&rows);
    let moved: Vec<&retain_grid::Comparison> = comparisons.iter().filter(|c| !c.passed()).collect();
    if moved.is_empty() {
        println!("\nall {} metrics within tolerance", comparisons.len());
        return Ok(());
    }
    for c in &moved {
        let e = &c.entry;
        match c.delta() {
            Some(d) => println!(
                "moved: {} {} {} by {d:+.2} points ({:.2} → {:.2}, tolerance ±{:.2})",
                e.metric,
                e.method,
                e.scenario,
                e.value,
                e.value + d,
                e.tolerance
            ),
            None => println!(
                "missing: {} {} {} is not in the results",
                e.metric, e.method, e.scenario
            ),
        }
    }
    Err(anyhow!(
        "{} of {} baseline metrics moved beyond their tolerance",
        moved.len(),
        comparisons.len()
    ))
}
