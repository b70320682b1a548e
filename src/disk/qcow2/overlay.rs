//! [`Overlay`]: a qcow2 v3 image that records writes and reads everything else from a base.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::header::MAX_BACKING_NAME;
use super::layout::{self, Layout, SECTOR_SIZE};
use crate::atomic_file::{Existing, NewFile};
use crate::disk::{Error, backing_chain};
use crate::path_error::PathError;

/// A fresh qcow2 overlay over a raw or qcow2 base image.
///
/// The overlay records the base's absolute, canonical path and its format, so QEMU opens it
/// with `-drive file=OVERLAY,format=qcow2` from any directory and never probes the base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    path: PathBuf,
    backing: PathBuf,
    backing_format: &'static str,
    virtual_size: u64,
}

impl Overlay {
    /// Creates a qcow2 overlay at `path` over `backing`, with the base's virtual size
    /// (a raw base's length rounded up to whole 512-byte sectors, as QEMU sees it).
    ///
    /// The base must be a raw or qcow2 image, and so must every backing file under it, each
    /// passing the reader's checks ([`backing_chain`] decides): QEMU opens the whole chain
    /// under the overlay, so this is where an image that would reach a host file, or needs
    /// a key, is refused, however it got here. The overlay is written as an
    /// [`atomic_file`](crate::atomic_file), so `path` either does not exist or is complete;
    /// an existing `path` is never replaced ([`Error::AlreadyExists`]).
    pub fn create(path: &Path, backing: &Path) -> Result<Overlay, Error> {
        Self::create_inner(path, backing, None)
    }

    /// Like [`Overlay::create`], with a virtual size of `virtual_size` bytes, which must be
    /// at least the base's, a whole number of 512-byte sectors, and at most 2 PiB. The
    /// guest sees zeros past the end of the base.
    pub fn create_with_size(
        path: &Path,
        backing: &Path,
        virtual_size: u64,
    ) -> Result<Overlay, Error> {
        Self::create_inner(path, backing, Some(virtual_size))
    }

    fn create_inner(path: &Path, backing: &Path, size: Option<u64>) -> Result<Overlay, Error> {
        let backing = fs::canonicalize(backing).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => Error::Missing {
                path: backing.to_owned(),
            },
            _ => Error::Read {
                path: backing.to_owned(),
                source,
            },
        })?;
        let name = backing.as_os_str().as_bytes();
        if name.len() > MAX_BACKING_NAME {
            return Err(Error::BackingPathTooLong {
                len: name.len(),
                path: backing,
            });
        }
        let base = backing_chain(&backing)?.remove(0).format;
        let base_size = base.virtual_size();
        let invalid = |size, reason| Error::InvalidSize {
            path: path.to_owned(),
            size,
            reason,
        };
        let virtual_size = match size {
            Some(size) if size < base_size => {
                return Err(invalid(size, "the base image is larger"));
            }
            Some(size) => size,
            None => base_size
                .checked_next_multiple_of(SECTOR_SIZE)
                .ok_or(invalid(base_size, "too large"))?,
        };
        layout::check_size(virtual_size).map_err(|reason| invalid(virtual_size, reason))?;

        write_new(path, &Layout::new(virtual_size, name, base.name()))?;
        Ok(Overlay {
            path: path.to_owned(),
            backing,
            backing_format: base.name(),
            virtual_size,
        })
    }

    /// Where the overlay is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The base image's absolute, canonical path, as recorded in the overlay.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// The base image's format as recorded in the overlay: `"raw"` or `"qcow2"`.
    pub fn backing_format(&self) -> &'static str {
        self.backing_format
    }

    /// The disk size the guest sees, in bytes.
    pub fn virtual_size(&self) -> u64 {
        self.virtual_size
    }
}

