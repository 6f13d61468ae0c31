//! Experiment grids: one TOML file, many runs.
//!
//! A grid file is an ordinary experiment file plus a `[grid]` table whose entries are *axes*
//! (any config key with a list of values) and a few runner settings, and optionally a
//! `[published]` table of reference numbers:
//!
//! ```toml
//! name = "split-mnist-grid"
//! # ... the experiment, exactly as for `retain run` ...
//!
//! [grid]
//! runs_per_device = 4                 # concurrent runs per GPU (or CPU slots, ≤ cores)
//! devices = "auto"                    # "auto" | "cpu" | ["cuda:0", "cuda:1"]
//! "seed" = [0, 1, 2]
//! "method.name" = ["naive", "joint"]
//! "training.optimizer.lr" = [0.01, 0.05]
//!
//! [published]
//! citation = "Buzzega et al. 2020, Table 2"
//! "naive.class_il.acc" = 19.62        # percent, as papers print them
//! ```
//!
//! The axes expand as a cartesian product into [`Cell`]s. Each cell is the base experiment
//! with its axis values applied as `--set` overrides through
//! [`retain_config::Experiment::from_source`], so a grid accepts exactly the keys a run
//! accepts, and a key outside the schema is rejected before anything runs, with the key named.
//!
//! # Cell ids
//!
//! A cell's id is built from its own `key=value` pairs only (`lr=0.01,method=naive,seed=0`),
//! so the same file always yields the same ids in the same order, and appending a value to an
//! axis adds cells without renaming existing ones: a grid can grow and resume. Keys are
//! shortened to their last segment (`method.name` to `method`) unless two axes would share a
//! short name; values keep `[A-Za-z0-9._+-]` and replace anything else by `-` (lists join their
//! elements with `-`). Two cells whose ids would collide are an error.
//!
//! Axes are ordered by key (alphabetically), which fixes both the id layout and the order of
//! cells: the first axis varies slowest.
//!
//! This crate is pure: no tch, no polars. It also holds the resume bookkeeping (a cell's
//! status from its `manifest.json`), device slots, the aggregation of `grid collect`
//! ([`collect()`]: intransigence against joint partners, grouping over seeds, the plots to
//! draw) and baseline checks.

mod axes;
mod baseline;
pub mod collect;
mod published;
mod status;

use std::path::{Path, PathBuf};

use retain_config::{DeviceSpec, Experiment};

use axes::{expand, flatten_axis, name_axes, toml_inline};
use published::parse_published;

pub use axes::{Axis, Cell, display_value};
pub use baseline::{BaselineEntry, Comparison, METRICS, compare, parse_baseline};
pub use collect::{CellResults, CollectError, Collection, Readout, collect};
pub use published::Published;
pub use status::{CellStatus, cell_manifest};

/// Errors of grid files, cells and baselines: each names the file and the key, cell or row.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: no `[grid]` table (a grid file is an experiment plus `[grid]` axes)")]
    NoGrid { origin: String },
    #[error("{origin}: `[grid]` setting `{key}`: {message}")]
    Setting {
        origin: String,
        key: String,
        message: String,
    },
    #[error("{origin}: grid axis `{key}`: {message}")]
    Axis {
        origin: String,
        key: String,
        message: String,
    },
    #[error("{origin}: cell `{cell}`: {message}")]
    Cell {
        origin: String,
        cell: String,
        message: String,
    },
    #[error("{origin}: cells `{first}` and `{second}` would have the same id `{id}`")]
    IdCollision {
        origin: String,
        first: String,
        second: String,
        id: String,
    },
    #[error("{origin}: no cell `{cell}` (run `retain grid list` to see the ids)")]
    UnknownCell { origin: String, cell: String },
    #[error("{origin}: `[published]` entry `{key}`: {message}")]
    Published {
        origin: String,
        key: String,
        message: String,
    },
    #[error("{origin}: {message}")]
    Baseline { origin: String, message: String },
    /// The experiment part of the file is invalid (the message has the file and line).
    #[error(transparent)]
    Experiment(#[from] retain_config::ConfigError),
    /// A cell's manifest is of a newer schema than this build reads.
    #[error(transparent)]
    Manifest(#[from] retain_manifest::ManifestError),
}

/// Config keys that cannot be axes: the runner owns them.
const RESERVED_AXES: [(&str, &str); 3] = [
    (
        "name",
        "the experiment name is the grid's name; every cell shares it",
    ),
    (
        "device",
        "the runner assigns devices; use `[grid] devices = ...`",
    ),
    (
        "output",
        "every cell writes under `<output>/<name>/cells/`; set `output` once",
    ),
];

/// Runner settings from `[grid]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridSettings {
    /// Concurrent runs per device (GPU, or CPU slots; CPU slots are capped at the core count
    /// by the runner).
    pub runs_per_device: usize,
    pub devices: DeviceList,
}

impl Default for GridSettings {
    fn default() -> Self {
        Self {
            runs_per_device: 1,
            devices: DeviceList::Auto,
        }
    }
}

/// Where a grid's cells run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceList {
    /// Every visible GPU, else the CPU.
    Auto,
    /// Only the CPU.
    Cpu,
    /// These devices.
    List(Vec<DeviceSpec>),
}

