//! `retain data`: which datasets an experiment needs, and the Split-CIFAR path from a
//! loopback mirror to a written matrix.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common::{assert_success, read_parquet, repo, retain};

/// `retain data fetch --for` resolves exactly the datasets each shipped experiment and grid
/// file reads (stream and `[pretrain]` stage), without fetching anything (`--dry-run`).
#[test]
fn data_fetch_for_resolves_the_datasets_of_every_shipped_experiment() {
    let expected = |file: &str| -> &[&str] {
        match file {
            "peft-fashion.toml" | "peft-lora-readouts.toml" => &["fashion-mnist", "mnist"],
            "pretrain-fashion-half.toml"
            | "split-fashion-mnist.toml"
            | "prompt-cil-fashion.toml" => &["fashion-mnist"],
            "split-cifar.toml"
            | "repro-der-seq-cifar10-b200.toml"
            | "repro-der-seq-cifar10-b500.toml"
            | "repro-der-seq-cifar10-b5120.toml" => &["cifar10"],
            "split-cifar100.toml"
            | "repro-xder-seq-cifar100-b500.toml"
            | "repro-xder-seq-cifar100-b2000.toml"
            | "repro-prompt-cifar100-vitb16.toml" => &["cifar100"],
            "check-split-mnist.toml"
            | "check-split-mnist-methods.toml"
            | "perm-mnist.toml"
            | "pretrain-distill-mnist-teacher.toml"
            | "pretrain-distill-mnist.toml"
            | "repro-gem-perm-mnist.toml"
            | "repro-memory-split-mnist.toml"
            | "repro-hsu-split-mnist.toml"
            | "online-split-mnist.toml"
            | "b5-inc1-split-mnist.toml"
            | "split-mnist-blurry.toml"
            | "repro-memory-split-mnist-gdumb.toml"
            | "repro-memory-split-mnist-ncm.toml"
            | "repro-vandeven-split-mnist-task-il.toml"
            | "repro-vandeven-split-mnist.toml"
            | "rot-mnist.toml"
            | "split-mnist-agem.toml"
            | "split-mnist-der.toml"
            | "split-mnist-gem.toml"
            | "split-mnist-grid.toml"
            | "split-mnist-peft.toml"
            | "split-mnist-replay.toml"
            | "split-mnist-unfreeze.toml"
            | "split-mnist-vit-adapter.toml"
            | "split-mnist-vit-prefix.toml"
            | "split-mnist-vit-prompt.toml"
            | "split-mnist.toml" => &["mnist"],
            other => panic!("experiments/{other} is new: add the datasets it needs here"),
        }
    };
    let mut files: Vec<_> = std::fs::read_dir(repo().join("experiments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 25, "{files:?}");
    for file in files {
        let path = format!("experiments/{file}");
        let out = retain(&["data", "fetch", "--for", &path, "--dry-run"]);
        assert_success(&out);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let listed: Vec<&str> = stdout.lines().collect();
        assert_eq!(listed, expected(&file), "{file}");
    }
    // A name and --for together, or neither, is a usage error.
    let both = retain(&[
        "data",
        "fetch",
        "mnist",
        "--for",
        "experiments/split-mnist.toml",
    ]);
    assert_eq!(both.status.code(), Some(2));
    assert_eq!(retain(&["data", "fetch"]).status.code(), Some(2));
    let bad = retain(&[
        "data",
        "fetch",
        "--for",
        "experiments/nope.toml",
        "--dry-run",
    ]);
    assert_ne!(bad.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("experiments/nope.toml"));
}

/// Serves one body at one path over HTTP/1.1 on 127.0.0.1 (404 elsewhere), counting requests.
struct LoopbackServer {
    url: String,
    hits: Arc<AtomicUsize>,
}

impl LoopbackServer {
    fn start(path: &'static str, body: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}{path}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&hits);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                reader.read_line(&mut request).unwrap_or_default();
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let found = request.split_whitespace().nth(1) == Some(path);
                let (status, payload): (&str, &[u8]) = if found {
                    ("200 OK", &body)
                } else {
                    ("404 Not Found", b"not found")
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    payload.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(payload);
            }
        });
        LoopbackServer { url, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A CIFAR-10 binary archive exact in format and size (`cifar-10-batches-bin/` with five
/// training batches and the test batch of 10 000 records each, plus `batches.meta.txt`), whose
/// images are a flat grey level per class with a little texture: easy to learn.
fn cifar10_archive() -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut add = |name: &str, bytes: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, format!("cifar-10-batches-bin/{name}"), bytes)
            .unwrap();
    };
    let names = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    for (file, name) in names.iter().enumerate() {
        let mut bytes = Vec::with_capacity(10_000 * 3073);
        for record in 0..10_000usize {
            let label = (record * 7 + file) % 10;
            bytes.push(label as u8);
            bytes.extend((0..3072).map(|p| (label * 24 + (p + record) % 5) as u8));
        }
        add(name, &bytes);
    }
    add(
        "batches.meta.txt",
        b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n",
    );
    tar.into_inner().unwrap().finish().unwrap()
}

/// `retain data fetch --for experiments/split-cifar.toml` from a mirror on loopback (a sources
/// file names it, with the md5 of its archive; the shipped checksum stays the official one),
/// then a reduced Split-CIFAR run (two tasks, 256 samples each, one epoch, ResNet-18 at 16
/// filters) on the CPU writes its matrix.
#[test]
fn split_cifar_from_a_loopback_mirror_fetches_and_runs() {
    let archive = cifar10_archive();
    let md5 = retain_data::md5_hex(&archive);
    assert_ne!(md5, retain_data::CIFAR10_ARCHIVE.md5);
    let server = LoopbackServer::start("/cifar-10-binary.tar.gz", archive);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("datasets");
    let output = tmp.path().join("results");
    let write_sources = |name: &str, md5: &str| {
        let path = tmp.path().join(name);
        let text = format!("[cifar10]\narchive = {:?}\nmd5 = {md5:?}\n", server.url);
        std::fs::write(&path, text).unwrap();
        path
    };
    let fetch = |sources: &Path| {
        retain(&[
            "data",
            "fetch",
            "--for",
            "experiments/split-cifar.toml",
            "--root",
            root.to_str().unwrap(),
            "--sources",
            sources.to_str().unwrap(),
        ])
    };

    // Vouched for by the official md5 (a plain mirror): the repackaged archive is refused.
    let official = write_sources("official.toml", retain_data::CIFAR10_ARCHIVE.md5);
    let refused = fetch(&official);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains(&format!("found {md5}")), "{stderr}");
    assert!(!root.join("cifar10/data_batch_1.bin").exists());

    let mirror = write_sources("mirror.toml", &md5);
    let fetched = fetch(&mirror);
    assert_success(&fetched);
    let stdout = String::from_utf8_lossy(&fetched.stdout);
    assert!(
        stdout.contains("cifar10: 6 file(s) fetched, all verified"),
        "{stdout}"
    );
    let hits = server.hits();
    // Present and verified: not fetched again.
    let again = fetch(&mirror);
    assert_success(&again);
    assert!(String::from_utf8_lossy(&again.stdout).contains("cifar10: 0 file(s) fetched"));
    assert_eq!(server.hits(), hits);

    let run = retain(&[
        "run",
        "experiments/split-cifar.toml",
        "--device",
        "cpu",
        "--data-root",
        root.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--run-name",
        "loopback",
        "--quiet",
        "--set",
        "stream.tasks=2",
        "--set",
        "stream.train_samples_per_task=256",
        "--set",
        "stream.test_samples_per_task=200",
        "--set",
        "training.epochs=1",
        "--set",
        "model.nf=16",
    ]);
    assert_success(&run);
    let accuracy = read_parquet(&output.join("split-cifar/loopback/accuracy.parquet"));
    // 2 read-outs × 3 rows (untrained + 2 tasks) × 2 evaluated tasks, 200 test samples each.
    assert_eq!(accuracy.height(), 2 * 3 * 2);
    let samples = accuracy.column("samples").unwrap().u64().unwrap();
    assert!(samples.into_iter().all(|s| s == Some(200)));
    let scenario = accuracy.column("scenario").unwrap().str().unwrap();
    let trained = accuracy.column("trained_tasks").unwrap().u32().unwrap();
    let task = accuracy.column("eval_task").unwrap().u32().unwrap();
    let value = accuracy.column("accuracy").unwrap().f64().unwrap();
    // The first task, just learned, is far above task-IL chance (0.5) on the served images.
    let learned = (0..accuracy.height())
        .find(|&i| {
            scenario.get(i) == Some("task_il")
                && trained.get(i) == Some(1)
                && task.get(i) == Some(0)
        })
        .and_then(|i| value.get(i))
        .unwrap();
    assert!(learned > 0.75, "task-IL R[1,1] = {learned}");
}

/// The published class counts `retain plan` builds a stand-in from are those of the real
/// files (MNIST and Fashion-MNIST, which `just test` fetches).
#[test]
fn published_class_counts_are_the_files_counts() {
    let root = crate::common::data_root();
    for name in ["mnist", "fashion-mnist"] {
        let spec = retain_data::DatasetSpec::by_name(name).unwrap();
        let real = retain_data::load(name, &root)
            .unwrap_or_else(|e| panic!("{name} must be here (`just test` fetches it): {e}"));
        let stand_in = retain_data::ImageDataset::stand_in(spec).unwrap();
        let histogram = |labels: &[u8]| {
            let mut counts = vec![0usize; spec.classes];
            for &l in labels {
                counts[l as usize] += 1;
            }
            counts
        };
        for (real, stand_in) in [(&real.train, &stand_in.train), (&real.test, &stand_in.test)] {
            assert_eq!(
                histogram(&real.labels),
                histogram(&stand_in.labels),
                "{name}"
            );
            assert_eq!(real.images.len(), stand_in.images.len(), "{name}");
        }
    }
}
