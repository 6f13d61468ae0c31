use super::*;
use crate::archive::tests::deb;
use crate::testutil::{TestServer, TinyCifar, TinyDataset, gzip, tempdir, tgz};
use crate::{CIFAR10, FileRole, NOT_VERIFIED_NO_MANIFEST, load, md5_hex, status};
use std::cell::RefCell;

fn opts(sources: Vec<Source>) -> FetchOptions<'static> {
    FetchOptions {
        sources: Some(sources),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        use_env_proxy: false,
        progress: None,
        archive_md5: None,
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
fn per_file_gz_fetch_then_idempotent() {
    let tiny = TinyDataset::new();
    let server = TestServer::start(
        tiny.files
            .iter()
            .map(|(name, bytes)| (format!("/m/{name}.gz"), gzip(bytes)))
            .collect(),
    );
    let tmp = tempdir();
    let lines = RefCell::new(Vec::<String>::new());
    let log = |s: &str| lines.borrow_mut().push(s.to_string());
    let mut o = opts(vec![Source::per_file_url(server.url("/m/{file}.gz"))]);
    o.progress = Some(&log);

    let report = fetch(tiny.spec, tmp.path(), &o).unwrap();
    assert_eq!(report.fetched_count(), 4);
    assert_eq!(server.requests().len(), 4);
    for (name, bytes) in &tiny.files {
        assert_eq!(
            &fs::read(tiny.spec.dir(tmp.path()).join(name)).unwrap(),
            bytes
        );
    }
    assert!(leftovers(&tiny.spec.dir(tmp.path())).is_empty());
    assert!(
        lines
            .borrow()
            .iter()
            .any(|l| l.starts_with("verified and wrote"))
    );
    let ds = load(tiny.spec, tmp.path()).unwrap();
    assert_eq!(ds.train.labels, tiny.train_labels);

    // second run: nothing downloaded, everything reported as present
    let report = fetch(tiny.spec, tmp.path(), &o).unwrap();
    assert_eq!(report.fetched_count(), 0);
    assert!(
        report
            .files
            .iter()
            .all(|f| f.origin == FileOrigin::AlreadyPresent)
    );
    assert_eq!(server.requests().len(), 4, "no new requests");

    // a corrupted file on disk is re-fetched (and only that one)
    let p = tiny.spec.dir(tmp.path()).join(tiny.files[1].0);
    fs::write(&p, b"garbage").unwrap();
    let report = fetch(tiny.spec, tmp.path(), &o).unwrap();
    assert_eq!(report.fetched_count(), 1);
    assert_eq!(server.requests().len(), 5);
    assert!(
        status(tiny.spec, tmp.path())
            .unwrap()
            .iter()
            .all(|s| s.verified)
    );
}

#[test]
fn corrupted_source_falls_back_to_next() {
    let tiny = TinyDataset::new();
    let corrupt_name = tiny.spec.file(FileRole::TrainImages).unwrap().name;
    let mut routes: Vec<(String, Vec<u8>)> = tiny
        .files
        .iter()
        .map(|(name, bytes)| {
            let mut b = bytes.clone();
            if *name == corrupt_name {
                b[20] ^= 1; // same size, wrong md5
            }
            (format!("/a/{name}"), b)
        })
        .collect();
    // second source: an archive with the files nested, like the npm tarball
    routes.push((
        "/pkg.tgz".into(),
        tgz(&tiny
            .files
            .iter()
            .map(|(n, b)| (format!("package/data/{n}"), b.clone()))
            .collect::<Vec<_>>()),
    ));
    let server = TestServer::start(routes);
    let tmp = tempdir();
    let o = opts(vec![
        Source::per_file_url(server.url("/a/{file}")),
        Source::archive_url(server.url("/pkg.tgz")),
    ]);
    let report = fetch(tiny.spec, tmp.path(), &o).unwrap();
    assert_eq!(report.fetched_count(), 4);
    for f in &report.files {
        let from_archive =
            matches!(&f.origin, FileOrigin::Fetched { source } if source.contains("pkg.tgz"));
        assert_eq!(from_archive, f.name == corrupt_name, "{f:?}");
    }
    load(tiny.spec, tmp.path()).unwrap();
    assert!(leftovers(&tiny.spec.dir(tmp.path())).is_empty());
}

#[test]
fn all_sources_failing_lists_each() {
    let tiny = TinyDataset::new();
    let f0 = tiny.files[0].0;
    // first source: only one file, and it is truncated; second: 404s
    let server = TestServer::start(vec![(format!("/a/{f0}"), tiny.files[0].1[..10].to_vec())]);
    let tmp = tempdir();
    let o = opts(vec![
        Source::per_file_url(server.url("/a/{file}")),
        Source::archive_url(server.url("/nothing.tgz")),
    ]);
    let err = fetch(tiny.spec, tmp.path(), &o).unwrap_err();
    let DataError::FetchFailed {
        missing, attempts, ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(missing.len(), 4);
    assert_eq!(attempts.len(), 2);
    let msg = err.to_string();
    let dir = tiny.spec.dir(tmp.path());
    for needle in [
        format!("{}/a/{{file}} (one file per URL)", server.base()),
        format!("{f0}: size 10 bytes, expected {}", tiny.files[0].1.len()),
        format!(
            "{}: {}/a/{}: HTTP status 404",
            tiny.files[1].0,
            server.base(),
            tiny.files[1].0
        ),
        format!("{}/nothing.tgz: HTTP status 404", server.base()),
        format!("put the uncompressed files at {}/<file>", dir.display()),
        format!(
            "retain data fetch {} --root {} --from <path>",
            tiny.spec.name,
            tmp.path().display()
        ),
    ] {
        assert!(msg.contains(&needle), "missing {needle:?} in:\n{msg}");
    }
    // nothing half-written
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn local_archive_and_directory() {
    let tiny = TinyDataset::new();
    let src = tempdir();
    // .tgz with files at different depths, one of them gzipped inside
    let archive = src.path().join("copy.tar.gz");
    let entries: Vec<(String, Vec<u8>)> = tiny
        .files
        .iter()
        .enumerate()
        .map(|(k, (n, b))| match k {
            0 => (format!("deep/er/{n}.gz"), gzip(b)),
            1 => (n.to_string(), b.clone()),
            _ => (format!("x/{n}"), b.clone()),
        })
        .collect();
    fs::write(&archive, tgz(&entries)).unwrap();
    let tmp = tempdir();
    let report = fetch(tiny.spec, tmp.path(), &FetchOptions::from_local(&archive)).unwrap();
    assert_eq!(report.fetched_count(), 4);
    load(tiny.spec, tmp.path()).unwrap();

    // a directory with a mix of plain and .gz files, one missing
    let d = src.path().join("dir");
    fs::create_dir(&d).unwrap();
    fs::write(
        d.join(format!("{}.gz", tiny.files[0].0)),
        gzip(&tiny.files[0].1),
    )
    .unwrap();
    fs::write(d.join(tiny.files[1].0), &tiny.files[1].1).unwrap();
    fs::write(d.join(tiny.files[2].0), &tiny.files[2].1).unwrap();
    let tmp2 = tempdir();
    let err = fetch(tiny.spec, tmp2.path(), &FetchOptions::from_local(&d)).unwrap_err();
    let DataError::FetchFailed { missing, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(missing, &vec![tiny.files[3].0.to_string()]);
    assert!(err.to_string().contains("neither"), "{err}");
    fs::write(d.join(tiny.files[3].0), &tiny.files[3].1).unwrap();
    let report = fetch(tiny.spec, tmp2.path(), &FetchOptions::from_local(&d)).unwrap();
    assert_eq!(report.fetched_count(), 1, "the three good files were kept");
    load(tiny.spec, tmp2.path()).unwrap();
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn cifar_archive_verified_then_manifest_guards_later_loads() {
    let tiny = TinyCifar::cifar10(2);
    let archive_md5 = tiny.spec.archive.as_ref().unwrap().md5;
    let server = TestServer::start(vec![(
        "/~kriz/cifar-10-binary.tar.gz".into(),
        tiny.archive.clone(),
    )]);
    let tmp = tempdir();
    let dir = tiny.spec.dir(tmp.path());
    let o = opts(vec![Source::archive_url(
        server.url("/~kriz/cifar-10-binary.tar.gz"),
    )]);

    let report = fetch(tiny.spec, tmp.path(), &o).unwrap();
    assert_eq!(report.fetched_count(), 6);
    for (name, bytes) in &tiny.files {
        assert_eq!(&fs::read(dir.join(name)).unwrap(), bytes, "{name}");
    }
    // the manifest lists each file's md5, computed here independently
    let mut expected = format!(
        "# md5 of the files extracted from cifar-10-binary.tar.gz (md5 {archive_md5}, verified) by retain-data {}.\n\
         # Loads verify against these; check by hand with: md5sum -c CHECKSUMS.md5\n",
        env!("CARGO_PKG_VERSION")
    );
    for (name, bytes) in &tiny.files {
        expected.push_str(&format!("{}  {name}\n", md5_hex(bytes)));
    }
    assert_eq!(
        fs::read_to_string(dir.join("CHECKSUMS.md5")).unwrap(),
        expected
    );
    // nothing else: no temp files, the metadata file was not extracted
    let mut names: Vec<String> = tiny.files.iter().map(|(n, _)| n.to_string()).collect();
    names.push("CHECKSUMS.md5".into());
    names.sort();
    assert_eq!(dir_entries(&dir), names);

    let ds = load(tiny.spec, tmp.path()).unwrap();
    assert_eq!((ds.train.len, ds.test.len), (10, 2));
    assert_eq!(ds.train.labels, tiny.train_labels);
    assert_eq!(ds.test.labels, tiny.test_labels);
    assert_eq!(ds.train.images, tiny.train_images);
    assert!(
        status(tiny.spec, tmp.path())
            .unwrap()
            .iter()
            .all(|s| s.verified)
    );

    // idempotent: verified against the manifest, nothing downloaded
    let report = fetch(tiny.spec, tmp.path(), &o).unwrap();
    assert_eq!(report.fetched_count(), 0);
    assert_eq!(server.requests().len(), 1);

    // later corruption (same size) is caught on load, naming the file
    let victim = dir.join("data_batch_3.bin");
    let mut bytes = fs::read(&victim).unwrap();
    let good_md5 = md5_hex(&bytes);
    bytes[100] ^= 0x40;
    fs::write(&victim, &bytes).unwrap();
    let err = load(tiny.spec, tmp.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: checksum mismatch: expected md5 {good_md5}, found {}; the file is corrupt or not the right one; \
             re-fetch it with: retain data fetch tiny-cifar10 --root {}",
            victim.display(),
            md5_hex(&bytes),
            tmp.path().display()
        )
    );
    let st = status(tiny.spec, tmp.path()).unwrap();
    let bad: Vec<_> = st.iter().filter(|s| !s.verified).collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].name, "data_batch_3.bin");
    assert!(
        bad[0]
            .problem
            .as_deref()
            .unwrap()
            .contains("checksum mismatch")
    );

    // re-fetching replaces just that file and keeps the manifest whole
    let report = fetch(tiny.spec, tmp.path(), &o).unwrap();
    assert_eq!(report.fetched_count(), 1);
    assert_eq!(server.requests().len(), 2);
    assert_eq!(
        fs::read_to_string(dir.join("CHECKSUMS.md5")).unwrap(),
        expected
    );
    load(tiny.spec, tmp.path()).unwrap();
    assert_eq!(dir_entries(&dir), names);
}

#[test]
fn a_repackaged_archive_installs_only_under_its_own_md5() {
    let tiny = TinyCifar::cifar10(2);
    // a site mirror's own tarball of the same files: other layout, other bytes
    let repackaged = tgz(&tiny
        .files
        .iter()
        .map(|(n, b)| (format!("mirror/cifar10/{n}"), b.clone()))
        .collect::<Vec<_>>());
    let server = TestServer::start(vec![("/c.tgz".into(), repackaged.clone())]);
    let sources = || vec![Source::archive_url(server.url("/c.tgz"))];
    // vouched for by a wrong md5: refused, nothing installed
    let tmp = tempdir();
    let mut options = opts(sources());
    options.archive_md5 = Some("0".repeat(32));
    let err = fetch(tiny.spec, tmp.path(), &options).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "md5 mismatch: expected {}, found {}",
            "0".repeat(32),
            md5_hex(&repackaged)
        )) && err
            .to_string()
            .contains("not the archive the configured md5 vouches for"),
        "{err}"
    );
    assert!(!tiny.spec.dir(tmp.path()).join("data_batch_1.bin").exists());
    // vouched for by its own md5: installed, and the manifest names that md5
    options.archive_md5 = Some(md5_hex(&repackaged));
    let report = fetch(tiny.spec, tmp.path(), &options).unwrap();
    assert_eq!(report.fetched_count(), 6);
    let manifest = fs::read_to_string(tiny.spec.dir(tmp.path()).join(MANIFEST_FILE)).unwrap();
    assert!(
        manifest.contains(&format!("(md5 {}, verified)", md5_hex(&repackaged))),
        "{manifest}"
    );
    let ds = load(tiny.spec, tmp.path()).unwrap();
    assert_eq!(ds.train.labels, tiny.train_labels);
}

