//! Test helpers: tiny generated datasets (IDX and CIFAR) and a minimal
//! local HTTP server.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;

use crate::cifar::{Cifar100Labels, CifarLayout};
use crate::idx::{IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, encode};
use crate::verify::md5_hex;
use crate::{ArchiveSpec, DatasetSpec, FileRole, FileSpec, Format};

pub(crate) fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A 3-class dataset of 2×3 grayscale images: 4 train, 2 test.
pub(crate) struct TinyDataset {
    pub spec: &'static DatasetSpec,
    /// (file name, content) in spec order.
    pub files: Vec<(&'static str, Vec<u8>)>,
    pub train_pixels: Vec<u8>,
    pub train_labels: Vec<u8>,
}

impl TinyDataset {
    pub fn new() -> Self {
        let train_pixels: Vec<u8> = (0..4 * 6).map(|i| (i * 7 % 256) as u8).collect();
        let train_labels = vec![2, 0, 1, 2];
        let test_pixels: Vec<u8> = (0..2 * 6).map(|i| 255 - i as u8).collect();
        let contents = [
            (
                "tiny-train-images",
                FileRole::TrainImages,
                encode(IDX_IMAGES_MAGIC, &[4, 2, 3], &train_pixels),
            ),
            (
                "tiny-train-labels",
                FileRole::TrainLabels,
                encode(IDX_LABELS_MAGIC, &[4], &train_labels),
            ),
            (
                "tiny-test-images",
                FileRole::TestImages,
                encode(IDX_IMAGES_MAGIC, &[2, 2, 3], &test_pixels),
            ),
            (
                "tiny-test-labels",
                FileRole::TestLabels,
                encode(IDX_LABELS_MAGIC, &[2], &[1, 0]),
            ),
        ];
        let specs: Vec<FileSpec> = contents
            .iter()
            .map(|(name, role, bytes)| FileSpec {
                name,
                md5: Some(Box::leak(md5_hex(bytes).into_boxed_str())),
                size: bytes.len() as u64,
                role: *role,
            })
            .collect();
        let spec = Box::leak(Box::new(DatasetSpec {
            name: "tiny",
            dir_name: "tiny",
            files: Box::leak(specs.into_boxed_slice()),
            format: Format::Idx,
            classes: 3,
            shape: [1, 2, 3],
            sources: &[],
            archive: None,
            class_counts: None,
        }));
        TinyDataset {
            spec,
            files: contents.into_iter().map(|(n, _, b)| (n, b)).collect(),
            train_pixels,
            train_labels,
        }
    }

