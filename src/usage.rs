//! The error kind that decides the exit status.

use std::fmt;

/// A mistake in what the user asked for (a malformed config, an unknown method, a device that
/// does not exist): reported with exit status 2, like clap's own usage errors.
#[derive(Debug)]
pub struct UsageError(String);

impl UsageError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

impl From<retain_config::ConfigError> for UsageError {
    fn from(error: retain_config::ConfigError) -> Self {
        Self(error.to_string())
    }
}
