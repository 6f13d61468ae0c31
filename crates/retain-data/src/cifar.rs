//! Reader for the CIFAR-10 / CIFAR-100 binary format.
//!
//! The files have no header: they are fixed-size records, one per image.
//! A CIFAR-10 record is 1 label byte (0..10) then 3072 pixel bytes; a
//! CIFAR-100 record is 2 label bytes (coarse 0..20, then fine 0..100) then
//! 3072 pixel bytes. The pixels are 1024 red, 1024 green, 1024 blue bytes,
//! each plane 32×32 row-major, i.e. already C×H×W, and are kept exactly so.
//!
//! With no header, the file size and the label bytes are the only things
//! that can reveal a wrong or damaged file, so both are always checked:
//! the size must be exactly `records × record length`, and every label byte
//! (both of them for CIFAR-100, whichever one is used) must be in range.

use std::path::Path;

use crate::DataError;

/// Bytes of one CIFAR image: 3 channels × 32 × 32.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

/// Which CIFAR-100 label a dataset reads; the files hold both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cifar100Labels {
    /// The 100 classes (second label byte).
    Fine,
    /// The 20 superclasses (first label byte).
    Coarse,
}

/// Record layout of a CIFAR binary file, and which label it yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CifarLayout {
    /// 1 label byte (< 10), then the image.
    Cifar10,
    /// 2 label bytes (coarse < 20, fine < 100), then the image.
    Cifar100(Cifar100Labels),
}

impl CifarLayout {
    /// Label bytes before each image.
    pub const fn label_bytes(self) -> usize {
        match self {
            CifarLayout::Cifar10 => 1,
            CifarLayout::Cifar100(_) => 2,
        }
    }

    /// Bytes of one record: label bytes plus [`IMAGE_BYTES`].
    pub const fn record_len(self) -> usize {
        self.label_bytes() + IMAGE_BYTES
    }

    /// Name and class count of each label byte, in record order.
    pub const fn label_fields(self) -> &'static [(&'static str, usize)] {
        match self {
            CifarLayout::Cifar10 => &[("label", 10)],
            CifarLayout::Cifar100(_) => &[("coarse label", 20), ("fine label", 100)],
        }
    }

    /// Offset, within a record, of the label byte this layout yields.
    pub const fn used_label(self) -> usize {
        match self {
            CifarLayout::Cifar10 | CifarLayout::Cifar100(Cifar100Labels::Coarse) => 0,
            CifarLayout::Cifar100(Cifar100Labels::Fine) => 1,
        }
    }

    /// Number of classes of the label this layout yields.
    pub const fn classes(self) -> usize {
        self.label_fields()[self.used_label()].1
    }

    /// "CIFAR-10" or "CIFAR-100", for messages.
    pub const fn format_name(self) -> &'static str {
        match self {
            CifarLayout::Cifar10 => "CIFAR-10",
            CifarLayout::Cifar100(_) => "CIFAR-100",
        }
    }
}

/// The records of one CIFAR binary file, split into images and labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CifarRecords {
    /// Number of records.
    pub count: usize,
    /// `count * 3072` bytes, image after image, each C×H×W (R, G, B planes).
    pub images: Vec<u8>,
    /// The label selected by the layout, one per image.
    pub labels: Vec<u8>,
}

