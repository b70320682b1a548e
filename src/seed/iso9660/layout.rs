//! Where everything goes, in 2048-byte sectors:
//!
//! | sectors | contents |
//! | --- | --- |
//! | 0-15 | system area (zeros) |
//! | 16, 17, 18 | primary, Joliet supplementary, terminator volume descriptors |
//! | 19-22 | path tables: primary L and M, Joliet L and M |
//! | 23- | primary root directory, Joliet root directory |
//! | then | Rock Ridge continuation area (the ER entry): after the directory that points to it,
//! since libarchive reads an image front to back |
//! | then | file contents, each from a sector boundary, in the order files were added |

use super::SECTOR;

const SECTOR_U64: u64 = SECTOR as u64;

/// A run of sectors holding `len` bytes, starting at `sector`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Extent {
    pub sector: u32,
    pub len: u32,
}

impl Extent {
    fn sectors(self) -> u32 {
        self.len.div_ceil(SECTOR as u32)
    }
}

/// First of the four one-sector path tables: primary L, primary M, Joliet L, Joliet M.
pub(super) const PATH_TABLES: u32 = 19;
const FIRST_DIRECTORY: u32 = 23;

#[derive(Debug)]
pub(super) struct Layout {
    pub primary_root: Extent,
    pub joliet_root: Extent,
    /// The one-sector Rock Ridge continuation area.
    pub continuation: u32,
    /// Per file, in the order added: one extent, or several for a file above the extent limit.
    pub files: Vec<Vec<Extent>>,
    pub total_sectors: u32,
}

impl Layout {
    /// Lays out directories of the given byte lengths (whole sectors) and files of the given
    /// sizes, each cut into extents of at most `max_extent` bytes (a multiple of the sector
    /// size). An empty file gets one empty extent at sector 0, so it owns no sectors.
    ///
    /// The caller keeps the total below 2^32 sectors (see `MAX_DATA_SECTORS`).
    pub(super) fn new(
        primary_dir: usize,
        joliet_dir: usize,
        file_sizes: &[u64],
        max_extent: u32,
    ) -> Layout {
        debug_assert!(max_extent > 0 && (max_extent as usize).is_multiple_of(SECTOR));
        let dir_extent = |sector, len: usize| Extent {
            sector,
            len: u32::try_from(len).expect("directories are far below 4 GiB"),
        };
        let primary_root = dir_extent(FIRST_DIRECTORY, primary_dir);
        let joliet_root = dir_extent(primary_root.sector + primary_root.sectors(), joliet_dir);
        let continuation = joliet_root.sector + joliet_root.sectors();
        let mut next = continuation + 1;
        let files = file_sizes
            .iter()
            .map(|&size| {
                if size == 0 {
                    return vec![Extent { sector: 0, len: 0 }];
                }
                let mut extents = Vec::new();
                let mut left = size;
                while left > 0 {
                    let len = left.min(u64::from(max_extent)) as u32;
                    let extent = Extent { sector: next, len };
                    next += extent.sectors();
                    left -= u64::from(len);
                    extents.push(extent);
                }
                extents
            })
            .collect();
        Layout {
            primary_root,
            joliet_root,
            continuation,
            files,
            total_sectors: next,
        }
    }

    /// Image size in bytes.
    pub(super) fn len(&self) -> u64 {
        u64::from(self.total_sectors) * SECTOR_U64
    }
}

/// The most file data an image accepts, in sectors: half the 32-bit sector space, leaving the
/// other half to directories, which can never come close.
pub(super) const MAX_DATA_SECTORS: u64 = (u32::MAX / 2) as u64;

/// Sectors `size` bytes of file data occupy.
pub(super) fn data_sectors(size: u64) -> u64 {
    size.div_ceil(SECTOR_U64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_follow_the_directories() {
        let layout = Layout::new(2048, 4096, &[0, 1, 2048, 2049], 0xFFFF_F800);
        assert_eq!(
            layout.primary_root,
            Extent {
                sector: 23,
                len: 2048
            }
        );
        assert_eq!(
            layout.joliet_root,
            Extent {
                sector: 24,
                len: 4096
            }
        );
        assert_eq!(layout.continuation, 26);
        let first = |i: usize| layout.files[i][0];
        assert_eq!(first(0), Extent { sector: 0, len: 0 });
        assert_eq!(first(1), Extent { sector: 27, len: 1 });
        assert_eq!(
            first(2),
            Extent {
                sector: 28,
                len: 2048
            }
        );
        assert_eq!(
            first(3),
            Extent {
                sector: 29,
                len: 2049
            }
        );
        assert_eq!(layout.total_sectors, 31);
        assert_eq!(layout.len(), 31 * 2048);
    }

    #[test]
    fn large_files_are_cut_into_contiguous_extents() {
        let layout = Layout::new(2048, 2048, &[10 * 2048 + 5], 4 * 2048);
        let extents = &layout.files[0];
        assert_eq!(
            extents,
            &[
                Extent {
                    sector: 26,
                    len: 8192
                },
                Extent {
                    sector: 30,
                    len: 8192
                },
                Extent {
                    sector: 34,
                    len: 4101
                },
            ]
        );
        assert_eq!(layout.total_sectors, 37);
    }
}
