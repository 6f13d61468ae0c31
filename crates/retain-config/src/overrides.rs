//! Command-line overrides (`--set training.optimizer.lr=0.05`), applied to the parsed TOML
//! tree before it becomes an [`crate::Experiment`].

use crate::ConfigError;

/// Sets `a.b.c = value` in a TOML tree. The value is parsed as TOML (`0.05`, `true`,
/// `[100, 100]`, `"text"`); anything that does not parse is taken as a bare string.
pub(crate) fn apply_override(tree: &mut toml::Table, raw: &str) -> Result<(), ConfigError> {
    let fail = |message: &str| ConfigError::Override {
        raw: raw.to_owned(),
        message: message.to_owned(),
    };
    let (key, value) = raw.split_once('=').ok_or_else(|| fail("no `=`"))?;
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(fail("empty key segment"));
    }
    let value = parse_value(value.trim());
    let (last, parents) = parts.split_last().expect("split yields at least one part");
    let mut table = tree;
    for part in parents {
        let entry = table
            .entry((*part).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| fail(&format!("`{part}` is not a table")))?;
    }
    table.insert((*last).to_owned(), value);
    Ok(())
}

fn parse_value(text: &str) -> toml::Value {
    let wrapped = format!("v = {text}");
    match toml::from_str::<toml::Table>(&wrapped) {
        Ok(mut table) => table.remove("v").expect("the key was just written"),
        Err(_) => toml::Value::String(text.to_owned()),
    }
}
