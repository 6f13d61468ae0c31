//! Atomic, durable file writes: the one writer every output of retain goes through.
//!
//! A file is written to a temporary sibling (`.NAME.tmp-PID-N`, hidden, same directory so the
//! rename cannot cross file systems), flushed to disk (`fsync`), renamed over the destination,
//! and the directory is flushed so the rename itself survives a power loss. A reader therefore
//! sees the old file or the new one, never half of one; a crash at any point leaves at most a
//! temporary file that [`is_temporary`] recognises and readers skip.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A failed write, with the path and the step that failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    pub action: &'static str,
    #[source]
    pub source: std::io::Error,
}

impl WriteError {
    fn new(path: &Path, action: &'static str, source: std::io::Error) -> Self {
        Self {
            path: path.to_owned(),
            action,
            source,
        }
    }
}

/// Writes `bytes` to `path` atomically and durably (see the crate docs).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let staged = Staged::new(path)?;
    {
        let mut file = File::create(staged.temporary())
            .map_err(|e| WriteError::new(staged.temporary(), "create", e))?;
        file.write_all(bytes)
            .map_err(|e| WriteError::new(staged.temporary(), "write", e))?;
    }
    staged.commit()
}

/// Writes `path` atomically through a writer that needs a file path of its own (a
/// safetensors or Parquet writer): `write` fills the temporary path it is given; on success
/// the file is flushed and renamed into place, on failure the temporary file is removed and
/// the destination keeps its old contents.
pub fn write_atomically_with<E>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), AtomicError<E>> {
    let staged = Staged::new(path).map_err(AtomicError::Write)?;
    write(staged.temporary()).map_err(AtomicError::Writer)?;
    staged.commit().map_err(AtomicError::Write)
}

/// The failure of [`write_atomically_with`]: the caller's writer, or the file system.
#[derive(Debug, thiserror::Error)]
pub enum AtomicError<E> {
    #[error(transparent)]
    Writer(E),
    #[error(transparent)]
    Write(WriteError),
}

/// Whether `name` (a file name) is one of this crate's temporary files, which readers and
/// listings skip: a crash can leave one behind, never a half-written destination.
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// A temporary file beside its destination, removed on drop unless committed.
///
/// Exposed so that a test can stop between the write and the rename, as a crash would.
#[derive(Debug)]
pub struct Staged {
    destination: PathBuf,
    temporary: PathBuf,
}

impl Staged {
    /// A fresh temporary path beside `destination` (nothing is created yet).
    pub fn new(destination: &Path) -> Result<Self, WriteError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = destination
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                WriteError::new(
                    destination,
                    "name a temporary file for",
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
                )
            })?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temporary =
            destination.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()));
        Ok(Self {
            destination: destination.to_owned(),
            temporary,
        })
    }

    /// Where the contents go before the rename.
    pub fn temporary(&self) -> &Path {
        &self.temporary
    }

    /// Flushes the temporary file, renames it over the destination and flushes the directory.
    pub fn commit(self) -> Result<(), WriteError> {
        let file = File::options()
            .write(true)
            .open(&self.temporary)
            .map_err(|e| WriteError::new(&self.temporary, "open", e))?;
        file.sync_all()
            .map_err(|e| WriteError::new(&self.temporary, "flush", e))?;
        drop(file);
        fs::rename(&self.temporary, &self.destination)
            .map_err(|e| WriteError::new(&self.destination, "move into place", e))?;
        sync_directory(&self.destination)?;
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.temporary);
    }
}

/// Flushes the directory holding `path`, so that a rename into it is durable. A no-op where
/// directories cannot be opened for flushing (not Unix).
fn sync_directory(path: &Path) -> Result<(), WriteError> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| WriteError::new(dir, "flush directory", e))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests;
