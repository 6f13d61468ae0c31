//! Getting dataset files onto disk, verified, from the first source that works.
//!
//! Design points:
//! - a file is written under its final name only after its size and md5
//!   verified (temp file in the same folder, then rename), so an interrupted
//!   or poisoned download never leaves a plausible-looking bad file behind;
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

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flate2::read::MultiGzDecoder;
use md5::{Digest, Md5};

use crate::archive::open_tar;
use crate::error::manual_install_hint;
use crate::load::{expected_md5, fetch_command, spec_manifest, verify_file};
use crate::manifest::{MANIFEST_FILE, remove_manifest, write_manifest};
use crate::{ArchiveSpec, DataError, DatasetRef, DatasetSpec, FileSpec, Source, SourceAttempt};

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
    let mut origins: Vec<Option<FileOrigin>> = vec![None; spec.files.len()];
    let mut known_md5: Vec<Option<String>> = vec![None; spec.files.len()];
    // present, but with nothing to check them against (placed by hand)
    let mut unverifiable: Vec<&str> = Vec::new();
    for (i, f) in spec.files.iter().enumerate() {
        let path = dir.join(f.name);
        if !path.exists() {
            continue;
        }
        let md5 = match expected_md5(f, manifest.as_ref(), &command) {
            Ok(Some(m)) => m,
            Ok(None) => {
                options.say(&format!(
                    "{}: present but not verified (no {MANIFEST_FILE}); will replace it",
                    path.display()
                ));
                unverifiable.push(f.name);
                continue;
            }
            Err(e) => {
                options.say(&format!("{e}; will replace {}", path.display()));
                continue;
            }
        };
        match verify_file(&path, f, Some(md5), &command) {
            Ok(()) => {
                options.say(&format!("{}: already present and verified", path.display()));
                origins[i] = Some(FileOrigin::AlreadyPresent);
                known_md5[i] = Some(md5.to_string());
            }
            Err(e) => options.say(&format!("{e}; will replace it")),
        }
    }

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
        let mut ctx = SourceCtx {
            spec,
            dir: &dir,
            options,
            source_desc: source.to_string(),
            origins: &mut origins,
            known_md5: &mut known_md5,
            problems: Vec::new(),
        };
        match (source, &spec.archive) {
            (Source::PerFileUrl(_), Some(archive)) => ctx.problems.push(format!(
                "per-file downloads cannot be verified for {}: only its archive {} has a published md5",
                spec.name, archive.name
            )),
            (Source::PerFileUrl(template), None) => {
                let agent = agent.get_or_insert_with(|| make_agent(options));
                ctx.try_per_file_urls(agent, template, &needed)?;
            }
            (Source::ArchiveUrl(url), archive) => {
                let agent = agent.get_or_insert_with(|| make_agent(options));
                match (http_get(agent, url), archive) {
                    (Ok(body), Some(a)) => ctx.try_checked_archive(body, &needed, a)?,
                    (Ok(body), None) => ctx.try_archive(body, &needed)?,
                    (Err(e), _) => ctx.problems.push(e.to_string()),
                }
            }
            (Source::Local(path), Some(archive)) => {
                ctx.try_local_checked(path, &needed, archive)?
            }
            (Source::Local(path), None) => ctx.try_local(path, &needed)?,
        }
        let problems = ctx.problems;
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

fn make_agent(options: &FetchOptions<'_>) -> ureq::Agent {
    let mut cfg = ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(root_certs())
                .build(),
        )
        .timeout_connect(Some(options.connect_timeout))
        .timeout_per_read(Some(options.read_timeout))
        .user_agent(concat!("retain-data/", env!("CARGO_PKG_VERSION")));
    if !options.use_env_proxy {
        cfg = cfg.proxy(None);
    }
    cfg.build().into()
}

/// The system's trust store (honouring `SSL_CERT_FILE`/`SSL_CERT_DIR`), like
/// curl, npm and pip use, so HTTPS works behind TLS-inspecting corporate or
/// sandbox proxies whose CA is installed locally; ureq's default (bundled
/// Mozilla roots) rejects those. Falls back to the bundled roots when the
/// system store is empty or unreadable.
fn root_certs() -> ureq::tls::RootCerts {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        return ureq::tls::RootCerts::WebPki;
    }
    found
        .certs
        .iter()
        .map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned())
        .into()
}

/// Errors of one HTTP request; `fatal_for_source` means the host itself is
/// unreachable, so trying its other files would only repeat the timeout.
struct HttpError {
    msg: String,
    fatal_for_source: bool,
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

fn http_get(agent: &ureq::Agent, url: &str) -> Result<impl Read + 'static, HttpError> {
    match agent.get(url).call() {
        Ok(resp) => Ok(resp.into_body().into_reader()),
        Err(ureq::Error::StatusCode(code)) => Err(HttpError {
            msg: format!("{url}: HTTP status {code}"),
            fatal_for_source: false,
        }),
        Err(e) => Err(HttpError {
            msg: format!("{url}: {e}"),
            fatal_for_source: true,
        }),
    }
}

