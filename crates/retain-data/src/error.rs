//! The one error type of this crate.
//!
//! Every variant carries the path (or dataset name) it is about, because the
//! person reading the message is usually looking at a terminal, not a
//! debugger: "truncated" alone does not say which of four files to delete.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while reading, verifying or fetching dataset files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// A dataset name that is not in [`crate::DATASETS`].
    #[error("unknown dataset \"{name}\"; known datasets: {}", known.join(", "))]
    UnknownDataset {
        name: String,
        known: Vec<&'static str>,
    },

    /// A [`crate::DatasetSpec`] that cannot work (e.g. no file for a role).
    #[error("invalid dataset spec \"{name}\": {reason}")]
    InvalidSpec { name: String, reason: String },

    /// An operating-system error on a local file or directory.
    #[error("{}: {action} failed: {source}", path.display())]
    Io {
        path: PathBuf,
        /// What we were doing, e.g. "reading", "creating directory".
        action: &'static str,
        #[source]
        source: io::Error,
    },

    /// The first four bytes are not the IDX magic number we expected
    /// (e.g. a labels file passed where images were expected).
    #[error(
        "{}: wrong IDX magic number: found {found:#010x}, expected {expected:#010x}",
        path.display()
    )]
    BadMagic {
        path: PathBuf,
        expected: u32,
        found: u32,
    },

    /// A valid IDX header whose element type is not unsigned bytes.
    #[error(
        "{}: unsupported IDX element type {code:#04x} ({}); only unsigned bytes (0x08) are supported",
        path.display(),
        idx_type_name(*code)
    )]
    UnsupportedDtype { path: PathBuf, code: u8 },

    /// Fewer bytes than the header (or the header's dimensions) promise.
    #[error(
        "{}: truncated IDX file: expected {expected} bytes of {part}, found {found}",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        /// "header" or "payload".
        part: &'static str,
        expected: u64,
        found: u64,
    },

    /// More bytes than the header's dimensions account for.
    #[error(
        "{}: {extra} trailing bytes after the {expected}-byte payload declared by the IDX header",
        path.display()
    )]
    TrailingBytes {
        path: PathBuf,
        expected: u64,
        extra: u64,
    },

    /// A label that cannot be a class index of this dataset.
    #[error(
        "{}: label {label} at index {index} is out of range for {classes} classes",
        path.display()
    )]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u8,
        classes: usize,
    },

    /// A headerless record file (CIFAR) whose size is not the expected
    /// number of whole records.
    #[error(
        "{}: wrong size for {records} {format} records of {record_len} bytes: expected {} bytes, found {found}",
        path.display(),
        *records as u64 * *record_len as u64
    )]
    RecordFileSize {
        path: PathBuf,
        /// "CIFAR-10" or "CIFAR-100".
        format: &'static str,
        records: usize,
        record_len: usize,
        found: u64,
    },

    /// A label byte of a record file that cannot be a class index.
    #[error(
        "{}: record {record}: {field} {label} is out of range for {classes} classes",
        path.display()
    )]
    RecordLabelOutOfRange {
        path: PathBuf,
        /// 0-based record index within the file.
        record: usize,
        /// Which label byte: "label", "coarse label" or "fine label".
        field: &'static str,
        label: u8,
        classes: usize,
    },

    /// A checksum manifest (`CHECKSUMS.md5`) that cannot be used: malformed,
    /// or without an entry for a file it should cover.
    #[error(
        "{}{}: invalid checksum manifest: {reason}; re-fetch the dataset with: {command}",
        path.display(),
        line.map(|l| format!(":{l}")).unwrap_or_default()
    )]
    BadManifest {
        path: PathBuf,
        /// 1-based line, when the problem is on one.
        line: Option<usize>,
        reason: String,
        command: String,
    },

    /// The images file and the labels file of one split disagree on the count.
    #[error(
        "image/label count mismatch: {} holds {images} images but {} holds {labels} labels",
        images_path.display(),
        labels_path.display()
    )]
    CountMismatch {
        images_path: PathBuf,
        images: usize,
        labels_path: PathBuf,
        labels: usize,
    },

    /// Images whose size differs from the dataset spec's C×H×W.
    #[error(
        "{}: images are {}x{}x{} (CxHxW), but the dataset spec says {}x{}x{}",
        path.display(), found[0], found[1], found[2], expected[0], expected[1], expected[2]
    )]
    ShapeMismatch {
        path: PathBuf,
        expected: [usize; 3],
        found: [usize; 3],
    },

    /// Some or all files of a dataset are not on disk.
    #[error(
        "dataset \"{name}\" not found: missing {} in {}; fetch it with: {command}",
        missing.join(", "),
        dir.display()
    )]
    DatasetMissing {
        name: String,
        dir: PathBuf,
        /// File names (not paths) that are absent.
        missing: Vec<String>,
        /// The exact shell command that fetches the dataset.
        command: String,
    },

    /// A dataset file whose size differs from the spec (cheaper to detect than md5).
    #[error(
        "{}: size mismatch: expected {expected} bytes, found {found}; the file is incomplete or not the right one; re-fetch it with: {command}",
        path.display()
    )]
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        found: u64,
        command: String,
    },

    /// A dataset file whose md5 differs from the spec.
    #[error(
        "{}: checksum mismatch: expected md5 {expected}, found {found}; the file is corrupt or not the right one; re-fetch it with: {command}",
        path.display()
    )]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        found: String,
        command: String,
    },

    /// Every source was tried and some files still could not be obtained.
    #[error("{}", FetchFailedDisplay { name, missing, attempts, hint })]
    FetchFailed {
        name: String,
        dir: PathBuf,
        /// File names still missing after all sources.
        missing: Vec<String>,
        /// Each source tried, in order, with what went wrong there.
        attempts: Vec<SourceAttempt>,
        /// How to install the files by hand (where to put them, or which
        /// `--from` to use); the message's last line.
        hint: String,
    },
}

