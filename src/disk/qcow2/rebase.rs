//! [`set_backing_name`]: gives a qcow2 image another backing file name in place, as
//! `qemu-img rebase -u` does: the guest's data is not touched, only the name in the header.
//! An imported image's layers need this: the names they recorded were paths on the machine
//! that exported them.

use std::fs::OpenOptions;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::header::{self, MAX_BACKING_NAME};
use crate::disk::{DiskFormat, Error, format};

/// Records `name` as the backing file of the qcow2 image at `path`, keeping its recorded
/// backing format. The image must pass [`format::sniff`]'s checks and already have a backing
/// file and a recorded backing format. The name goes where the old one was: after the header
/// extensions, in the first cluster, as QEMU lays it out; a name that does not fit there is
/// refused ([`Error::BackingNameNoRoom`]).
pub fn set_backing_name(path: &Path, name: &Path) -> Result<(), Error> {
    let new = name.as_os_str().as_bytes();
    if new.len() > MAX_BACKING_NAME {
        return Err(Error::BackingPathTooLong {
            path: name.to_owned(),
            len: new.len(),
        });
    }
    let DiskFormat::Qcow2 {
        backing: Some(old),
        backing_format: Some(_),
        ..
    } = format::sniff(path)?
    else {
        return Err(Error::CorruptQcow2 {
            path: path.to_owned(),
            reason: "it records no backing file and format to replace".into(),
        });
    };
    let read_error = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let write_error = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(read_error)?;
    let len = file.metadata().map_err(read_error)?.len();
    let mut bits = [0u8; 4];
    file.read_exact_at(&mut bits, 20).map_err(read_error)?;
    // sniff checked cluster_bits is in 9..=21: at most 2 MiB.
    let cluster = 1u64 << u32::from_be_bytes(bits).min(21);
    let mut first = vec![0u8; cluster.min(len) as usize];
    file.read_exact_at(&mut first, 0).map_err(read_error)?;
    let decoded = header::decode(&first).map_err(|reason| Error::CorruptQcow2 {
        path: path.to_owned(),
        reason,
    })?;
    let offset = decoded.header.backing_file_offset;
    let room = cluster.saturating_sub(offset);
    if new.len() as u64 > room {
        return Err(Error::BackingNameNoRoom {
            path: path.to_owned(),
            len: new.len(),
            room,
        });
    }
    // The new name, then zeros over what is left of a longer old one.
    let mut bytes = new.to_vec();
    bytes.resize(new.len().max(old.as_os_str().len()), 0);
    file.write_all_at(&bytes, offset)
        .and_then(|()| file.write_all_at(&(new.len() as u32).to_be_bytes(), 16))
        .and_then(|()| file.sync_all())
        .map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::super::header::{EXT_BACKING_FORMAT, EXT_DATA_FILE};
    use super::super::layout::Layout;
    use super::*;
    use crate::disk::backing_chain;
    use std::fs;
    use std::path::PathBuf;

    fn overlay(path: &Path, backing: &str) {
        fs::write(
            path,
            Layout::new(1 << 20, backing.as_bytes(), "raw").to_bytes(),
        )
        .unwrap();
    }

    #[test]
    fn a_shorter_or_longer_name_replaces_the_old_one_and_the_format_stays() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("base.raw"), vec![0u8; 1 << 20]).unwrap();
        let image = dir.path().join("top.qcow2");
        overlay(&image, "/somewhere/on/another/machine/base.raw");
        set_backing_name(&image, Path::new("base.raw")).unwrap();
        let chain = backing_chain(&image).unwrap();
        assert_eq!(chain[1].path, dir.path().join("base.raw"));
        assert_eq!(chain[1].format.name(), "raw");
        let raw = fs::read(&image).unwrap();
        let decoded = header::decode(&raw[..1 << 16]).unwrap();
        assert_eq!(decoded.backing_name.as_deref(), Some(&b"base.raw"[..]));
        let tail = decoded.header.backing_file_offset as usize + 8;
        assert!(
            raw[tail..tail + 40].iter().all(|&b| b == 0),
            "old name left"
        );

        let longer = dir.path().join("sub/../base.raw");
        fs::create_dir(dir.path().join("sub")).unwrap();
        set_backing_name(&image, &longer).unwrap();
        assert_eq!(
            format::sniff(&image).unwrap(),
            DiskFormat::Qcow2 {
                version: 3,
                virtual_size: 1 << 20,
                backing: Some(longer),
                backing_format: Some("raw".into()),
            }
        );
    }

    #[test]
    fn images_without_a_backing_file_or_with_refused_features_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        fs::write(&raw, vec![0u8; 4096]).unwrap();
        let err = set_backing_name(&raw, Path::new("/x")).unwrap_err();
        assert!(err.to_string().contains("records no backing file"), "{err}");

        let evil = dir.path().join("evil.qcow2");
        let layout = Layout::with_extensions(
            1 << 20,
            b"/base.raw",
            &[
                (EXT_BACKING_FORMAT, b"raw"),
                (EXT_DATA_FILE, b"/etc/shadow"),
            ],
        );
        fs::write(&evil, layout.to_bytes()).unwrap();
        let before = fs::read(&evil).unwrap();
        let err = set_backing_name(&evil, Path::new("/x")).unwrap_err();
        assert!(matches!(err, Error::ExternalDataFile { .. }), "{err}");
        assert_eq!(fs::read(&evil).unwrap(), before);
    }

    #[test]
    fn a_name_that_does_not_fit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("top.qcow2");
        overlay(&image, "/b");
        let long = PathBuf::from(format!("/{}", "a".repeat(MAX_BACKING_NAME)));
        let err = set_backing_name(&image, &long).unwrap_err();
        assert!(matches!(err, Error::BackingPathTooLong { .. }), "{err}");
        // A 512-byte cluster leaves little room after the header.
        let mut small = Layout::new(1 << 20, b"/b", "raw").to_bytes();
        small[20..24].copy_from_slice(&9u32.to_be_bytes());
        fs::write(&image, &small[..1 << 16]).unwrap();
        let err = set_backing_name(&image, Path::new(&"/c".repeat(300))).unwrap_err();
        assert!(matches!(err, Error::BackingNameNoRoom { .. }), "{err}");
    }
}
