//! The method registry: every registered method's [`MethodDescriptor`], by name.
//!
//! A method crate exports `pub const METHODS: &[MethodDescriptor]` (one crate may register
//! variants, e.g. `ewc` and `online-ewc`); this crate lists each method crate once, as one
//! dependency line in its Cargo.toml, from which build.rs writes the list. The CLI, grids,
//! benches and tests enumerate [`all`], and `retain methods` prints it.

pub use retain_train::method::{
    Capabilities, Family, MethodDescriptor, Param, ParamDefault, ParamKind,
};

mod listing;
pub use listing::{card, table};

include!(concat!(env!("OUT_DIR"), "/crates.rs"));

/// Every registered method, in registration order.
pub fn all() -> impl Iterator<Item = &'static MethodDescriptor> {
    CRATES.iter().flat_map(|methods| methods.iter())
}

/// The method registered as `name`.
pub fn find(name: &str) -> Option<&'static MethodDescriptor> {
    all().find(|d| d.name == name)
}

/// Every registered name, for listings and error messages.
pub fn names() -> Vec<&'static str> {
    all().map(|d| d.name).collect()
}

/// The joint-training upper bound a grid pairs cells with for intransigence.
pub fn joint_reference() -> Option<&'static MethodDescriptor> {
    all().find(|d| d.capabilities.joint_reference)
}

#[cfg(test)]
mod tests;
