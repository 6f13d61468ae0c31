//! Times checksum verification of every file of the datasets under a root, by hand:
//! `cargo run --release -p retain-data --example verify_timing -- [root] [rounds]`.
//!
//! Three passes per dataset, each verifying every file: [`retain_data::status`] (`retain data
//! list`), a [`retain_data::fetch`] with no sources, which only checks the files already present,
//! and [`retain_data::load`], which reads, verifies and parses them. The first round warms the
//! page cache and is not counted, so the numbers are hashing, not disk.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use retain_data::{DATASETS, FetchOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(args.next().unwrap_or_else(|| "datasets".into()));
    let rounds: usize = args
        .next()
        .map_or(10, |r| r.parse().expect("rounds: a number"));
    let present: Vec<&str> = DATASETS
        .iter()
        .map(|d| d.name)
        .filter(|&name| {
            retain_data::status(name, &root).is_ok_and(|files| files.iter().all(|f| f.verified))
        })
        .collect();
    if present.is_empty() {
        eprintln!("no verified dataset under {}", root.display());
        std::process::exit(1);
    }
    println!(
        "root {}, {rounds} rounds after one warm-up, {} threads",
        root.display(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for name in present {
        let status = time(rounds, || {
            let files = retain_data::status(name, &root).expect("status");
            assert!(files.iter().all(|f| f.verified), "{name}: not verified");
        });
        let options = FetchOptions {
            sources: Some(Vec::new()),
            ..Default::default()
        };
        let fetch = time(rounds, || {
            let report = retain_data::fetch(name, &root, &options).expect("fetch");
            assert_eq!(report.fetched_count(), 0, "{name}: fetched");
        });
        let load = time(rounds, || {
            retain_data::load(name, &root).expect("load");
        });
        println!("{name}");
        println!("  status           {}", show(&status));
        println!("  fetch (present)  {}", show(&fetch));
        println!("  load             {}", show(&load));
    }
}

/// Durations of `rounds` calls of `f`, sorted, after one uncounted call.
fn time(rounds: usize, mut f: impl FnMut()) -> Vec<Duration> {
    f();
    let mut times: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times
}

fn show(sorted: &[Duration]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "min {:6.1} ms  median {:6.1} ms  max {:6.1} ms",
        ms(sorted[0]),
        ms(sorted[sorted.len() / 2]),
        ms(sorted[sorted.len() - 1])
    )
}
