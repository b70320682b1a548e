//! Directory records (ECMA-119 9.1), their packing into sectors, and path tables (9.4).

use super::SECTOR;
use super::encode::{both_u16, both_u32};
use super::layout::Extent;

/// File flags (ECMA-119 9.1.6).
const DIRECTORY: u8 = 0x02;
/// Set on every record of a file but its last extent.
pub(super) const NOT_FINAL: u8 = 0x80;

/// Identifiers of a directory's "." and ".." records.
pub(super) const SELF: &[u8] = &[0];
pub(super) const PARENT: &[u8] = &[1];

/// One directory record.
pub(super) struct Record<'a> {
    pub extent: Extent,
    pub flags: u8,
    pub identifier: &'a [u8],
    pub time: [u8; 7],
    /// SUSP entries (Rock Ridge); empty in the Joliet tree.
    pub system_use: &'a [u8],
}

impl<'a> Record<'a> {
    /// The record of a directory (the root: "." and ".." in it, and in volume descriptors).
    pub(super) fn directory(
        extent: Extent,
        identifier: &'a [u8],
        time: [u8; 7],
        system_use: &'a [u8],
    ) -> Self {
        Record {
            extent,
            flags: DIRECTORY,
            identifier,
            time,
            system_use,
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let id_len = self.identifier.len();
        let id_padding = usize::from(id_len.is_multiple_of(2));
        let unpadded = 33 + id_len + id_padding + self.system_use.len();
        let len = unpadded + unpadded % 2;
        let mut out = Vec::with_capacity(len);
        out.push(u8::try_from(len).expect("directory records are shorter than 256 bytes"));
        out.push(0); // extended attribute record length
        out.extend_from_slice(&both_u32(self.extent.sector));
        out.extend_from_slice(&both_u32(self.extent.len));
        out.extend_from_slice(&self.time);
        out.push(self.flags);
        out.extend_from_slice(&[0, 0]); // file unit size, interleave gap
        out.extend_from_slice(&both_u16(1)); // volume sequence number
        out.push(id_len as u8);
        out.extend_from_slice(self.identifier);
        out.resize(33 + id_len + id_padding, 0);
        out.extend_from_slice(self.system_use);
        out.resize(len, 0);
        out
    }
}

/// Records laid out in whole sectors: a record that would cross a sector boundary starts the
/// next sector instead (ECMA-119 6.8.1.1); the rest of a sector is zeros.
pub(super) fn pack(records: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        let used = out.len() % SECTOR;
        if used + record.len() > SECTOR {
            out.resize(out.len() + SECTOR - used, 0);
        }
        out.extend_from_slice(&record);
    }
    out.resize(out.len().next_multiple_of(SECTOR), 0);
    out
}

/// A path table holding only the root directory, little-endian (L) or big-endian (M).
pub(super) fn root_path_table(root_sector: u32, big_endian: bool) -> [u8; PATH_TABLE_LEN] {
    let (sector, parent) = if big_endian {
        (root_sector.to_be_bytes(), 1u16.to_be_bytes())
    } else {
        (root_sector.to_le_bytes(), 1u16.to_le_bytes())
    };
    let mut out = [0; PATH_TABLE_LEN];
    out[0] = 1; // identifier length
    out[2..6].copy_from_slice(&sector);
    out[6..8].copy_from_slice(&parent);
    out
}

/// Bytes of a one-entry path table: 8 bytes, the 1-byte root identifier, a padding byte.
pub(super) const PATH_TABLE_LEN: usize = 10;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(identifier: &[u8], system_use: &[u8]) -> Vec<u8> {
        let extent = Extent {
            sector: 0x1234,
            len: 0x10,
        };
        Record {
            extent,
            flags: 0,
            identifier,
            time: [0; 7],
            system_use,
        }
        .encode()
    }

    #[test]
    fn record_fields() {
        let r = record(b"A.;1", b"");
        assert_eq!(r.len(), 38);
        assert_eq!(r[0], 38);
        assert_eq!(&r[2..10], &both_u32(0x1234));
        assert_eq!(&r[10..18], &both_u32(0x10));
        assert_eq!(r[32], 4);
        assert_eq!(&r[33..37], b"A.;1");
        assert_eq!(record(b"AB.;1", b"").len(), 38);
        assert_eq!(record(SELF, b"").len(), 34);
        assert_eq!(record(SELF, b"odd").len(), 38);
    }

    #[test]
    fn path_tables() {
        assert_eq!(
            root_path_table(0x0102, false),
            [1, 0, 2, 1, 0, 0, 1, 0, 0, 0]
        );
        assert_eq!(
            root_path_table(0x0102, true),
            [1, 0, 0, 0, 1, 2, 0, 1, 0, 0]
        );
    }

    proptest! {
        #[test]
        fn packed_records_never_cross_a_sector(
            lens in prop::collection::vec(17usize..=110, 1..200)
        ) {
            let records: Vec<Vec<u8>> = lens.iter().map(|&n| vec![n as u8 * 2; n * 2]).collect();
            let packed = pack(records.clone());
            prop_assert_eq!(packed.len() % SECTOR, 0);
            prop_assert!(!packed.is_empty());
            let mut pos = 0;
            for r in &records {
                if pos % SECTOR + r.len() > SECTOR {
                    prop_assert!(packed[pos..pos.next_multiple_of(SECTOR)].iter().all(|&b| b == 0));
                    pos = pos.next_multiple_of(SECTOR);
                }
                prop_assert_eq!(&packed[pos..pos + r.len()], &r[..]);
                prop_assert_eq!(pos / SECTOR, (pos + r.len() - 1) / SECTOR);
                pos += r.len();
            }
        }
    }
}
