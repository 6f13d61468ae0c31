//! `retain methods [NAME]`: the registered methods, from their own descriptors.

use anyhow::{Result, bail};

use crate::UsageError;

/// Prints every method (no `name`), or `name`'s card.
pub fn execute(name: Option<&str>) -> Result<()> {
    match name {
        None => print!("{}", retain_methods::table(retain_methods::all())),
        Some(name) => match retain_methods::find(name) {
            Some(descriptor) => print!("{}", retain_methods::card(descriptor)),
            None => bail!(UsageError::new(format!(
                "no method named `{name}`; registered: {}",
                retain_methods::names().join(", ")
            ))),
        },
    }
    Ok(())
}
