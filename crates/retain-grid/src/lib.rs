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
//! status from its `manifest.json`), device slots, grouping over seeds and baseline checks.

mod baseline;
mod status;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use retain_config::{DeviceSpec, Experiment};

pub use baseline::{BaselineEntry, Comparison, METRICS, compare, parse_baseline};
pub use status::{CellStatus, CostsSummary, ManifestSummary, read_manifest};

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

/// One axis: a config key and the values it takes, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub key: String,
    pub values: Vec<toml::Value>,
    /// The key as it appears in cell ids.
    pub short: String,
}

/// One point of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Position in the expansion order.
    pub index: usize,
    /// Stable, readable id: `key=value` pairs joined by `,`.
    pub id: String,
    /// `(axis key, value)` for every axis, in axis order.
    pub assignments: Vec<(String, toml::Value)>,
}

impl Cell {
    /// The assignments as `KEY=VALUE` overrides, the value in TOML syntax.
    pub fn overrides(&self) -> Vec<String> {
        self.assignments
            .iter()
            .map(|(k, v)| format!("{k}={}", toml_inline(v)))
            .collect()
    }

    /// The value of an axis as a readable string (strings unquoted), if the cell has it.
    pub fn value_of(&self, key: &str) -> Option<String> {
        self.assignments
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| display_value(v))
    }

    /// The id without the `seed` axis: cells that differ only in their seed share it, so it
    /// labels one configuration in tables and plots aggregated over seeds.
    pub fn config_label(&self, axes: &[Axis]) -> String {
        let parts: Vec<String> = axes
            .iter()
            .zip(&self.assignments)
            .filter(|(axis, _)| axis.key != "seed")
            .map(|(axis, (_, v))| format!("{}={}", axis.short, id_value(v)))
            .collect();
        if parts.is_empty() {
            "all".to_owned()
        } else {
            parts.join(",")
        }
    }
}

/// Published reference numbers from `[published]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Published {
    pub citation: Option<String>,
    /// `(method, scenario, metric)` → value in percent.
    pub values: BTreeMap<(String, String, String), f64>,
}

