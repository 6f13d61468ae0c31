//! Reader for the IDX format used by MNIST and Fashion-MNIST.
//!
//! IDX is a tiny header (big-endian magic `0x0000TTDD`, `TT` = element type,
//! `DD` = number of dimensions, then one big-endian `u32` per dimension)
//! followed by the raw row-major payload. We only accept unsigned bytes with
//! exactly the dimensions each file kind needs, and we reject any byte too
//! few *or too many*: a silently ignored tail usually means the wrong file.
//!
//! Every function takes the file's path (or any label for in-memory bytes)
//! only so errors can say which file is broken.

use std::path::Path;

use crate::DataError;

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

const IDX_U8: u8 = 0x08;
const KNOWN_OTHER_TYPES: [u8; 5] = [0x09, 0x0B, 0x0C, 0x0D, 0x0E];

/// Grayscale images as stored in an IDX images file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Height of each image.
    pub rows: usize,
    /// Width of each image.
    pub cols: usize,
    /// `count * rows * cols` bytes, image after image, row-major.
    pub pixels: Vec<u8>,
}

/// Parses an IDX images file (magic `0x00000803`) from memory.
///
/// `origin` only names the bytes in errors.
pub fn parse_images(bytes: &[u8], origin: &Path) -> Result<IdxImages, DataError> {
    let (dims, payload) = parse_u8_idx(bytes, origin, IDX_IMAGES_MAGIC)?;
    Ok(IdxImages {
        count: dims[0] as usize,
        rows: dims[1] as usize,
        cols: dims[2] as usize,
        pixels: payload.to_vec(),
    })
}

/// Parses an IDX labels file (magic `0x00000801`) from memory and checks
/// every label is `< classes`, so a later one-hot or cross-entropy cannot
/// index out of bounds far away from the cause.
pub fn parse_labels(bytes: &[u8], origin: &Path, classes: usize) -> Result<Vec<u8>, DataError> {
    let (_, payload) = parse_u8_idx(bytes, origin, IDX_LABELS_MAGIC)?;
    if let Some((index, &label)) = payload
        .iter()
        .enumerate()
        .find(|&(_, &l)| usize::from(l) >= classes)
    {
        return Err(DataError::LabelOutOfRange {
            path: origin.to_path_buf(),
            index,
            label,
            classes,
        });
    }
    Ok(payload.to_vec())
}

/// Reads and parses an IDX images file.
pub fn read_images(path: &Path) -> Result<IdxImages, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, "reading", e))?;
    parse_images(&bytes, path)
}

/// Reads and parses an IDX labels file, checking labels against `classes`.
pub fn read_labels(path: &Path, classes: usize) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, "reading", e))?;
    parse_labels(&bytes, path, classes)
}

/// Checks that an images file and a labels file describe the same number of
/// examples; the two are separate files, so nothing else guarantees it.
pub fn check_pair(
    images: &IdxImages,
    images_path: &Path,
    labels: &[u8],
    labels_path: &Path,
) -> Result<(), DataError> {
    if images.count != labels.len() {
        return Err(DataError::CountMismatch {
            images_path: images_path.to_path_buf(),
            images: images.count,
            labels_path: labels_path.to_path_buf(),
            labels: labels.len(),
        });
    }
    Ok(())
}

