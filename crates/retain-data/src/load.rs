//! Loading verified datasets into memory, and inspecting what is on disk.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use md5::{Digest, Md5};

use crate::cifar::{self, CifarLayout};
use crate::idx;
use crate::manifest::Manifest;
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

/// What [`status`] found for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStatus {
    /// File name (as in the spec).
    pub name: &'static str,
    /// Where it is (or would be).
    pub path: PathBuf,
    pub present: bool,
    /// Size on disk, if present.
    pub size: Option<u64>,
    pub expected_size: u64,
    /// Size and md5 both match: the spec's md5, or for files without a
    /// published one the md5 recorded in the dataset's `CHECKSUMS.md5`.
    pub verified: bool,
    /// Why it is not verified, if present but not verified. Files without a
    /// published md5 and no manifest (placed by hand) that pass the
    /// structural checks say "not verified (no checksum manifest)"; they
    /// still load.
    pub problem: Option<String>,
}

/// The shell command that fetches `name` into `root`.
///
/// Error messages embed it so a missing or corrupt dataset is one copy-paste
/// away from fixed; `--root` is added only when `root` is not the default
/// `datasets` relative to the current directory.
pub fn fetch_command(name: &str, root: &Path) -> String {
    let mut cmd = format!("retain data fetch {name}");
    if !is_default_root(root) {
        cmd.push_str(" --root ");
        cmd.push_str(&shell_quote(&root.display().to_string()));
    }
    cmd
}

fn is_default_root(root: &Path) -> bool {
    let comps: Vec<Component> = root
        .components()
        .filter(|c| *c != Component::CurDir)
        .collect();
    if comps.len() == 1 && comps[0] == Component::Normal("datasets".as_ref()) {
        return true;
    }
    root.is_absolute() && std::env::current_dir().is_ok_and(|cwd| cwd.join("datasets") == root)
}

fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._-+:=@,%".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Lower-case hex md5 of a byte slice.
pub fn md5_hex(bytes: &[u8]) -> String {
    format!("{:x}", Md5::digest(bytes))
}

/// Lower-case hex md5 of a file, streamed (no full read into memory).
pub fn file_md5(path: &Path) -> Result<String, DataError> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, "opening", e))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| DataError::io(path, "reading", e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The problem [`status`] reports for a structurally sound file that has no
/// published md5 and no manifest entry to check against.
pub const NOT_VERIFIED_NO_MANIFEST: &str = "not verified (no checksum manifest)";

/// The manifest of a dataset whose files lack published md5s; `None` when
/// every file has one (nothing to read) or when there is no manifest.
pub(crate) fn spec_manifest(
    spec: &DatasetSpec,
    dir: &Path,
    command: &str,
) -> Result<Option<Manifest>, DataError> {
    if spec.files.iter().all(|f| f.md5.is_some()) {
        return Ok(None);
    }
    Manifest::read(dir, command)
}

/// The md5 a file must have: the spec's, else the manifest's entry; `None`
/// when neither exists (no manifest: structural checks only). A manifest
/// lacking an entry for a file it should cover is an error, not a pass.
pub(crate) fn expected_md5<'a>(
    f: &'a FileSpec,
    manifest: Option<&'a Manifest>,
    command: &str,
) -> Result<Option<&'a str>, DataError> {
    match (f.md5, manifest) {
        (Some(m), _) => Ok(Some(m)),
        (None, None) => Ok(None),
        (None, Some(man)) => man
            .md5_of(f.name)
            .map(Some)
            .ok_or_else(|| DataError::BadManifest {
                path: man.path.clone(),
                line: None,
                reason: format!("no entry for {}", f.name),
                command: command.to_string(),
            }),
    }
}

/// Checks size then (when one is expected) md5 of a file on disk; `Ok(())`
/// when both match. Used by [`status`] and by [`crate::fetch`] to skip
/// files already in place.
pub(crate) fn verify_file(
    path: &Path,
    spec: &FileSpec,
    md5: Option<&str>,
    command: &str,
) -> Result<(), DataError> {
    let size = std::fs::metadata(path)
        .map_err(|e| DataError::io(path, "reading metadata of", e))?
        .len();
    if size != spec.size {
        return Err(DataError::SizeMismatch {
            path: path.to_path_buf(),
            expected: spec.size,
            found: size,
            command: command.to_string(),
        });
    }
    if let Some(expected) = md5 {
        let found = file_md5(path)?;
        if found != expected {
            return Err(DataError::ChecksumMismatch {
                path: path.to_path_buf(),
                expected: expected.to_string(),
                found,
                command: command.to_string(),
            });
        }
    }
    Ok(())
}

