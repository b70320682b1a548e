//! The bytes of a fresh, empty qcow2 v3 overlay, computed without touching the disk.
//!
//! Cluster 0 holds the header, the backing format extension, the end-of-extensions marker
//! and the backing file name; cluster 1 the refcount table (one entry); cluster 2 the one
//! refcount block, which counts clusters 0 to the end of the L1 table; the L1 table (all
//! zeros: nothing is allocated yet) starts at cluster 3. This is the layout `qemu-img create`
//! produces, so `qemu-img check` finds neither errors nor leaks.

use super::header::{
    EXT_BACKING_FORMAT, EXT_END, Header, MAX_BACKING_NAME, V3_HEADER_LENGTH, encode_extension,
};

const CLUSTER_BITS: u32 = 16;
const CLUSTER_SIZE: u64 = 1 << CLUSTER_BITS;
/// 16-bit refcounts (refcount_order 4), as QEMU's default.
const REFCOUNT_ORDER: u32 = 4;
const REFCOUNT_TABLE_OFFSET: u64 = CLUSTER_SIZE;
const REFCOUNT_BLOCK_OFFSET: u64 = 2 * CLUSTER_SIZE;
const L1_TABLE_OFFSET: u64 = 3 * CLUSTER_SIZE;
/// Guest bytes one L1 entry maps: an L2 table of CLUSTER_SIZE / 8 entries, one cluster each.
const BYTES_PER_L1_ENTRY: u64 = CLUSTER_SIZE * (CLUSTER_SIZE / 8);
/// QEMU refuses L1 tables over 32 MiB (QCOW_MAX_L1_SIZE).
const MAX_L1_ENTRIES: u64 = (32 << 20) / 8;
/// The largest virtual size an overlay with 64 KiB clusters can have: 2 PiB.
pub(crate) const MAX_VIRTUAL_SIZE: u64 = MAX_L1_ENTRIES * BYTES_PER_L1_ENTRY;
/// QEMU addresses guests in 512-byte sectors and refuses qcow2 sizes that are not whole sectors.
pub(crate) const SECTOR_SIZE: u64 = 512;

/// A fresh overlay: the non-zero byte ranges at their offsets, and the file's length (the
/// rest of the file, including the whole L1 table, is zeros).
#[derive(Debug)]
pub(crate) struct Layout {
    pub pieces: Vec<(u64, Vec<u8>)>,
    pub len: u64,
}

/// Why no overlay can have this virtual size, if it cannot.
pub(crate) fn check_size(virtual_size: u64) -> Result<(), &'static str> {
    if !virtual_size.is_multiple_of(SECTOR_SIZE) {
        return Err("it is not a whole number of 512-byte sectors");
    }
    if virtual_size > MAX_VIRTUAL_SIZE {
        return Err("qcow2 with 64 KiB clusters holds at most 2 PiB");
    }
    Ok(())
}

impl Layout {
    /// Lays out an overlay of `virtual_size` bytes over `backing_name` in `backing_format`.
    /// The size must pass [`check_size`], the name be at most [`MAX_BACKING_NAME`] bytes.
    pub fn new(virtual_size: u64, backing_name: &[u8], backing_format: &str) -> Layout {
        Self::with_extensions(
            virtual_size,
            backing_name,
            &[(EXT_BACKING_FORMAT, backing_format.as_bytes())],
        )
    }

    /// [`Layout::new`] with these header extensions (type, data) instead of only the backing
    /// format's: how tests make the images the reader must refuse.
    pub fn with_extensions(
        virtual_size: u64,
        backing_name: &[u8],
        extensions: &[(u32, &[u8])],
    ) -> Layout {
        debug_assert_eq!(check_size(virtual_size), Ok(()));
        debug_assert!(backing_name.len() <= MAX_BACKING_NAME);
        let l1_size = virtual_size.div_ceil(BYTES_PER_L1_ENTRY);
        let l1_bytes = l1_size * 8;
        let l1_clusters = l1_bytes.div_ceil(CLUSTER_SIZE);

        let mut encoded: Vec<u8> = extensions
            .iter()
            .flat_map(|(kind, data)| encode_extension(*kind, data))
            .collect();
        encoded.extend(encode_extension(EXT_END, &[]));
        let name_offset = V3_HEADER_LENGTH as usize + encoded.len();
        let header = Header {
            version: 3,
            backing_file_offset: name_offset as u64,
            backing_file_size: backing_name.len() as u32,
            cluster_bits: CLUSTER_BITS,
            size: virtual_size,
            crypt_method: 0,
            l1_size: l1_size as u32,
            // An image with no L1 entries has no L1 table, as from `qemu-img create`.
            l1_table_offset: if l1_size == 0 { 0 } else { L1_TABLE_OFFSET },
            refcount_table_offset: REFCOUNT_TABLE_OFFSET,
            refcount_table_clusters: 1,
            incompatible_features: 0,
            refcount_order: REFCOUNT_ORDER,
            header_length: V3_HEADER_LENGTH,
        };
        let mut first = vec![0u8; name_offset + backing_name.len()];
        header.encode_v3(&mut first);
        first[V3_HEADER_LENGTH as usize..name_offset].copy_from_slice(&encoded);
        first[name_offset..].copy_from_slice(backing_name);

        // Refcount 1 for the header, refcount table, refcount block and L1 clusters.
        let used_clusters = 3 + l1_clusters;
        let refcount_block = 1u16.to_be_bytes().repeat(used_clusters as usize);
        let refcount_table = REFCOUNT_BLOCK_OFFSET.to_be_bytes().to_vec();

        Layout {
            pieces: vec![
                (0, first),
                (REFCOUNT_TABLE_OFFSET, refcount_table),
                (REFCOUNT_BLOCK_OFFSET, refcount_block),
            ],
            len: L1_TABLE_OFFSET + l1_bytes,
        }
    }

