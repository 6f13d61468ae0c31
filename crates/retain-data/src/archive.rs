//! Opening archives by content: tar, tar.gz, tar.xz and Debian packages.
//!
//! Sources name archives by URL, and URLs lie (a `.tgz` served plain, a
//! mirror that renames), so the format is taken from the first bytes. A
//! Debian package is an `ar` archive whose `data.tar.{xz,gz}` member holds
//! the installed files; reading it here lets a distribution's package of a
//! dataset serve as one more mirror.

use std::io::{self, Cursor, Read, Write};

use flate2::read::MultiGzDecoder;

/// First bytes of an `ar` archive (the container of a `.deb`).
const AR_MAGIC: &[u8] = b"!<arch>\n";
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// Largest xz payload we decompress. The pure-Rust decoder writes into
/// memory, so this bounds what a hostile or broken mirror can make us
/// allocate; real packages of datasets are far below it.
const XZ_LIMIT: u64 = 1 << 30;

/// Returns a reader over the *tar* stream inside `reader`: as is for a
/// plain tar, gunzipped or un-xz'd, or the `data.tar` member of a `.deb`.
pub(crate) fn open_tar<'r>(reader: impl Read + 'r) -> io::Result<Box<dyn Read + 'r>> {
    let (head, reader) = peek(reader, 8)?;
    if head.starts_with(AR_MAGIC) {
        deb_data_tar(reader)
    } else {
        decompress(&head, reader)
    }
}

/// Decompresses by magic: gzip, xz, or nothing.
fn decompress<'r>(head: &[u8], reader: impl Read + 'r) -> io::Result<Box<dyn Read + 'r>> {
    if head.starts_with(GZIP_MAGIC) {
        Ok(Box::new(MultiGzDecoder::new(io::BufReader::new(reader))))
    } else if head.starts_with(XZ_MAGIC) {
        Ok(Box::new(Cursor::new(xz_to_memory(reader)?)))
    } else {
        Ok(Box::new(reader))
    }
}

/// Reads up to `n` bytes and gives them back along with a reader that
/// yields them again, followed by the rest. Loops because one `read` of a
/// network stream may return fewer bytes than the magic is long.
fn peek<'r>(mut reader: impl Read + 'r, n: usize) -> io::Result<(Vec<u8>, impl Read + 'r)> {
    let mut head = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match reader.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    head.truncate(got);
    Ok((head.clone(), Cursor::new(head).chain(reader)))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Walks the members of a `.deb` (an `ar` archive: 8-byte magic, then per
/// member a 60-byte header and the data padded to even length) to the
/// first `data.tar*` member and returns it decompressed.
fn deb_data_tar<'r>(mut reader: impl Read + 'r) -> io::Result<Box<dyn Read + 'r>> {
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic)?;
    if magic != AR_MAGIC {
        return Err(invalid("not a Debian package: no ar magic".into()));
    }
    let mut seen = Vec::new();
    loop {
        let mut h = [0u8; 60];
        if !read_header(&mut reader, &mut h)? {
            return Err(invalid(format!(
                "Debian package has no data.tar member (members: {})",
                seen.join(", ")
            )));
        }
        if &h[58..60] != b"`\n" {
            return Err(invalid(format!(
                "corrupt ar member header after members [{}]",
                seen.join(", ")
            )));
        }
        let name = String::from_utf8_lossy(&h[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: u64 = std::str::from_utf8(&h[48..58])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| invalid(format!("ar member {name:?}: unreadable size field")))?;
        if let Some(ext) = name.strip_prefix("data.tar") {
            let member = reader.take(size);
            return match ext {
                "" | ".gz" | ".xz" => {
                    let (head, member) = peek(member, 8)?;
                    decompress(&head, member)
                }
                _ => Err(invalid(format!(
                    "Debian package member {name} uses an unsupported compression (supported: data.tar, data.tar.gz, data.tar.xz)"
                ))),
            };
        }
        // members are padded to an even offset
        let skip = size + size % 2;
        let skipped = io::copy(&mut (&mut reader).take(skip), &mut io::sink())?;
        if skipped != skip {
            return Err(invalid(format!(
                "Debian package truncated inside member {name} ({skipped} of {skip} bytes)"
            )));
        }
        seen.push(name);
    }
}

