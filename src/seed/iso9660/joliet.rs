//! Joliet: the supplementary tree whose identifiers are the real names in UCS-2 big-endian,
//! announced by the escape sequence of UCS-2 level 3.

/// Escape sequences field of the supplementary volume descriptor: `%/E` is UCS-2 level 3.
pub(super) const ESCAPE_SEQUENCES: &[u8] = b"%/E";

/// The Joliet file identifier of `name`: UCS-2 big-endian with the `;1` version suffix.
/// Names are validated to be Basic Multilingual Plane characters, so UTF-16 is UCS-2 here.
pub(super) fn identifier(name: &str) -> Vec<u8> {
    name.encode_utf16()
        .chain(";1".encode_utf16())
        .flat_map(u16::to_be_bytes)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn identifier_is_ucs2_big_endian_with_version() {
        assert_eq!(
            super::identifier("a-é"),
            [0, b'a', 0, b'-', 0, 0xE9, 0, b';', 0, b'1']
        );
    }
}
