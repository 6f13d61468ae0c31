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
//! `datasets/mnist/train-images-idx3-ubyte`.

mod error;
mod fetch;
pub mod idx;
mod load;
mod spec;
#[cfg(test)]
mod testutil;

pub use error::{DataError, SourceAttempt};
pub use fetch::{FetchOptions, FetchReport, FetchedFile, FileOrigin, fetch};
pub use load::{FileStatus, ImageDataset, Split, fetch_command, file_md5, load, md5_hex, status};
pub use spec::{
    DATASETS, DatasetRef, DatasetSpec, FASHION_MNIST, FileRole, FileSpec, MNIST, Source,
};
