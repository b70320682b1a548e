//! Rock Ridge (RRIP 1.10 on SUSP 1.10): POSIX names, modes and times in the System Use field
//! of the primary tree's directory records.

use super::encode::both_u32;

/// Read-only regular files and directories owned by root: the contents, not the writer's
/// environment, decide the bytes (like `genisoimage -r`).
pub(super) const FILE_MODE: u32 = 0o100_444;
pub(super) const DIRECTORY_MODE: u32 = 0o040_555;

const ER_ID: &[u8] = b"RRIP_1991A";
const ER_DESCRIPTOR: &[u8] =
    b"THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
const ER_SOURCE: &[u8] = b"PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  \
SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";

/// A SUSP entry: signature, length, version 1, then `data`.
fn entry(signature: &[u8; 2], data: &[u8]) -> Vec<u8> {
    let len = u8::try_from(4 + data.len()).expect("SUSP entries are shorter than 256 bytes");
    let mut out = Vec::with_capacity(len.into());
    out.extend_from_slice(signature);
    out.extend_from_slice(&[len, 1]);
    out.extend_from_slice(data);
    out
}

/// SP: marks SUSP in use; the first entry of the root directory's "." record.
pub(super) fn sp() -> Vec<u8> {
    entry(b"SP", &[0xBE, 0xEF, 0])
}

/// CE: the rest of this record's entries are `len` bytes at the start of `sector`.
pub(super) fn ce(sector: u32, len: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity(24);
    data.extend_from_slice(&both_u32(sector));
    data.extend_from_slice(&both_u32(0));
    data.extend_from_slice(&both_u32(len));
    entry(b"CE", &data)
}

/// ER: names the extension (RRIP 1.10) the System Use fields follow. Too long for the root
/// record itself, so it lives in the continuation area that [`ce`] points to.
pub(super) fn er() -> Vec<u8> {
    let mut data = vec![
        ER_ID.len() as u8,
        ER_DESCRIPTOR.len() as u8,
        ER_SOURCE.len() as u8,
        1,
    ];
    data.extend_from_slice(ER_ID);
    data.extend_from_slice(ER_DESCRIPTOR);
    data.extend_from_slice(ER_SOURCE);
    entry(b"ER", &data)
}

/// PX: mode, link count, uid 0, gid 0.
pub(super) fn px(mode: u32, links: u32) -> Vec<u8> {
    let mut data = Vec::with_capacity(32);
    for value in [mode, links, 0, 0] {
        data.extend_from_slice(&both_u32(value));
    }
    entry(b"PX", &data)
}

/// TF: modification, access and attribute-change times, all `time` (7-byte form).
pub(super) fn tf(time: [u8; 7]) -> Vec<u8> {
    const MODIFY_ACCESS_ATTRIBUTES: u8 = 0b0000_1110;
    let mut data = vec![MODIFY_ACCESS_ATTRIBUTES];
    for _ in 0..3 {
        data.extend_from_slice(&time);
    }
    entry(b"TF", &data)
}

/// NM: the file's real name, whole (names are short enough to need no continuation).
pub(super) fn nm(name: &str) -> Vec<u8> {
    let mut data = vec![0];
    data.extend_from_slice(name.as_bytes());
    entry(b"NM", &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_lengths() {
        assert_eq!(sp(), [b'S', b'P', 7, 1, 0xBE, 0xEF, 0]);
        assert_eq!(ce(1, 2).len(), 28);
        assert_eq!(px(FILE_MODE, 1).len(), 36);
        assert_eq!(tf([0; 7]).len(), 26);
        assert_eq!(nm("user-data"), b"NM\x0e\x01\x00user-data");
        let er = er();
        assert_eq!(usize::from(er[2]), er.len());
        assert_eq!(&er[8..18], b"RRIP_1991A");
    }
}
