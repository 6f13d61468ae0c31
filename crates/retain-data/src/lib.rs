//! Dataset files: formats (IDX, CIFAR binary), checksums, fetching, verification. No tch.
//!
//! The crate answers three questions for the rest of `retain`:
//! - *is the data there and intact?* ([`status`], and [`load`] always checks
//!   size and md5, so experiments never run on a corrupt file);
//! - *how do I get it?* ([`fetch`], tried source by source, writing only
//!   verified files, atomically; errors carry the exact `retain data fetch`
//!   command to run);
//! - *what is in it?* ([`load`] returns raw bytes in an [`ImageDataset`];
//!   tensors are built elsewhere so this crate stays free of libtorch).
//!
//! Datasets live uncompressed under `<root>/<name>/`, e.g.
//! `datasets/mnist/train-images-idx3-ubyte` or `datasets/cifar10/data_batch_1.bin`.
//!
//! Formats: IDX (MNIST, Fashion-MNIST; [`idx`]) and CIFAR binary records
//! (CIFAR-10, CIFAR-100; [`cifar`]). `cifar100` yields the 100 fine labels,
//! `cifar100-coarse` the 20 coarse ones from the same files.
//!
//! Checks: MNIST-style datasets have published per-file md5s. CIFAR has
//! only an md5 per archive, so [`fetch`] verifies the archive while
//! streaming it and records each extracted file's md5 in
//! `<dir>/CHECKSUMS.md5` ([`MANIFEST_FILE`]); [`load`] verifies against
//! that, and files placed by hand without it load with structural checks
//! only (exact size, label ranges).

mod archive;
pub mod cifar;
mod command;
mod error;
mod fetch;
pub mod idx;
mod load;
mod manifest;
mod spec;
mod status;
#[cfg(test)]
mod testutil;
mod verify;

pub use command::fetch_command;
pub use error::{DataError, SourceAttempt};
pub use fetch::{FetchOptions, FetchReport, FetchedFile, FileOrigin, fetch};
pub use load::{ImageDataset, Split, load};
pub use manifest::MANIFEST_FILE;
pub use spec::{
    ArchiveSpec, CIFAR10, CIFAR10_ARCHIVE, CIFAR100, CIFAR100_ARCHIVE, CIFAR100_COARSE,
    ClassCounts, DATASETS, DatasetRef, DatasetSpec, FASHION_MNIST, FASHION_MNIST_DEB_URL, FileRole,
    FileSpec, Format, MNIST, Source,
};
pub use status::{FileStatus, NOT_VERIFIED_NO_MANIFEST, status};
pub use verify::{file_md5, md5_hex};
