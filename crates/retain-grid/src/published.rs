//! The `[published]` table of a grid file: reference numbers, in percent, that `grid collect`
//! prints beside the measured ones.

use std::collections::BTreeMap;

use crate::{GridError, METRICS};

/// Published reference numbers from `[published]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Published {
    pub citation: Option<String>,
    /// `(method, scenario, metric)` → value in percent.
    pub values: BTreeMap<(String, String, String), f64>,
}

impl Published {
    /// The published value for a method, read-out and metric, in percent.
    pub fn get(&self, method: &str, scenario: &str, metric: &str) -> Option<f64> {
        self.values
            .get(&(method.to_owned(), scenario.to_owned(), metric.to_owned()))
            .copied()
    }
}

pub(crate) fn parse_published(origin: &str, table: toml::Table) -> Result<Published, GridError> {
    let mut published = Published::default();
    for (key, value) in table {
        let fail = |message: String| GridError::Published {
            origin: origin.to_owned(),
            key: key.clone(),
            message,
        };
        if key == "citation" {
            published.citation = Some(
                value
                    .as_str()
                    .ok_or_else(|| fail("must be a string".into()))?
                    .to_owned(),
            );
            continue;
        }
        let number = value
            .as_float()
            .or_else(|| value.as_integer().map(|i| i as f64))
            .ok_or_else(|| fail(format!("`{value}` is not a number (percent)")))?;
        let mut parts = key.rsplitn(3, '.');
        let (metric, scenario, method) = match (parts.next(), parts.next(), parts.next()) {
            (Some(m), Some(s), Some(me)) if !me.is_empty() => (m, s, me),
            _ => {
                return Err(fail(
                    "name it \"<method>.<read-out>.<metric>\", e.g. \"naive.class_il.acc\"".into(),
                ));
            }
        };
        if !METRICS.contains(&metric) {
            return Err(fail(format!(
                "unknown metric `{metric}` (known: {})",
                METRICS.join(", ")
            )));
        }
        published.values.insert(
            (method.to_owned(), scenario.to_owned(), metric.to_owned()),
            number,
        );
    }
    Ok(published)
}