    /// The whole file in memory, for tests.
    #[cfg(test)]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len as usize];
        for (offset, bytes) in &self.pieces {
            out[*offset as usize..*offset as usize + bytes.len()].copy_from_slice(bytes);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::header::decode;
    use super::*;
    use proptest::prelude::*;

    fn be16(buf: &[u8], at: u64) -> u16 {
        u16::from_be_bytes([buf[at as usize], buf[at as usize + 1]])
    }

    #[test]
    fn one_gib_overlay_has_two_l1_entries_in_one_cluster() {
        let layout = Layout::new(1 << 30, b"/base.raw", "raw");
        assert_eq!(layout.len, L1_TABLE_OFFSET + 16);
        let decoded = decode(&layout.to_bytes()).unwrap();
        assert_eq!(decoded.header.l1_size, 2);
        assert_eq!(decoded.extensions.backing_format.as_deref(), Some("raw"));
        assert_eq!(decoded.backing_name.as_deref(), Some(&b"/base.raw"[..]));
    }

    #[test]
    fn empty_disk_has_no_l1_table() {
        let layout = Layout::new(0, b"/b", "qcow2");
        assert_eq!(layout.len, L1_TABLE_OFFSET);
        assert_eq!(
            decode(&layout.to_bytes()).unwrap().header.l1_table_offset,
            0
        );
    }

    #[test]
    fn check_refuses_what_qemu_refuses() {
        assert!(check_size(1000).is_err());
        assert!(check_size(MAX_VIRTUAL_SIZE + SECTOR_SIZE).is_err());
        assert_eq!(check_size(MAX_VIRTUAL_SIZE), Ok(()));
        assert_eq!(check_size(0), Ok(()));
    }

    proptest! {
        /// Any valid size and name decodes back, the L1 table covers the disk, and exactly
        /// the metadata clusters have refcount 1.
        #[test]
        fn layout_decodes_and_counts_its_clusters(
            sectors in prop_oneof![0u64..4096, 0..=MAX_VIRTUAL_SIZE / SECTOR_SIZE],
            name in proptest::collection::vec(any::<u8>(), 1..=MAX_BACKING_NAME),
            format in prop_oneof![Just("raw"), Just("qcow2")],
        ) {
            let size = sectors * SECTOR_SIZE;
            let layout = Layout::new(size, &name, format);
            let first = &layout.pieces[0].1;
            let decoded = decode(first).unwrap();
            prop_assert_eq!(decoded.header.size, size);
            prop_assert_eq!(decoded.backing_name, Some(name));
            prop_assert_eq!(decoded.extensions.backing_format.as_deref(), Some(format));
            let l1_size = u64::from(decoded.header.l1_size);
            prop_assert!(l1_size * BYTES_PER_L1_ENTRY >= size);
            prop_assert!(l1_size == 0 || (l1_size - 1) * BYTES_PER_L1_ENTRY < size);
            prop_assert_eq!(layout.len, L1_TABLE_OFFSET + l1_size * 8);

            let used = layout.len.div_ceil(CLUSTER_SIZE);
            let (table_at, table) = &layout.pieces[1];
            prop_assert_eq!(*table_at, decoded.header.refcount_table_offset);
            prop_assert_eq!(&table[..], &REFCOUNT_BLOCK_OFFSET.to_be_bytes()[..]);
            let (block_at, block) = &layout.pieces[2];
            prop_assert_eq!(*block_at, REFCOUNT_BLOCK_OFFSET);
            prop_assert_eq!(block.len() as u64, used * 2);
            prop_assert!((0..used).all(|cluster| be16(block, cluster * 2) == 1));
        }
    }
}
