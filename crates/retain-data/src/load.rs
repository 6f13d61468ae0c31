//! Loading verified datasets into memory: every file read whole, checked, then parsed.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::cifar::{self, CifarLayout};
use crate::command::fetch_command;
use crate::idx;
use crate::verify::{expected_md5, read_verified, spec_manifest};
use crate::{DataError, DatasetRef, DatasetSpec, FileRole, FileSpec, Format};

/// One split (train or test) of an image-classification dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// `len * C * H * W` bytes, image after image, each C×H×W row-major.
    pub images: Vec<u8>,
    /// One class index per image, each `< classes`.
    pub labels: Vec<u8>,
    /// Number of examples.
    pub len: usize,
}

/// A whole dataset in memory, verified against its spec.
///
/// Kept as raw bytes (no tch here) so this crate stays light; the training
/// side converts to tensors once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDataset {
    pub name: String,
    pub classes: usize,
    /// C, H, W.
    pub shape: [usize; 3],
    pub train: Split,
    pub test: Split,
}

impl ImageDataset {
    /// A dataset with `spec`'s name, shape and published per-class counts whose images are
    /// all zero: the tasks, sample counts and steps of a stream built on it are those of the
    /// real files (`retain plan` before the data is fetched). `None` when the spec publishes
    /// no class counts.
    pub fn stand_in(spec: &DatasetSpec) -> Option<Self> {
        let counts = spec.class_counts?;
        let image = spec.shape.iter().product::<usize>();
        let split = |per_class: &[usize]| {
            let labels: Vec<u8> = per_class
                .iter()
                .enumerate()
                .flat_map(|(class, &n)| std::iter::repeat_n(class as u8, n))
                .collect();
            Split {
                images: vec![0; labels.len() * image],
                len: labels.len(),
                labels,
            }
        };
        Some(ImageDataset {
            name: spec.name.to_owned(),
            classes: spec.classes,
            shape: spec.shape,
            train: split(counts.train),
            test: split(counts.test),
        })
    }
}

/// Loads a dataset from `<root>/<dir_name>/`, verifying every file's size
/// and md5 before parsing it.
///
/// Verification is on every load (≈0.1 s for MNIST with the optimised md5)
/// because a silently corrupted file produces plausible-looking but wrong
/// results, which is the worst outcome for an experiment framework. Files
/// without a published md5 (CIFAR) are checked against the `CHECKSUMS.md5`
/// written when they were fetched; placed by hand without one, they load
/// with the structural checks only (exact size, label ranges).
/// A missing dataset yields [`DataError::DatasetMissing`] carrying the exact
/// `retain data fetch` command.
///
/// The files are read and hashed in parallel (they are independent), then
/// parsed one by one in the order a sequential load takes them, each taking
/// up its own read's result: the error returned is the one that load would
/// have hit first, whichever thread finished first.
pub fn load(dataset: impl DatasetRef, root: impl AsRef<Path>) -> Result<ImageDataset, DataError> {
    let spec = dataset.resolve()?;
    let root = root.as_ref();
    let dir = spec.dir(root);
    let command = fetch_command(spec.name, root);
    let missing: Vec<String> = spec
        .files
        .iter()
        .filter(|f| !dir.join(f.name).is_file())
        .map(|f| f.name.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(DataError::DatasetMissing {
            name: spec.name.to_string(),
            dir,
            missing,
            command,
        });
    }
    let manifest = spec_manifest(spec, &dir, &command)?;
    let read: Vec<Option<Result<Vec<u8>, DataError>>> = spec
        .files
        .par_iter()
        .map(|f| {
            let md5 = expected_md5(f, manifest.as_ref(), &command)?;
            read_verified(&dir.join(f.name), f, md5, &command)
        })
        .map(Some)
        .collect();
    let mut ctx = SplitCtx {
        spec,
        dir: &dir,
        read,
    };
    let (train, test) = match spec.format {
        Format::Idx => (
            ctx.idx_split(FileRole::TrainImages, FileRole::TrainLabels)?,
            ctx.idx_split(FileRole::TestImages, FileRole::TestLabels)?,
        ),
        Format::Cifar(layout) => (
            ctx.cifar_split(layout, FileRole::TrainRecords)?,
            ctx.cifar_split(layout, FileRole::TestRecords)?,
        ),
    };
    Ok(ImageDataset {
        name: spec.name.to_string(),
        classes: spec.classes,
        shape: spec.shape,
        train,
        test,
    })
}

/// What loading one split needs to know.
struct SplitCtx<'a> {
    spec: &'a DatasetSpec,
    dir: &'a Path,
    /// Each file's verified bytes (or why not), in the spec's file order, until
    /// taken by [`Self::read`]; taking them lets the parsed split replace them
    /// in memory file by file.
    read: Vec<Option<Result<Vec<u8>, DataError>>>,
}

impl SplitCtx<'_> {
    fn read(&mut self, f: &FileSpec) -> Result<(PathBuf, Vec<u8>), DataError> {
        let i = self
            .spec
            .files
            .iter()
            .position(|g| std::ptr::eq(g, f))
            .expect("a file of the spec");
        let bytes = self.read[i].take().expect("each file is parsed once")?;
        Ok((self.dir.join(f.name), bytes))
    }

    fn idx_split(
        &mut self,
        images_role: FileRole,
        labels_role: FileRole,
    ) -> Result<Split, DataError> {
        let spec = self.spec;
        let (images_path, bytes) = self.read(spec.file(images_role)?)?;
        let images = idx::parse_images(&bytes, &images_path)?;
        drop(bytes);
        let found = [1, images.rows, images.cols];
        if found != spec.shape {
            return Err(DataError::ShapeMismatch {
                path: images_path,
                expected: spec.shape,
                found,
            });
        }
        let (labels_path, bytes) = self.read(spec.file(labels_role)?)?;
        let labels = idx::parse_labels(&bytes, &labels_path, spec.classes)?;
        idx::check_pair(&images, &images_path, &labels, &labels_path)?;
        Ok(Split {
            len: images.count,
            images: images.pixels,
            labels,
        })
    }

    /// Concatenates the records of every file with `role`, in spec order.
    fn cifar_split(&mut self, layout: CifarLayout, role: FileRole) -> Result<Split, DataError> {
        let spec = self.spec;
        if spec.shape != [3, 32, 32] || spec.classes != layout.classes() {
            return Err(DataError::InvalidSpec {
                name: spec.name.to_string(),
                reason: format!(
                    "{} records hold 3x32x32 images with {} classes, the spec says {:?} with {}",
                    layout.format_name(),
                    layout.classes(),
                    spec.shape,
                    spec.classes
                ),
            });
        }
        let mut split = Split {
            images: Vec::new(),
            labels: Vec::new(),
            len: 0,
        };
        let mut any = false;
        for f in spec.files_with(role) {
            any = true;
            let (path, bytes) = self.read(f)?;
            let records = (f.size / layout.record_len() as u64) as usize;
            let r = cifar::parse_records(&bytes, &path, layout, records)?;
            split.images.extend_from_slice(&r.images);
            split.labels.extend_from_slice(&r.labels);
            split.len += r.count;
        }
        if !any {
            return Err(DataError::InvalidSpec {
                name: spec.name.to_string(),
                reason: format!("no file with role {role:?}"),
            });
        }
        Ok(split)
    }
}

#[cfg(test)]
mod tests;
