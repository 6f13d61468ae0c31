//! What a method crate says about itself: its name, family, paper, hyper-parameters with
//! types and defaults, capabilities and factory. The registry (`retain-methods`) lists the
//! descriptors; the CLI, grids, benches and tests enumerate them, and `retain methods` prints
//! them.
//!
//! The hyper-parameter schema is the single source of every default: a method's factory
//! parses its `[method]` table through [`MethodDescriptor::parse`], which refuses unknown
//! keys and ill-typed values by name and fills in the defaults written here before the
//! method's own (default-free) `Deserialize` struct sees the table.

use std::fmt;

use crate::{Method, TrainError};

/// Builds a method from its `[method]` table (without `name`).
pub type Factory = fn(&toml::Table) -> Result<Box<dyn Method>, TrainError>;

/// Where a method sits in a comparison table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// Lower and upper bounds: fine-tuning, joint training.
    Baseline,
    /// A penalty that keeps important weights near their old values.
    Regularisation,
    /// Outputs of an earlier model as targets.
    Distillation,
    /// A memory of past samples, replayed or used to constrain gradients.
    Rehearsal,
    /// Changes which parts of the network train, over time.
    Architectural,
    /// A small set of new parameters on a frozen backbone.
    ParameterEfficient,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Baseline => "baseline",
            Family::Regularisation => "regularisation",
            Family::Distillation => "distillation",
            Family::Rehearsal => "rehearsal",
            Family::Architectural => "architectural",
            Family::ParameterEfficient => "parameter-efficient",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The TOML type a hyper-parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A float; an integer literal is accepted and read as a float.
    Float,
    /// A non-negative integer.
    Count,
    Bool,
    /// One of a fixed set of strings.
    Choice(&'static [&'static str]),
    /// A list of strings (name patterns, group names).
    Strings,
    /// A list of non-negative integers (block indices).
    Counts,
    /// A path to a file.
    Path,
}

impl fmt::Display for ParamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamKind::Float => f.write_str("float"),
            ParamKind::Count => f.write_str("integer ≥ 0"),
            ParamKind::Bool => f.write_str("bool"),
            ParamKind::Choice(options) => {
                let quoted: Vec<String> = options.iter().map(|o| format!("\"{o}\"")).collect();
                f.write_str(&quoted.join(" | "))
            }
            ParamKind::Strings => f.write_str("[string]"),
            ParamKind::Counts => f.write_str("[integer ≥ 0]"),
            ParamKind::Path => f.write_str("path"),
        }
    }
}

/// A hyper-parameter's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamDefault {
    /// A TOML literal, inserted when the key is absent (e.g. `"100.0"`, `"\"per_sample\""`).
    Value(&'static str),
    /// Absent means the method derives it (from other parameters or the model); the text
    /// says how, for `retain methods`.
    Derived(&'static str),
    /// The key must be given.
    Required,
}

impl fmt::Display for ParamDefault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamDefault::Value(v) => f.write_str(v),
            ParamDefault::Derived(how) => write!(f, "({how})"),
            ParamDefault::Required => f.write_str("(required)"),
        }
    }
}

/// One hyper-parameter of a method's `[method]` table.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub kind: ParamKind,
    pub default: ParamDefault,
    /// One line: what it controls.
    pub doc: &'static str,
}

/// What the harness may rely on without building the method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The training step can be captured in a CUDA graph ([`Method::capturable`]).
    pub capturable: bool,
    /// Keeps past training samples (a rehearsal memory).
    pub keeps_samples: bool,
    /// The joint-training upper bound that a grid pairs every other cell with for
    /// intransigence (Chaudhry et al. 2018).
    pub joint_reference: bool,
}

/// Everything a method crate declares about one registered method.
#[derive(Debug, Clone, Copy)]
pub struct MethodDescriptor {
    /// The registry name, `[method] name` (lower case, digits, dashes).
    pub name: &'static str,
    pub family: Family,
    /// One line for `retain methods`.
    pub summary: &'static str,
    /// The paper (authors, title, venue year), or what the method follows.
    pub paper: &'static str,
    pub params: &'static [Param],
    /// A `[method]` table (without `name`) that builds the method, as documented.
    pub example: &'static str,
    pub capabilities: Capabilities,
    pub factory: Factory,
}

impl MethodDescriptor {
    /// Builds the method from its `[method]` table (without `name`).
    pub fn build(&self, params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
        (self.factory)(params)
    }

