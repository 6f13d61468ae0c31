//! Loading verified datasets into memory, and inspecting what is on disk.

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use md5::{Digest, Md5};

use crate::idx;
use crate::{DataError, DatasetRef, DatasetSpec, FileRole, FileSpec};

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
    /// Size and md5 both match the spec.
    pub verified: bool,
    /// Why it is not verified, if present but not verified.
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

/// Checks size then md5 of a file on disk against its spec; `Ok(())` when
/// both match. Used by [`status`] and by [`crate::fetch`] to skip files
/// already in place.
pub(crate) fn verify_file(path: &Path, spec: &FileSpec, command: &str) -> Result<(), DataError> {
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
    let found = file_md5(path)?;
    if found != spec.md5 {
        return Err(DataError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: spec.md5.to_string(),
            found,
            command: command.to_string(),
        });
    }
    Ok(())
}

/// Reads a file whole and verifies it, so the bytes parsed are the bytes hashed.
fn read_verified(path: &Path, spec: &FileSpec, command: &str) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, "reading", e))?;
    if bytes.len() as u64 != spec.size {
        return Err(DataError::SizeMismatch {
            path: path.to_path_buf(),
            expected: spec.size,
            found: bytes.len() as u64,
            command: command.to_string(),
        });
    }
    let found = md5_hex(&bytes);
    if found != spec.md5 {
        return Err(DataError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: spec.md5.to_string(),
            found,
            command: command.to_string(),
        });
    }
    Ok(bytes)
}

/// Loads a dataset from `<root>/<name>/`, verifying every file's size and
/// md5 before parsing it.
///
/// Verification is on every load (≈0.1 s for MNIST with the optimised md5)
/// because a silently corrupted file produces plausible-looking but wrong
/// results, which is the worst outcome for an experiment framework.
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
    let train = load_split(
        spec,
        &dir,
        &command,
        FileRole::TrainImages,
        FileRole::TrainLabels,
    )?;
    let test = load_split(
        spec,
        &dir,
        &command,
        FileRole::TestImages,
        FileRole::TestLabels,
    )?;
    Ok(ImageDataset {
        name: spec.name.to_string(),
        classes: spec.classes,
        shape: spec.shape,
        train,
        test,
    })
}

fn load_split(
    spec: &DatasetSpec,
    dir: &Path,
    command: &str,
    images_role: FileRole,
    labels_role: FileRole,
) -> Result<Split, DataError> {
    let images_file = spec.file(images_role)?;
    let labels_file = spec.file(labels_role)?;
    let images_path = dir.join(images_file.name);
    let labels_path = dir.join(labels_file.name);

    let bytes = read_verified(&images_path, images_file, command)?;
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
    let bytes = read_verified(&labels_path, labels_file, command)?;
    let labels = idx::parse_labels(&bytes, &labels_path, spec.classes)?;
    idx::check_pair(&images, &images_path, &labels, &labels_path)?;
    Ok(Split {
        len: images.count,
        images: images.pixels,
        labels,
    })
}

/// Reports, per file, whether it is present and verified (size and md5).
///
/// Meant for `retain data list`; never fails on a bad file, it describes it.
pub fn status(
    dataset: impl DatasetRef,
    root: impl AsRef<Path>,
) -> Result<Vec<FileStatus>, DataError> {
    let spec = dataset.resolve()?;
    let root = root.as_ref();
    let dir = spec.dir(root);
    let command = fetch_command(spec.name, root);
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
                Some(_) => verify_file(&path, f, &command).err().map(|e| e.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TinyDataset, tempdir};

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
            f.md5,
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
}
