//! Reading an experiment: the file, then `--set` overrides, each validated into a plan.
//!
//! The file is parsed and validated on its own first, so an error in the file points at its
//! line; then the overrides are applied to its TOML tree and the result is validated again,
//! so an error caused by an override names the override.

use std::path::Path;

use crate::overrides::apply_override;
use crate::{ConfigError, Experiment, ExperimentPlan};

impl ExperimentPlan {
    /// Reads, parses and validates an experiment file, then applies `overrides`
    /// (`KEY=VALUE`, the value in TOML syntax or a bare string).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_source(&source, &path.display().to_string(), overrides)
    }

    /// As [`ExperimentPlan::load`], from text; `origin` names the text in errors.
    pub fn from_source(
        source: &str,
        origin: &str,
        overrides: &[String],
    ) -> Result<Self, ConfigError> {
        let from_file: Experiment = deserialize_text(source, origin)?;
        let plan = from_file.validate(origin, source)?;
        if overrides.is_empty() {
            return Ok(plan);
        }
        let mut tree: toml::Table =
            toml::from_str(source).map_err(|e| parse_error(origin, source, &e, None))?;
        for raw in overrides {
            apply_override(&mut tree, raw)?;
        }
        let origin = format!("{origin} with overrides [{}]", overrides.join(", "));
        let merged: Experiment = serde_path_to_error::deserialize(tree.clone()).map_err(|e| {
            let path = refine_path(&tree, &e.path().to_string(), e.inner().message());
            ConfigError::Parse {
                origin: origin.clone(),
                message: with_path(&path, e.inner().message()),
            }
        })?;
        merged.validate(&origin, "")
    }
}

impl Experiment {
    /// [`ExperimentPlan::load`], keeping only the validated experiment (its read-outs
    /// resolved).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        ExperimentPlan::load(path, overrides).map(ExperimentPlan::into_experiment)
    }

    /// [`ExperimentPlan::from_source`], keeping only the validated experiment.
    pub fn from_source(
        source: &str,
        origin: &str,
        overrides: &[String],
    ) -> Result<Self, ConfigError> {
        ExperimentPlan::from_source(source, origin, overrides).map(ExperimentPlan::into_experiment)
    }

    /// The experiment as TOML, defaults filled in: written next to results so a run can be
    /// repeated from its own folder.
    pub fn to_resolved_toml(&self) -> String {
        toml::to_string_pretty(self).expect("an Experiment always serialises")
    }
}

/// The experiment in `source`; a type error names the key's full path (`training.epochs`)
/// as well as its line.
fn deserialize_text(source: &str, origin: &str) -> Result<Experiment, ConfigError> {
    let document =
        toml::Deserializer::parse(source).map_err(|e| parse_error(origin, source, &e, None))?;
    serde_path_to_error::deserialize(document).map_err(|e| {
        let path = match toml::from_str::<toml::Table>(source) {
            Ok(tree) => refine_path(&tree, &e.path().to_string(), e.inner().message()),
            Err(_) => e.path().to_string(),
        };
        parse_error(origin, source, e.inner(), Some(&path))
    })
}

/// The key an error is about (a list's key for one of its elements), where serde's path stops
/// short of it: inside a table that is
/// read as a whole first (an enum tagged by `kind`, as `[model]` and `[training.optimizer]`),
/// the path names only the table. The key is then the one the message names (`unknown field
/// `betaz``) or the only entry of that table whose value is the one the message quotes
/// (`invalid type: string "fast", expected f64`); the path as serde gave it otherwise.
fn refine_path(tree: &toml::Table, path: &str, message: &str) -> String {
    let mut table = tree;
    if path != "." {
        for segment in path.split('.') {
            match table.get(segment) {
                Some(toml::Value::Table(inner)) => table = inner,
                _ => return path.to_owned(),
            }
        }
    }
    if !table.contains_key("kind") {
        return path.to_owned();
    }
    let join = |key: &str| {
        if path == "." {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    if let Some(field) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    {
        return join(field);
    }
    let quoted = ["invalid type: ", "invalid value: "]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split(", expected").next());
    let Some(quoted) = quoted else {
        return path.to_owned();
    };
    let matching: Vec<&String> = table
        .iter()
        .filter(|(key, value)| {
            let listed = |items: &Vec<toml::Value>| items.iter().any(|v| unexpected(v) == quoted);
            *key != "kind"
                && (unexpected(value) == quoted
                    || matches!(value, toml::Value::Array(items) if listed(items)))
        })
        .map(|(key, _)| key)
        .collect();
    match matching[..] {
        [key] => join(key),
        _ => path.to_owned(),
    }
}

/// How serde's messages quote a TOML value it did not expect (`string "fast"`,
/// `integer `3``, `floating point `1.5``, `boolean `true``, `sequence`, `map`).
fn unexpected(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => format!("string {s:?}"),
        toml::Value::Integer(i) => format!("integer `{i}`"),
        toml::Value::Float(f) => format!("floating point `{f}`"),
        toml::Value::Boolean(b) => format!("boolean `{b}`"),
        toml::Value::Datetime(d) => format!("string {:?}", d.to_string()),
        toml::Value::Array(_) => "sequence".to_owned(),
        toml::Value::Table(_) => "map".to_owned(),
    }
}

/// `message` after the key `path` it is about (`training.epochs: …`); `message` alone for
/// the document as a whole (`.`) or a path serde could not follow (`?`).
fn with_path(path: &str, message: &str) -> String {
    if path == "." || path.contains('?') {
        message.to_owned()
    } else {
        format!("{path}: {message}")
    }
}

fn parse_error(
    origin: &str,
    source: &str,
    error: &toml::de::Error,
    path: Option<&str>,
) -> ConfigError {
    let origin = match error.span() {
        Some(span) => format!(
            "{origin}:{}",
            1 + source[..span.start].matches('\n').count()
        ),
        None => origin.to_owned(),
    };
    let message = error.message();
    ConfigError::Parse {
        origin,
        message: path.map_or_else(|| message.to_owned(), |path| with_path(path, message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPLIT_MNIST: &str = include_str!("../../../experiments/split-mnist.toml");

    fn error(overrides: &[&str]) -> String {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        Experiment::from_source(SPLIT_MNIST, "e.toml", &overrides)
            .unwrap_err()
            .to_string()
    }

    /// Inside the tables read by their `kind` (`[training.optimizer]`, `[model]`), a type
    /// error names the key itself, as everywhere else.
    #[test]
    fn errors_inside_kind_tagged_tables_name_the_key() {
        assert!(
            error(&["training.optimizer.lr=\"fast\""])
                .contains("training.optimizer.lr: invalid type: string \"fast\", expected f64"),
        );
        assert!(error(&["model.hidden=\"x\""]).contains("model.hidden: invalid type"));
        assert!(error(&["model.hidden=[1.5]"]).contains("model.hidden: invalid type"));
        assert!(
            error(&["training.optimizer={kind=\"adam\", lr=0.001, betaz=1}"])
                .contains("training.optimizer.betaz: unknown field `betaz`"),
        );
        // Outside such tables the path was already the key's.
        assert!(error(&["training.epochs=\"five\""]).contains("training.epochs: invalid type"));
        // In the file too, with the line.
        let text = SPLIT_MNIST.replace("lr = 0.01", "lr = \"fast\"");
        let message = Experiment::from_source(&text, "e.toml", &[])
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("training.optimizer.lr: invalid type"),
            "{message}"
        );
    }
}
