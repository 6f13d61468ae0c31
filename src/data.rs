//! `retain data fetch` and `retain data list`.

use anyhow::Result;
use retain_data::{DATASETS, FetchOptions, FileOrigin};

use crate::UsageError;
use crate::cli::DataCommand;
use crate::report::print_table;

pub fn execute(command: &DataCommand) -> Result<()> {
    match command {
        DataCommand::Fetch { name, root, from } => {
            if !DATASETS.iter().any(|d| d.name == name) {
                return Err(UsageError::new(format!(
                    "unknown dataset `{name}` (known: {})",
                    DATASETS
                        .iter()
                        .map(|d| d.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .into());
            }
            let say = |line: &str| eprintln!("{line}");
            let mut options = match from {
                Some(path) => FetchOptions::from_local(path),
                None => FetchOptions::default(),
            };
            options.progress = Some(&say);
            let report = retain_data::fetch(name.as_str(), root, &options)?;
            for file in &report.files {
                let how = match &file.origin {
                    FileOrigin::AlreadyPresent => "already present, verified".to_owned(),
                    FileOrigin::Fetched { source } => format!("fetched from {source}, verified"),
                };
                println!("{}: {how}", file.path.display());
            }
            println!(
                "{name}: {} file(s) fetched, all verified, in {}",
                report.fetched_count(),
                report.dir.display()
            );
            Ok(())
        }
        DataCommand::List { root } => {
            let mut rows = vec![
                ["dataset", "files", "size (MB)", "verified", "problem"]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect::<Vec<_>>(),
            ];
            for spec in DATASETS {
                let files = retain_data::status(spec.name, root)?;
                let present = files.iter().filter(|f| f.present).count();
                let bytes: u64 = files.iter().filter_map(|f| f.size).sum();
                let verified = files.iter().all(|f| f.verified);
                // A missing checksum manifest only means "not verified"; a real problem in
                // any file (wrong size, bad label) must not hide behind it.
                let problems: Vec<&String> =
                    files.iter().filter_map(|f| f.problem.as_ref()).collect();
                let problem = problems
                    .iter()
                    .find(|p| !p.contains(retain_data::NOT_VERIFIED_NO_MANIFEST))
                    .or(problems.first())
                    .map(|p| (*p).clone())
                    .or_else(|| {
                        (present < files.len()).then(|| {
                            format!("missing: {}", retain_data::fetch_command(spec.name, root))
                        })
                    })
                    .unwrap_or_default();
                rows.push(vec![
                    spec.name.to_owned(),
                    format!("{present}/{}", files.len()),
                    format!("{:.1}", bytes as f64 / 1e6),
                    if verified { "yes" } else { "no" }.to_owned(),
                    problem,
                ]);
            }
            print_table(&rows);
            Ok(())
        }
    }
}