/// Reads a file whole and verifies its size and (when one is expected) its
/// md5, so the bytes parsed are the bytes hashed.
fn read_verified(
    path: &Path,
    spec: &FileSpec,
    md5: Option<&str>,
    command: &str,
) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, "reading", e))?;
    if bytes.len() as u64 != spec.size {
        return Err(DataError::SizeMismatch {
            path: path.to_path_buf(),
            expected: spec.size,
            found: bytes.len() as u64,
            command: command.to_string(),
        });
    }
    if let Some(expected) = md5 {
        let found = md5_hex(&bytes);
        if found != expected {
            return Err(DataError::ChecksumMismatch {
                path: path.to_path_buf(),
                expected: expected.to_string(),
                found,
                command: command.to_string(),
            });
        }
    }
    Ok(bytes)
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
    let ctx = SplitCtx {
        spec,
        dir: &dir,
        command: &command,
        manifest: manifest.as_ref(),
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
    command: &'a str,
    manifest: Option<&'a Manifest>,
}

impl SplitCtx<'_> {
    fn read(&self, f: &FileSpec) -> Result<(PathBuf, Vec<u8>), DataError> {
        let path = self.dir.join(f.name);
        let md5 = expected_md5(f, self.manifest, self.command)?;
        let bytes = read_verified(&path, f, md5, self.command)?;
        Ok((path, bytes))
    }

    fn idx_split(&self, images_role: FileRole, labels_role: FileRole) -> Result<Split, DataError> {
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
    fn cifar_split(&self, layout: CifarLayout, role: FileRole) -> Result<Split, DataError> {
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

/// Reports, per file, whether it is present and verified (size and md5).
///
/// Meant for `retain data list`; never fails on a bad file, it describes it.
/// Files without a published md5 are checked against the dataset's
/// `CHECKSUMS.md5`; without one, they get the structural checks and, when
/// those pass, the problem [`NOT_VERIFIED_NO_MANIFEST`].
pub fn status(
    dataset: impl DatasetRef,
    root: impl AsRef<Path>,
) -> Result<Vec<FileStatus>, DataError> {
    let spec = dataset.resolve()?;
    let root = root.as_ref();
    let dir = spec.dir(root);
    let command = fetch_command(spec.name, root);
    // a broken manifest is a problem of every file it should cover
    let (manifest, manifest_problem) = match spec_manifest(spec, &dir, &command) {
        Ok(m) => (m, None),
        Err(e) => (None, Some(e.to_string())),
    };
    Ok(spec
        .files
        .iter()
        .map(|f| {
            let path = dir.join(f.name);
            let size = std::fs::metadata(&path)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len());
            let problem = match size {
                None => None,
                Some(_) => match (&manifest_problem, f.md5) {
                    (Some(p), None) => Some(p.clone()),
                    _ => file_problem(spec, f, &path, manifest.as_ref(), &command),
                },
            };
            FileStatus {
                name: f.name,
                present: size.is_some(),
                verified: size.is_some() && problem.is_none(),
                size,
                expected_size: f.size,
                problem,
                path,
            }
        })
        .collect())
}

/// Why a present file is not verified, or `None` when it is.
fn file_problem(
    spec: &DatasetSpec,
    f: &FileSpec,
    path: &Path,
    manifest: Option<&Manifest>,
    command: &str,
) -> Option<String> {
    let md5 = match expected_md5(f, manifest, command) {
        Ok(m) => m,
        Err(e) => return Some(e.to_string()),
    };
    if let Err(e) = verify_file(path, f, md5, command) {
        return Some(e.to_string());
    }
    if md5.is_some() {
        return None;
    }
    // nothing to compare against: at least say whether the structure holds
    if let Format::Cifar(layout) = spec.format {
        let records = (f.size / layout.record_len() as u64) as usize;
        let checked = std::fs::read(path)
            .map_err(|e| DataError::io(path, "reading", e))
            .and_then(|bytes| cifar::parse_records(&bytes, path, layout, records).map(drop));
        if let Err(e) = checked {
            return Some(e.to_string());
        }
    }
    Some(NOT_VERIFIED_NO_MANIFEST.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cifar::Cifar100Labels;
    use crate::testutil::{TinyCifar, TinyDataset, tempdir};

    #[test]
    fn fetch_command_adds_root_only_when_not_default() {
        assert_eq!(
            fetch_command("mnist", Path::new("datasets")),
            "retain data fetch mnist"
        );
        assert_eq!(
            fetch_command("mnist", Path::new("./datasets/")),
            "retain data fetch mnist"
        );
        assert_eq!(
            fetch_command("mnist", Path::new("/data/sets")),
            "retain data fetch mnist --root /data/sets"
        );
        assert_eq!(
            fetch_command("fashion-mnist", Path::new("my data")),
            "retain data fetch fashion-mnist --root 'my data'"
        );
    }

    #[test]
    fn missing_dataset_error_has_exact_command() {
        let tmp = tempdir();
        let err = load("mnist", tmp.path()).unwrap_err();
        assert!(matches!(err, DataError::DatasetMissing { .. }), "{err:?}");
        let msg = err.to_string();
        let expected_tail = format!(
            "; fetch it with: retain data fetch mnist --root {}",
            tmp.path().display()
        );
        assert!(msg.ends_with(&expected_tail), "{msg}");
        assert!(
            msg.starts_with("dataset \"mnist\" not found: missing train-images-idx3-ubyte, "),
            "{msg}"
        );
        let err = load(&crate::MNIST, "datasets-that-do-not-exist").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("retain data fetch mnist --root datasets-that-do-not-exist"),
            "{err}"
        );
    }

    #[test]
    fn loads_and_checks_tiny_dataset() {
        let tiny = TinyDataset::new();
        let tmp = tempdir();
        tiny.write_to(tmp.path());
        let ds = load(tiny.spec, tmp.path()).unwrap();
        assert_eq!(ds.name, tiny.spec.name);
        assert_eq!(ds.shape, [1, 2, 3]);
        assert_eq!(ds.train.len, 4);
        assert_eq!(ds.test.len, 2);
        assert_eq!(ds.train.labels, tiny.train_labels);
        assert_eq!(ds.train.images, tiny.train_pixels);
        assert_eq!(ds.test.images.len(), 2 * 6);
        assert!(
            status(tiny.spec, tmp.path())
                .unwrap()
                .iter()
                .all(|s| s.verified)
        );
    }

    #[test]
    fn checksum_mismatch_names_file_and_refetch_command() {
        let tiny = TinyDataset::new();
        let tmp = tempdir();
        tiny.write_to(tmp.path());
        let f = tiny.spec.file(FileRole::TestImages).unwrap();
        let path = tiny.spec.dir(tmp.path()).join(f.name);
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 0xff; // same size, different content
        std::fs::write(&path, &bytes).unwrap();
        let found = md5_hex(&bytes);

        let err = load(tiny.spec, tmp.path()).unwrap_err();
        assert!(matches!(err, DataError::ChecksumMismatch { .. }), "{err:?}");
        let expected = format!(
            "{}: checksum mismatch: expected md5 {}, found {found}; the file is corrupt or not the right one; re-fetch it with: retain data fetch {} --root {}",
            path.display(),
            f.md5.unwrap(),
            tiny.spec.name,
            tmp.path().display()
        );
        assert_eq!(err.to_string(), expected);

        let st = status(tiny.spec, tmp.path()).unwrap();
        let bad = st.iter().find(|s| s.name == f.name).unwrap();
        assert!(bad.present && !bad.verified);
        assert!(
            bad.problem
                .as_deref()
                .unwrap()
                .contains("checksum mismatch")
        );
        assert_eq!(st.iter().filter(|s| s.verified).count(), 3);

        // truncation is caught by size first
        std::fs::write(&path, &bytes[..5]).unwrap();
        let err = load(tiny.spec, tmp.path()).unwrap_err();
        assert!(
            matches!(err, DataError::SizeMismatch { found: 5, .. }),
            "{err:?}"
        );
    }

    /// Parses the real MNIST when an engineer has put it in the workspace's
    /// `datasets/`; skipped (with a note) otherwise so CI without data passes.
    #[test]
    fn real_mnist_if_present() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets");
        if !crate::MNIST
            .dir(&root)
            .join("train-images-idx3-ubyte")
            .exists()
        {
            eprintln!(
                "skipping real_mnist_if_present: no MNIST under {} (run `retain data fetch mnist`)",
                root.display()
            );
            return;
        }
        let ds = load("mnist", &root).unwrap();
        assert_eq!(ds.shape, [1, 28, 28]);
        assert_eq!((ds.train.len, ds.test.len), (60_000, 10_000));
        assert_eq!(ds.train.images.len(), 60_000 * 28 * 28);
        assert_eq!(ds.test.images.len(), 10_000 * 28 * 28);
        assert_eq!(ds.train.labels[0], 5);
        let hist = |labels: &[u8]| {
            let mut h = [0usize; 10];
            labels.iter().for_each(|&l| h[l as usize] += 1);
            h
        };
        let train = hist(&ds.train.labels);
        let test = hist(&ds.test.labels);
        assert_eq!(train.iter().sum::<usize>(), 60_000);
        assert_eq!(test.iter().sum::<usize>(), 10_000);
        assert_eq!(
            train,
            [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
        );
        assert_eq!(
            test,
            [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
        );
        // pixels use the full byte range, and the border of image 0 is blank
        assert_eq!(ds.train.images.iter().max(), Some(&255));
        assert!(ds.train.images[..28].iter().all(|&p| p == 0));
    }

    #[test]
    fn hand_placed_cifar100_loads_fine_and_coarse_with_structural_checks() {
        let tiny = TinyCifar::cifar100(4, 3);
        let coarse = tiny.view(
            "tiny-cifar100-coarse",
            CifarLayout::Cifar100(Cifar100Labels::Coarse),
        );
        let tmp = tempdir();
        tiny.write_to(tmp.path());
        let fine_ds = load(tiny.spec, tmp.path()).unwrap();
        let coarse_ds = load(coarse, tmp.path()).unwrap();
        assert_eq!((fine_ds.classes, coarse_ds.classes), (100, 20));
        assert_eq!((fine_ds.train.len, fine_ds.test.len), (4, 3));
        assert_eq!(fine_ds.shape, [3, 32, 32]);
        assert_eq!(fine_ds.train.labels, tiny.train_labels);
        assert_eq!(fine_ds.test.labels, tiny.test_labels);
        // the generator's labels: coarse = (7f + 3r) % 20, fine = (7f + 3r + 5) % 100
        assert_eq!(fine_ds.train.labels, vec![5, 8, 11, 14]);
        assert_eq!(coarse_ds.train.labels, vec![0, 3, 6, 9]);
        assert_eq!(coarse_ds.test.labels, vec![7, 10, 13]);
        assert_eq!(fine_ds.train.images, tiny.train_images);
        assert_eq!(coarse_ds.train.images, fine_ds.train.images);
        // image 1 (record 1 of train.bin): byte p is c*80 + p % 251 + 1 with
        // c = p / 1024, so the first R, G and B bytes are 1, 80+20+1, 160+40+1
        let img1 = &fine_ds.train.images[3072..2 * 3072];
        assert_eq!((img1[0], img1[1024], img1[2048]), (1, 101, 201));
        for spec in [tiny.spec, coarse] {
            let st = status(spec, tmp.path()).unwrap();
            assert!(st.iter().all(|s| s.present
                && !s.verified
                && s.problem.as_deref() == Some(NOT_VERIFIED_NO_MANIFEST)));
        }

        // a label byte out of range is reported by record and value
        let path = tiny.spec.dir(tmp.path()).join("test.bin");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[2 * 3074 + 1] = 100; // fine label of record 2
        std::fs::write(&path, &bytes).unwrap();
        let expected = format!(
            "{}: record 2: fine label 100 is out of range for 100 classes",
            path.display()
        );
        for spec in [tiny.spec, coarse] {
            assert_eq!(load(spec, tmp.path()).unwrap_err().to_string(), expected);
            let st = status(spec, tmp.path()).unwrap();
            assert_eq!(st[1].problem.as_deref(), Some(expected.as_str()));
            assert_eq!(st[0].problem.as_deref(), Some(NOT_VERIFIED_NO_MANIFEST));
        }

        // a truncated file: size checked first, with the re-fetch command
        std::fs::write(&path, &bytes[..3074]).unwrap();
        let err = load(tiny.spec, tmp.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: size mismatch: expected {} bytes, found 3074; the file is incomplete or not the right one; \
                 re-fetch it with: retain data fetch tiny-cifar100 --root {}",
                path.display(),
                3 * 3074,
                tmp.path().display()
            )
        );
    }

    #[test]
    fn manifest_without_an_entry_is_an_error() {
        let tiny = TinyCifar::cifar10(1);
        let tmp = tempdir();
        tiny.write_to(tmp.path());
        let dir = tiny.spec.dir(tmp.path());
        let entries = tiny
            .files
            .iter()
            .filter(|(n, _)| *n != "test_batch.bin")
            .map(|(n, b)| (n.to_string(), md5_hex(b)))
            .collect();
        crate::manifest::write_manifest(&dir, entries, "partial").unwrap();
        let err = load(tiny.spec, tmp.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: invalid checksum manifest: no entry for test_batch.bin; re-fetch the dataset with: \
                 retain data fetch tiny-cifar10 --root {}",
                dir.join("CHECKSUMS.md5").display(),
                tmp.path().display()
            )
        );
        let st = status(tiny.spec, tmp.path()).unwrap();
        assert_eq!(st.iter().filter(|s| s.verified).count(), 5);
        assert!(
            st[5]
                .problem
                .as_deref()
                .unwrap()
                .contains("no entry for test_batch.bin")
        );
        // a malformed manifest makes every covered file unverified
        std::fs::write(dir.join("CHECKSUMS.md5"), "nonsense\n").unwrap();
        assert!(matches!(
            load(tiny.spec, tmp.path()).unwrap_err(),
            DataError::BadManifest { line: Some(1), .. }
        ));
        assert!(status(tiny.spec, tmp.path()).unwrap().iter().all(|s| {
            !s.verified
                && s.problem
                    .as_deref()
                    .unwrap()
                    .contains("CHECKSUMS.md5:1: invalid checksum manifest")
        }));
    }

    /// Parses the real Fashion-MNIST when it has been fetched into the
    /// workspace's `datasets/`; skipped (with a note) otherwise.
    #[test]
    fn real_fashion_mnist_if_present() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets");
        if !crate::FASHION_MNIST
            .dir(&root)
            .join("t10k-labels-idx1-ubyte")
            .exists()
        {
            eprintln!(
                "skipping real_fashion_mnist_if_present: no Fashion-MNIST under {} (run `retain data fetch fashion-mnist`)",
                root.display()
            );
            return;
        }
        let ds = load("fashion-mnist", &root).unwrap();
        assert_eq!((ds.train.len, ds.test.len), (60_000, 10_000));
        let hist = |labels: &[u8]| {
            let mut h = [0usize; 10];
            labels.iter().for_each(|&l| h[l as usize] += 1);
            h
        };
        // balanced by construction: 6000 / 1000 per class
        assert_eq!(hist(&ds.train.labels), [6000; 10]);
        assert_eq!(hist(&ds.test.labels), [1000; 10]);
        // first training image is an ankle boot (class 9), per the dataset's README
        assert_eq!(ds.train.labels[0], 9);
    }

    /// Loads the real CIFAR-10 / CIFAR-100 when they have been fetched into
    /// the workspace's `datasets/`; skipped (with a note) otherwise. Class
    /// counts are the published ones: CIFAR-10 5000/1000 per class,
    /// CIFAR-100 500/100 per fine class, 2500/500 per coarse class.
    #[test]
    fn real_cifar_if_present() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets");
        let hist = |labels: &[u8], classes: usize| {
            let mut h = vec![0usize; classes];
            labels.iter().for_each(|&l| h[l as usize] += 1);
            h
        };
        for (spec, train, test) in [
            (&crate::CIFAR10, 5000, 1000),
            (&crate::CIFAR100, 500, 100),
            (&crate::CIFAR100_COARSE, 2500, 500),
        ] {
            if !spec.dir(&root).join(spec.files[0].name).exists() {
                eprintln!(
                    "skipping {} in real_cifar_if_present: not under {} (run `retain data fetch {}`)",
                    spec.name,
                    root.display(),
                    spec.name
                );
                continue;
            }
            let ds = load(spec, &root).unwrap();
            assert_eq!((ds.train.len, ds.test.len), (50_000, 10_000));
            assert_eq!(ds.train.images.len(), 50_000 * 3072);
            assert_eq!(
                hist(&ds.train.labels, spec.classes),
                vec![train; spec.classes]
            );
            assert_eq!(
                hist(&ds.test.labels, spec.classes),
                vec![test; spec.classes]
            );
        }
    }
}