#[test]
fn cifar_corrupt_or_foreign_archive_installs_nothing() {
    let tiny = TinyCifar::cifar10(1);
    let archive_md5 = tiny.spec.archive.as_ref().unwrap().md5;
    let mut damaged = tiny.archive.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0xff;
    // a well-formed archive with the right files, but not the official one
    let foreign = tgz(&tiny
        .files
        .iter()
        .map(|(n, b)| (format!("other/{n}"), b.clone()))
        .collect::<Vec<_>>());
    let server = TestServer::start(vec![
        ("/damaged.tgz".into(), damaged.clone()),
        ("/foreign.tgz".into(), foreign.clone()),
        ("/good.tgz".into(), tiny.archive.clone()),
    ]);
    for (route, body) in [("/foreign.tgz", &foreign), ("/damaged.tgz", &damaged)] {
        let tmp = tempdir();
        let err = fetch(
            tiny.spec,
            tmp.path(),
            &opts(vec![Source::archive_url(server.url(route))]),
        )
        .unwrap_err();
        let DataError::FetchFailed {
            missing, attempts, ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!(missing.len(), 6);
        assert_eq!(attempts.len(), 1);
        let needle = format!(
            "cifar-10-binary.tar.gz: md5 mismatch: expected {archive_md5}, found {} over {} bytes",
            md5_hex(body),
            body.len()
        );
        assert!(
            attempts[0].problems[0].starts_with(&needle),
            "{route}: {:?}",
            attempts[0]
        );
        assert!(err.to_string().contains("nothing was installed"), "{err}");
        // no file, no temp file, no manifest
        assert!(
            dir_entries(&tiny.spec.dir(tmp.path())).is_empty(),
            "{route}"
        );
    }
    // a bad source followed by a good one
    let tmp = tempdir();
    let report = fetch(
        tiny.spec,
        tmp.path(),
        &opts(vec![
            Source::archive_url(server.url("/damaged.tgz")),
            Source::archive_url(server.url("/good.tgz")),
        ]),
    )
    .unwrap();
    assert_eq!(report.fetched_count(), 6);
    assert!(report.files.iter().all(
        |f| matches!(&f.origin, FileOrigin::Fetched { source } if source.contains("/good.tgz"))
    ));
    load(tiny.spec, tmp.path()).unwrap();
}

#[test]
fn cifar_from_local_archive_or_folder_holding_it() {
    let tiny = TinyCifar::cifar10(1);
    let dl = tempdir();
    let archive = dl.path().join("cifar-10-binary.tar.gz");
    fs::write(&archive, &tiny.archive).unwrap();

    let tmp = tempdir();
    let report = fetch(tiny.spec, tmp.path(), &FetchOptions::from_local(&archive)).unwrap();
    assert_eq!(report.fetched_count(), 6);
    assert!(tiny.spec.dir(tmp.path()).join("CHECKSUMS.md5").is_file());
    load(tiny.spec, tmp.path()).unwrap();

    let tmp = tempdir();
    let report = fetch(tiny.spec, tmp.path(), &FetchOptions::from_local(dl.path())).unwrap();
    assert_eq!(report.fetched_count(), 6);

    // a folder of loose .bin files is not accepted: nothing vouches for them
    let loose = tempdir();
    for (n, b) in &tiny.files {
        fs::write(loose.path().join(n), b).unwrap();
    }
    let err = fetch(
        tiny.spec,
        tempdir().path(),
        &FetchOptions::from_local(loose.path()),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "no cifar-10-binary.tar.gz in {} (the files of tiny-cifar10 are only taken from the official archive",
            loose.path().display()
        )),
        "{err}"
    );
}