    /// Writes the files uncompressed under `<root>/tiny/`.
    pub fn write_to(&self, root: &Path) {
        let dir = self.spec.dir(root);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &self.files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A plain tar holding `(path inside archive, content)` entries.
pub(crate) fn tar_bytes(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, bytes) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, bytes.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

/// A .tar.gz holding `(path inside archive, content)` entries.
pub(crate) fn tgz(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    gzip(&tar_bytes(entries))
}

/// HTTP/1.1 server on 127.0.0.1 serving fixed bodies by path (404 otherwise),
/// one request per connection. Stops when dropped.
pub(crate) struct TestServer {
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(routes: Vec<(String, Vec<u8>)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop2, req2) = (stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            // bounded: tests make a handful of requests
            for stream in listener.incoming().take(200) {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                serve_one(stream, &routes, &req2);
            }
        });
        TestServer {
            addr,
            stop,
            requests,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// Paths requested so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_one(
    stream: TcpStream,
    routes: &[(String, Vec<u8>)],
    log: &Mutex<Vec<String>>,
) -> Option<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    // skip headers (bounded)
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1)?.to_string();
    // logged before answering so the client cannot observe the response first
    log.lock().unwrap().push(path.clone());
    let mut stream = reader.into_inner();
    let (status, body): (&str, &[u8]) = match routes.iter().find(|(p, _)| *p == path) {
        Some((_, b)) => ("200 OK", b),
        None => ("404 Not Found", b"not found"),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
    Some(())
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Small CIFAR-format datasets in the official file layout, with the spec
/// and the official-style archive that vouches for them.
pub(crate) struct TinyCifar {
    pub spec: &'static DatasetSpec,
    /// (file name, content) in spec order.
    pub files: Vec<(&'static str, Vec<u8>)>,
    /// A `.tar.gz` laid out like the official one (files in a subfolder,
    /// plus a metadata file the spec does not ask for).
    pub archive: Vec<u8>,
    /// Labels (the layout's) of all train files, then of the test file.
    pub train_labels: Vec<u8>,
    pub test_labels: Vec<u8>,
    /// Images of all train files concatenated, C×H×W each.
    pub train_images: Vec<u8>,
}

/// Record `r` of file `file`: label bytes derived from both, and an image
/// whose R, G and B planes differ so channel order is observable.
pub(crate) fn cifar_record(layout: CifarLayout, file: usize, r: usize) -> (Vec<u8>, Vec<u8>) {
    let labels: Vec<u8> = layout
        .label_fields()
        .iter()
        .enumerate()
        .map(|(k, &(_, classes))| ((file * 7 + r * 3 + k * 5) % classes) as u8)
        .collect();
    let image: Vec<u8> = (0..3 * 1024)
        .map(|p| ((p / 1024) * 80 + p % 251 + file * 13 + r) as u8)
        .collect();
    (labels, image)
}

impl TinyCifar {
    /// CIFAR-10 names (`data_batch_1.bin` … `_5.bin`, `test_batch.bin`),
    /// `per_file` records each.
    pub fn cifar10(per_file: usize) -> Self {
        let names = [
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
            "test_batch.bin",
        ];
        Self::build(
            "tiny-cifar10",
            "tiny-cifar10",
            CifarLayout::Cifar10,
            &names.map(|n| (n, per_file)),
            "cifar-10-batches-bin",
            "cifar-10-binary.tar.gz",
        )
    }

    /// CIFAR-100 names (`train.bin`, `test.bin`) with fine labels, in folder
    /// `tiny-cifar100`.
    pub fn cifar100(train: usize, test: usize) -> Self {
        Self::build(
            "tiny-cifar100",
            "tiny-cifar100",
            CifarLayout::Cifar100(Cifar100Labels::Fine),
            &[("train.bin", train), ("test.bin", test)],
            "cifar-100-binary",
            "cifar-100-binary.tar.gz",
        )
    }

    /// The last file is the test split, the others the training split.
    fn build(
        name: &'static str,
        dir_name: &'static str,
        layout: CifarLayout,
        files: &[(&'static str, usize)],
        archive_dir: &str,
        archive_name: &'static str,
    ) -> Self {
        let mut contents = Vec::new();
        let (mut train_labels, mut test_labels, mut train_images) = (vec![], vec![], vec![]);
        for (k, &(fname, records)) in files.iter().enumerate() {
            let test = k + 1 == files.len();
            let mut bytes = Vec::new();
            for r in 0..records {
                let (labels, image) = cifar_record(layout, k, r);
                let label = labels[layout.used_label()];
                if test {
                    test_labels.push(label);
                } else {
                    train_labels.push(label);
                    train_images.extend_from_slice(&image);
                }
                bytes.extend(labels);
                bytes.extend(image);
            }
            contents.push((fname, bytes));
        }
        let mut entries: Vec<(String, Vec<u8>)> = contents
            .iter()
            .map(|(n, b)| (format!("{archive_dir}/{n}"), b.clone()))
            .collect();
        entries.insert(
            1,
            (
                format!("{archive_dir}/batches.meta.txt"),
                b"airplane\n".to_vec(),
            ),
        );
        let archive = tgz(&entries);
        let specs: Vec<FileSpec> = contents
            .iter()
            .enumerate()
            .map(|(k, (n, b))| FileSpec {
                name: n,
                md5: None,
                size: b.len() as u64,
                role: if k + 1 == contents.len() {
                    FileRole::TestRecords
                } else {
                    FileRole::TrainRecords
                },
            })
            .collect();
        let spec = Box::leak(Box::new(DatasetSpec {
            name,
            dir_name,
            files: Box::leak(specs.into_boxed_slice()),
            format: Format::Cifar(layout),
            classes: layout.classes(),
            shape: [3, 32, 32],
            sources: &[],
            archive: Some(ArchiveSpec {
                name: archive_name,
                md5: Box::leak(md5_hex(&archive).into_boxed_str()),
            }),
            class_counts: None,
        }));
        TinyCifar {
            spec,
            files: contents,
            archive,
            train_labels,
            test_labels,
            train_images,
        }
    }

    /// The same files read with another label choice (CIFAR-100 coarse).
    pub fn view(&self, name: &'static str, layout: CifarLayout) -> &'static DatasetSpec {
        Box::leak(Box::new(DatasetSpec {
            name,
            format: Format::Cifar(layout),
            classes: layout.classes(),
            ..self.spec.clone()
        }))
    }

    /// Writes the files under the spec's folder, as if placed by hand.
    pub fn write_to(&self, root: &Path) {
        let dir = self.spec.dir(root);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &self.files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