/// Parses `records` CIFAR records from memory.
///
/// Fails if the size is not exactly `records × record_len` or if any label
/// byte is out of range (also the unused one of CIFAR-100, since a bad byte
/// there means the file is not what it claims). `origin` only names the
/// bytes in errors.
pub fn parse_records(
    bytes: &[u8],
    origin: &Path,
    layout: CifarLayout,
    records: usize,
) -> Result<CifarRecords, DataError> {
    let record_len = layout.record_len();
    if bytes.len() as u64 != records as u64 * record_len as u64 {
        return Err(DataError::RecordFileSize {
            path: origin.to_path_buf(),
            format: layout.format_name(),
            records,
            record_len,
            found: bytes.len() as u64,
        });
    }
    let fields = layout.label_fields();
    let mut images = Vec::with_capacity(records * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(records);
    for (record, chunk) in bytes.chunks_exact(record_len).enumerate() {
        let (label_bytes, image) = chunk.split_at(fields.len());
        for (&label, &(field, classes)) in label_bytes.iter().zip(fields) {
            if usize::from(label) >= classes {
                return Err(DataError::RecordLabelOutOfRange {
                    path: origin.to_path_buf(),
                    record,
                    field,
                    label,
                    classes,
                });
            }
        }
        labels.push(label_bytes[layout.used_label()]);
        images.extend_from_slice(image);
    }
    Ok(CifarRecords {
        count: records,
        images,
        labels,
    })
}

/// Reads and parses a CIFAR binary file, deriving the record count from its
/// size (which must then be a whole number of records).
pub fn read_records(path: &Path, layout: CifarLayout) -> Result<CifarRecords, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, "reading", e))?;
    let records = bytes.len().div_ceil(layout.record_len());
    parse_records(&bytes, path, layout, records)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One record in the official layout from separate R, G, B planes.
    fn record(labels: &[u8], r: &[u8], g: &[u8], b: &[u8]) -> Vec<u8> {
        assert_eq!((r.len(), g.len(), b.len()), (1024, 1024, 1024));
        [labels, r, g, b].concat()
    }

    fn plane(seed: u8) -> Vec<u8> {
        (0..1024u32)
            .map(|i| (i as u8).wrapping_mul(3).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn record_lengths_are_official() {
        assert_eq!(CifarLayout::Cifar10.record_len(), 3073);
        assert_eq!(
            CifarLayout::Cifar100(Cifar100Labels::Fine).record_len(),
            3074
        );
        assert_eq!(CifarLayout::Cifar100(Cifar100Labels::Coarse).classes(), 20);
        assert_eq!(CifarLayout::Cifar100(Cifar100Labels::Fine).classes(), 100);
        assert_eq!(CifarLayout::Cifar10.classes(), 10);
    }

    #[test]
    fn cifar10_records_keep_rgb_planes_in_order() {
        let (r0, g0, b0) = (plane(0), plane(100), plane(200));
        let (r1, g1, b1) = (plane(7), plane(8), plane(9));
        let mut bytes = record(&[3], &r0, &g0, &b0);
        bytes.extend(record(&[9], &r1, &g1, &b1));
        assert_eq!(bytes.len(), 2 * 3073);
        let parsed = parse_records(&bytes, Path::new("b.bin"), CifarLayout::Cifar10, 2).unwrap();
        assert_eq!(parsed.count, 2);
        assert_eq!(parsed.labels, vec![3, 9]);
        assert_eq!(parsed.images.len(), 2 * 3072);
        // image 0, channel c, row y, column x lives at c*1024 + y*32 + x
        let px = |img: usize, c: usize, y: usize, x: usize| {
            parsed.images[img * 3072 + c * 1024 + y * 32 + x]
        };
        assert_eq!(px(0, 0, 0, 0), r0[0]);
        assert_eq!(px(0, 1, 0, 0), g0[0]);
        assert_eq!(px(0, 2, 31, 31), b0[1023]);
        assert_eq!(px(1, 0, 1, 2), r1[34]);
        assert_eq!(px(1, 1, 5, 0), g1[160]);
        assert_eq!(&parsed.images[3072..3072 + 1024], r1.as_slice());
        assert_eq!(&parsed.images[2 * 1024..3 * 1024], b0.as_slice());
    }

    #[test]
    fn cifar100_yields_fine_or_coarse() {
        let p = plane(1);
        let mut bytes = record(&[19, 99], &p, &p, &p);
        bytes.extend(record(&[0, 42], &p, &p, &p));
        bytes.extend(record(&[7, 0], &p, &p, &p));
        let fine = CifarLayout::Cifar100(Cifar100Labels::Fine);
        let coarse = CifarLayout::Cifar100(Cifar100Labels::Coarse);
        let f = parse_records(&bytes, Path::new("t.bin"), fine, 3).unwrap();
        let c = parse_records(&bytes, Path::new("t.bin"), coarse, 3).unwrap();
        assert_eq!(f.labels, vec![99, 42, 0]);
        assert_eq!(c.labels, vec![19, 0, 7]);
        assert_eq!(f.images, c.images);
        assert_eq!(&f.images[3072..3072 + 1024], p.as_slice());
    }

    #[test]
    fn wrong_size_is_rejected_with_counts() {
        let p = plane(0);
        let mut bytes = record(&[1], &p, &p, &p);
        bytes.extend(record(&[2], &p, &p, &p));
        let err = parse_records(
            &bytes[..6145],
            Path::new("x/data_batch_1.bin"),
            CifarLayout::Cifar10,
            2,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "x/data_batch_1.bin: wrong size for 2 CIFAR-10 records of 3073 bytes: expected 6146 bytes, found 6145"
        );
        // a whole extra record is as wrong as a missing byte
        let err = parse_records(&bytes, Path::new("t.bin"), CifarLayout::Cifar10, 1).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::RecordFileSize {
                    records: 1,
                    found: 6146,
                    ..
                }
            ),
            "{err:?}"
        );
        // CIFAR-10 bytes read as CIFAR-100: 2 records of 3073 are not 2 of 3074
        let err = parse_records(
            &bytes,
            Path::new("t.bin"),
            CifarLayout::Cifar100(Cifar100Labels::Fine),
            2,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("2 CIFAR-100 records of 3074 bytes: expected 6148 bytes, found 6146"),
            "{err}"
        );
    }

    #[test]
    fn out_of_range_labels_name_record_and_value() {
        let p = plane(0);
        let mut bytes = record(&[9], &p, &p, &p);
        bytes.extend(record(&[10], &p, &p, &p));
        let err = parse_records(&bytes, Path::new("test_batch.bin"), CifarLayout::Cifar10, 2)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "test_batch.bin: record 1: label 10 is out of range for 10 classes"
        );
        // the unused coarse byte is checked too, and reported as such
        let mut bytes = record(&[0, 5], &p, &p, &p);
        bytes.extend(record(&[1, 6], &p, &p, &p));
        bytes.extend(record(&[20, 7], &p, &p, &p));
        let fine = CifarLayout::Cifar100(Cifar100Labels::Fine);
        let err = parse_records(&bytes, Path::new("train.bin"), fine, 3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "train.bin: record 2: coarse label 20 is out of range for 20 classes"
        );
        let mut bytes = record(&[0, 100], &p, &p, &p);
        bytes.extend(record(&[0, 1], &p, &p, &p));
        let coarse = CifarLayout::Cifar100(Cifar100Labels::Coarse);
        let err = parse_records(&bytes, Path::new("train.bin"), coarse, 2).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::RecordLabelOutOfRange {
                    record: 0,
                    field: "fine label",
                    label: 100,
                    classes: 100,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn read_records_derives_count_from_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = plane(5);
        let path = dir.path().join("b.bin");
        let bytes = [record(&[4], &p, &p, &p), record(&[6], &p, &p, &p)].concat();
        std::fs::write(&path, &bytes).unwrap();
        let r = read_records(&path, CifarLayout::Cifar10).unwrap();
        assert_eq!((r.count, r.labels), (2, vec![4, 6]));
        std::fs::write(&path, &bytes[..3074]).unwrap();
        let err = read_records(&path, CifarLayout::Cifar10).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::RecordFileSize {
                    records: 2,
                    found: 3074,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