#[test]
fn hand_placed_cifar_files_are_replaced_by_fetch() {
    let tiny = TinyCifar::cifar10(1);
    let tmp = tempdir();
    tiny.write_to(tmp.path());
    let st = status(tiny.spec, tmp.path()).unwrap();
    assert!(st.iter().all(|s| s.present
        && !s.verified
        && s.problem.as_deref() == Some(NOT_VERIFIED_NO_MANIFEST)));
    // without a usable source they stay, and the error says they load as they are
    let err = fetch(tiny.spec, tmp.path(), &opts(vec![])).unwrap_err();
    assert!(
        err.to_string().ends_with(&format!(
            "\nnote: data_batch_1.bin, data_batch_2.bin, data_batch_3.bin, data_batch_4.bin, data_batch_5.bin, \
             test_batch.bin already in {} without CHECKSUMS.md5: they load as they are, with structural checks only",
            tiny.spec.dir(tmp.path()).display()
        )),
        "{err}"
    );
    load(tiny.spec, tmp.path()).unwrap();
    let server = TestServer::start(vec![("/a.tgz".into(), tiny.archive.clone())]);
    let report = fetch(
        tiny.spec,
        tmp.path(),
        &opts(vec![Source::archive_url(server.url("/a.tgz"))]),
    )
    .unwrap();
    assert_eq!(report.fetched_count(), 6);
    assert!(
        status(tiny.spec, tmp.path())
            .unwrap()
            .iter()
            .all(|s| s.verified)
    );
}

