//! CRC-32C (Castagnoli, reflected polynomial `0x82F63B78`), the checksum of TFRecord framing,
//! one byte at a time from a table built at compile time: a run writes a few records per
//! epoch, so speed does not matter here.

const POLY: u32 = 0x82F6_3B78;

const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// The CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc = TABLE[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The masked CRC-32C that TFRecord stores: rotated right by 15 bits plus a constant, so
/// that a CRC over data that holds CRCs stays well distributed.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check value of the CRC catalogue and the test vectors of RFC 3720, appendix B.4.
    #[test]
    fn crc32c_matches_the_published_vectors() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        let descending: Vec<u8> = (0..32).rev().collect();
        assert_eq!(crc32c(&descending), 0x113F_DB5C);
        assert_eq!(crc32c(b""), 0);
    }

    /// Masked values as TensorBoard's own `masked_crc32c` computes them.
    #[test]
    fn masked_crc32c_matches_tensorboard() {
        assert_eq!(masked_crc32c(b"hello"), 0x191C_1FBB);
        assert_eq!(masked_crc32c(&5u64.to_le_bytes()), 0x3E04_B2EA);
    }
}
