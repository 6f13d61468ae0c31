//! What is on disk: per file of a dataset, whether it is present and verified, for
//! `retain data list` and for plans made before a run.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::cifar;
use crate::command::fetch_command;
use crate::manifest::Manifest;
use crate::verify::{expected_md5, spec_manifest, verify_file};
use crate::{DataError, DatasetRef, DatasetSpec, FileSpec, Format};

/// What [`status`] found for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStatus {
    /// File name (as in the spec).
    pub name: &'static str,
    /// Where it is (or would be).
    pub path: PathBuf,
    pub present: bool,
    /// Size on disk, if present.
    pub size: Option<u64>,
    pub expected_size: u64,
    /// Size and md5 both match: the spec's md5, or for files without a
    /// published one the md5 recorded in the dataset's `CHECKSUMS.md5`.
    pub verified: bool,
    /// Why it is not verified, if present but not verified. Files without a
    /// published md5 and no manifest (placed by hand) that pass the
    /// structural checks say "not verified (no checksum manifest)"; they
    /// still load.
    pub problem: Option<String>,
}

/// The problem [`status`] reports for a structurally sound file that has no
/// published md5 and no manifest entry to check against.
pub const NOT_VERIFIED_NO_MANIFEST: &str = "not verified (no checksum manifest)";

/// Reports, per file, whether it is present and verified (size and md5).
///
/// Meant for `retain data list`; never fails on a bad file, it describes it.
/// Files without a published md5 are checked against the dataset's
/// `CHECKSUMS.md5`; without one, they get the structural checks and, when
/// those pass, the problem [`NOT_VERIFIED_NO_MANIFEST`]. The files are
/// checked in parallel; the result lists them in the spec's order.
pub fn status(
    dataset: impl DatasetRef,
    root: impl AsRef<Path>,
) -> Result<Vec<FileStatus>, DataError> {
    let spec = dataset.resolve()?;
    let root = root.as_ref();
    let dir = spec.dir(root);
    let command = fetch_command(spec.name, root);
    // a broken manifest is a problem of every file it should cover
    let (manifest, manifest_problem) = match spec_manifest(spec, &dir, &command) {
        Ok(m) => (m, None),
        Err(e) => (None, Some(e.to_string())),
    };
    // each file is checked on its own, so the md5s are computed in parallel; the indexed
    // collect keeps the spec's file order whichever check finishes first
    Ok(spec
        .files
        .par_iter()
        .map(|f| {
            let path = dir.join(f.name);
            let size = std::fs::metadata(&path)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len());
            let problem = match size {
                None => None,
                Some(_) => match (&manifest_problem, f.md5) {
                    (Some(p), None) => Some(p.clone()),
                    _ => file_problem(spec, f, &path, manifest.as_ref(), &command),
                },
            };
            FileStatus {
                name: f.name,
                present: size.is_some(),
                verified: size.is_some() && problem.is_none(),
                size,
                expected_size: f.size,
                problem,
                path,
            }
        })
        .collect())
}

/// Why a present file is not verified, or `None` when it is.
fn file_problem(
    spec: &DatasetSpec,
    f: &FileSpec,
    path: &Path,
    manifest: Option<&Manifest>,
    command: &str,
) -> Option<String> {
    let md5 = match expected_md5(f, manifest, command) {
        Ok(m) => m,
        Err(e) => return Some(e.to_string()),
    };
    if let Err(e) = verify_file(path, f, md5, command) {
        return Some(e.to_string());
    }
    if md5.is_some() {
        return None;
    }
    // nothing to compare against: at least say whether the structure holds
    if let Format::Cifar(layout) = spec.format {
        let records = (f.size / layout.record_len() as u64) as usize;
        let checked = std::fs::read(path)
            .map_err(|e| DataError::io(path, "reading", e))
            .and_then(|bytes| cifar::parse_records(&bytes, path, layout, records).map(drop));
        if let Err(e) = checked {
            return Some(e.to_string());
        }
    }
    Some(NOT_VERIFIED_NO_MANIFEST.to_string())
}