#[test]
fn cifar10_without_network_says_what_was_tried_and_how_to_install() {
    // a port nothing listens on: connection refused, like no network
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/~kriz/cifar-10-binary.tar.gz");
    let tmp = tempdir();
    let err = fetch(
        &CIFAR10,
        tmp.path(),
        &opts(vec![
            Source::per_file_url(format!("http://127.0.0.1:{port}/{{file}}")),
            Source::archive_url(&url),
        ]),
    )
    .unwrap_err();
    let msg = err.to_string();
    let root = tmp.path().display();
    for needle in [
        "could not fetch dataset \"cifar10\": still missing data_batch_1.bin, data_batch_2.bin, \
         data_batch_3.bin, data_batch_4.bin, data_batch_5.bin, test_batch.bin\nsources tried:\n"
            .to_string(),
        format!(
            "  1. http://127.0.0.1:{port}/{{file}} (one file per URL)\n     - per-file downloads cannot be \
             verified for cifar10: only its archive cifar-10-binary.tar.gz has a published md5\n"
        ),
        format!("  2. {url} (archive)\n     - {url}: "),
        format!(
            "to install by hand, either download cifar-10-binary.tar.gz elsewhere and run: \
             retain data fetch cifar10 --root {root} --from <path to cifar-10-binary.tar.gz> (its md5 is checked), \
             or extract it yourself and put the files at {root}/cifar10/data_batch_1.bin … \
             (data_batch_1.bin, data_batch_2.bin, data_batch_3.bin, data_batch_4.bin, data_batch_5.bin, \
             test_batch.bin), where they load with structural checks only (no checksum manifest)"
        ),
    ] {
        assert!(msg.contains(&needle), "missing {needle:?} in:\n{msg}");
    }
    // and the real spec would have asked the official server
    assert_eq!(
        CIFAR10.sources[0].to_string(),
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz (archive)"
    );
    assert_eq!(
        CIFAR10.archive.as_ref().unwrap().md5,
        "c32a1d4ab5d03f1284b67883e8d87530"
    );
}

