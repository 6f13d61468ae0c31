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
        let merged: Experiment = serde_path_to_error::deserialize(tree).map_err(|e| {
            let path = e.path().to_string();
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
        let path = e.path().to_string();
        parse_error(origin, source, e.inner(), Some(&path))
    })
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
