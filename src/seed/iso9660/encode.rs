//! ECMA-119 field encodings shared by descriptors, directory records and path tables.

/// A 16-bit number recorded both little- and big-endian (ECMA-119 7.2.3).
pub(super) fn both_u16(value: u16) -> [u8; 4] {
    let [lo, hi] = value.to_le_bytes();
    [lo, hi, hi, lo]
}

/// A 32-bit number recorded both little- and big-endian (ECMA-119 7.3.3).
pub(super) fn both_u32(value: u32) -> [u8; 8] {
    let mut out = [0; 8];
    out[..4].copy_from_slice(&value.to_le_bytes());
    out[4..].copy_from_slice(&value.to_be_bytes());
    out
}

/// `text` in a fixed-width character field, padded with spaces (never NULs: readers such as
/// blkid would otherwise report the padding as part of the label).
pub(super) fn space_padded(text: &[u8], width: usize) -> Vec<u8> {
    let mut out = text[..text.len().min(width)].to_vec();
    out.resize(width, b' ');
    out
}

/// `text` as UCS-2 big-endian in a fixed-width Joliet character field, padded with UCS-2
/// spaces; an odd trailing byte is a space too.
pub(super) fn ucs2_space_padded(text: &str, width: usize) -> Vec<u8> {
    let mut out: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    out.truncate(width & !1);
    while out.len() + 1 < width {
        out.extend_from_slice(&[0x00, b' ']);
    }
    out.resize(width, b' ');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_endian_fields() {
        assert_eq!(both_u16(0x0102), [2, 1, 1, 2]);
        assert_eq!(both_u32(0x01020304), [4, 3, 2, 1, 1, 2, 3, 4]);
    }

    #[test]
    fn character_fields_are_space_padded() {
        assert_eq!(space_padded(b"cidata", 8), b"cidata  ");
        assert_eq!(
            ucs2_space_padded("ci", 7),
            [0, b'c', 0, b'i', 0, b' ', b' ']
        );
    }
}
