//! Helpers shared by the end-to-end tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use polars::prelude::*;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The datasets folder, which must hold MNIST (`just test` fetches it).
pub fn data_root() -> PathBuf {
    let root = repo().join("datasets");
    assert!(
        root.join("mnist/train-images-idx3-ubyte").exists(),
        "MNIST is missing: run `just test` (it fetches it) or `retain data fetch mnist`"
    );
    root
}

/// Runs the `retain` binary from the repository root.
pub fn retain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retain"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("the retain binary runs")
}

pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "retain failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn read_parquet(path: &Path) -> DataFrame {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ParquetReader::new(file).finish().unwrap()
}

/// A path as a TOML string literal.
pub fn toml_str(path: &Path) -> String {
    format!("{:?}", path.to_str().unwrap())
}
