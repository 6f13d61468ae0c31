//! The checksum manifest written next to files that have no published md5.
//!
//! CIFAR publishes only the md5 of its archives. [`crate::fetch`] checks that
//! while streaming and, once it matched, records the md5 of every file it
//! extracted in `<dir>/CHECKSUMS.md5`. Later loads verify against it, so a
//! file damaged after the fetch is caught just as an MNIST file would be.
//! The format is `md5sum`'s (`<md5>  <name>`, `#` comments), so
//! `md5sum -c CHECKSUMS.md5` inside the folder checks the same thing.

use std::fs;
use std::path::{Path, PathBuf};

use crate::DataError;

/// File name of the manifest inside a dataset folder.
pub const MANIFEST_FILE: &str = "CHECKSUMS.md5";

/// md5 per file name, in the order written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub path: PathBuf,
    pub entries: Vec<(String, String)>,
}

impl Manifest {
    /// Reads `<dir>/CHECKSUMS.md5`; `Ok(None)` when there is none (files
    /// placed by hand). `command` is the re-fetch hint for errors.
    pub fn read(dir: &Path, command: &str) -> Result<Option<Manifest>, DataError> {
        let path = dir.join(MANIFEST_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(DataError::io(&path, "reading", e)),
        };
        Manifest::parse(&text, path, command).map(Some)
    }

    fn parse(text: &str, path: PathBuf, command: &str) -> Result<Manifest, DataError> {
        let mut entries: Vec<(String, String)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let bad = |reason: String| DataError::BadManifest {
                path: path.clone(),
                line: Some(i + 1),
                reason,
                command: command.to_string(),
            };
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            // "<32 hex><space><space or *><name>", as md5sum writes it
            let (md5, rest) = line.split_at_checked(32).unwrap_or((line, ""));
            let name = rest
                .strip_prefix("  ")
                .or_else(|| rest.strip_prefix(" *"))
                .filter(|n| !n.is_empty());
            let hex = md5
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
            let (true, Some(name)) = (md5.len() == 32 && hex, name) else {
                return Err(bad(format!(
                    "expected \"<32 lower-case hex digits>  <file name>\", found {line:?}"
                )));
            };
            if entries.iter().any(|(n, _)| n == name) {
                return Err(bad(format!("second entry for {name}")));
            }
            entries.push((name.to_string(), md5.to_string()));
        }
        Ok(Manifest { path, entries })
    }

    /// The recorded md5 of `name`, if any.
    pub fn md5_of(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m.as_str())
    }

    /// The manifest text: a comment saying where the sums come from, then
    /// one `md5sum` line per entry.
    pub fn render(&self, comment: &str) -> String {
        let mut s = String::new();
        for line in comment.lines() {
            s.push_str("# ");
            s.push_str(line);
            s.push('\n');
        }
        for (name, md5) in &self.entries {
            s.push_str(&format!("{md5}  {name}\n"));
        }
        s
    }
}

/// Writes `<dir>/CHECKSUMS.md5` atomically and durably (through `retain-fs`), so a reader
/// sees either the old manifest, none, or the complete new one.
pub(crate) fn write_manifest(
    dir: &Path,
    entries: Vec<(String, String)>,
    comment: &str,
) -> Result<(), DataError> {
    let path = dir.join(MANIFEST_FILE);
    let text = Manifest {
        path: path.clone(),
        entries,
    }
    .render(comment);
    retain_fs::write_atomically(&path, text.as_bytes()).map_err(DataError::write)
}

/// Removes `<dir>/CHECKSUMS.md5` if present, before files it described are
/// replaced, so it never vouches for files it was not written for.
pub(crate) fn remove_manifest(dir: &Path) -> Result<(), DataError> {
    let path = dir.join(MANIFEST_FILE);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(DataError::io(&path, "removing", e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef";
    const B: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn round_trip_and_md5sum_format() {
        let dir = tempfile::tempdir().unwrap();
        write_manifest(
            dir.path(),
            vec![("a.bin".into(), A.into()), ("b.bin".into(), B.into())],
            "from x.tar.gz\nmd5 y",
        )
        .unwrap();
        let text = fs::read_to_string(dir.path().join(MANIFEST_FILE)).unwrap();
        assert_eq!(
            text,
            format!("# from x.tar.gz\n# md5 y\n{A}  a.bin\n{B}  b.bin\n")
        );
        let m = Manifest::read(dir.path(), "cmd").unwrap().unwrap();
        assert_eq!(m.md5_of("b.bin"), Some(B));
        assert_eq!(m.md5_of("c.bin"), None);
        // only the manifest is in the folder: no temp file left behind
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        remove_manifest(dir.path()).unwrap();
        assert!(Manifest::read(dir.path(), "cmd").unwrap().is_none());
        remove_manifest(dir.path()).unwrap(); // absent is fine
    }

    #[test]
    fn accepts_binary_marker_and_rejects_malformed_lines() {
        let p = PathBuf::from("d/CHECKSUMS.md5");
        let m = Manifest::parse(&format!("\n{A} *a.bin\n"), p.clone(), "c").unwrap();
        assert_eq!(m.entries, vec![("a.bin".to_string(), A.to_string())]);
        let err = Manifest::parse(
            &format!("{A}  a.bin\n{}  b.bin\n", &B[1..]),
            p.clone(),
            "fix it",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "d/CHECKSUMS.md5:2: invalid checksum manifest: expected \"<32 lower-case hex digits>  <file name>\", found \"{}  b.bin\"; re-fetch the dataset with: fix it",
                &B[1..]
            )
        );
        let err =
            Manifest::parse(&format!("{A}  a.bin\n{B}  a.bin\n"), p.clone(), "c").unwrap_err();
        assert!(
            matches!(&err, DataError::BadManifest { line: Some(2), reason, .. } if reason == "second entry for a.bin"),
            "{err:?}"
        );
        let err = Manifest::parse(&format!("{A}  "), p.clone(), "c").unwrap_err();
        assert!(
            matches!(err, DataError::BadManifest { line: Some(1), .. }),
            "{err:?}"
        );
        let upper = A.to_ascii_uppercase();
        assert!(Manifest::parse(&format!("{upper}  a.bin"), p, "c").is_err());
    }
}
