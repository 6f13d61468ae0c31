//! Naive fine-tuning (SFT): plain supervised training on each task in turn.
//!
//! The lower bound of every continual-learning comparison: nothing protects earlier tasks, so
//! in class-incremental read-out the model forgets them almost completely. It uses every
//! default hook of [`Method`].
//!
//! ```toml
//! [method]
//! name = "naive"   # no hyper-parameters
//! ```

use retain_train::{Method, TrainError, parse_params};
use serde::Deserialize;

/// Naive fine-tuning. Takes no hyper-parameters.
#[derive(Debug, Default)]
pub struct Naive;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {}

/// Registry factory: rejects any hyper-parameter, since naive fine-tuning has none.
pub fn from_params(params: &toml::Table) -> Result<Box<dyn Method>, TrainError> {
    let Params {} = parse_params("naive", params)?;
    Ok(Box::new(Naive))
}

impl Method for Naive {
    fn name(&self) -> &str {
        "naive"
    }
}