impl Published {
    /// The published value for a method, read-out and metric, in percent.
    pub fn get(&self, method: &str, scenario: &str, metric: &str) -> Option<f64> {
        self.values
            .get(&(method.to_owned(), scenario.to_owned(), metric.to_owned()))
            .copied()
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
                let set = format!("{}={}", axis.key, toml_inline(value));
                Experiment::from_source(&base_source, origin, &[set]).map_err(|e| {
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
        let from_table = || {
            cell.assignments
                .iter()
                .find(|(k, _)| k == "method")
                .and_then(|(_, v)| v.get("name"))
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

/// Whether an axis key chooses the method: `method.<key>`, or `method` itself (an axis of
/// whole `[method]` tables).
fn is_method_key(key: &str) -> bool {
    key == "method" || key.starts_with("method.")
}

/// Device strings of the runner's slots: `runs_per_device` slots per device, interleaved
/// (`cuda:0, cuda:1, cuda:0, cuda:1, ...`), so the first cells spread over every device
/// before any device gets a second one.
pub fn slots(devices: &[String], runs_per_device: usize) -> Vec<String> {
    (0..runs_per_device)
        .flat_map(|_| devices.iter().cloned())
        .collect()
}

/// Expands axes into cells, first axis slowest.
fn expand(origin: &str, axes: &[Axis]) -> Result<Vec<Cell>, GridError> {
    let total: usize = axes.iter().map(|a| a.values.len()).product();
    let mut cells = Vec::with_capacity(total);
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    for index in 0..total {
        let mut rest = index;
        let mut picks = vec![0; axes.len()];
        for (a, axis) in axes.iter().enumerate().rev() {
            picks[a] = rest % axis.values.len();
            rest /= axis.values.len();
        }
        let assignments: Vec<(String, toml::Value)> = axes
            .iter()
            .zip(&picks)
            .map(|(axis, &p)| (axis.key.clone(), axis.values[p].clone()))
            .collect();
        let id = if axes.is_empty() {
            "default".to_owned()
        } else {
            axes.iter()
                .zip(&assignments)
                .map(|(axis, (_, v))| format!("{}={}", axis.short, id_value(v)))
                .collect::<Vec<_>>()
                .join(",")
        };
        let cell = Cell {
            index,
            id: id.clone(),
            assignments,
        };
        if let Some(&first) = by_id.get(&id) {
            let describe = |c: &Cell| c.overrides().join(" ");
            return Err(GridError::IdCollision {
                origin: origin.to_owned(),
                first: describe(&cells[first]),
                second: describe(&cell),
                id,
            });
        }
        by_id.insert(id, index);
        cells.push(cell);
    }
    Ok(cells)
}

/// Collects axes from `[grid]`, accepting both `"a.b" = [...]` and nested `a.b = [...]`.
fn flatten_axis(
    origin: &str,
    key: String,
    value: toml::Value,
    out: &mut Vec<(String, Vec<toml::Value>)>,
) -> Result<(), GridError> {
    match value {
        toml::Value::Array(values) if values.is_empty() => Err(GridError::Axis {
            origin: origin.to_owned(),
            key,
            message: "has no values".into(),
        }),
        toml::Value::Array(values) => {
            out.push((key, values));
            Ok(())
        }
        toml::Value::Table(table) => {
            for (sub, v) in table {
                flatten_axis(origin, format!("{key}.{sub}"), v, out)?;
            }
            Ok(())
        }
        other => Err(GridError::Axis {
            origin: origin.to_owned(),
            message: format!(
                "an axis needs a list of values, e.g. \"{key}\" = [{}]",
                toml_inline(&other)
            ),
            key,
        }),
    }
}

/// Short names for ids: the last key segment (`method.name` reads `method`), the whole key
/// where two axes would share one.
fn name_axes(flat: Vec<(String, Vec<toml::Value>)>) -> Vec<Axis> {
    let short_of = |key: &str| -> String {
        if key == "method.name" {
            "method".to_owned()
        } else {
            key.rsplit('.').next().unwrap_or(key).to_owned()
        }
    };
    let shorts: Vec<String> = flat.iter().map(|(k, _)| short_of(k)).collect();
    flat.into_iter()
        .enumerate()
        .map(|(i, (key, values))| {
            let clash = shorts
                .iter()
                .enumerate()
                .any(|(j, s)| j != i && *s == shorts[i]);
            Axis {
                short: if clash {
                    key.clone()
                } else {
                    shorts[i].clone()
                },
                key,
                values,
            }
        })
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

fn parse_published(origin: &str, table: toml::Table) -> Result<Published, GridError> {
    let mut published = Published::default();
    for (key, value) in table {
        let fail = |message: String| GridError::Published {
            origin: origin.to_owned(),
            key: key.clone(),
            message,
        };
        if key == "citation" {
            published.citation = Some(
                value
                    .as_str()
                    .ok_or_else(|| fail("must be a string".into()))?
                    .to_owned(),
            );
            continue;
        }
        let number = value
            .as_float()
            .or_else(|| value.as_integer().map(|i| i as f64))
            .ok_or_else(|| fail(format!("`{value}` is not a number (percent)")))?;
        let mut parts = key.rsplitn(3, '.');
        let (metric, scenario, method) = match (parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(s), Some(me)) if !me.is_empty() => (m, s, me),
            _ => {
                return Err(fail(
                    "name it \"<method>.<read-out>.<metric>\", e.g. \"naive.class_il.acc\"".into(),
                ));
            }
        };
        if !METRICS.contains(&metric) {
            return Err(fail(format!(
                "unknown metric `{metric}` (known: {})",
                METRICS.join(", ")
            )));
        }
        published.values.insert(
            (method.to_owned(), scenario.to_owned(), metric.to_owned()),
            number,
        );
    }
    Ok(published)
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

/// A value in TOML syntax (`"naive"`, `0.01`, `[1, 2]`).
fn toml_inline(value: &toml::Value) -> String {
    match value {
        // Debug keeps a decimal point or exponent, so `1e30` stays a float when re-parsed.
        toml::Value::Float(f) if f.is_finite() => format!("{f:?}"),
        other => other.to_string(),
    }
}

/// A value for tables and Parquet: strings without quotes, numbers as written.
pub fn display_value(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) => format!("{f:?}"),
        toml::Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(display_value)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// A value as it appears in an id: file-name safe, lists joined by `-`.
fn id_value(value: &toml::Value) -> String {
    let raw = match value {
        toml::Value::Array(items) => items.iter().map(id_value).collect::<Vec<_>>().join("-"),
        // A whole table (e.g. a `method` axis of `{ name = "lora", rank = 8 }`): its `name`
        // first, then `key-value` for each other entry, joined by `+` (`lora+rank-8`).
        toml::Value::Table(table) => table
            .get("name")
            .map(id_value)
            .into_iter()
            .chain(
                table
                    .iter()
                    .filter(|(k, _)| k.as_str() != "name")
                    .map(|(k, v)| format!("{k}-{}", id_value(v))),
            )
            .collect::<Vec<_>>()
            .join("+"),
        other => display_value(other),
    };
    let safe: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if safe.is_empty() {
        "empty".to_owned()
    } else {
        safe
    }
}

#[cfg(test)]
mod tests;
