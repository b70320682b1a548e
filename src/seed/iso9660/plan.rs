//! How an image is written: its layout, its two root directories, and the sectors in order.

use std::io::{self, Write};

use super::descriptor::{self, Tree, VolumeDescriptor};
use super::directory::{self, Record};
use super::layout::{self, Extent, Layout};
use super::names::{self, PrimaryName};
use super::{IsoImage, SECTOR, joliet, rock_ridge};

/// Writes `bytes`, then zeros up to the next sector boundary.
fn write_sector_padded(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    out.write_all(bytes)?;
    let padding = bytes.len().next_multiple_of(SECTOR) - bytes.len();
    out.write_all(&[0; SECTOR][..padding])
}

/// An image's layout and its encoded directories.
pub(super) struct Plan<'i, 'a> {
    image: &'i IsoImage<'a>,
    pub layout: Layout,
    primary_directory: Vec<u8>,
    joliet_directory: Vec<u8>,
}

impl<'i, 'a> Plan<'i, 'a> {
    pub(super) fn new(image: &'i IsoImage<'a>) -> Self {
        let sizes: Vec<u64> = image
            .files
            .iter()
            .map(|f| f.contents.len() as u64)
            .collect();
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
    pub(super) fn write(&self, out: &mut impl Write) -> io::Result<()> {
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
        let root_record = Record::directory(root, directory::SELF, time, &[]);
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
    let dir_entries = [
        rock_ridge::px(rock_ridge::DIRECTORY_MODE, 2),
        rock_ridge::tf(time),
    ]
    .concat();
    let self_entries = [
        rock_ridge::sp(),
        dir_entries.clone(),
        rock_ridge::ce(layout.continuation, er_len),
    ]
    .concat();
    let mut records = vec![
        Record::directory(root, directory::SELF, time, &self_entries).encode(),
        Record::directory(root, directory::PARENT, time, &dir_entries).encode(),
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
        records.extend(file_records(
            &layout.files[i],
            &identifier,
            time,
            &system_use,
        ));
    }
    directory::pack(records)
}

/// The Joliet root directory: ".", "..", then the files sorted by UCS-2 name, code unit by
/// code unit (so `a` before `a-b` before `a.b`), as genisoimage and xorriso sort them.
fn joliet_directory(image: &IsoImage, layout: &Layout) -> Vec<u8> {
    let time = image.time.directory_form();
    let root = layout.joliet_root;
    let mut records = vec![
        Record::directory(root, directory::SELF, time, &[]).encode(),
        Record::directory(root, directory::PARENT, time, &[]).encode(),
    ];
    let mut files: Vec<(Vec<u8>, &[Extent])> = image
        .files
        .iter()
        .zip(&layout.files)
        .map(|(f, e)| (joliet::identifier(&f.name), &e[..]))
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    for (identifier, extents) in files {
        records.extend(file_records(extents, &identifier, time, &[]));
    }
    directory::pack(records)
}

/// One record per extent of a file, all but the last flagged as continued.
fn file_records(
    extents: &[Extent],
    identifier: &[u8],
    time: [u8; 7],
    system_use: &[u8],
) -> Vec<Vec<u8>> {
    extents
        .iter()
        .enumerate()
        .map(|(i, &extent)| {
            let flags = if i + 1 < extents.len() {
                directory::NOT_FINAL
            } else {
                0
            };
            Record {
                extent,
                flags,
                identifier,
                time,
                system_use,
            }
            .encode()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The file identifiers of a packed directory, "." and ".." left out.
    fn file_identifiers(directory: &[u8]) -> Vec<Vec<u8>> {
        let mut identifiers = Vec::new();
        let mut pos = 0;
        while pos < directory.len() {
            let len = usize::from(directory[pos]);
            if len == 0 {
                pos = (pos + 1).next_multiple_of(SECTOR);
                continue;
            }
            let id_len = usize::from(directory[pos + 32]);
            identifiers.push(directory[pos + 33..pos + 33 + id_len].to_vec());
            pos += len;
        }
        identifiers.split_off(2)
    }

    fn ucs2(name: &str) -> Vec<u8> {
        name.encode_utf16().flat_map(u16::to_be_bytes).collect()
    }

    fn joliet_identifiers(names: &[&str]) -> Vec<Vec<u8>> {
        let mut image = IsoImage::new("cidata").unwrap();
        for name in names {
            image.add_file(name, b"x").unwrap();
        }
        file_identifiers(&Plan::new(&image).joliet_directory)
    }

    #[test]
    fn joliet_names_are_plain_and_sorted_as_the_tools_sort_them() {
        // Sorted and unversioned as `genisoimage -J -r` and `xorriso -as mkisofs -J -r` write
        // them (compared byte for byte in tests/seed_readers.rs).
        let names = [
            "vendor-data",
            "a.b",
            "user-data",
            "a-b",
            "meta-data",
            "a",
            "é",
            "Z",
        ];
        let expected: Vec<Vec<u8>> = ["Z", "a", "a-b", "a.b", "meta-data", "user-data"]
            .into_iter()
            .chain(["vendor-data", "é"])
            .map(ucs2)
            .collect();
        assert_eq!(joliet_identifiers(&names), expected);
    }

    proptest! {
        #[test]
        fn joliet_identifiers_are_the_names_in_code_unit_order(
            names in prop::collection::hash_set("[a-zA-Z0-9._~é€-]{1,21}", 1..60)
        ) {
            let names: Vec<&str> = names
                .iter()
                .map(String::as_str)
                .filter(|n| names::validate(n).is_ok())
                .collect();
            prop_assume!(!names.is_empty());
            let mut expected: Vec<Vec<u8>> = names.iter().map(|n| ucs2(n)).collect();
            expected.sort();
            let identifiers = joliet_identifiers(&names);
            for id in &identifiers {
                prop_assert!(id.len() <= 128);
                prop_assert!(!id.chunks(2).any(|c| c == [0, b';']), "{id:?} has a version");
            }
            prop_assert_eq!(identifiers, expected);
        }
    }
}
