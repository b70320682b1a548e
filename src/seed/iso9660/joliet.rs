//! Joliet: the supplementary tree whose identifiers are the real names in UCS-2 big-endian,
//! announced by the escape sequence of UCS-2 level 3.

/// Escape sequences field of the supplementary volume descriptor: `%/E` is UCS-2 level 3.
pub(super) const ESCAPE_SEQUENCES: &[u8] = b"%/E";

/// The Joliet file identifier of `name`: the name in UCS-2 big-endian and nothing else.
///
/// ECMA-119 gives file identifiers a `;1` version, and the primary tree keeps it, but
/// genisoimage and xorriso (`-J`) leave it out of Joliet names, and readers that look a Joliet
/// name up as written (`isoinfo -J -x /user-data`, pycdlib) find only names without it. Names
/// are validated to be Basic Multilingual Plane characters, so UTF-16 is UCS-2 here, and at
/// most 64 bytes, so the identifier stays within Joliet's 64 characters.
pub(super) fn identifier(name: &str) -> Vec<u8> {
    name.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn identifier_is_the_name_in_ucs2_big_endian_without_a_version() {
        assert_eq!(super::identifier("a-é"), [0, b'a', 0, b'-', 0, 0xE9]);
        assert_eq!(
            super::identifier("user-data"),
            "user-data"
                .bytes()
                .flat_map(|b| [0, b])
                .collect::<Vec<u8>>()
        );
        assert_eq!(super::identifier(&"x".repeat(64)).len(), 128);
    }
}