#[test]
fn debian_package_as_a_source() {
    let tiny = TinyDataset::new();
    let entries: Vec<(String, Vec<u8>)> = tiny
        .files
        .iter()
        .map(|(n, b)| (format!("./usr/share/datasets/tiny/{n}.gz"), gzip(b)))
        .chain([("./usr/share/doc/tiny/copyright".to_string(), b"x".to_vec())])
        .collect();
    let package = deb(&entries);
    let server = TestServer::start(vec![("/pool/tiny_1_all.deb".into(), package.clone())]);
    let source = Source::archive_url(server.url("/pool/tiny_1_all.deb"));
    assert!(
        source
            .to_string()
            .ends_with("/pool/tiny_1_all.deb (Debian package)")
    );
    let tmp = tempdir();
    let report = fetch(tiny.spec, tmp.path(), &opts(vec![source])).unwrap();
    assert_eq!(report.fetched_count(), 4);
    let ds = load(tiny.spec, tmp.path()).unwrap();
    assert_eq!(ds.train.labels, tiny.train_labels);

    // the same package from disk (`--from x.deb`)
    let dl = tempdir();
    let path = dl.path().join("tiny_1_all.deb");
    fs::write(&path, &package).unwrap();
    let tmp = tempdir();
    let report = fetch(tiny.spec, tmp.path(), &FetchOptions::from_local(&path)).unwrap();
    assert_eq!(report.fetched_count(), 4);
    load(tiny.spec, tmp.path()).unwrap();
}

