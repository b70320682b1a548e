//! Volume descriptors (ECMA-119 8): the primary one, the Joliet supplementary one, and the set
//! terminator.

use super::encode::{both_u16, both_u32, space_padded, ucs2_space_padded};
use super::timestamp::{Timestamp, UNSPECIFIED_DESCRIPTOR_DATE};
use super::{SECTOR, joliet};

/// Written into the application identifier, so an image says what made it.
const APPLICATION: &str = "VMRUN";

/// Which tree a descriptor describes: its type byte and how its character fields are encoded.
#[derive(Clone, Copy)]
pub(super) enum Tree {
    Primary,
    Joliet,
}

pub(super) struct VolumeDescriptor<'a> {
    pub tree: Tree,
    pub volume_id: &'a str,
    pub volume_sectors: u32,
    pub path_table_len: u32,
    pub path_table_l: u32,
    pub path_table_m: u32,
    /// The 34-byte directory record of the root directory.
    pub root_record: &'a [u8],
    pub time: Timestamp,
}

impl VolumeDescriptor<'_> {
    pub(super) fn encode(&self) -> Vec<u8> {
        let text = |s: &str, width| match self.tree {
            Tree::Primary => space_padded(s.as_bytes(), width),
            Tree::Joliet => ucs2_space_padded(s, width),
        };
        let kind = match self.tree {
            Tree::Primary => 1,
            Tree::Joliet => 2,
        };
        let mut out = header(kind);
        out.push(0);
        out.extend(text("", 32)); // system identifier
        out.extend(text(self.volume_id, 32));
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&both_u32(self.volume_sectors));
        let mut escapes = match self.tree {
            Tree::Primary => Vec::new(),
            Tree::Joliet => joliet::ESCAPE_SEQUENCES.to_vec(),
        };
        escapes.resize(32, 0);
        out.extend(escapes);
        out.extend_from_slice(&both_u16(1)); // volume set size
        out.extend_from_slice(&both_u16(1)); // volume sequence number
        out.extend_from_slice(&both_u16(SECTOR as u16)); // logical block size
        out.extend_from_slice(&both_u32(self.path_table_len));
        out.extend_from_slice(&self.path_table_l.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // optional L path table
        out.extend_from_slice(&self.path_table_m.to_be_bytes());
        out.extend_from_slice(&[0; 4]); // optional M path table
        out.extend_from_slice(self.root_record);
        out.extend(text("", 128)); // volume set identifier
        out.extend(text("", 128)); // publisher
        out.extend(text("", 128)); // data preparer
        out.extend(text(APPLICATION, 128));
        for _ in ["copyright", "abstract", "bibliographic"] {
            out.extend(text("", 37));
        }
        let date = self.time.descriptor_form();
        out.extend_from_slice(&date); // creation
        out.extend_from_slice(&date); // modification
        out.extend_from_slice(&UNSPECIFIED_DESCRIPTOR_DATE); // expiration
        out.extend_from_slice(&UNSPECIFIED_DESCRIPTOR_DATE); // effective
        out.push(1); // file structure version
        debug_assert_eq!(out.len(), 882);
        out.resize(SECTOR, 0); // reserved, application use, reserved
        out
    }
}

/// The volume descriptor set terminator.
pub(super) fn terminator() -> Vec<u8> {
    let mut out = header(255);
    out.resize(SECTOR, 0);
    out
}

/// Type, standard identifier `CD001`, version 1.
fn header(kind: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(SECTOR);
    out.push(kind);
    out.extend_from_slice(b"CD001");
    out.push(1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor(tree: Tree) -> Vec<u8> {
        VolumeDescriptor {
            tree,
            volume_id: "cidata",
            volume_sectors: 40,
            path_table_len: 10,
            path_table_l: 19,
            path_table_m: 20,
            root_record: &[34; 34],
            time: Timestamp::DEFAULT,
        }
        .encode()
    }

    #[test]
    fn primary_fields_at_their_offsets() {
        let d = descriptor(Tree::Primary);
        assert_eq!(d.len(), SECTOR);
        assert_eq!(&d[..7], b"\x01CD001\x01");
        assert_eq!(&d[40..72], format!("{:<32}", "cidata").as_bytes());
        assert_eq!(&d[80..88], &both_u32(40));
        assert_eq!(&d[128..132], &both_u16(2048));
        assert_eq!(&d[140..144], &19u32.to_le_bytes());
        assert_eq!(&d[148..152], &20u32.to_be_bytes());
        assert_eq!(d[156], 34);
        assert_eq!(&d[813..829], b"2000010100000000");
        assert_eq!(d[881], 1);
        assert!(
            d[8..40].iter().chain(&d[190..813]).all(|&b| b != 0),
            "character fields hold NULs"
        );
    }

    #[test]
    fn joliet_announces_ucs2_level_3() {
        let d = descriptor(Tree::Joliet);
        assert_eq!(d[0], 2);
        assert_eq!(&d[88..91], b"%/E");
        assert_eq!(&d[40..52], b"\0c\0i\0d\0a\0t\0a");
        assert_eq!(&d[52..54], b"\0 ");
    }
}
