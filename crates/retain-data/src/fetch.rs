//! Getting dataset files onto disk, verified, from the first source that works.
//!
//! Design points:
//! - a file is written under its final name only after its size and md5
//!   verified (a temporary sibling, flushed, then renamed by `retain-fs`), so
//!   an interrupted or poisoned download never leaves a plausible-looking bad
//!   file behind;
//! - files already present and verified are skipped, so re-running is cheap
//!   and a half-finished fetch resumes;
//! - bodies are streamed to disk while hashed, never held whole in memory;
//! - gzip is recognised by its magic bytes, not by names or headers, because
//!   mirrors disagree on `Content-Encoding` for `.gz` files; archives
//!   likewise (tar, tar.gz, tar.xz, `.deb`);
//! - datasets with no published per-file md5 (CIFAR) are taken only from
//!   their official archive, whose md5 is checked over the whole download
//!   before any extracted file is renamed into place; the md5s of the files
//!   installed are then recorded in `CHECKSUMS.md5` for later loads.
//!
//! Submodules: [`http`] makes the requests, [`sources`] tries one source for
//! the files still missing, [`staging`] streams one file to a verified
//! temporary and moves it into place.

mod http;
mod sources;
mod staging;
#[cfg(test)]
mod tests;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rayon::prelude::*;

use crate::command::fetch_command;
use crate::error::manual_install_hint;
use crate::manifest::{MANIFEST_FILE, Manifest};
use crate::verify::{expected_md5, spec_manifest, verify_file};
use crate::{DataError, DatasetRef, DatasetSpec, Source, SourceAttempt};
use sources::SourceCtx;

/// Settings for [`fetch`]. `Default` gives the spec's sources, environment
/// proxies, the system's TLS trust store, and timeouts suited to a slow link.
pub struct FetchOptions<'a> {
    /// Sources to try instead of the spec's (e.g. `--from`, or a test server).
    pub sources: Option<Vec<Source>>,
    /// Time allowed to establish a connection (including TLS).
    pub connect_timeout: Duration,
    /// Time allowed for any single read to make progress; a stalled transfer
    /// fails after this, a slow but moving one does not.
    pub read_timeout: Duration,
    /// Use `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY` from the
    /// environment (ureq reads them).
    pub use_env_proxy: bool,
    /// Receives one human-readable status line per step; the library itself
    /// never prints.
    pub progress: Option<&'a dyn Fn(&str)>,
    /// For datasets vouched for by an archive md5 (CIFAR): the md5 of a
    /// repackaged archive (a site mirror's own tarball of the same files) that
    /// vouches instead of the official one. `None` checks the official md5; the
    /// check itself is never skipped.
    pub archive_md5: Option<String>,
}

impl Default for FetchOptions<'_> {
    fn default() -> Self {
        FetchOptions {
            sources: None,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            use_env_proxy: true,
            progress: None,
            archive_md5: None,
        }
    }
}

impl<'a> FetchOptions<'a> {
    /// Options that fetch only from a local directory or archive (`--from`).
    pub fn from_local(path: impl Into<PathBuf>) -> Self {
        FetchOptions {
            sources: Some(vec![Source::Local(path.into())]),
            ..Default::default()
        }
    }

    fn say(&self, msg: &str) {
        if let Some(p) = self.progress {
            p(msg);
        }
    }
}

/// Where a file in a [`FetchReport`] came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOrigin {
    /// Was already on disk and verified; untouched.
    AlreadyPresent,
    /// Written by this call, from the described source.
    Fetched { source: String },
}

/// One file of a [`FetchReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedFile {
    pub name: &'static str,
    pub path: PathBuf,
    pub origin: FileOrigin,
}

/// What [`fetch`] did; every file of the spec is listed, all verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    pub name: String,
    pub dir: PathBuf,
    pub files: Vec<FetchedFile>,
}

impl FetchReport {
    /// Number of files written by this call (0 when everything was in place).
    pub fn fetched_count(&self) -> usize {
        self.files
            .iter()
            .filter(|f| matches!(f.origin, FileOrigin::Fetched { .. }))
            .count()
    }
}

