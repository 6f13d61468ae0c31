use super::*;
use crate::cifar::Cifar100Labels;
use crate::testutil::{TinyCifar, TinyDataset, tempdir};
use crate::{NOT_VERIFIED_NO_MANIFEST, md5_hex, status};

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

/// The files are read and hashed in parallel, yet the error is the one a file-by-file load
/// meets first: the train labels here, although both test files are damaged too and, being
/// checked on other threads, may well fail first.
#[test]
fn parallel_load_reports_the_first_bad_file_in_load_order() {
    let tiny = TinyDataset::new();
    let tmp = tempdir();
    tiny.write_to(tmp.path());
    let dir = tiny.spec.dir(tmp.path());
    for name in ["tiny-train-labels", "tiny-test-images", "tiny-test-labels"] {
        let path = dir.join(name);
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1; // same size: a checksum error, not a size error
        std::fs::write(&path, &bytes).unwrap();
    }
    let first = dir.join("tiny-train-labels");
    for _ in 0..20 {
        let err = load(tiny.spec, tmp.path()).unwrap_err();
        assert!(
            matches!(&err, DataError::ChecksumMismatch { path, .. } if *path == first),
            "{err:?}"
        );
    }
    let st = status(tiny.spec, tmp.path()).unwrap();
    let names: Vec<&str> = st.iter().map(|s| s.name).collect();
    let spec_names: Vec<&str> = tiny.spec.files.iter().map(|f| f.name).collect();
    assert_eq!(names, spec_names);
    let verified: Vec<bool> = st.iter().map(|s| s.verified).collect();
    assert_eq!(verified, [true, false, false, false]);
}
