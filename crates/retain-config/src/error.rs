//! The crate's one error type.

use std::path::PathBuf;

/// A configuration error: what is wrong, with the key and, where known, where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: invalid value for `{key}`: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
    #[error("invalid override `{raw}`: {message} (expected KEY=VALUE, e.g. training.lr=0.05)")]
    Override { raw: String, message: String },
}
