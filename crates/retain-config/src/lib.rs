//! Experiment configuration: the TOML schema and its validation into a run plan.
//!
//! The flow is *raw → validated plan*: the file deserialises with `deny_unknown_fields` into
//! [`Experiment`] (every key optional where a default exists), then [`Experiment::validate`]
//! checks the values against each other and returns an [`ExperimentPlan`] with every default
//! resolved ([`StreamPlan`], [`PretrainPlan`]). Every error names the offending key and, when
//! it came from the file, its line, so a typo in a 40-line grid file is found at once.
//!
//! Command-line overrides (`--set training.lr=0.05`) are applied to the parsed TOML tree
//! *after* the file itself has been checked, so an error in the file still points at its
//! line, and an error caused by an override names the override.
//!
//! Facts about datasets (class counts, image shapes) come from `retain-data`'s dataset table,
//! the one place they are written ([`DatasetName::spec`]).
//!
//! | module | job |
//! |---|---|
//! | `schema` | the raw structs TOML deserialises into, fixed defaults |
//! | `budget` | memory and step bounds on sizes, before anything is allocated |
//! | `datasets` | dataset names and their facts from `retain-data` |
//! | `validate` | the checks, yielding the plan |
//! | `plan` | the plan types, and the defaults of optional keys |
//! | `load` | reading a file or text, then overrides, each validated |
//! | `overrides` | `KEY=VALUE` applied to a TOML tree |
//! | `locate` | the line of a key in TOML text, for errors |
//!
//! This crate depends on neither tch nor polars.

mod budget;
mod datasets;
mod error;
mod load;
mod locate;
mod overrides;
mod plan;
mod schema;
mod validate;
pub use validate::check_folder_name;

pub use budget::{
    MAX_STEPS_PER_TASK, check_memory, check_memory_against, host_memory_bytes, human_bytes,
};
pub use datasets::{DatasetName, dataset_classes, dataset_shape};
pub use error::ConfigError;
pub use locate::{line_of_key, line_of_table};
pub use plan::{
    DEFAULT_ANGLE_RANGE, DEFAULT_HARD_WEIGHT, DEFAULT_TEMPERATURE, Distillation, ExperimentPlan,
    PretrainPlan, Scenario, StreamPlan,
};
pub use schema::{
    Angles, AnglesName, AugmentConfig, ClassOrder, ClassOrderName, ClassesPerTask, DeviceSpec,
    EvaluateOn, Experiment, ICARL_CIFAR100_ORDER, InitScheme, MemoryFormat, MethodConfig,
    ModelConfig, OptimizerConfig, Precision, PretrainConfig, Readout, SplitLabels, StreamConfig,
    StreamKind, TrainingConfig, TrainingLoss, VitNormalize, VitPreset, VitSpec,
};

#[cfg(test)]
mod tests;
