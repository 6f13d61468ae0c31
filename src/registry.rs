//! The method registry: the one table that maps a method name to its factory.
//!
//! Adding a method is a crate under `crates/methods/` plus one line here.

use retain_train::{Method, TrainError};

/// A factory builds a method from the `[method]` table (without `name`).
pub type Factory = fn(&toml::Table) -> Result<Box<dyn Method>, TrainError>;

/// Every registered method, by name.
pub const METHODS: &[(&str, Factory)] = &[
    ("naive", retain_method_naive::from_params),
    ("ewc", retain_method_ewc::from_params),
    ("online-ewc", retain_method_ewc::from_params_online),
    ("lwf", retain_method_lwf::from_params),
    ("joint", retain_method_joint::from_params),
    ("joint-offline", retain_method_joint::from_params_offline),
    (
        "joint-cumulative",
        retain_method_joint::from_params_cumulative,
    ),
    ("replay", retain_method_replay::from_params),
    ("der", retain_method_der::from_params),
    ("gem", retain_method_gem::from_params),
    ("agem", retain_method_agem::from_params),
    ("lora", retain_method_lora::from_params),
    ("bitfit", retain_method_bitfit::from_params),
    ("qlora", retain_method_qlora::from_params),
    ("peft", retain_method_peft::from_params),
    ("unfreeze", retain_method_unfreeze::from_params),
    ("adapter", retain_method_adapter::from_params),
    ("prompt", retain_method_prompt::from_params),
    ("prefix", retain_method_prefix::from_params),
];

/// The factory registered under `name`.
pub fn factory(name: &str) -> Option<Factory> {
    METHODS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Registered names, for error messages.
pub fn names() -> Vec<&'static str> {
    METHODS.iter().map(|(n, _)| *n).collect()
}
