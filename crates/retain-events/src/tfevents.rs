//! TensorBoard event files: TFRecord records, each an `Event` protocol buffer, encoded here by
//! hand (the handful of fields a scalar needs).
//!
//! A record is `u64` length (little-endian), the masked CRC-32C of those 8 bytes, the data,
//! the masked CRC-32C of the data. The first event of a file carries only `file_version`
//! (`brain.Event:2`); each later one a `wall_time`, a `step` and a `Summary` of
//! `(tag, simple_value)` pairs:
//!
//! ```text
//! Event   { 1: wall_time double, 2: step int64, 3: file_version string, 5: summary Summary }
//! Summary { 1: repeated Value }
//! Value   { 1: tag string, 2: simple_value float }
//! ```

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::EventsError;
use crate::crc32c::masked_crc32c;

/// What every event file's name starts with (TensorBoard reads files whose names contain
/// `tfevents`).
pub const FILE_PREFIX: &str = "events.out.tfevents.";

/// The `file_version` of the first event: the version TensorBoard's readers expect.
const FILE_VERSION: &str = "brain.Event:2";

/// `data` framed as one TFRecord record.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let length = (data.len() as u64).to_le_bytes();
    let mut record = Vec::with_capacity(data.len() + 16);
    record.extend_from_slice(&length);
    record.extend_from_slice(&masked_crc32c(&length).to_le_bytes());
    record.extend_from_slice(data);
    record.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    record
}

/// Protocol-buffer wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LENGTH_DELIMITED: u8 = 2;
const FIXED32: u8 = 5;

fn key(out: &mut Vec<u8>, field: u8, wire_type: u8) {
    out.push((field << 3) | wire_type);
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn bytes(out: &mut Vec<u8>, field: u8, data: &[u8]) {
    key(out, field, LENGTH_DELIMITED);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// The `Event` that opens a file: its wall time, step 0 and the file version.
pub fn file_version_event(wall_time: f64) -> Vec<u8> {
    let mut out = Vec::new();
    key(&mut out, 1, FIXED64);
    out.extend_from_slice(&wall_time.to_le_bytes());
    // Step 0 is the field's default; TensorBoard's writers leave it out, and so does this.
    bytes(&mut out, 3, FILE_VERSION.as_bytes());
    out
}

/// An `Event` with a summary of scalars `(tag, value)` at `step`.
pub fn scalars_event(wall_time: f64, step: u64, scalars: &[(&str, f32)]) -> Vec<u8> {
    let mut summary = Vec::new();
    for &(tag, value) in scalars {
        let mut entry = Vec::new();
        bytes(&mut entry, 1, tag.as_bytes());
        key(&mut entry, 2, FIXED32);
        entry.extend_from_slice(&value.to_le_bytes());
        bytes(&mut summary, 1, &entry);
    }
    let mut out = Vec::new();
    key(&mut out, 1, FIXED64);
    out.extend_from_slice(&wall_time.to_le_bytes());
    key(&mut out, 2, VARINT);
    varint(&mut out, step);
    bytes(&mut out, 5, &summary);
    out
}

/// One TensorBoard event file, written record by record and flushed after each.
#[derive(Debug)]
pub struct EventFile {
    path: PathBuf,
    file: File,
}

impl EventFile {
    /// Creates `<dir>/events.out.tfevents.<unix seconds>.retain` (never overwriting one: a
    /// second file in the same second, e.g. a run resumed at once, gets `.retain.1`, `.2`, …,
    /// which TensorBoard reads in that order) and writes its file-version event.
    pub fn create(dir: &Path, wall_time: f64) -> Result<Self, EventsError> {
        let stem = format!("{FILE_PREFIX}{}.retain", wall_time as u64);
        let mut attempt = 0u32;
        let (path, file) = loop {
            let name = match attempt {
                0 => stem.clone(),
                n => format!("{stem}.{n}"),
            };
            let path = dir.join(name);
            match File::create_new(&path) {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 1000 => {
                    attempt += 1;
                }
                Err(source) => {
                    return Err(EventsError {
                        path,
                        action: "create",
                        source,
                    });
                }
            }
        };
        let mut events = EventFile { path, file };
        events.append(&file_version_event(wall_time))?;
        Ok(events)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends the scalars `(tag, value)` at `step`.
    pub fn scalars(
        &mut self,
        wall_time: f64,
        step: u64,
        scalars: &[(&str, f32)],
    ) -> Result<(), EventsError> {
        self.append(&scalars_event(wall_time, step, scalars))
    }

    fn append(&mut self, event: &[u8]) -> Result<(), EventsError> {
        self.file
            .write_all(&frame(event))
            .and_then(|()| self.file.flush())
            .map_err(|source| EventsError {
                path: self.path.clone(),
                action: "write",
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of `hello` as TensorBoard's own record writer frames it.
    #[test]
    fn framing_matches_tensorboard_bytes() {
        let expected: [u8; 21] = [
            0x05, 0, 0, 0, 0, 0, 0, 0, // length 5
            0xea, 0xb2, 0x04, 0x3e, // masked CRC-32C of the length
            b'h', b'e', b'l', b'l', b'o', // data
            0xbb, 0x1f, 0x1c, 0x19, // masked CRC-32C of the data
        ];
        assert_eq!(frame(b"hello"), expected);
        assert_eq!(frame(b"").len(), 16);
    }

    #[test]
    fn a_second_file_in_the_same_second_gets_its_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let first = EventFile::create(dir.path(), 1765152000.2).unwrap();
        let second = EventFile::create(dir.path(), 1765152000.7).unwrap();
        let name = |f: &EventFile| f.path().file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(name(&first), "events.out.tfevents.1765152000.retain");
        assert_eq!(name(&second), "events.out.tfevents.1765152000.retain.1");
        assert!(crate::is_log_file(&name(&second)));
        // The first file is left as it was: its version record only.
        let len = std::fs::metadata(first.path()).unwrap().len();
        assert_eq!(len as usize, frame(&file_version_event(1765152000.2)).len());
    }

    /// Events as TensorBoard's `event_pb2.Event(...).SerializeToString()` encodes them.
    #[test]
    fn events_encode_as_protobuf_does() {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(&file_version_event(1.5)),
            "09000000000000f83f1a0d627261696e2e4576656e743a32"
        );
        assert_eq!(
            hex(&scalars_event(1.5, 300, &[("loss/train", 0.25)])),
            "09000000000000f83f10ac022a130a110a0a6c6f73732f747261696e150000803e"
        );
    }

    #[test]
    fn varints_take_seven_bits_a_byte() {
        for (value, encoded) in [
            (0u64, vec![0x00]),
            (1, vec![0x01]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (300, vec![0xac, 0x02]),
            (u64::MAX, {
                let mut v = vec![0xff; 9];
                v.push(0x01);
                v
            }),
        ] {
            let mut out = Vec::new();
            varint(&mut out, value);
            assert_eq!(out, encoded, "{value}");
        }
    }
}