/// Makes every file of the dataset present and verified under `<root>/<name>/`.
///
/// Tries the sources in order (the spec's, or `options.sources`), each only
/// for the files still missing, until all verify. Fails with
/// [`DataError::FetchFailed`] listing each source and what went wrong there,
/// plus how to install the files by hand. Local I/O errors (cannot create the
/// folder or write) abort at once since no other source would fix them.
pub fn fetch(
    dataset: impl DatasetRef,
    root: impl AsRef<Path>,
    options: &FetchOptions<'_>,
) -> Result<FetchReport, DataError> {
    let spec = dataset.resolve()?;
    let root = root.as_ref();
    let dir = spec.dir(root);
    let command = fetch_command(spec.name, root);
    fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, "creating directory", e))?;

    // a broken manifest only means nothing can be trusted as present
    let manifest = spec_manifest(spec, &dir, &command).unwrap_or_else(|e| {
        options.say(&format!("{e}; will re-fetch"));
        None
    });
    let Present {
        mut origins,
        mut known_md5,
        unverifiable,
    } = check_present(spec, &dir, manifest.as_ref(), &command, options);

    let sources: &[Source] = options.sources.as_deref().unwrap_or(spec.sources);
    let mut attempts = Vec::new();
    let mut agent = None;
    for source in sources {
        let needed: Vec<usize> = (0..spec.files.len())
            .filter(|&i| origins[i].is_none())
            .collect();
        if needed.is_empty() {
            break;
        }
        options.say(&format!("trying {source}"));
        let problems = SourceCtx {
            spec,
            dir: &dir,
            options,
            source_desc: source.to_string(),
            origins: &mut origins,
            known_md5: &mut known_md5,
            problems: Vec::new(),
        }
        .try_source(source, &needed, &mut agent)?;
        if !problems.is_empty() {
            attempts.push(SourceAttempt {
                source: source.to_string(),
                problems,
            });
        }
    }

    let missing: Vec<String> = spec
        .files
        .iter()
        .zip(&origins)
        .filter(|(_, o)| o.is_none())
        .map(|(f, _)| f.name.to_string())
        .collect();
    if !missing.is_empty() {
        let mut hint = manual_install_hint(
            &dir,
            &missing,
            &command,
            spec.archive.as_ref().map(|a| a.name),
        );
        if !unverifiable.is_empty() {
            hint.push_str(&format!(
                "\nnote: {} already in {} without {MANIFEST_FILE}: they load as they are, \
                 with structural checks only",
                unverifiable.join(", "),
                dir.display()
            ));
        }
        return Err(DataError::FetchFailed {
            name: spec.name.to_string(),
            dir,
            missing,
            attempts,
            hint,
        });
    }
    Ok(FetchReport {
        name: spec.name.to_string(),
        files: spec
            .files
            .iter()
            .zip(origins)
            .map(|(f, o)| FetchedFile {
                name: f.name,
                path: dir.join(f.name),
                origin: o.expect("checked above: nothing missing"),
            })
            .collect(),
        dir,
    })
}

/// What [`check_present`] found, per file of the spec (in its order).
struct Present {
    /// `Some(AlreadyPresent)` for each file on disk that verified.
    origins: Vec<Option<FileOrigin>>,
    /// The md5 each verified file was checked against.
    known_md5: Vec<Option<String>>,
    /// Files on disk with nothing to check them against (placed by hand).
    unverifiable: Vec<&'static str>,
}

/// One file's state on disk, before any source is tried.
enum OnDisk<'m> {
    Absent,
    /// Present, but with no md5 to check against (no manifest).
    Unverifiable,
    /// Present, but the manifest cannot say what its md5 should be.
    BadManifest(DataError),
    /// Present and checked against `md5`.
    Checked {
        md5: &'m str,
        result: Result<(), DataError>,
    },
}

/// Verifies the files already in `dir`, so that only the others are fetched.
///
/// The files are independent, so their md5s are computed in parallel; what each check found
/// is then reported in file order, exactly as a sequential pass would.
fn check_present(
    spec: &DatasetSpec,
    dir: &Path,
    manifest: Option<&Manifest>,
    command: &str,
    options: &FetchOptions<'_>,
) -> Present {
    let states: Vec<OnDisk<'_>> = spec
        .files
        .par_iter()
        .map(|f| {
            let path = dir.join(f.name);
            if !path.exists() {
                return OnDisk::Absent;
            }
            match expected_md5(f, manifest, command) {
                Ok(Some(md5)) => OnDisk::Checked {
                    md5,
                    result: verify_file(&path, f, Some(md5), command),
                },
                Ok(None) => OnDisk::Unverifiable,
                Err(e) => OnDisk::BadManifest(e),
            }
        })
        .collect();
    let mut present = Present {
        origins: vec![None; spec.files.len()],
        known_md5: vec![None; spec.files.len()],
        unverifiable: Vec::new(),
    };
    for (i, (f, state)) in spec.files.iter().zip(states).enumerate() {
        let path = dir.join(f.name);
        match state {
            OnDisk::Absent => {}
            OnDisk::Unverifiable => {
                options.say(&format!(
                    "{}: present but not verified (no {MANIFEST_FILE}); will replace it",
                    path.display()
                ));
                present.unverifiable.push(f.name);
            }
            OnDisk::BadManifest(e) => {
                options.say(&format!("{e}; will replace {}", path.display()));
            }
            OnDisk::Checked {
                md5,
                result: Ok(()),
            } => {
                options.say(&format!("{}: already present and verified", path.display()));
                present.origins[i] = Some(FileOrigin::AlreadyPresent);
                present.known_md5[i] = Some(md5.to_string());
            }
            OnDisk::Checked { result: Err(e), .. } => {
                options.say(&format!("{e}; will replace it"));
            }
        }
    }
    present
}
