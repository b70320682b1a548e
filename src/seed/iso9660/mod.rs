//! A writer of ISO 9660 (ECMA-119) images with Rock Ridge and Joliet, holding files in a flat
//! root directory: exactly what a cloud-init NoCloud seed needs, and no more.
//!
//! Every reader sees the real file names: Linux and libarchive through Rock Ridge NM, Windows
//! and others through Joliet; the primary tree itself holds unique level-1 `NAME.EXT;1`
//! identifiers. The output depends only on the files, their order and the [`Timestamp`].

mod descriptor;
mod directory;
mod encode;
mod joliet;
mod layout;
mod names;
mod rock_ridge;
mod timestamp;

use std::io::{self, Write};

pub use timestamp::Timestamp;

use crate::seed::Error;
use descriptor::{Tree, VolumeDescriptor};
use directory::Record;
use layout::{Extent, Layout};
use names::PrimaryName;

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
            return Err(Error::InvalidVolumeId { volume_id: volume_id.to_owned() });
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
            return Err(Error::DuplicateName { name: name.to_owned() });
        }
        let data_sectors = self.data_sectors + layout::data_sectors(contents.len() as u64);
        if data_sectors > layout::MAX_DATA_SECTORS {
            return Err(Error::TooLarge { name: name.to_owned() });
        }
        self.data_sectors = data_sectors;
        self.files.push(File { name: name.to_owned(), contents });
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

/// Writes `bytes`, then zeros up to the next sector boundary.
fn write_sector_padded(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    out.write_all(bytes)?;
    let padding = bytes.len().next_multiple_of(SECTOR) - bytes.len();
    out.write_all(&[0; SECTOR][..padding])
}

/// An image's layout and its encoded directories.
struct Plan<'i, 'a> {
    image: &'i IsoImage<'a>,
    layout: Layout,
    primary_directory: Vec<u8>,
    joliet_directory: Vec<u8>,
}

impl<'i, 'a> Plan<'i, 'a> {
    fn new(image: &'i IsoImage<'a>) -> Self {
        let sizes: Vec<u64> = image.files.iter().map(|f| f.contents.len() as u64).collect();
        let primary_names = names::primary_names(image.files.iter().map(|f| f.name.as_str()));
        // Record lengths do not depend on where extents are, so a layout with empty
        // directories sizes the directories, and a second one places everything.
        let draft = Layout::new(0, 0, &sizes, image.max_extent);
        let primary_len = primary_directory(image, &primary_names, &draft).len();
        let joliet_len = joliet_directory(image, &draft).len();
        let layout = Layout::new(primary_len, joliet_len, &sizes, image.max_extent);
        Plan {
            image,
            primary_directory: primary_directory(image, &primary_names, &layout),
            joliet_directory: joliet_directory(image, &layout),
            layout,
        }
    }

    /// Writes the image in sector order (see `layout`).
    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&[0; 16 * SECTOR])?;
        for tree in [Tree::Primary, Tree::Joliet] {
            out.write_all(&self.volume_descriptor(tree))?;
        }
        out.write_all(&descriptor::terminator())?;
        for root in [self.layout.primary_root, self.layout.joliet_root] {
            for big_endian in [false, true] {
                write_sector_padded(out, &directory::root_path_table(root.sector, big_endian))?;
            }
        }
        out.write_all(&self.primary_directory)?;
        out.write_all(&self.joliet_directory)?;
        write_sector_padded(out, &rock_ridge::er())?;
        for file in &self.image.files {
            write_sector_padded(out, file.contents)?;
        }
        Ok(())
    }

    fn volume_descriptor(&self, tree: Tree) -> Vec<u8> {
        let (root, path_table_l) = match tree {
            Tree::Primary => (self.layout.primary_root, layout::PATH_TABLES),
            Tree::Joliet => (self.layout.joliet_root, layout::PATH_TABLES + 2),
        };
        let time = self.image.time.directory_form();
        let root_record = Record { extent: root, flags: directory::DIRECTORY, identifier: directory::SELF, time, system_use: &[] };
        VolumeDescriptor {
            tree,
            volume_id: &self.image.volume_id,
            volume_sectors: self.layout.total_sectors,
            path_table_len: directory::PATH_TABLE_LEN as u32,
            path_table_l,
            path_table_m: path_table_l + 1,
            root_record: &root_record.encode(),
            time: self.image.time,
        }
        .encode()
    }
}

/// The primary root directory: "." (carrying the SUSP and Rock Ridge announcements), "..",
/// then the files sorted by identifier (ECMA-119 9.3), each with Rock Ridge NM, PX and TF.
fn primary_directory(image: &IsoImage, primary_names: &[PrimaryName], layout: &Layout) -> Vec<u8> {
    let time = image.time.directory_form();
    let root = layout.primary_root;
    let er_len = rock_ridge::er().len() as u32;
    let dir_entries = [rock_ridge::px(rock_ridge::DIRECTORY_MODE, 2), rock_ridge::tf(time)].concat();
    let self_entries = [rock_ridge::sp(), dir_entries.clone(), rock_ridge::ce(layout.continuation, er_len)].concat();
    let mut records = vec![
        Record { extent: root, flags: directory::DIRECTORY, identifier: directory::SELF, time, system_use: &self_entries }.encode(),
        Record { extent: root, flags: directory::DIRECTORY, identifier: directory::PARENT, time, system_use: &dir_entries }.encode(),
    ];
    let mut order: Vec<usize> = (0..image.files.len()).collect();
    order.sort_by_key(|&i| &primary_names[i]);
    for i in order {
        let identifier = primary_names[i].identifier();
        let system_use = [
            rock_ridge::nm(&image.files[i].name),
            rock_ridge::px(rock_ridge::FILE_MODE, 1),
            rock_ridge::tf(time),
        ]
        .concat();
        records.extend(file_records(&layout.files[i], &identifier, time, &system_use));
    }
    directory::pack(records)
}

/// The Joliet root directory: ".", "..", then the files sorted by UCS-2 name.
fn joliet_directory(image: &IsoImage, layout: &Layout) -> Vec<u8> {
    let time = image.time.directory_form();
    let root = layout.joliet_root;
    let mut records = vec![
        Record { extent: root, flags: directory::DIRECTORY, identifier: directory::SELF, time, system_use: &[] }.encode(),
        Record { extent: root, flags: directory::DIRECTORY, identifier: directory::PARENT, time, system_use: &[] }.encode(),
    ];
    let mut files: Vec<(Vec<u8>, &[Extent])> =
        image.files.iter().zip(&layout.files).map(|(f, e)| (joliet::identifier(&f.name), &e[..])).collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    for (identifier, extents) in files {
        records.extend(file_records(extents, &identifier, time, &[]));
    }
    directory::pack(records)
}

/// One record per extent of a file, all but the last flagged as continued.
fn file_records(extents: &[Extent], identifier: &[u8], time: [u8; 7], system_use: &[u8]) -> Vec<Vec<u8>> {
    extents
        .iter()
        .enumerate()
        .map(|(i, &extent)| {
            let flags = if i + 1 < extents.len() { directory::NOT_FINAL } else { 0 };
            Record { extent, flags, identifier, time, system_use }.encode()
        })
        .collect()
}