/// Writes `layout` as a new file at `path` ([`atomic_file`](crate::atomic_file)), refusing to
/// replace an existing file.
fn write_new(path: &Path, layout: &Layout) -> Result<(), Error> {
    let write_error = |e: PathError| match e.source.kind() {
        io::ErrorKind::AlreadyExists => Error::AlreadyExists { path: e.path },
        _ => Error::Write {
            path: e.path,
            source: e.source,
        },
    };
    let mut new = NewFile::beside(path).map_err(write_error)?;
    let file = new.file();
    layout
        .pieces
        .iter()
        .try_for_each(|(offset, bytes)| file.write_all_at(bytes, *offset))
        .and_then(|()| file.set_len(layout.len))
        .map_err(PathError::at("write", path))
        .map_err(write_error)?;
    new.commit(path, Existing::Keep).map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::qcow2::header::{EXT_BACKING_FORMAT, EXT_DATA_FILE};
    use crate::disk::{DiskFormat, format};
    use proptest::prelude::*;

    /// A sparse raw disk of `len` bytes with an MBR boot signature.
    fn raw_base(dir: &Path, name: &str, len: u64) -> PathBuf {
        let path = dir.join(name);
        let file = fs::File::create(&path).unwrap();
        file.set_len(len).unwrap();
        file.write_all_at(&[0x55, 0xAA], 510).unwrap();
        path
    }

    #[test]
    fn overlay_records_the_canonical_base_and_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let base = raw_base(dir.path(), "base.raw", 1000);
        let overlay =
            Overlay::create(&dir.path().join("o.qcow2"), &dir.path().join("./base.raw")).unwrap();
        assert_eq!(overlay.backing(), fs::canonicalize(&base).unwrap());
        assert_eq!(overlay.virtual_size(), 1024);
        match format::sniff(overlay.path()).unwrap() {
            DiskFormat::Qcow2 {
                version,
                virtual_size,
                backing,
                backing_format,
            } => {
                assert_eq!(version, 3);
                assert_eq!(virtual_size, 1024);
                assert_eq!(backing.as_deref(), Some(overlay.backing()));
                assert_eq!(backing_format.as_deref(), Some("raw"));
            }
            other => panic!("not qcow2: {other:?}"),
        }
    }

    #[test]
    fn overlay_never_replaces_a_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let base = raw_base(dir.path(), "base.raw", 4096);
        let target = dir.path().join("o.qcow2");
        fs::write(&target, b"precious").unwrap();
        let err = Overlay::create(&target, &base).unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn explicit_size_may_grow_but_not_shrink_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let base = raw_base(dir.path(), "base.raw", 1 << 20);
        let grown = Overlay::create_with_size(&dir.path().join("g.qcow2"), &base, 1 << 30).unwrap();
        assert_eq!(format::sniff(grown.path()).unwrap().virtual_size(), 1 << 30);
        let err = Overlay::create_with_size(&dir.path().join("s.qcow2"), &base, 512).unwrap_err();
        assert!(err.to_string().contains("s.qcow2"), "{err}");
        let err = Overlay::create_with_size(&dir.path().join("u.qcow2"), &base, (1 << 20) + 1)
            .unwrap_err();
        assert!(err.to_string().contains("512-byte sectors"), "{err}");
    }

    #[test]
    fn no_overlay_goes_on_a_chain_with_a_refused_layer() {
        let dir = tempfile::tempdir().unwrap();
        let base = raw_base(dir.path(), "base.raw", 1 << 20);
        let evil = Layout::with_extensions(
            1 << 20,
            base.as_os_str().as_bytes(),
            &[
                (EXT_BACKING_FORMAT, b"raw"),
                (EXT_DATA_FILE, b"/etc/shadow"),
            ],
        );
        fs::write(dir.path().join("evil.qcow2"), evil.to_bytes()).unwrap();
        // A layer that is itself harmless, as a tampered store entry's disk would be.
        let middle = Layout::new(1 << 20, b"evil.qcow2", "qcow2");
        fs::write(dir.path().join("middle.qcow2"), middle.to_bytes()).unwrap();
        let err = Overlay::create(
            &dir.path().join("o.qcow2"),
            &dir.path().join("middle.qcow2"),
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::ExternalDataFile { path, .. } if path.ends_with("evil.qcow2")),
            "{err}"
        );
        assert!(!dir.path().join("o.qcow2").exists());
    }

    #[test]
    fn missing_base_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            Overlay::create(&dir.path().join("o.qcow2"), &dir.path().join("nope.raw")).unwrap_err();
        assert!(
            err.to_string().contains("nope.raw") && err.to_string().contains("does not exist"),
            "{err}"
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any base name (spaces, non-ASCII) and sector count round-trips through the file:
        /// the overlay records the canonical base, its format and its size.
        #[test]
        fn overlay_round_trips_any_base_name_and_size(
            dir_name in "[a-zA-Z0-9 _äé-]{1,30}",
            file_name in "[a-zA-Z0-9 _äé.-]{0,30}[a-zA-Z0-9]",
            sectors in 1u64..(1 << 32),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let base_dir = dir.path().join(&dir_name);
            fs::create_dir(&base_dir).unwrap();
            let base = raw_base(&base_dir, &file_name, sectors * SECTOR_SIZE);
            let overlay = Overlay::create(&dir.path().join("o.qcow2"), &base).unwrap();
            let canonical = fs::canonicalize(&base).unwrap();
            let expected = DiskFormat::Qcow2 {
                version: 3,
                virtual_size: sectors * SECTOR_SIZE,
                backing: Some(canonical.clone()),
                backing_format: Some("raw".to_owned()),
            };
            prop_assert_eq!(format::sniff(overlay.path()).unwrap(), expected);
            prop_assert_eq!(overlay.backing(), canonical.as_path());
        }
    }
}