/// Fills `h` completely, or returns `false` on a clean end of input before
/// its first byte; a partial header is an error.
fn read_header(reader: &mut impl Read, h: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < h.len() {
        match reader.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(invalid(format!("truncated ar member header ({got} bytes)"))),
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// A `Vec` sink that refuses to grow past a limit.
struct Limited {
    buf: Vec<u8>,
    limit: u64,
}

impl Write for Limited {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() as u64 + data.len() as u64 > self.limit {
            return Err(invalid(format!(
                "xz data decompresses to more than {} bytes",
                self.limit
            )));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Decompresses a whole xz stream (lzma-rs has no streaming reader; the
/// tar it holds is read from memory afterwards), bounded by [`XZ_LIMIT`].
fn xz_to_memory(reader: impl Read) -> io::Result<Vec<u8>> {
    let mut input = io::BufReader::with_capacity(1 << 16, reader);
    let mut out = Limited {
        buf: Vec::new(),
        limit: XZ_LIMIT,
    };
    lzma_rs::xz_decompress(&mut input, &mut out).map_err(|e| match e {
        lzma_rs::error::Error::IoError(e) => io::Error::new(e.kind(), format!("xz: {e}")),
        other => invalid(format!("xz: {other}")),
    })?;
    Ok(out.buf)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testutil::{gzip, tar_bytes};

    /// An `ar` archive as `ar rc` writes it (common format, names with `/`).
    pub(crate) fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = AR_MAGIC.to_vec();
        for (name, data) in members {
            let header = format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                format!("{name}/"),
                0,
                0,
                0,
                "100644",
                data.len()
            );
            assert_eq!(header.len(), 60);
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    pub(crate) fn xz(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        lzma_rs::xz_compress(&mut &bytes[..], &mut out).unwrap();
        out
    }

    /// A `.deb` whose data.tar.xz holds `entries`, with an odd-sized
    /// control member first so the padding rule is exercised.
    pub(crate) fn deb(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
        let control = xz(&tar_bytes(&[(
            "./control".into(),
            b"Package: x\n".to_vec(),
        )]));
        let control = [control.as_slice(), b"x"].concat(); // force odd length
        assert_eq!(control.len() % 2, 1);
        ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", &control),
            ("data.tar.xz", &xz(&tar_bytes(entries))),
        ])
    }

    fn read_all(r: io::Result<Box<dyn Read + '_>>) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        r?.read_to_end(&mut v)?;
        Ok(v)
    }

    #[test]
    fn opens_tar_plain_gzip_xz_and_deb_by_content() {
        let tar = tar_bytes(&[("./usr/share/a.gz".into(), gzip(b"hello"))]);
        assert_eq!(read_all(open_tar(&tar[..])).unwrap(), tar);
        assert_eq!(read_all(open_tar(&gzip(&tar)[..])).unwrap(), tar);
        assert_eq!(read_all(open_tar(&xz(&tar)[..])).unwrap(), tar);
        let entries = vec![("./usr/share/a.gz".to_string(), gzip(b"hello"))];
        assert_eq!(read_all(open_tar(&deb(&entries)[..])).unwrap(), tar);
        // data.tar.gz members work too
        let d = ar(&[("debian-binary", b"2.0\n"), ("data.tar.gz", &gzip(&tar))]);
        assert_eq!(read_all(open_tar(&d[..])).unwrap(), tar);
    }

    /// Bytes from the real `xz` tool (xz 5.4, `printf 'retain\n' | xz -9`),
    /// so the decoder is checked against an independent encoder.
    #[test]
    fn decodes_xz_made_by_xz_utils() {
        let bytes: [u8; 64] = [
            0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x04, 0xe6, 0xd6, 0xb4, 0x46, 0x02, 0x00,
            0x21, 0x01, 0x1c, 0x00, 0x00, 0x00, 0x10, 0xcf, 0x58, 0xcc, 0x01, 0x00, 0x06, 0x72,
            0x65, 0x74, 0x61, 0x69, 0x6e, 0x0a, 0x00, 0x00, 0x98, 0xe6, 0xd7, 0xa2, 0xfe, 0xb5,
            0xd0, 0x42, 0x00, 0x01, 0x1f, 0x07, 0x16, 0x2e, 0xb8, 0x73, 0x1f, 0xb6, 0xf3, 0x7d,
            0x01, 0x00, 0x00, 0x00, 0x00, 0x04, 0x59, 0x5a,
        ];
        assert_eq!(xz_to_memory(&bytes[..]).unwrap(), b"retain\n");
    }

    #[test]
    fn broken_debs_say_what_is_wrong() {
        let err = |bytes: &[u8]| read_all(open_tar(bytes)).unwrap_err().to_string();
        let no_data = ar(&[("debian-binary", b"2.0\n"), ("control.tar.xz", b"abc")]);
        assert_eq!(
            err(&no_data),
            "Debian package has no data.tar member (members: debian-binary, control.tar.xz)"
        );
        let zst = ar(&[("debian-binary", b"2.0\n"), ("data.tar.zst", b"abcd")]);
        assert!(err(&zst).contains("data.tar.zst uses an unsupported compression"));
        let mut bad = no_data.clone();
        bad[8 + 58] = b'X'; // first header's terminator
        assert_eq!(err(&bad), "corrupt ar member header after members []");
        assert_eq!(
            err(&no_data[..no_data.len() - 2]),
            "Debian package truncated inside member control.tar.xz (2 of 4 bytes)"
        );
        let good = deb(&[("a".into(), b"x".to_vec())]);
        let cut = &good[..good.len() - 10];
        assert!(err(cut).starts_with("xz: "), "{}", err(cut));
    }
}
