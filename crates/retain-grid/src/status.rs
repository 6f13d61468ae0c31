//! Resume bookkeeping: what a cell's `manifest.json` says about it.
//!
//! A run writes its manifest last and atomically ([`retain_manifest`]), so the manifest alone
//! decides whether a cell is done: `complete` means every result file is in place, `failed`
//! carries the reason, and anything else (no manifest, one that does not parse) means the cell
//! never finished and must run again. A manifest of a newer schema than this build reads is an
//! error instead: rerunning the cell would overwrite a newer retain's results.

use std::path::Path;

use retain_manifest::{Manifest, ManifestError, RunStatus};

/// Where a cell stands, from its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellStatus {
    Complete,
    Failed {
        error: String,
    },
    /// No manifest (never started, or interrupted), or one that cannot be read.
    Unfinished,
}

impl CellStatus {
    /// Of a run folder.
    pub fn of(dir: &Path) -> Result<Self, ManifestError> {
        Ok(Self::from_manifest(cell_manifest(dir)?.as_ref()))
    }

    /// Of a manifest, `None` for none.
    pub fn from_manifest(manifest: Option<&Manifest>) -> Self {
        match manifest {
            Some(m) => match m.status {
                RunStatus::Complete => Self::Complete,
                RunStatus::Failed => Self::Failed {
                    error: m
                        .error
                        .clone()
                        .unwrap_or_else(|| "no reason recorded".into()),
                },
            },
            None => Self::Unfinished,
        }
    }

    /// `complete`, `failed` or `unfinished`, as stored in `runs.parquet`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Failed { .. } => "failed",
            Self::Unfinished => "unfinished",
        }
    }
}

/// The manifest of a run folder as the bookkeeping sees it: `None` when there is none or it
/// cannot be read or parsed (the cell did not finish); an error only for a newer schema.
pub fn cell_manifest(dir: &Path) -> Result<Option<Manifest>, ManifestError> {
    match Manifest::read(dir) {
        Ok(manifest) => Ok(manifest),
        Err(error @ ManifestError::NewerSchema { .. }) => Err(error),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let of = |dir: &Path| CellStatus::of(dir).unwrap();
        assert_eq!(of(dir.path()), CellStatus::Unfinished);
        let manifest = dir.path().join("manifest.json");
        std::fs::write(&manifest, "{\"status\": \"comp").unwrap();
        assert_eq!(
            of(dir.path()),
            CellStatus::Unfinished,
            "a truncated manifest"
        );
        std::fs::write(&manifest, r#"{"status": "running"}"#).unwrap();
        assert_eq!(of(dir.path()), CellStatus::Unfinished, "an unknown status");
        std::fs::write(
            &manifest,
            r#"{"status": "failed", "error": "training diverged", "seed": 3}"#,
        )
        .unwrap();
        assert_eq!(
            of(dir.path()),
            CellStatus::Failed {
                error: "training diverged".into()
            }
        );
        std::fs::write(
            &manifest,
            r#"{"status": "complete", "seed": 3, "wall_seconds": 1.5,
                "timings": {"steps": 150, "seconds_per_step": 0.001, "per_task": []}}"#,
        )
        .unwrap();
        assert_eq!(of(dir.path()), CellStatus::Complete);
        let m = cell_manifest(dir.path()).unwrap().unwrap();
        assert_eq!(m.seed, Some(3));
        assert_eq!(m.timings.unwrap().steps, 150);
        assert_eq!(m.trainable_parameters, None);
    }

    #[test]
    fn a_manifest_of_a_newer_schema_is_an_error_not_an_unfinished_cell() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("manifest.json"),
            r#"{"schema_version": 99, "status": "complete"}"#,
        )
        .unwrap();
        let err = CellStatus::of(dir.path()).unwrap_err();
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }
}
