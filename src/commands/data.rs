//! `retain data fetch` and `retain data list`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use retain_config::Experiment;
use retain_data::{DATASETS, DatasetSpec, FetchOptions, FileOrigin, Source};
use retain_grid::GridSpec;
use serde::Deserialize;

use crate::cli::DataCommand;
use crate::tables::print_table;
use crate::usage::UsageError;

pub fn execute(command: &DataCommand) -> Result<()> {
    match command {
        DataCommand::Fetch {
            name,
            for_file,
            dry_run,
            root,
            from,
            sources,
        } => {
            let mirrors = match sources {
                Some(path) => Mirrors::read(path)?,
                None => Mirrors::default(),
            };
            let names = match (name, for_file) {
                (Some(name), _) => vec![known(name)?],
                (None, Some(file)) => datasets_for(file)?,
                (None, None) => unreachable!("clap requires a name or --for"),
            };
            if *dry_run {
                for name in names {
                    println!("{name}");
                }
                return Ok(());
            }
            for name in names {
                fetch_one(name, root, from.as_deref(), mirrors.get(name))?;
            }
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

/// `name` as a known dataset name, or a usage error listing them.
fn known(name: &str) -> Result<&'static str> {
    DATASETS
        .iter()
        .map(|d| d.name)
        .find(|&n| n == name)
        .ok_or_else(|| {
            UsageError::new(format!(
                "unknown dataset `{name}` (known: {})",
                DATASETS
                    .iter()
                    .map(|d| d.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .into()
        })
}

/// Every dataset `file` (an experiment, or a grid file: every cell) reads, in first-use order:
/// the stream's and the `[pretrain]` stage's (a teacher is a checkpoint, not a dataset).
pub fn datasets_for(file: &Path) -> Result<Vec<&'static str>> {
    let source =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let is_grid = toml::from_str::<toml::Table>(&source)
        .map(|t| t.contains_key("grid"))
        .unwrap_or(false);
    let experiments: Vec<Experiment> = if is_grid {
        let spec = GridSpec::from_source(&source, &file.display().to_string())
            .map_err(|e| UsageError::new(e.to_string()))?;
        spec.cells
            .iter()
            .map(|cell| spec.experiment(cell, &[]))
            .collect::<Result<_, _>>()
            .map_err(|e| UsageError::new(e.to_string()))?
    } else {
        vec![
            Experiment::from_source(&source, &file.display().to_string(), &[])
                .map_err(|e| UsageError::new(e.to_string()))?,
        ]
    };
    let mut names: Vec<&'static str> = Vec::new();
    for experiment in &experiments {
        let stage = experiment.pretrain_plan().map(|p| p.dataset);
        for dataset in [Some(experiment.stream.dataset), stage]
            .into_iter()
            .flatten()
        {
            if !names.contains(&dataset.as_str()) {
                names.push(dataset.as_str());
            }
        }
    }
    Ok(names)
}

/// Fetches and verifies `name` into `root`, printing what happened to every file: from
/// `from` (a local folder or archive), else from the mirror's sources, else the shipped ones.
fn fetch_one(name: &str, root: &Path, from: Option<&Path>, mirror: Option<&Mirror>) -> Result<()> {
    let say = |line: &str| eprintln!("{line}");
    let mut options = match (from, mirror) {
        (Some(path), _) => FetchOptions::from_local(path),
        (None, Some(mirror)) => FetchOptions {
            sources: Some(mirror.sources.clone()),
            archive_md5: mirror.md5.clone(),
            ..FetchOptions::default()
        },
        (None, None) => FetchOptions::default(),
    };
    options.progress = Some(&say);
    let report = retain_data::fetch(name, root, &options)?;
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

/// A sources file (`--sources`): per dataset, where to fetch instead of the shipped sources.
#[derive(Debug, Default)]
struct Mirrors(BTreeMap<&'static str, Mirror>);

/// One dataset's entry of a sources file, checked.
#[derive(Debug)]
struct Mirror {
    /// Tried in the order per-file URL, archive URL, local path.
    sources: Vec<Source>,
    /// The md5 of a repackaged archive, for datasets vouched for by an archive md5.
    md5: Option<String>,
}

/// A dataset's table as written in the sources file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorEntry {
    per_file: Option<String>,
    archive: Option<String>,
    local: Option<PathBuf>,
    md5: Option<String>,
}

impl Mirrors {
    /// Reads and checks a sources file: known dataset names, at least one source each, and
    /// an `md5` only where an archive md5 vouches for the files, as 32 hex digits.
    fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read sources file {}", path.display()))?;
        let bad = |msg: String| UsageError::new(format!("{}: {msg}", path.display()));
        let entries: BTreeMap<String, MirrorEntry> =
            toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let mut mirrors = BTreeMap::new();
        for (name, entry) in entries {
            let spec = DatasetSpec::by_name(&name).map_err(|e| bad(format!("[{name}]: {e}")))?;
            let mut sources = Vec::new();
            sources.extend(entry.per_file.map(Source::per_file_url));
            sources.extend(entry.archive.map(Source::archive_url));
            sources.extend(entry.local.map(Source::Local));
            if sources.is_empty() {
                return Err(bad(format!(
                    "[{name}] names no source: give per_file, archive or local"
                ))
                .into());
            }
            if let Some(md5) = &entry.md5 {
                if spec.archive.is_none() {
                    return Err(bad(format!(
                        "[{name}].md5: {name} has a published md5 per file, so no archive md5 applies"
                    ))
                    .into());
                }
                if md5.len() != 32 || !md5.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(format!(
                        "[{name}].md5 = {md5:?} is not an md5 (32 hexadecimal digits)"
                    ))
                    .into());
                }
            }
            let md5 = entry.md5.map(|m| m.to_ascii_lowercase());
            mirrors.insert(spec.name, Mirror { sources, md5 });
        }
        Ok(Mirrors(mirrors))
    }

    fn get(&self, name: &str) -> Option<&Mirror> {
        self.0.get(name)
    }
}