impl std::str::FromStr for DeviceList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            list => list
                .split(',')
                .map(|d| match d.trim().parse::<DeviceSpec>()? {
                    DeviceSpec::Auto => Err("`auto` cannot be part of a device list".to_owned()),
                    other => Ok(other),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Self::List),
        }
    }
}

/// A parsed and validated grid file.
#[derive(Debug, Clone)]
pub struct GridSpec {
    /// Names the file in errors.
    pub origin: String,
    /// The experiment part of the file, with `[grid]` and `[published]` blanked out (line
    /// numbers kept, so config errors still point at the right line).
    pub base_source: String,
    /// The base experiment (no axis applied).
    pub base: Experiment,
    pub axes: Vec<Axis>,
    pub settings: GridSettings,
    pub published: Published,
    /// Every cell, in expansion order.
    pub cells: Vec<Cell>,
}

impl GridSpec {
    /// Reads and validates a grid file (see [`GridSpec::from_source`]).
    pub fn load(path: &Path) -> Result<Self, GridError> {
        let source = std::fs::read_to_string(path).map_err(|source| GridError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_source(&source, &path.display().to_string())
    }

    /// Parses a grid file, checks every axis value against the experiment schema one key at a
    /// time (so an error names the key), then every cell's combination, and expands the cells.
    pub fn from_source(source: &str, origin: &str) -> Result<Self, GridError> {
        let mut tree: toml::Table = toml::from_str(source).map_err(|e| GridError::Parse {
            origin: origin.to_owned(),
            message: e.message().to_owned(),
        })?;
        let grid = match tree.remove("grid") {
            Some(toml::Value::Table(t)) => t,
            Some(_) => {
                return Err(GridError::Parse {
                    origin: origin.to_owned(),
                    message: "`grid` must be a table".into(),
                });
            }
            None => {
                return Err(GridError::NoGrid {
                    origin: origin.to_owned(),
                });
            }
        };
        let published = match tree.remove("published") {
            Some(toml::Value::Table(t)) => parse_published(origin, t)?,
            Some(_) => {
                return Err(GridError::Parse {
                    origin: origin.to_owned(),
                    message: "`published` must be a table".into(),
                });
            }
            None => Published::default(),
        };
        let base_source = strip_tables(source, &tree);
        let base = Experiment::from_source(&base_source, origin, &[])?;

        let mut settings = GridSettings::default();
        let mut flat = Vec::new();
        for (key, value) in grid {
            match key.as_str() {
                "runs_per_device" => {
                    settings.runs_per_device = value
                        .as_integer()
                        .filter(|n| *n >= 1)
                        .map(|n| n as usize)
                        .ok_or_else(|| GridError::Setting {
                            origin: origin.to_owned(),
                            key: key.clone(),
                            message: format!("`{value}` must be an integer ≥ 1"),
                        })?;
                }
                "devices" => {
                    settings.devices =
                        parse_devices(&value).map_err(|message| GridError::Setting {
                            origin: origin.to_owned(),
                            key: key.clone(),
                            message,
                        })?;
                }
                _ => flatten_axis(origin, key, value, &mut flat)?,
            }
        }
        flat.sort_by(|a, b| a.0.cmp(&b.0));
        for pair in flat.windows(2) {
            if pair[0].0 == pair[1].0 {
                return Err(GridError::Axis {
                    origin: origin.to_owned(),
                    key: pair[0].0.clone(),
                    message: "given twice".into(),
                });
            }
        }
        let axes = name_axes(flat);

        // One key at a time first, so a bad key or value is named on its own.
        for axis in &axes {
            if let Some((_, why)) = RESERVED_AXES.iter().find(|(k, _)| *k == axis.key) {
                return Err(GridError::Axis {
                    origin: origin.to_owned(),
                    key: axis.key.clone(),
                    message: format!("cannot be an axis: {why}"),
                });
            }
            for value in &axis.values {
                if axis.key == axes::WITH {
                    axes::check_with_value(origin, value)?;
                }
                let sets = axes::value_overrides(&axis.key, value);
                Experiment::from_source(&base_source, origin, &sets).map_err(|e| {
                    GridError::Axis {
                        origin: origin.to_owned(),
                        key: axis.key.clone(),
                        message: format!(
                            "value {}: {}",
                            toml_inline(value),
                            strip_origin(&e.to_string(), origin)
                        ),
                    }
                })?;
            }
        }

        let cells = expand(origin, &axes)?;
        let spec = Self {
            origin: origin.to_owned(),
            base_source,
            base,
            axes,
            settings,
            published,
            cells,
        };
        // Then every combination (e.g. tasks × classes_per_task that overflow the dataset).
        for cell in &spec.cells {
            spec.experiment(cell, &[])?;
        }
        Ok(spec)
    }

    /// The experiment of a cell: the base with the cell's axis values and then `extra`
    /// overrides (device, output, ...) applied.
    pub fn experiment(&self, cell: &Cell, extra: &[String]) -> Result<Experiment, GridError> {
        let mut overrides = cell.overrides();
        overrides.extend_from_slice(extra);
        Experiment::from_source(&self.base_source, &self.origin, &overrides).map_err(|e| {
            GridError::Cell {
                origin: self.origin.clone(),
                cell: cell.id.clone(),
                message: strip_origin(&e.to_string(), &self.origin),
            }
        })
    }

    /// The cell with this id.
    pub fn cell(&self, id: &str) -> Result<&Cell, GridError> {
        self.cells
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| GridError::UnknownCell {
                origin: self.origin.clone(),
                cell: id.to_owned(),
            })
    }

