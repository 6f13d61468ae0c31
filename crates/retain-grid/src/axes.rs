//! Axes and cells: the cartesian expansion of a grid's axes, the stable cell ids built from
//! each cell's own `key=value` pairs, and the value spellings ids, overrides and tables use.

use std::collections::BTreeMap;

use crate::GridError;

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
    /// The assignments as `KEY=VALUE` overrides, the value in TOML syntax (a [`WITH`] axis's
    /// table gives one override per key).
    pub fn overrides(&self) -> Vec<String> {
        self.assignments
            .iter()
            .flat_map(|(k, v)| value_overrides(k, v))
            .collect()
    }

    /// The value of a key as a readable string (strings unquoted), if the cell sets it: by an
    /// axis of its own or inside a [`WITH`] axis's table.
    pub fn value_of(&self, key: &str) -> Option<String> {
        self.assignments
            .iter()
            .find_map(|(k, v)| match (k.as_str(), v) {
                (k, v) if k == key => Some(display_value(v)),
                (WITH, toml::Value::Table(table)) => table.get(key).map(display_value),
                _ => None,
            })
    }

    /// The id without the `seed` axis: cells that differ only in their seed share it, so it
    /// labels one configuration in tables and plots aggregated over seeds.
    pub fn config_label(&self, axes: &[Axis]) -> String {
        let parts: Vec<String> = axes
            .iter()
            .zip(&self.assignments)
            .filter(|(axis, _)| axis.key != "seed")
            .map(|(axis, (_, v))| axis_id(axis, v))
            .collect();
        if parts.is_empty() {
            "all".to_owned()
        } else {
            parts.join(",")
        }
    }
}

/// The axis whose values are tables of overrides applied together, e.g.
/// `with = [{ "method.name" = "der", "method.alpha" = 0.3, "training.optimizer.lr" = 0.03 }, …]`:
/// for settings that belong together (a method and the learning rate tuned for it), which
/// separate axes would cross.
pub const WITH: &str = "with";

/// The overrides an axis value sets: `key=value`, or one per leaf of a [`WITH`] table (nested
/// tables flattened to dotted keys, so `{ method = { name = "der" } }` sets `method.name`
/// alone, as `{ "method.name" = "der" }` does).
pub(crate) fn value_overrides(key: &str, value: &toml::Value) -> Vec<String> {
    match (key, value) {
        (WITH, toml::Value::Table(table)) => with_leaves(table)
            .into_iter()
            .map(|(k, v)| format!("{k}={}", toml_inline(v)))
            .collect(),
        _ => vec![format!("{key}={}", toml_inline(value))],
    }
}

/// The dotted keys and leaf values of a [`WITH`] table, in key order.
fn with_leaves(table: &toml::Table) -> Vec<(String, &toml::Value)> {
    let mut leaves = Vec::new();
    for (key, value) in table {
        match value {
            toml::Value::Table(inner) => leaves.extend(
                with_leaves(inner)
                    .into_iter()
                    .map(|(k, v)| (format!("{key}.{k}"), v)),
            ),
            _ => leaves.push((key.clone(), value)),
        }
    }
    leaves
}

/// The id part of a [`WITH`] value: the method's name first (when it sets one), then
/// `key-value` for every other leaf by the key's last segment, joined by `+`
/// (`der+alpha-0.3+lr-0.03`).
fn with_id(value: &toml::Value) -> String {
    let Some(table) = value.as_table() else {
        return id_value(value);
    };
    let leaves = with_leaves(table);
    let name = leaves
        .iter()
        .find(|(k, _)| k == "method.name")
        .map(|(_, v)| id_value(v));
    let rest = leaves
        .iter()
        .filter(|(k, _)| k != "method.name")
        .map(|(k, v)| {
            let short = k.rsplit('.').next().unwrap_or(k);
            id_value(&toml::Value::String(format!("{short}-{}", id_value(v))))
        });
    name.into_iter().chain(rest).collect::<Vec<_>>().join("+")
}

/// Refuses a [`WITH`] value that is not a non-empty table of overrides.
pub(crate) fn check_with_value(origin: &str, value: &toml::Value) -> Result<(), GridError> {
    let fail = |message: String| GridError::Axis {
        origin: origin.to_owned(),
        key: WITH.to_owned(),
        message,
    };
    match value {
        toml::Value::Table(table) if table.is_empty() => {
            Err(fail("an empty table sets nothing".into()))
        }
        toml::Value::Table(table) => match table.keys().find(|k| *k == WITH) {
            Some(_) => Err(fail("a `with` table cannot hold `with`".into())),
            None => Ok(()),
        },
        other => Err(fail(format!(
            "each value is a table of overrides, e.g. {{ \"method.name\" = \"der\", \"training.optimizer.lr\" = 0.03 }}, not {}",
            toml_inline(other)
        ))),
    }
}

/// One axis's part of a cell id: `short=value`.
fn axis_id(axis: &Axis, value: &toml::Value) -> String {
    let value = if axis.key == WITH {
        with_id(value)
    } else {
        id_value(value)
    };
    format!("{}={value}", axis.short)
}

/// Expands axes into cells, first axis slowest.
pub(crate) fn expand(origin: &str, axes: &[Axis]) -> Result<Vec<Cell>, GridError> {
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
                .map(|(axis, (_, v))| axis_id(axis, v))
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
pub(crate) fn flatten_axis(
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
pub(crate) fn name_axes(flat: Vec<(String, Vec<toml::Value>)>) -> Vec<Axis> {
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

/// A value in TOML syntax (`"naive"`, `0.01`, `[1, 2]`).
pub(crate) fn toml_inline(value: &toml::Value) -> String {
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
pub(crate) fn id_value(value: &toml::Value) -> String {
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