/// One source tried by [`crate::fetch`] and why it did not deliver everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceAttempt {
    /// Human-readable description of the source (URL or local path).
    pub source: String,
    /// One line per problem, e.g. "train-images-idx3-ubyte: HTTP status 404".
    pub problems: Vec<String>,
}

struct FetchFailedDisplay<'a> {
    name: &'a str,
    missing: &'a [String],
    attempts: &'a [SourceAttempt],
    hint: &'a str,
}

impl fmt::Display for FetchFailedDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "could not fetch dataset \"{}\": still missing {}",
            self.name,
            self.missing.join(", ")
        )?;
        if self.attempts.is_empty() {
            writeln!(f, "no sources were configured")?;
        } else {
            writeln!(f, "sources tried:")?;
        }
        for (i, a) in self.attempts.iter().enumerate() {
            writeln!(f, "  {}. {}", i + 1, a.source)?;
            for p in &a.problems {
                writeln!(f, "     - {p}")?;
            }
        }
        f.write_str(self.hint)
    }
}

/// The last line of [`DataError::FetchFailed`]: how to install the missing
/// files without the network. Datasets vouched for by an archive
/// (`archive` = its file name) are best installed with `--from` it.
pub(crate) fn manual_install_hint(
    dir: &Path,
    missing: &[String],
    command: &str,
    archive: Option<&str>,
) -> String {
    match archive {
        None => format!(
            "to install by hand, put the uncompressed files at {}/<file> ({}), \
             or point at a local directory or .tgz/.tar.gz archive holding them: {command} --from <path>",
            dir.display(),
            missing.join(", "),
        ),
        Some(archive) => format!(
            "to install by hand, either download {archive} elsewhere and run: {command} --from <path to {archive}> \
             (its md5 is checked), or extract it yourself and put the files at {}/{} … ({}), \
             where they load with structural checks only (no checksum manifest)",
            dir.display(),
            missing.first().map(String::as_str).unwrap_or("<file>"),
            missing.join(", "),
        ),
    }
}

/// Names of the IDX element-type codes, for error messages.
pub(crate) fn idx_type_name(code: u8) -> &'static str {
    match code {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "unknown",
    }
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            action,
            source,
        }
    }

    /// A failed atomic write (`retain-fs`), as the I/O error it is: the path it was writing
    /// (the temporary or the destination) and the step that failed.
    pub(crate) fn write(e: retain_fs::WriteError) -> Self {
        DataError::Io {
            path: e.path,
            action: e.action,
            source: e.source,
        }
    }
}
