//! Resume bookkeeping: what a cell's `manifest.json` says about it.
//!
//! A run writes its manifest last and atomically, so the manifest alone decides whether a
//! cell is done: `"complete"` means every result file is in place, `"failed"` carries the
//! reason, and anything else (no manifest, an unreadable one) means the cell never finished
//! and must run again.

use std::path::Path;

use serde::Deserialize;

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
    pub fn of(dir: &Path) -> Self {
        match read_manifest(dir) {
            Some(m) if m.status == "complete" => Self::Complete,
            Some(m) if m.status == "failed" => Self::Failed {
                error: m.error.unwrap_or_else(|| "no reason recorded".into()),
            },
            _ => Self::Unfinished,
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

/// The manifest fields the grid uses; every field is optional so a manifest written by the
/// runner for a cell that crashed before its own manifest (status and error only) reads too.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ManifestSummary {
    pub status: String,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default)]
    pub started_at_unix: Option<u64>,
    #[serde(default)]
    pub finished_at_unix: Option<u64>,
    /// Wall time of the whole run process, loading included.
    #[serde(default)]
    pub wall_seconds: Option<f64>,
    #[serde(default)]
    pub trainable_parameters: Option<u64>,
    #[serde(default)]
    pub peak_host_memory_bytes: Option<u64>,
    #[serde(default)]
    pub peak_device_memory_bytes: Option<u64>,
    #[serde(default)]
    pub timings: Option<TimingsSummary>,
    #[serde(default)]
    pub costs: Option<CostsSummary>,
}

/// The `costs` object of a manifest: what the run's method costs beside what it retains.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CostsSummary {
    #[serde(default)]
    pub trainable_parameters: Option<u64>,
    #[serde(default)]
    pub method_state_bytes: Option<u64>,
    #[serde(default)]
    pub state_bytes_per_task: Option<f64>,
    #[serde(default)]
    pub frozen_base_bytes: Option<u64>,
    #[serde(default)]
    pub seconds_per_step: Option<f64>,
}

/// The timing fields of a manifest the grid uses.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TimingsSummary {
    #[serde(default)]
    pub steps: Option<u64>,
    #[serde(default)]
    pub seconds_per_step: Option<f64>,
    #[serde(default)]
    pub total_seconds: Option<f64>,
}

/// The manifest of a run folder, if there is a readable one.
pub fn read_manifest(dir: &Path) -> Option<ManifestSummary> {
    let text = std::fs::read_to_string(dir.join("manifest.json")).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(CellStatus::of(dir.path()), CellStatus::Unfinished);
        let manifest = dir.path().join("manifest.json");
        std::fs::write(&manifest, "{\"status\": \"comp").unwrap();
        assert_eq!(
            CellStatus::of(dir.path()),
            CellStatus::Unfinished,
            "a truncated manifest"
        );
        std::fs::write(
            &manifest,
            r#"{"status": "failed", "error": "training diverged", "seed": 3}"#,
        )
        .unwrap();
        assert_eq!(
            CellStatus::of(dir.path()),
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
        assert_eq!(CellStatus::of(dir.path()), CellStatus::Complete);
        let m = read_manifest(dir.path()).unwrap();
        assert_eq!(m.seed, Some(3));
        assert_eq!(m.timings.unwrap().steps, Some(150));
        assert_eq!(m.trainable_parameters, None);
    }
}
