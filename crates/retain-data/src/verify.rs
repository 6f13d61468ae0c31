//! Checking dataset files against what they must be: the size in the spec and the md5 it
//! publishes, or else the one recorded in the dataset's checksum manifest.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use md5::{Digest, Md5};

use crate::manifest::Manifest;
use crate::{DataError, DatasetSpec, FileSpec};

/// Lower-case hex md5 of a byte slice.
pub fn md5_hex(bytes: &[u8]) -> String {
    format!("{:x}", Md5::digest(bytes))
}

/// Lower-case hex md5 of a file, streamed (no full read into memory).
pub fn file_md5(path: &Path) -> Result<String, DataError> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, "opening", e))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| DataError::io(path, "reading", e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The manifest of a dataset whose files lack published md5s; `None` when
/// every file has one (nothing to read) or when there is no manifest.
pub(crate) fn spec_manifest(
    spec: &DatasetSpec,
    dir: &Path,
    command: &str,
) -> Result<Option<Manifest>, DataError> {
    if spec.files.iter().all(|f| f.md5.is_some()) {
        return Ok(None);
    }
    Manifest::read(dir, command)
}

/// The md5 a file must have: the spec's, else the manifest's entry; `None`
/// when neither exists (no manifest: structural checks only). A manifest
/// lacking an entry for a file it should cover is an error, not a pass.
pub(crate) fn expected_md5<'a>(
    f: &'a FileSpec,
    manifest: Option<&'a Manifest>,
    command: &str,
) -> Result<Option<&'a str>, DataError> {
    match (f.md5, manifest) {
        (Some(m), _) => Ok(Some(m)),
        (None, None) => Ok(None),
        (None, Some(man)) => man
            .md5_of(f.name)
            .map(Some)
            .ok_or_else(|| DataError::BadManifest {
                path: man.path.clone(),
                line: None,
                reason: format!("no entry for {}", f.name),
                command: command.to_string(),
            }),
    }
}

/// Checks size then (when one is expected) md5 of a file on disk; `Ok(())`
/// when both match. Used by [`crate::status()`] and by [`crate::fetch()`] to skip
/// files already in place.
pub(crate) fn verify_file(
    path: &Path,
    spec: &FileSpec,
    md5: Option<&str>,
    command: &str,
) -> Result<(), DataError> {
    let size = std::fs::metadata(path)
        .map_err(|e| DataError::io(path, "reading metadata of", e))?
        .len();
    if size != spec.size {
        return Err(DataError::SizeMismatch {
            path: path.to_path_buf(),
            expected: spec.size,
            found: size,
            command: command.to_string(),
        });
    }
    if let Some(expected) = md5 {
        let found = file_md5(path)?;
        if found != expected {
            return Err(DataError::ChecksumMismatch {
                path: path.to_path_buf(),
                expected: expected.to_string(),
                found,
                command: command.to_string(),
            });
        }
    }
    Ok(())
}

/// Reads a file whole and verifies its size and (when one is expected) its
/// md5, so the bytes parsed are the bytes hashed.
pub(crate) fn read_verified(
    path: &Path,
    spec: &FileSpec,
    md5: Option<&str>,
    command: &str,
) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, "reading", e))?;
    if bytes.len() as u64 != spec.size {
        return Err(DataError::SizeMismatch {
            path: path.to_path_buf(),
            expected: spec.size,
            found: bytes.len() as u64,
            command: command.to_string(),
        });
    }
    if let Some(expected) = md5 {
        let found = md5_hex(&bytes);
        if found != expected {
            return Err(DataError::ChecksumMismatch {
                path: path.to_path_buf(),
                expected: expected.to_string(),
                found,
                command: command.to_string(),
            });
        }
    }
    Ok(bytes)
}