    /// The hyper-parameter named `name`.
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// `params` checked against the schema (unknown keys and ill-typed values refused by
    /// name) with every [`ParamDefault::Value`] filled in.
    pub fn resolve(&self, params: &toml::Table) -> Result<toml::Table, TrainError> {
        let error = |message: String| TrainError::MethodParams {
            method: self.name.to_owned(),
            message,
        };
        for key in params.keys() {
            if self.param(key).is_none() {
                let known: Vec<&str> = self.params.iter().map(|p| p.name).collect();
                return Err(error(if known.is_empty() {
                    format!(
                        "unknown key `{key}`: `{}` takes no hyper-parameters",
                        self.name
                    )
                } else {
                    format!("unknown key `{key}`; expected one of: {}", known.join(", "))
                }));
            }
        }
        let mut resolved = toml::Table::new();
        for param in self.params {
            let value = match (params.get(param.name), param.default) {
                (Some(value), _) => value.clone(),
                (None, ParamDefault::Value(literal)) => parse_literal(param, literal)
                    .map_err(|e| error(format!("default of `{}`: {e}", param.name)))?,
                (None, ParamDefault::Derived(_)) => continue,
                (None, ParamDefault::Required) => {
                    return Err(error(format!(
                        "missing key `{}` ({}): {}",
                        param.name, param.kind, param.doc
                    )));
                }
            };
            let value = check(param.kind, value)
                .map_err(|e| error(format!("`{}` must be {} ({e})", param.name, param.kind)))?;
            resolved.insert(param.name.to_owned(), value);
        }
        Ok(resolved)
    }

    /// Parses `params` into the method's own hyper-parameter struct: [`Self::resolve`], then
    /// `T`'s `Deserialize` (which carries no defaults of its own).
    pub fn parse<T: serde::de::DeserializeOwned>(
        &self,
        params: &toml::Table,
    ) -> Result<T, TrainError> {
        crate::parse_params(self.name, &self.resolve(params)?)
    }
}

/// Refuses the hyper-parameter `key` of `method` when `value` units of `bytes_per_unit` bytes
/// (`what` says which: "8 bytes per slot for its dataset index") exceed this host's memory,
/// before anything is allocated; the message names `method.<key>`, the value and the memory.
pub fn check_param_memory(
    method: &str,
    key: &str,
    value: usize,
    bytes_per_unit: u128,
    what: &str,
) -> Result<(), TrainError> {
    retain_config::check_memory(
        &format!("method.{key}"),
        value,
        (value as u128).checked_mul(bytes_per_unit),
        what,
    )
    .map_err(|message| TrainError::MethodParams {
        method: method.to_owned(),
        message,
    })
}

/// Refuses a replay memory's sizes for `method`: `buffer_size` (slots of `bytes_per_slot`
/// bytes, `what` says which) must be at least 1 and fit this host's memory
/// ([`check_param_memory`]), `replay_batch_size` at least 1. The checks every reservoir-style
/// method makes, in this order, with the same messages.
pub fn check_replay_sizes(
    method: &str,
    buffer_size: usize,
    replay_batch_size: usize,
    bytes_per_slot: u128,
    what: &str,
) -> Result<(), TrainError> {
    let invalid = |message: &str| TrainError::MethodParams {
        method: method.to_owned(),
        message: message.to_owned(),
    };
    if buffer_size == 0 {
        return Err(invalid("`buffer_size` must be at least 1"));
    }
    check_param_memory(method, "buffer_size", buffer_size, bytes_per_slot, what)?;
    if replay_batch_size == 0 {
        return Err(invalid("`replay_batch_size` must be at least 1"));
    }
    Ok(())
}

fn parse_literal(param: &Param, literal: &str) -> Result<toml::Value, String> {
    let table: toml::Table =
        toml::from_str(&format!("v = {literal}")).map_err(|e| e.to_string())?;
    table
        .get("v")
        .cloned()
        .ok_or_else(|| format!("`{literal}` of `{}` is not a TOML value", param.name))
}

/// `value` if it has `kind`'s type (an integer given for a float becomes a float), else what
/// it is instead.
fn check(kind: ParamKind, value: toml::Value) -> Result<toml::Value, String> {
    use toml::Value as V;
    let found = |v: &V| format!("found {} `{v}`", v.type_str());
    let count = |v: &V| matches!(v, V::Integer(i) if *i >= 0);
    match (kind, value) {
        (ParamKind::Float, V::Integer(i)) => Ok(V::Float(i as f64)),
        (ParamKind::Float, v @ V::Float(_)) => Ok(v),
        (ParamKind::Count, v) if count(&v) => Ok(v),
        (ParamKind::Bool, v @ V::Boolean(_)) => Ok(v),
        (ParamKind::Choice(options), V::String(s)) if options.contains(&s.as_str()) => {
            Ok(V::String(s))
        }
        (ParamKind::Strings, V::Array(items)) if items.iter().all(V::is_str) => Ok(V::Array(items)),
        (ParamKind::Counts, V::Array(items)) if items.iter().all(count) => Ok(V::Array(items)),
        (ParamKind::Path, v @ V::String(_)) => Ok(v),
        (_, v) => Err(found(&v)),
    }
}
