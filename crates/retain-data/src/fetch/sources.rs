//! Trying one source for the files still missing: per-file URLs, an archive (downloaded or
//! local, scanned by entry name) or a local folder, recording what went wrong with each.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use super::http::{http_get, make_agent};
use super::staging::{HashingReader, InstallError, StagedFile, install_file, stage_file};
use super::{FetchOptions, FileOrigin};
use crate::archive::open_tar;
use crate::manifest::{MANIFEST_FILE, remove_manifest, write_manifest};
use crate::{ArchiveSpec, DataError, DatasetSpec, Source};

/// State while trying one source.
pub(super) struct SourceCtx<'s, 'o> {
    pub(super) spec: &'s DatasetSpec,
    pub(super) dir: &'s Path,
    pub(super) options: &'s FetchOptions<'o>,
    pub(super) source_desc: String,
    pub(super) origins: &'s mut [Option<FileOrigin>],
    /// md5 of each file verified so far (for the manifest of CIFAR-like
    /// datasets).
    pub(super) known_md5: &'s mut [Option<String>],
    pub(super) problems: Vec<String>,
}

/// What [`SourceCtx::scan_archive`] found.
struct Scan {
    /// Needed files with no (usable) entry in the archive.
    not_found: Vec<usize>,
    /// Why the archive could not be read to its end, if it could not.
    read_error: Option<String>,
}

impl SourceCtx<'_, '_> {
    /// Tries `source` for the `needed` files (indices into the spec's files) and returns
    /// what went wrong there, one line per problem. `agent` is built on first use, so
    /// local-only fetches never touch the network stack. Errs only on local I/O errors,
    /// which no other source would fix.
    pub(super) fn try_source(
        mut self,
        source: &Source,
        needed: &[usize],
        agent: &mut Option<ureq::Agent>,
    ) -> Result<Vec<String>, DataError> {
        let spec = self.spec;
        let options = self.options;
        match (source, &spec.archive) {
            (Source::PerFileUrl(_), Some(archive)) => self.problems.push(format!(
                "per-file downloads cannot be verified for {}: only its archive {} has a published md5",
                spec.name, archive.name
            )),
            (Source::PerFileUrl(template), None) => {
                let agent = agent.get_or_insert_with(|| make_agent(options));
                self.try_per_file_urls(agent, template, needed)?;
            }
            (Source::ArchiveUrl(url), archive) => {
                let agent = agent.get_or_insert_with(|| make_agent(options));
                match (http_get(agent, url), archive) {
                    (Ok(body), Some(a)) => self.try_checked_archive(body, needed, a)?,
                    (Ok(body), None) => self.try_archive(body, needed)?,
                    (Err(e), _) => self.problems.push(e.to_string()),
                }
            }
            (Source::Local(path), Some(archive)) => {
                self.try_local_checked(path, needed, archive)?
            }
            (Source::Local(path), None) => self.try_local(path, needed)?,
        }
        Ok(self.problems)
    }

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
        let mut staged: Vec<(usize, StagedFile)> = Vec::new();
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
                let path = s.commit()?;
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
