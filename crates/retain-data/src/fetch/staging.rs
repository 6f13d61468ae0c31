//! Streaming one file to disk: gunzipped when it is gzip, hashed on the way, written to a
//! temporary sibling of its destination, and moved into place (by `retain-fs`, flushed
//! first) only once its size and md5 match.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use md5::{Digest, Md5};

use crate::{DataError, FileSpec};

/// Failure to install one file: a problem with the source (try the next), or
/// a local error (give up).
pub(super) enum InstallError {
    Source(String),
    Local(DataError),
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
pub(super) struct HashingReader<R> {
    inner: R,
    hasher: Md5,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub(super) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Md5::new(),
            bytes: 0,
        }
    }

    /// Lower-case hex md5 and byte count of everything read.
    pub(super) fn finish(self) -> (String, u64) {
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

/// A verified file in a temporary sibling of its destination; the temporary is removed when
/// this is dropped uncommitted, so a rejected download leaves nothing behind.
pub(super) struct StagedFile {
    staged: retain_fs::Staged,
    dest: PathBuf,
    /// Lower-case hex md5 of the contents.
    pub(super) md5: String,
}

impl StagedFile {
    /// Flushes the file, renames it to its final name and flushes the folder, so the file is
    /// whole on disk before it can be seen under its name.
    pub(super) fn commit(self) -> Result<PathBuf, DataError> {
        self.staged.commit().map_err(DataError::write)?;
        Ok(self.dest)
    }
}

/// Streams `reader` (gunzipping if needed) and installs it as `f` in `dir`
/// if size and the spec's md5 match.
pub(super) fn install_file(
    reader: impl Read,
    f: &FileSpec,
    dir: &Path,
) -> Result<PathBuf, InstallError> {
    let Some(md5) = f.md5 else {
        return Err(InstallError::Source(
            "no published md5 to verify it against".into(),
        ));
    };
    stage_file(reader, f, dir, Some(md5))?
        .commit()
        .map_err(InstallError::Local)
}

/// Streams `reader` (gunzipping if needed) into a temporary file in `dir` while
/// hashing it; succeeds only if the size (and `md5`, when given) match.
pub(super) fn stage_file(
    reader: impl Read,
    f: &FileSpec,
    dir: &Path,
    md5: Option<&str>,
) -> Result<StagedFile, InstallError> {
    let src_err = |e: io::Error| InstallError::Source(format!("read error: {e}"));
    // Reading one byte past the expected size is enough to reject an
    // oversized (or endless) body without storing it.
    let mut reader = maybe_gunzip(reader).map_err(src_err)?.take(f.size + 1);

    let dest = dir.join(f.name);
    // made before the file, so that every early return below removes it
    let staged =
        retain_fs::Staged::new(&dest).map_err(|e| InstallError::Local(DataError::write(e)))?;
    let tmp = staged.temporary();
    let local = |action, e| InstallError::Local(DataError::io(tmp, action, e));
    let mut out = File::create_new(tmp).map_err(|e| local("creating", e))?;
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
    // flushed to disk by the commit, not here: a staged file may still be rejected
    drop(out);
    Ok(StagedFile {
        staged,
        dest,
        md5: found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FileRole;
    use crate::testutil::{gzip, tempdir};

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// A staged file sits in a `retain-fs` temporary (which listings skip) until committed,
    /// and a rejected one leaves nothing behind.
    #[test]
    fn staged_files_are_retain_fs_temporaries_until_committed() {
        let dir = tempdir();
        let body = b"twelve bytes".to_vec();
        let f = FileSpec {
            name: "f.bin",
            md5: None,
            size: body.len() as u64,
            role: FileRole::TrainRecords,
        };
        let Ok(staged) = stage_file(&gzip(&body)[..], &f, dir.path(), None) else {
            panic!("a gzipped body of the right size must stage");
        };
        let during = names(dir.path());
        assert_eq!(during.len(), 1, "{during:?}");
        assert!(retain_fs::is_temporary(&during[0]), "{during:?}");
        assert_eq!(staged.md5, crate::md5_hex(&body));
        assert_eq!(staged.commit().unwrap(), dir.path().join("f.bin"));
        assert_eq!(names(dir.path()), ["f.bin"]);
        assert_eq!(std::fs::read(dir.path().join("f.bin")).unwrap(), body);

        let wrong = FileSpec { size: 5, ..f };
        assert!(matches!(
            stage_file(&body[..], &wrong, dir.path(), None),
            Err(InstallError::Source(msg)) if msg == "larger than the expected 5 bytes"
        ));
        assert_eq!(names(dir.path()), ["f.bin"]);
    }
}