/// Validates the header against `expected_magic` and the payload length
/// against the dimensions; returns the dimensions and the payload.
fn parse_u8_idx<'a>(
    bytes: &'a [u8],
    origin: &Path,
    expected_magic: u32,
) -> Result<(Vec<u32>, &'a [u8]), DataError> {
    let ndims = (expected_magic & 0xff) as usize;
    let header_len = 4 + 4 * ndims;
    let truncated_header = || DataError::Truncated {
        path: origin.to_path_buf(),
        part: "header",
        expected: header_len as u64,
        found: bytes.len() as u64,
    };
    if bytes.len() < 4 {
        return Err(truncated_header());
    }
    let magic = be_u32(&bytes[0..4]);
    let code = ((magic >> 8) & 0xff) as u8;
    // A well-formed IDX magic of another element type: say so precisely
    // rather than "wrong magic".
    if magic >> 16 == 0 && code != IDX_U8 && KNOWN_OTHER_TYPES.contains(&code) {
        return Err(DataError::UnsupportedDtype {
            path: origin.to_path_buf(),
            code,
        });
    }
    if magic != expected_magic {
        return Err(DataError::BadMagic {
            path: origin.to_path_buf(),
            expected: expected_magic,
            found: magic,
        });
    }
    if bytes.len() < header_len {
        return Err(truncated_header());
    }
    let dims: Vec<u32> = bytes[4..header_len].chunks_exact(4).map(be_u32).collect();
    // u128 cannot overflow for three u32 factors; saturate into u64 for the
    // message (such a file could not exist anyway).
    let expected = dims.iter().map(|&d| u128::from(d)).product::<u128>();
    let expected = u64::try_from(expected).unwrap_or(u64::MAX);
    let payload = &bytes[header_len..];
    let found = payload.len() as u64;
    if found < expected {
        return Err(DataError::Truncated {
            path: origin.to_path_buf(),
            part: "payload",
            expected,
            found,
        });
    }
    if found > expected {
        return Err(DataError::TrailingBytes {
            path: origin.to_path_buf(),
            expected,
            extra: found - expected,
        });
    }
    Ok((dims, payload))
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Builds IDX bytes; used by tests here and elsewhere in the crate.
#[cfg(test)]
pub(crate) fn encode(magic: u32, dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(payload);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("some/dir/train-images-idx3-ubyte")
    }

    #[test]
    fn parses_valid_images_and_labels() {
        let pixels: Vec<u8> = (0..2 * 2 * 3).collect();
        let imgs = parse_images(&encode(IDX_IMAGES_MAGIC, &[2, 2, 3], &pixels), p()).unwrap();
        assert_eq!((imgs.count, imgs.rows, imgs.cols), (2, 2, 3));
        assert_eq!(imgs.pixels, pixels);
        // second image, row 1, col 2 is the last byte
        assert_eq!(imgs.pixels[6 + 3 + 2], 11);

        let labels = parse_labels(&encode(IDX_LABELS_MAGIC, &[3], &[9, 0, 4]), p(), 10).unwrap();
        assert_eq!(labels, vec![9, 0, 4]);
        // the header length is exact: zero images is valid
        let empty = parse_images(&encode(IDX_IMAGES_MAGIC, &[0, 28, 28], &[]), p()).unwrap();
        assert_eq!(empty.count, 0);
    }

    #[test]
    fn wrong_magic_says_found_and_expected() {
        // a labels file handed to the images parser
        let err = parse_images(&encode(IDX_LABELS_MAGIC, &[1], &[0]), p()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::BadMagic {
                    expected: 0x803,
                    found: 0x801,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("some/dir/train-images-idx3-ubyte"), "{msg}");
        assert!(
            msg.contains("found 0x00000801, expected 0x00000803"),
            "{msg}"
        );
        // gzip bytes are not IDX
        let err = parse_labels(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0], p(), 10).unwrap_err();
        assert!(matches!(err, DataError::BadMagic { .. }), "{err:?}");
    }

    #[test]
    fn float_idx_is_unsupported_dtype() {
        let err = parse_images(&encode(0x0000_0D03, &[1, 1, 1], &[0; 4]), p()).unwrap_err();
        assert!(
            matches!(err, DataError::UnsupportedDtype { code: 0x0D, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("f32"), "{err}");
        assert!(err.to_string().contains("train-images-idx3-ubyte"), "{err}");
    }

    #[test]
    fn truncated_header_and_payload() {
        let mut bytes = encode(IDX_IMAGES_MAGIC, &[2, 2, 2], &[1; 8]);
        bytes.pop();
        let err = parse_images(&bytes, p()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Truncated {
                    part: "payload",
                    expected: 8,
                    found: 7,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("expected 8 bytes of payload, found 7"),
            "{msg}"
        );
        assert!(msg.contains("train-images-idx3-ubyte"), "{msg}");

        let err = parse_images(&bytes[..10], p()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Truncated {
                    part: "header",
                    expected: 16,
                    found: 10,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = parse_labels(&[], p(), 10).unwrap_err();
        assert!(
            matches!(err, DataError::Truncated { part: "header", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn trailing_bytes_rejected() {
        let err =
            parse_labels(&encode(IDX_LABELS_MAGIC, &[2], &[1, 2, 3, 4]), p(), 10).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::TrailingBytes {
                    expected: 2,
                    extra: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("train-images-idx3-ubyte"), "{err}");
    }

    #[test]
    fn label_out_of_range_names_index() {
        let path = Path::new("x/t10k-labels-idx1-ubyte");
        let err =
            parse_labels(&encode(IDX_LABELS_MAGIC, &[4], &[0, 9, 10, 3]), path, 10).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::LabelOutOfRange {
                    index: 2,
                    label: 10,
                    classes: 10,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("x/t10k-labels-idx1-ubyte"),
            "{err}"
        );
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let imgs = parse_images(&encode(IDX_IMAGES_MAGIC, &[3, 1, 1], &[0, 1, 2]), p()).unwrap();
        let lp = Path::new("d/train-labels-idx1-ubyte");
        check_pair(&imgs, p(), &[1, 2, 3], lp).unwrap();
        let err = check_pair(&imgs, p(), &[1, 2], lp).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::CountMismatch {
                    images: 3,
                    labels: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("train-images-idx3-ubyte holds 3 images")
                && msg.contains("d/train-labels-idx1-ubyte holds 2 labels"),
            "{msg}"
        );
    }

    #[test]
    fn read_from_path_reports_missing_file() {
        let err = read_images(Path::new("/nonexistent/retain/images")).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }), "{err:?}");
        assert!(
            err.to_string().contains("/nonexistent/retain/images"),
            "{err}"
        );
    }
}