/// The files already present are checked in parallel; what each check found is still
/// reported in file order, and only the bad or absent files are left to fetch.
#[test]
fn present_files_are_checked_in_parallel_and_reported_in_file_order() {
    let tiny = TinyDataset::new();
    let tmp = tempdir();
    tiny.write_to(tmp.path());
    let dir = tiny.spec.dir(tmp.path());
    let path = |k: usize| dir.join(tiny.files[k].0);
    fs::write(path(1), b"garbage").unwrap();
    fs::remove_file(path(2)).unwrap();
    let lines = RefCell::new(Vec::<String>::new());
    let log = |s: &str| lines.borrow_mut().push(s.to_string());
    let mut o = opts(vec![]);
    o.progress = Some(&log);
    let err = fetch(tiny.spec, tmp.path(), &o).unwrap_err();
    let DataError::FetchFailed { missing, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(missing, &[tiny.files[1].0, tiny.files[2].0]);
    let lines = lines.into_inner();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(
        lines[0],
        format!("{}: already present and verified", path(0).display())
    );
    assert!(
        lines[1].starts_with(&format!("{}: size mismatch", path(1).display()))
            && lines[1].ends_with("; will replace it"),
        "{}",
        lines[1]
    );
    assert_eq!(
        lines[2],
        format!("{}: already present and verified", path(3).display())
    );
}