    /// `<output>/<name>`: everything the grid writes lives here.
    pub fn results_dir(&self) -> PathBuf {
        self.base.output.join(&self.base.name)
    }

    /// `<output>/<name>/cells/<id>`: the run folder of one cell.
    pub fn cell_dir(&self, cell: &Cell) -> PathBuf {
        self.results_dir().join("cells").join(&cell.id)
    }

    /// The method a cell runs (its `method.name` axis value, else the base experiment's).
    pub fn method_of(&self, cell: &Cell) -> String {
        // A `method` axis of whole tables, or one inside a `with` table.
        let from_table = || {
            cell.assignments
                .iter()
                .find_map(|(k, v)| match k.as_str() {
                    "method" => Some(v),
                    axes::WITH => v.get("method"),
                    _ => None,
                })
                .and_then(|v| v.get("name"))
                .map(display_value)
        };
        cell.value_of("method.name")
            .or_else(from_table)
            .unwrap_or_else(|| self.base.method.name.clone())
    }

    /// The cell a `cell` is compared with for intransigence: the `joint` cell (joint training
    /// from scratch on tasks `1..=k`, the `a*_k`) that agrees with it on every axis outside
    /// the method (`method.*` keys and a `method` axis of whole tables; seed included).
    /// `None` when the grid has no such cell, and for joint cells themselves.
    pub fn joint_partner(&self, cell: &Cell) -> Option<&Cell> {
        if self.method_of(cell) == "joint" {
            return None;
        }
        self.cells.iter().find(|other| {
            self.method_of(other) == "joint"
                && other
                    .assignments
                    .iter()
                    .zip(&cell.assignments)
                    .all(|((k, a), (_, b))| is_method_key(k) || a == b)
        })
    }
}

/// Whether an axis key chooses the method: `method.<key>`, `method` itself (an axis of
/// whole `[method]` tables), or `with` (tables that set a method with what belongs to it).
fn is_method_key(key: &str) -> bool {
    key == "method" || key.starts_with("method.") || key == axes::WITH
}

/// Device strings of the runner's slots: `runs_per_device` slots per device, interleaved
/// (`cuda:0, cuda:1, cuda:0, cuda:1, ...`), so the first cells spread over every device
/// before any device gets a second one.
pub fn slots(devices: &[String], runs_per_device: usize) -> Vec<String> {
    (0..runs_per_device)
        .flat_map(|_| devices.iter().cloned())
        .collect()
}

fn parse_devices(value: &toml::Value) -> Result<DeviceList, String> {
    match value {
        toml::Value::String(s) => s.parse(),
        toml::Value::Array(items) => {
            let names: Option<Vec<&str>> = items.iter().map(toml::Value::as_str).collect();
            let names = names.ok_or("list device names as strings, e.g. [\"cuda:0\"]")?;
            if names.is_empty() {
                return Err("lists no device".into());
            }
            names.join(",").parse()
        }
        _ => Err("use \"auto\", \"cpu\" or a list like [\"cuda:0\", \"cuda:1\"]".into()),
    }
}

/// The source with the `[grid]` and `[published]` tables blanked line for line, so errors in
/// the experiment part keep their line numbers. Falls back to re-serialising `rest` when the
/// tables are written in a form line blanking cannot remove (inline tables, dotted keys).
fn strip_tables(source: &str, rest: &toml::Table) -> String {
    let mut skipping = false;
    let blanked: Vec<&str> = source
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with('[') {
                let header = trimmed
                    .trim_start_matches('[')
                    .split(']')
                    .next()
                    .unwrap_or("")
                    .trim();
                let head = header.split('.').next().unwrap_or("").trim();
                skipping = head == "grid" || head == "published";
            }
            if skipping { "" } else { line }
        })
        .collect();
    let text = blanked.join("\n") + "\n";
    match toml::from_str::<toml::Table>(&text) {
        Ok(parsed) if &parsed == rest => text,
        _ => toml::to_string(rest).unwrap_or(text),
    }
}

/// Config errors start with their origin; inside a grid error that would repeat the file name.
/// Messages that point at a line (`g.toml:23: ...`) are kept whole.
fn strip_origin(message: &str, origin: &str) -> String {
    let Some(rest) = message.strip_prefix(origin) else {
        return message.to_owned();
    };
    if let Some(m) = rest.strip_prefix(": ") {
        return m.to_owned();
    }
    if rest.starts_with(" with overrides [")
        && let Some((_, m)) = rest.split_once("]: ")
    {
        return m.to_owned();
    }
    message.to_owned()
}

#[cfg(test)]
mod tests;
