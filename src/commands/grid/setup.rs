//! What every grid subcommand starts from: the grid file loaded with the command line's
//! folders, and the checks that run before any cell starts.

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use retain_grid::GridSpec;

use crate::cli::GridArgs;
use crate::run::check_method;
use crate::run::plan::toml_path;
use crate::usage::UsageError;

/// A grid file with the command line's folders applied.
pub struct Loaded {
    pub spec: GridSpec,
    /// Overrides that carry `--output`/`--data-root` into every cell's experiment.
    pub extra: Vec<String>,
    /// The file's text, copied next to the results.
    pub source: String,
    pub args_output: Option<PathBuf>,
    pub args_data_root: Option<PathBuf>,
    pub path: PathBuf,
}

pub fn load(args: &GridArgs) -> Result<Loaded> {
    let source = std::fs::read_to_string(&args.grid).map_err(|e| {
        UsageError::new(format!(
            "cannot read grid file {}: {e}",
            args.grid.display()
        ))
    })?;
    let mut spec = GridSpec::from_source(&source, &args.grid.display().to_string())
        .map_err(|e| UsageError::new(e.to_string()))?;
    let mut extra = Vec::new();
    if let Some(output) = &args.output {
        spec.base.output = output.clone();
        extra.push(format!("output={}", toml_path(output)));
    }
    if let Some(root) = &args.data_root {
        spec.base.data_root = root.clone();
        extra.push(format!("data_root={}", toml_path(root)));
    }
    Ok(Loaded {
        spec,
        extra,
        source,
        args_output: args.output.clone(),
        args_data_root: args.data_root.clone(),
        path: args.grid.clone(),
    })
}

/// Every cell's method must exist, accept its hyper-parameters and fit the cell's model (and
/// its checkpoints): checked before anything runs, so a typo fails in a second, not after the
/// first hour of a grid.
pub fn check_methods(loaded: &Loaded) -> Result<()> {
    let spec = &loaded.spec;
    for cell in &spec.cells {
        let experiment = spec
            .experiment(cell, &loaded.extra)
            .map_err(|e| UsageError::new(e.to_string()))?;
        check_method(&experiment, &format!("{}: cell `{}`", spec.origin, cell.id))?;
    }
    Ok(())
}

/// Every dataset the cells read must be present and intact: checked once, before any cell
/// starts, so a missing dataset is one message with the fetch command, not a grid of failures.
pub fn check_datasets(loaded: &Loaded) -> Result<()> {
    let mut seen = Vec::new();
    for cell in &loaded.spec.cells {
        let experiment = loaded.spec.experiment(cell, &loaded.extra)?;
        let key = (
            experiment.stream.dataset.as_str(),
            experiment.data_root.clone(),
        );
        if seen.contains(&key) {
            continue;
        }
        let files = retain_data::status(key.0, &key.1)?;
        if let Some(bad) = files.iter().find(|f| !f.verified) {
            return Err(anyhow!(
                "dataset {} is not ready under {}: {} {}; run `{}`",
                key.0,
                key.1.display(),
                bad.path.display(),
                bad.problem.as_deref().unwrap_or("is missing"),
                retain_data::fetch_command(key.0, &key.1)
            ));
        }
        seen.push(key);
    }
    Ok(())
}
