//! The method registry, as the binary uses it: [`retain_methods`] by name.

use retain_train::{Method, TrainError};

/// A factory builds a method from the `[method]` table (without `name`).
pub type Factory = fn(&toml::Table) -> Result<Box<dyn Method>, TrainError>;

/// The factory registered under `name`.
pub fn factory(name: &str) -> Option<Factory> {
    retain_methods::find(name).map(|d| d.factory)
}

/// Registered names, for error messages.
pub fn names() -> Vec<&'static str> {
    retain_methods::names()
}