/// State while trying one source.
struct SourceCtx<'s, 'o> {
    spec: &'s DatasetSpec,
    dir: &'s Path,
    options: &'s FetchOptions<'o>,
    source_desc: String,
    origins: &'s mut [Option<FileOrigin>],
    /// md5 of each file verified so far (for the manifest of CIFAR-like
    /// datasets).
    known_md5: &'s mut [Option<String>],
    problems: Vec<String>,
}

/// What [`SourceCtx::scan_archive`] found.
struct Scan {
    /// Needed files with no (usable) entry in the archive.
    not_found: Vec<usize>,
    /// Why the archive could not be read to its end, if it could not.
    read_error: Option<String>,
}

/// Failure to install one file: a problem with the source (try the next), or
/// a local error (give up).
enum InstallError {
    Source(String),
    Local(DataError),
}

impl SourceCtx<'_, '_> {
    fn try_per_file_urls(
        &mut self,
        agent: &ureq::Agent,
        template: &str,
        needed: &[usize],
    ) -> Result<(), DataError> {
        for &i in needed {
            let f = &self.spec.files[i];
            let url = template.replace("{file}", f.name);
            self.options.say(&format!("downloading {url}"));
            match http_get(agent, &url) {
                Ok(body) => self.install(i, body, &url)?,
                Err(e) => {
                    self.options.say(&format!("{}: {e}", f.name));
                    self.problems.push(format!("{}: {e}", f.name));
                    if e.fatal_for_source {
                        let rest = needed.iter().filter(|&&j| self.origins[j].is_none());
                        if rest.clone().any(|&j| j != i) {
                            self.problems
                                .push("skipped the remaining files of this source".into());
                        }
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Scans an archive (see [`open_tar`]) for the needed files by name and
    /// installs each from its entry.
    fn try_archive(&mut self, reader: impl Read, needed: &[usize]) -> Result<(), DataError> {
        let scan = self.scan_archive(reader, needed, |ctx, i, entry, entry_path| {
            ctx.install(i, entry, &format!("archive entry {entry_path}"))?;
            Ok(ctx.origins[i].is_some())
        })?;
        if let Some(e) = scan.read_error {
            self.problems.push(format!("reading archive: {e}"));
            return Ok(());
        }
        self.report_not_found(&scan.not_found);
        Ok(())
    }

    fn report_not_found(&mut self, not_found: &[usize]) {
        for &i in not_found {
            if self.origins[i].is_none() && !self.already_reported(i) {
                self.problems
                    .push(format!("{}: not found in archive", self.spec.files[i].name));
            }
        }
    }

    /// Walks the tar stream inside `reader`, calling `take` for each file
    /// entry named like a needed file (plain or `.gz`); `take` returns
    /// whether it used the entry. Stops once every needed file was taken.
    fn scan_archive(
        &mut self,
        reader: impl Read,
        needed: &[usize],
        mut take: impl FnMut(&mut Self, usize, &mut dyn Read, &str) -> Result<bool, DataError>,
    ) -> Result<Scan, DataError> {
        let mut remaining: Vec<usize> = needed.to_vec();
        let fail = |e: io::Error, remaining: Vec<usize>| Scan {
            not_found: remaining,
            read_error: Some(e.to_string()),
        };
        let reader = match open_tar(reader) {
            Ok(r) => r,
            Err(e) => return Ok(fail(e, remaining)),
        };
        let mut archive = tar::Archive::new(reader);
        let entries = match archive.entries() {
            Ok(e) => e,
            Err(e) => return Ok(fail(e, remaining)),
        };
        for entry in entries {
            if remaining.is_empty() {
                break; // everything found; don't download the rest
            }
            let mut entry = match entry {
                Ok(e) => e,
                Err(e) => return Ok(fail(e, remaining)),
            };
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let Some(entry_name) = entry
                .path()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            else {
                continue;
            };
            let entry_path = entry
                .path()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            let Some(pos) = remaining.iter().position(|&i| {
                let name = self.spec.files[i].name;
                entry_name == name || entry_name.strip_suffix(".gz") == Some(name)
            }) else {
                continue;
            };
            let i = remaining[pos];
            self.options.say(&format!(
                "found {entry_path} in archive for {}",
                self.spec.files[i].name
            ));
            if take(self, i, &mut entry, &entry_path)? {
                remaining.remove(pos);
            }
        }
        Ok(Scan {
            not_found: remaining,
            read_error: None,
        })
    }

    /// Like [`Self::try_archive`] for datasets vouched for by an archive
    /// md5: entries are staged in temp files, the rest of the download is
    /// read so the md5 covers all of it, and only if it matches are the
    /// files renamed into place and their md5s written to the manifest.
    fn try_checked_archive(
        &mut self,
        reader: impl Read,
        needed: &[usize],
        archive: &ArchiveSpec,
    ) -> Result<(), DataError> {
        let mut hashing = HashingReader::new(reader);
        let mut staged: Vec<(usize, Staged)> = Vec::new();
        let mut stage_problems = Vec::new();
        let dir = self.dir;
        let scan = self.scan_archive(&mut hashing, needed, |ctx, i, entry, _| {
            let f = &ctx.spec.files[i];
            match stage_file(entry, f, dir, None) {
                Ok(s) => {
                    staged.push((i, s));
                    Ok(true)
                }
                Err(InstallError::Source(msg)) => {
                    stage_problems.push(format!("{}: {msg}", f.name));
                    Ok(false)
                }
                Err(InstallError::Local(e)) => Err(e),
            }
        })?;
        // the published md5 is of the whole file: read what tar left unread
        let drained = io::copy(&mut hashing, &mut io::sink());
        let (found, bytes) = hashing.finish();
        let options = self.options;
        let (expected, which) = match options.archive_md5.as_deref() {
            Some(md5) => (md5, "the archive the configured md5 vouches for"),
            None => (archive.md5, "the official archive"),
        };
        if found != expected {
            let read_error = drained
                .err()
                .map(|e| format!(" (reading stopped: {e})"))
                .unwrap_or_default();
            let msg = format!(
                "{}: md5 mismatch: expected {expected}, found {found} over {bytes} bytes{read_error}; \
                 the download is corrupt or not {which}, nothing was installed",
                archive.name
            );
            self.options.say(&msg);
            self.problems.push(msg);
            return Ok(()); // dropping `staged` deletes the temp files
        }
        if let Some(e) = scan.read_error {
            self.problems.push(format!(
                "reading archive {} (md5 verified): {e}",
                archive.name
            ));
            return Ok(());
        }
        self.options
            .say(&format!("{}: md5 {found} verified", archive.name));
        self.problems.extend(stage_problems);
        if !staged.is_empty() {
            // the old manifest must not vouch for files about to be replaced
            remove_manifest(dir)?;
            for (i, s) in staged {
                let md5 = s.md5.clone();
                let path = s.commit().map_err(|e| match e {
                    InstallError::Local(e) => e,
                    InstallError::Source(msg) => {
                        DataError::io(dir, "installing", io::Error::other(msg))
                    }
                })?;
                self.options.say(&format!("wrote {}", path.display()));
                self.origins[i] = Some(FileOrigin::Fetched {
                    source: self.source_desc.clone(),
                });
                self.known_md5[i] = Some(md5);
            }
            let entries = self
                .spec
                .files
                .iter()
                .zip(self.known_md5.iter())
                .filter_map(|(f, m)| Some((f.name.to_string(), m.clone()?)))
                .collect();
            let comment = format!(
                "md5 of the files extracted from {} (md5 {}, verified) by retain-data {}.\n\
                 Loads verify against these; check by hand with: md5sum -c {MANIFEST_FILE}",
                archive.name,
                expected,
                env!("CARGO_PKG_VERSION")
            );
            write_manifest(dir, entries, &comment)?;
            self.options
                .say(&format!("wrote {}", dir.join(MANIFEST_FILE).display()));
        }
        self.report_not_found(&scan.not_found);
        Ok(())
    }

    /// `--from` for archive-checked datasets: the official archive itself,
    /// or a folder holding it under its official name.
    fn try_local_checked(
        &mut self,
        path: &Path,
        needed: &[usize],
        archive: &ArchiveSpec,
    ) -> Result<(), DataError> {
        let file = if path.is_dir() {
            let candidate = path.join(archive.name);
            if !candidate.is_file() {
                self.problems.push(format!(
                    "no {} in {} (the files of {} are only taken from the official archive, whose md5 is published)",
                    archive.name,
                    path.display(),
                    self.spec.name
                ));
                return Ok(());
            }
            candidate
        } else {
            path.to_path_buf()
        };
        match File::open(&file) {
            Ok(f) => self.try_checked_archive(f, needed, archive),
            Err(e) => {
                self.problems.push(format!("{}: {e}", file.display()));
                Ok(())
            }
        }
    }

    fn try_local(&mut self, path: &Path, needed: &[usize]) -> Result<(), DataError> {
        if path.is_dir() {
            for &i in needed {
                let name = self.spec.files[i].name;
                let candidates = [path.join(name), path.join(format!("{name}.gz"))];
                let Some(p) = candidates.iter().find(|p| p.is_file()) else {
                    self.problems.push(format!(
                        "{name}: neither {name} nor {name}.gz in {}",
                        path.display()
                    ));
                    continue;
                };
                match File::open(p) {
                    Ok(file) => self.install(i, file, &p.display().to_string())?,
                    Err(e) => self.problems.push(format!("{}: {e}", p.display())),
                }
            }
            Ok(())
        } else {
            match File::open(path) {
                Ok(file) => self.try_archive(file, needed),
                Err(e) => {
                    self.problems.push(format!("{}: {e}", path.display()));
                    Ok(())
                }
            }
        }
    }

    fn already_reported(&self, i: usize) -> bool {
        let prefix = format!("{}: ", self.spec.files[i].name);
        self.problems.iter().any(|p| p.starts_with(&prefix))
    }

    /// Installs file `i` from `reader`, recording a source problem on failure.
    fn install(&mut self, i: usize, reader: impl Read, from: &str) -> Result<(), DataError> {
        let f = &self.spec.files[i];
        match install_file(reader, f, self.dir) {
            Ok(path) => {
                self.options
                    .say(&format!("verified and wrote {}", path.display()));
                self.origins[i] = Some(FileOrigin::Fetched {
                    source: self.source_desc.clone(),
                });
                Ok(())
            }
            Err(InstallError::Source(msg)) => {
                self.options
                    .say(&format!("{}: {msg} (from {from})", f.name));
                self.problems.push(format!("{}: {msg}", f.name));
                Ok(())
            }
            Err(InstallError::Local(e)) => Err(e),
        }
    }
}

/// Wraps `reader` in a gzip decoder when it starts with the gzip magic.
fn maybe_gunzip<'r>(reader: impl Read + 'r) -> io::Result<Box<dyn Read + 'r>> {
    let mut br = BufReader::with_capacity(1 << 16, reader);
    let head = br.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(MultiGzDecoder::new(br)))
    } else {
        Ok(Box::new(br))
    }
}

/// Passes bytes through while computing their md5 and count.
struct HashingReader<R> {
    inner: R,
    hasher: Md5,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Md5::new(),
            bytes: 0,
        }
    }

    /// Lower-case hex md5 and byte count of everything read.
    fn finish(self) -> (String, u64) {
        (format!("{:x}", self.hasher.finalize()), self.bytes)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A verified file in a temp file next to its destination; deleted when
/// dropped unless committed.
struct Staged {
    tmp: PathBuf,
    dest: PathBuf,
    md5: String,
    committed: bool,
}

impl Staged {
    /// Renames the temp file to its final name.
    fn commit(mut self) -> Result<PathBuf, InstallError> {
        fs::rename(&self.tmp, &self.dest).map_err(|e| {
            InstallError::Local(DataError::io(&self.dest, "renaming temp file to", e))
        })?;
        self.committed = true;
        Ok(self.dest.clone())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Streams `reader` (gunzipping if needed) and installs it as `f` in `dir`
/// if size and the spec's md5 match.
fn install_file(reader: impl Read, f: &FileSpec, dir: &Path) -> Result<PathBuf, InstallError> {
    let Some(md5) = f.md5 else {
        return Err(InstallError::Source(
            "no published md5 to verify it against".into(),
        ));
    };
    stage_file(reader, f, dir, Some(md5))?.commit()
}

/// Streams `reader` (gunzipping if needed) into a temp file in `dir` while
/// hashing it; succeeds only if the size (and `md5`, when given) match.
fn stage_file(
    reader: impl Read,
    f: &FileSpec,
    dir: &Path,
    md5: Option<&str>,
) -> Result<Staged, InstallError> {
    let src_err = |e: io::Error| InstallError::Source(format!("read error: {e}"));
    // Reading one byte past the expected size is enough to reject an
    // oversized (or endless) body without storing it.
    let mut reader = maybe_gunzip(reader).map_err(src_err)?.take(f.size + 1);

    let tmp = dir.join(format!(
        ".{}.part-{}-{}",
        f.name,
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let local = |action, e| InstallError::Local(DataError::io(&tmp, action, e));
    let mut out = File::create_new(&tmp).map_err(|e| local("creating", e))?;
    let mut staged = Staged {
        tmp: tmp.clone(),
        dest: dir.join(f.name),
        md5: String::new(),
        committed: false,
    };
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(src_err(e)),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| local("writing", e))?;
        size += n as u64;
    }
    if size != f.size {
        return Err(InstallError::Source(if size > f.size {
            format!("larger than the expected {} bytes", f.size)
        } else {
            format!("size {size} bytes, expected {}", f.size)
        }));
    }
    let found = format!("{:x}", hasher.finalize());
    if let Some(expected) = md5
        && found != expected
    {
        return Err(InstallError::Source(format!(
            "md5 mismatch: expected {expected}, found {found}"
        )));
    }
    out.sync_all().map_err(|e| local("syncing", e))?;
    staged.md5 = found;
    Ok(staged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::deb;
    use crate::testutil::{TestServer, TinyCifar, TinyDataset, gzip, tempdir, tgz};
    use crate::{CIFAR10, FileRole, NOT_VERIFIED_NO_MANIFEST, load, md5_hex, status};
    use std::cell::RefCell;

    fn opts(sources: Vec<Source>) -> FetchOptions<'static> {
        FetchOptions {
            sources: Some(sources),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            use_env_proxy: false,
            progress: None,
            archive_md5: None,
        }
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    #[test]
    fn per_file_gz_fetch_then_idempotent() {
        let tiny = TinyDataset::new();
        let server = TestServer::start(
            tiny.files
                .iter()
                .map(|(name, bytes)| (format!("/m/{name}.gz"), gzip(bytes)))
                .collect(),
        );
        let tmp = tempdir();
        let lines = RefCell::new(Vec::<String>::new());
        let log = |s: &str| lines.borrow_mut().push(s.to_string());
        let mut o = opts(vec![Source::per_file_url(server.url("/m/{file}.gz"))]);
        o.progress = Some(&log);

        let report = fetch(tiny.spec, tmp.path(), &o).unwrap();
        assert_eq!(report.fetched_count(), 4);
        assert_eq!(server.requests().len(), 4);
        for (name, bytes) in &tiny.files {
            assert_eq!(
                &fs::read(tiny.spec.dir(tmp.path()).join(name)).unwrap(),
                bytes
            );
        }
        assert!(leftovers(&tiny.spec.dir(tmp.path())).is_empty());
        assert!(
            lines
                .borrow()
                .iter()
                .any(|l| l.starts_with("verified and wrote"))
        );
        let ds = load(tiny.spec, tmp.path()).unwrap();
        assert_eq!(ds.train.labels, tiny.train_labels);

        // second run: nothing downloaded, everything reported as present
        let report = fetch(tiny.spec, tmp.path(), &o).unwrap();
        assert_eq!(report.fetched_count(), 0);
        assert!(
            report
                .files
                .iter()
                .all(|f| f.origin == FileOrigin::AlreadyPresent)
        );
        assert_eq!(server.requests().len(), 4, "no new requests");

        // a corrupted file on disk is re-fetched (and only that one)
        let p = tiny.spec.dir(tmp.path()).join(tiny.files[1].0);
        fs::write(&p, b"garbage").unwrap();
        let report = fetch(tiny.spec, tmp.path(), &o).unwrap();
        assert_eq!(report.fetched_count(), 1);
        assert_eq!(server.requests().len(), 5);
        assert!(
            status(tiny.spec, tmp.path())
                .unwrap()
                .iter()
                .all(|s| s.verified)
        );
    }

    #[test]
    fn corrupted_source_falls_back_to_next() {
        let tiny = TinyDataset::new();
        let corrupt_name = tiny.spec.file(FileRole::TrainImages).unwrap().name;
        let mut routes: Vec<(String, Vec<u8>)> = tiny
            .files
            .iter()
            .map(|(name, bytes)| {
                let mut b = bytes.clone();
                if *name == corrupt_name {
                    b[20] ^= 1; // same size, wrong md5
                }
                (format!("/a/{name}"), b)
            })
            .collect();
        // second source: an archive with the files nested, like the npm tarball
        routes.push((
            "/pkg.tgz".into(),
            tgz(&tiny
                .files
                .iter()
                .map(|(n, b)| (format!("package/data/{n}"), b.clone()))
                .collect::<Vec<_>>()),
        ));
        let server = TestServer::start(routes);
        let tmp = tempdir();
        let o = opts(vec![
            Source::per_file_url(server.url("/a/{file}")),
            Source::archive_url(server.url("/pkg.tgz")),
        ]);
        let report = fetch(tiny.spec, tmp.path(), &o).unwrap();
        assert_eq!(report.fetched_count(), 4);
        for f in &report.files {
            let from_archive =
                matches!(&f.origin, FileOrigin::Fetched { source } if source.contains("pkg.tgz"));
            assert_eq!(from_archive, f.name == corrupt_name, "{f:?}");
        }
        load(tiny.spec, tmp.path()).unwrap();
        assert!(leftovers(&tiny.spec.dir(tmp.path())).is_empty());
    }

    #[test]
    fn all_sources_failing_lists_each() {
        let tiny = TinyDataset::new();
        let f0 = tiny.files[0].0;
        // first source: only one file, and it is truncated; second: 404s
        let server = TestServer::start(vec![(format!("/a/{f0}"), tiny.files[0].1[..10].to_vec())]);
        let tmp = tempdir();
        let o = opts(vec![
            Source::per_file_url(server.url("/a/{file}")),
            Source::archive_url(server.url("/nothing.tgz")),
        ]);
        let err = fetch(tiny.spec, tmp.path(), &o).unwrap_err();
        let DataError::FetchFailed {
            missing, attempts, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(missing.len(), 4);
        assert_eq!(attempts.len(), 2);
        let msg = err.to_string();
        let dir = tiny.spec.dir(tmp.path());
        for needle in [
            format!("{}/a/{{file}} (one file per URL)", server.base()),
            format!("{f0}: size 10 bytes, expected {}", tiny.files[0].1.len()),
            format!(
                "{}: {}/a/{}: HTTP status 404",
                tiny.files[1].0,
                server.base(),
                tiny.files[1].0
            ),
            format!("{}/nothing.tgz: HTTP status 404", server.base()),
            format!("put the uncompressed files at {}/<file>", dir.display()),
            format!(
                "retain data fetch {} --root {} --from <path>",
                tiny.spec.name,
                tmp.path().display()
            ),
        ] {
            assert!(msg.contains(&needle), "missing {needle:?} in:\n{msg}");
        }
        // nothing half-written
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn local_archive_and_directory() {
        let tiny = TinyDataset::new();
        let src = tempdir();
        // .tgz with files at different depths, one of them gzipped inside
        let archive = src.path().join("copy.tar.gz");
        let entries: Vec<(String, Vec<u8>)> = tiny
            .files
            .iter()
            .enumerate()
            .map(|(k, (n, b))| match k {
                0 => (format!("deep/er/{n}.gz"), gzip(b)),
                1 => (n.to_string(), b.clone()),
                _ => (format!("x/{n}"), b.clone()),
            })
            .collect();
        fs::write(&archive, tgz(&entries)).unwrap();
        let tmp = tempdir();
        let report = fetch(tiny.spec, tmp.path(), &FetchOptions::from_local(&archive)).unwrap();
        assert_eq!(report.fetched_count(), 4);
        load(tiny.spec, tmp.path()).unwrap();

        // a directory with a mix of plain and .gz files, one missing
        let d = src.path().join("dir");
        fs::create_dir(&d).unwrap();
        fs::write(
            d.join(format!("{}.gz", tiny.files[0].0)),
            gzip(&tiny.files[0].1),
        )
        .unwrap();
        fs::write(d.join(tiny.files[1].0), &tiny.files[1].1).unwrap();
        fs::write(d.join(tiny.files[2].0), &tiny.files[2].1).unwrap();
        let tmp2 = tempdir();
        let err = fetch(tiny.spec, tmp2.path(), &FetchOptions::from_local(&d)).unwrap_err();
        let DataError::FetchFailed { missing, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(missing, &vec![tiny.files[3].0.to_string()]);
        assert!(err.to_string().contains("neither"), "{err}");
        fs::write(d.join(tiny.files[3].0), &tiny.files[3].1).unwrap();
        let report = fetch(tiny.spec, tmp2.path(), &FetchOptions::from_local(&d)).unwrap();
        assert_eq!(report.fetched_count(), 1, "the three good files were kept");
        load(tiny.spec, tmp2.path()).unwrap();
    }

    fn dir_entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn cifar_archive_verified_then_manifest_guards_later_loads() {
        let tiny = TinyCifar::cifar10(2);
        let archive_md5 = tiny.spec.archive.as_ref().unwrap().md5;
        let server = TestServer::start(vec![(
            "/~kriz/cifar-10-binary.tar.gz".into(),
            tiny.archive.clone(),
        )]);
        let tmp = tempdir();
        let dir = tiny.spec.dir(tmp.path());
        let o = opts(vec![Source::archive_url(
            server.url("/~kriz/cifar-10-binary.tar.gz"),
        )]);

        let report = fetch(tiny.spec, tmp.path(), &o).unwrap();
        assert_eq!(report.fetched_count(), 6);
        for (name, bytes) in &tiny.files {
            assert_eq!(&fs::read(dir.join(name)).unwrap(), bytes, "{name}");
        }
        // the manifest lists each file's md5, computed here independently
        let mut expected = format!(
            "# md5 of the files extracted from cifar-10-binary.tar.gz (md5 {archive_md5}, verified) by retain-data {}.\n\
             # Loads verify against these; check by hand with: md5sum -c CHECKSUMS.md5\n",
            env!("CARGO_PKG_VERSION")
        );
        for (name, bytes) in &tiny.files {
            expected.push_str(&format!("{}  {name}\n", md5_hex(bytes)));
        }
        assert_eq!(
            fs::read_to_string(dir.join("CHECKSUMS.md5")).unwrap(),
            expected
        );
        // nothing else: no temp files, the metadata file was not extracted
        let mut names: Vec<String> = tiny.files.iter().map(|(n, _)| n.to_string()).collect();
        names.push("CHECKSUMS.md5".into());
        names.sort();
        assert_eq!(dir_entries(&dir), names);

        let ds = load(tiny.spec, tmp.path()).unwrap();
        assert_eq!((ds.train.len, ds.test.len), (10, 2));
        assert_eq!(ds.train.labels, tiny.train_labels);
        assert_eq!(ds.test.labels, tiny.test_labels);
        assert_eq!(ds.train.images, tiny.train_images);
        assert!(
            status(tiny.spec, tmp.path())
                .unwrap()
                .iter()
                .all(|s| s.verified)
        );

        // idempotent: verified against the manifest, nothing downloaded
        let report = fetch(tiny.spec, tmp.path(), &o).unwrap();
        assert_eq!(report.fetched_count(), 0);
        assert_eq!(server.requests().len(), 1);

        // later corruption (same size) is caught on load, naming the file
        let victim = dir.join("data_batch_3.bin");
        let mut bytes = fs::read(&victim).unwrap();
        let good_md5 = md5_hex(&bytes);
        bytes[100] ^= 0x40;
        fs::write(&victim, &bytes).unwrap();
        let err = load(tiny.spec, tmp.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: checksum mismatch: expected md5 {good_md5}, found {}; the file is corrupt or not the right one; \
                 re-fetch it with: retain data fetch tiny-cifar10 --root {}",
                victim.display(),
                md5_hex(&bytes),
                tmp.path().display()
            )
        );
        let st = status(tiny.spec, tmp.path()).unwrap();
        let bad: Vec<_> = st.iter().filter(|s| !s.verified).collect();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].name, "data_batch_3.bin");
        assert!(
            bad[0]
                .problem
                .as_deref()
                .unwrap()
                .contains("checksum mismatch")
        );

        // re-fetching replaces just that file and keeps the manifest whole
        let report = fetch(tiny.spec, tmp.path(), &o).unwrap();
        assert_eq!(report.fetched_count(), 1);
        assert_eq!(server.requests().len(), 2);
        assert_eq!(
            fs::read_to_string(dir.join("CHECKSUMS.md5")).unwrap(),
            expected
        );
        load(tiny.spec, tmp.path()).unwrap();
        assert_eq!(dir_entries(&dir), names);
    }

    #[test]
    fn a_repackaged_archive_installs_only_under_its_own_md5() {
        let tiny = TinyCifar::cifar10(2);
        // a site mirror's own tarball of the same files: other layout, other bytes
        let repackaged = tgz(&tiny
            .files
            .iter()
            .map(|(n, b)| (format!("mirror/cifar10/{n}"), b.clone()))
            .collect::<Vec<_>>());
        let server = TestServer::start(vec![("/c.tgz".into(), repackaged.clone())]);
        let sources = || vec![Source::archive_url(server.url("/c.tgz"))];
        // vouched for by a wrong md5: refused, nothing installed
        let tmp = tempdir();
        let mut options = opts(sources());
        options.archive_md5 = Some("0".repeat(32));
        let err = fetch(tiny.spec, tmp.path(), &options).unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "md5 mismatch: expected {}, found {}",
                "0".repeat(32),
                md5_hex(&repackaged)
            )) && err
                .to_string()
                .contains("not the archive the configured md5 vouches for"),
            "{err}"
        );
        assert!(!tiny.spec.dir(tmp.path()).join("data_batch_1.bin").exists());
        // vouched for by its own md5: installed, and the manifest names that md5
        options.archive_md5 = Some(md5_hex(&repackaged));
        let report = fetch(tiny.spec, tmp.path(), &options).unwrap();
        assert_eq!(report.fetched_count(), 6);
        let manifest = fs::read_to_string(tiny.spec.dir(tmp.path()).join(MANIFEST_FILE)).unwrap();
        assert!(
            manifest.contains(&format!("(md5 {}, verified)", md5_hex(&repackaged))),
            "{manifest}"
        );
        let ds = load(tiny.spec, tmp.path()).unwrap();
        assert_eq!(ds.train.labels, tiny.train_labels);
    }

    #[test]
    fn cifar_corrupt_or_foreign_archive_installs_nothing() {
        let tiny = TinyCifar::cifar10(1);
        let archive_md5 = tiny.spec.archive.as_ref().unwrap().md5;
        let mut damaged = tiny.archive.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 0xff;
        // a well-formed archive with the right files, but not the official one
        let foreign = tgz(&tiny
            .files
            .iter()
            .map(|(n, b)| (format!("other/{n}"), b.clone()))
            .collect::<Vec<_>>());
        let server = TestServer::start(vec![
            ("/damaged.tgz".into(), damaged.clone()),
            ("/foreign.tgz".into(), foreign.clone()),
            ("/good.tgz".into(), tiny.archive.clone()),
        ]);
        for (route, body) in [("/foreign.tgz", &foreign), ("/damaged.tgz", &damaged)] {
            let tmp = tempdir();
            let err = fetch(
                tiny.spec,
                tmp.path(),
                &opts(vec![Source::archive_url(server.url(route))]),
            )
            .unwrap_err();
            let DataError::FetchFailed {
                missing, attempts, ..
            } = &err
            else {
                panic!("{err:?}")
            };
            assert_eq!(missing.len(), 6);
            assert_eq!(attempts.len(), 1);
            let needle = format!(
                "cifar-10-binary.tar.gz: md5 mismatch: expected {archive_md5}, found {} over {} bytes",
                md5_hex(body),
                body.len()
            );
            assert!(
                attempts[0].problems[0].starts_with(&needle),
                "{route}: {:?}",
                attempts[0]
            );
            assert!(err.to_string().contains("nothing was installed"), "{err}");
            // no file, no temp file, no manifest
            assert!(
                dir_entries(&tiny.spec.dir(tmp.path())).is_empty(),
                "{route}"
            );
        }
        // a bad source followed by a good one
        let tmp = tempdir();
        let report = fetch(
            tiny.spec,
            tmp.path(),
            &opts(vec![
                Source::archive_url(server.url("/damaged.tgz")),
                Source::archive_url(server.url("/good.tgz")),
            ]),
        )
        .unwrap();
        assert_eq!(report.fetched_count(), 6);
        assert!(report.files.iter().all(
            |f| matches!(&f.origin, FileOrigin::Fetched { source } if source.contains("/good.tgz"))
        ));
        load(tiny.spec, tmp.path()).unwrap();
    }

    #[test]
    fn cifar_from_local_archive_or_folder_holding_it() {
        let tiny = TinyCifar::cifar10(1);
        let dl = tempdir();
        let archive = dl.path().join("cifar-10-binary.tar.gz");
        fs::write(&archive, &tiny.archive).unwrap();

        let tmp = tempdir();
        let report = fetch(tiny.spec, tmp.path(), &FetchOptions::from_local(&archive)).unwrap();
        assert_eq!(report.fetched_count(), 6);
        assert!(tiny.spec.dir(tmp.path()).join("CHECKSUMS.md5").is_file());
        load(tiny.spec, tmp.path()).unwrap();

        let tmp = tempdir();
        let report = fetch(tiny.spec, tmp.path(), &FetchOptions::from_local(dl.path())).unwrap();
        assert_eq!(report.fetched_count(), 6);

        // a folder of loose .bin files is not accepted: nothing vouches for them
        let loose = tempdir();
        for (n, b) in &tiny.files {
            fs::write(loose.path().join(n), b).unwrap();
        }
        let err = fetch(
            tiny.spec,
            tempdir().path(),
            &FetchOptions::from_local(loose.path()),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "no cifar-10-binary.tar.gz in {} (the files of tiny-cifar10 are only taken from the official archive",
                loose.path().display()
            )),
            "{err}"
        );
    }

    #[test]
    fn hand_placed_cifar_files_are_replaced_by_fetch() {
        let tiny = TinyCifar::cifar10(1);
        let tmp = tempdir();
        tiny.write_to(tmp.path());
        let st = status(tiny.spec, tmp.path()).unwrap();
        assert!(st.iter().all(|s| s.present
            && !s.verified
            && s.problem.as_deref() == Some(NOT_VERIFIED_NO_MANIFEST)));
        // without a usable source they stay, and the error says they load as they are
        let err = fetch(tiny.spec, tmp.path(), &opts(vec![])).unwrap_err();
        assert!(
            err.to_string().ends_with(&format!(
                "\nnote: data_batch_1.bin, data_batch_2.bin, data_batch_3.bin, data_batch_4.bin, data_batch_5.bin, \
                 test_batch.bin already in {} without CHECKSUMS.md5: they load as they are, with structural checks only",
                tiny.spec.dir(tmp.path()).display()
            )),
            "{err}"
        );
        load(tiny.spec, tmp.path()).unwrap();
        let server = TestServer::start(vec![("/a.tgz".into(), tiny.archive.clone())]);
        let report = fetch(
            tiny.spec,
            tmp.path(),
            &opts(vec![Source::archive_url(server.url("/a.tgz"))]),
        )
        .unwrap();
        assert_eq!(report.fetched_count(), 6);
        assert!(
            status(tiny.spec, tmp.path())
                .unwrap()
                .iter()
                .all(|s| s.verified)
        );
    }

    #[test]
    fn cifar10_without_network_says_what_was_tried_and_how_to_install() {
        // a port nothing listens on: connection refused, like no network
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/~kriz/cifar-10-binary.tar.gz");
        let tmp = tempdir();
        let err = fetch(
            &CIFAR10,
            tmp.path(),
            &opts(vec![
                Source::per_file_url(format!("http://127.0.0.1:{port}/{{file}}")),
                Source::archive_url(&url),
            ]),
        )
        .unwrap_err();
        let msg = err.to_string();
        let root = tmp.path().display();
        for needle in [
            "could not fetch dataset \"cifar10\": still missing data_batch_1.bin, data_batch_2.bin, \
             data_batch_3.bin, data_batch_4.bin, data_batch_5.bin, test_batch.bin\nsources tried:\n"
                .to_string(),
            format!(
                "  1. http://127.0.0.1:{port}/{{file}} (one file per URL)\n     - per-file downloads cannot be \
                 verified for cifar10: only its archive cifar-10-binary.tar.gz has a published md5\n"
            ),
            format!("  2. {url} (archive)\n     - {url}: "),
            format!(
                "to install by hand, either download cifar-10-binary.tar.gz elsewhere and run: \
                 retain data fetch cifar10 --root {root} --from <path to cifar-10-binary.tar.gz> (its md5 is checked), \
                 or extract it yourself and put the files at {root}/cifar10/data_batch_1.bin … \
                 (data_batch_1.bin, data_batch_2.bin, data_batch_3.bin, data_batch_4.bin, data_batch_5.bin, \
                 test_batch.bin), where they load with structural checks only (no checksum manifest)"
            ),
        ] {
            assert!(msg.contains(&needle), "missing {needle:?} in:\n{msg}");
        }
        // and the real spec would have asked the official server
        assert_eq!(
            CIFAR10.sources[0].to_string(),
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz (archive)"
        );
        assert_eq!(
            CIFAR10.archive.as_ref().unwrap().md5,
            "c32a1d4ab5d03f1284b67883e8d87530"
        );
    }

    #[test]
    fn debian_package_as_a_source() {
        let tiny = TinyDataset::new();
        let entries: Vec<(String, Vec<u8>)> = tiny
            .files
            .iter()
            .map(|(n, b)| (format!("./usr/share/datasets/tiny/{n}.gz"), gzip(b)))
            .chain([("./usr/share/doc/tiny/copyright".to_string(), b"x".to_vec())])
            .collect();
        let package = deb(&entries);
        let server = TestServer::start(vec![("/pool/tiny_1_all.deb".into(), package.clone())]);
        let source = Source::archive_url(server.url("/pool/tiny_1_all.deb"));
        assert!(
            source
                .to_string()
                .ends_with("/pool/tiny_1_all.deb (Debian package)")
        );
        let tmp = tempdir();
        let report = fetch(tiny.spec, tmp.path(), &opts(vec![source])).unwrap();
        assert_eq!(report.fetched_count(), 4);
        let ds = load(tiny.spec, tmp.path()).unwrap();
        assert_eq!(ds.train.labels, tiny.train_labels);

        // the same package from disk (`--from x.deb`)
        let dl = tempdir();
        let path = dl.path().join("tiny_1_all.deb");
        fs::write(&path, &package).unwrap();
        let tmp = tempdir();
        let report = fetch(tiny.spec, tmp.path(), &FetchOptions::from_local(&path)).unwrap();
        assert_eq!(report.fetched_count(), 4);
        load(tiny.spec, tmp.path()).unwrap();
    }
}
