//! A writer of ISO 9660 (ECMA-119) images with Rock Ridge and Joliet, holding files in a flat
//! root directory: exactly what a cloud-init NoCloud seed needs, and no more.
//!
//! Every reader sees the real file names: Linux and libarchive through Rock Ridge NM, Windows
//! and others through Joliet; the primary tree itself holds unique level-1 `NAME.EXT;1`
//! identifiers. Joliet names carry no `;1` version, as genisoimage and xorriso write them. The
//! output depends only on the files, their order and the [`Timestamp`].

mod descriptor;
mod directory;
mod encode;
mod joliet;
mod layout;
mod names;
mod plan;
mod rock_ridge;
mod timestamp;

use std::io::{self, Write};

pub use timestamp::Timestamp;

use crate::seed::Error;
use plan::Plan;

/// The logical block and sector size.
const SECTOR: usize = 2048;

/// The largest extent ECMA-119 can describe that ends on a sector boundary (4 GiB - 2 KiB).
pub const MAX_EXTENT_SIZE: u32 = u32::MAX / SECTOR as u32 * SECTOR as u32;

/// An ISO 9660 image being assembled: a volume identifier and files with their contents.
pub struct IsoImage<'a> {
    volume_id: String,
    files: Vec<File<'a>>,
    time: Timestamp,
    max_extent: u32,
    data_sectors: u64,
}

struct File<'a> {
    name: String,
    contents: &'a [u8],
}

impl<'a> IsoImage<'a> {
    /// An empty image labelled `volume_id`: 1 to 16 ASCII letters, digits, `_` or `-` (the
    /// Joliet descriptor holds 16 characters). Stamped [`Timestamp::DEFAULT`].
    pub fn new(volume_id: &str) -> Result<Self, Error> {
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if volume_id.is_empty() || volume_id.len() > 16 || !volume_id.chars().all(valid) {
            return Err(Error::InvalidVolumeId {
                volume_id: volume_id.to_owned(),
            });
        }
        Ok(IsoImage {
            volume_id: volume_id.to_owned(),
            files: Vec::new(),
            time: Timestamp::DEFAULT,
            max_extent: MAX_EXTENT_SIZE,
            data_sectors: 0,
        })
    }

    /// The time recorded for the volume and every file.
    pub fn time(&mut self, time: Timestamp) -> &mut Self {
        self.time = time;
        self
    }

    /// Files longer than `bytes` (rounded down to whole sectors, at least one, at most
    /// [`MAX_EXTENT_SIZE`], the default) are recorded as several extents (ECMA-119 multi-extent
    /// files). Only files of 4 GiB and more need it; a small limit exercises it in tests.
    pub fn max_extent_size(&mut self, bytes: u32) -> &mut Self {
        self.max_extent = (bytes / SECTOR as u32).max(1) * SECTOR as u32;
        self
    }

    /// Adds a file to the root directory. Names are case-sensitive, unique, at most 64 bytes,
    /// without `/ \ * : ; ?` or control characters.
    pub fn add_file(&mut self, name: &str, contents: &'a [u8]) -> Result<&mut Self, Error> {
        names::validate(name)?;
        if self.files.iter().any(|f| f.name == name) {
            return Err(Error::DuplicateName {
                name: name.to_owned(),
            });
        }
        let data_sectors = self.data_sectors + layout::data_sectors(contents.len() as u64);
        if data_sectors > layout::MAX_DATA_SECTORS {
            return Err(Error::TooLarge {
                name: name.to_owned(),
            });
        }
        self.data_sectors = data_sectors;
        self.files.push(File {
            name: name.to_owned(),
            contents,
        });
        Ok(self)
    }

    /// Writes the whole image to `out`, sector by sector; file contents are not copied.
    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        Plan::new(self).write(out)
    }

    /// The whole image in memory.
    pub fn to_bytes(&self) -> Vec<u8> {
        let plan = Plan::new(self);
        let mut out = Vec::with_capacity(plan.layout.len() as usize);
        plan.write(&mut out).expect("writing to a Vec cannot fail");
        debug_assert_eq!(out.len() as u64, plan.layout.len());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume_sectors(image: &[u8]) -> usize {
        u32::from_le_bytes(
            image[16 * SECTOR + 80..16 * SECTOR + 84]
                .try_into()
                .unwrap(),
        ) as usize
    }

    #[test]
    fn an_image_without_files_is_whole_sectors_and_says_so() {
        let image = IsoImage::new("cidata").unwrap().to_bytes();
        assert_eq!(image.len() % SECTOR, 0);
        assert_eq!(volume_sectors(&image), image.len() / SECTOR);
    }

    #[test]
    fn file_names_and_volume_ids_are_checked() {
        let mut image = IsoImage::new("cidata").unwrap();
        image.add_file("user-data", b"a").unwrap();
        assert!(matches!(
            image.add_file("user-data", b"b"),
            Err(Error::DuplicateName { .. })
        ));
        assert!(matches!(
            image.add_file("a/b", b""),
            Err(Error::InvalidName { .. })
        ));
        for bad in ["", "has space", "seventeen-chars-x"] {
            assert!(
                matches!(IsoImage::new(bad), Err(Error::InvalidVolumeId { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn extent_limit_is_whole_sectors() {
        let mut image = IsoImage::new("cidata").unwrap();
        assert_eq!(image.max_extent, MAX_EXTENT_SIZE);
        assert_eq!(image.max_extent_size(5000).max_extent, 4096);
        assert_eq!(image.max_extent_size(1).max_extent, 2048);
        assert_eq!(MAX_EXTENT_SIZE % SECTOR as u32, 0);
        assert!(u64::from(MAX_EXTENT_SIZE) + SECTOR as u64 > u64::from(u32::MAX));
    }

    #[test]
    fn file_contents_start_on_sector_boundaries_in_order() {
        let (a, b) = (vec![0xAA; 2049], vec![0xBB; 3]);
        let mut image = IsoImage::new("cidata").unwrap();
        image.add_file("b", &a).unwrap().add_file("a", &b).unwrap();
        let bytes = image.to_bytes();
        assert_eq!(volume_sectors(&bytes), bytes.len() / SECTOR);
        let tail = &bytes[bytes.len() - 3 * SECTOR..];
        assert_eq!(&tail[..2049], &a[..]);
        assert!(tail[2049..2 * SECTOR].iter().all(|&x| x == 0));
        assert_eq!(&tail[2 * SECTOR..2 * SECTOR + 3], &b[..]);
    }
}
