//! [`sniff`]: what kind of disk image a file is, read from its first bytes.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::qcow2::features;
use super::qcow2::header::{self, MAGIC};
use super::{Error, ForeignFormat};

/// How much of the file [`sniff`] reads first: a 64 KiB qcow2 cluster, and far enough for an
/// ISO 9660 volume descriptor (at 32 KiB).
const HEAD_LEN: u64 = 64 << 10;
const SECTOR: u64 = 512;

/// A disk image format vmrun can use as a base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskFormat {
    Qcow2 {
        /// 2 (QEMU's `compat=0.10`) or 3 (`compat=1.1`).
        version: u32,
        /// The disk size the guest sees, in bytes.
        virtual_size: u64,
        /// The backing file exactly as recorded: possibly relative to the image's directory.
        backing: Option<PathBuf>,
        /// The backing file's format as recorded (`"raw"`, `"qcow2"`, ...), if it is.
        backing_format: Option<String>,
    },
    Raw {
        /// The file's length in bytes.
        size: u64,
    },
}

impl DiskFormat {
    /// The format's name as QEMU spells it: `"qcow2"` or `"raw"`.
    pub fn name(&self) -> &'static str {
        match self {
            DiskFormat::Qcow2 { .. } => "qcow2",
            DiskFormat::Raw { .. } => "raw",
        }
    }

    /// The disk size the guest sees, in bytes: a qcow2 image's recorded size, or a raw
    /// file's length rounded up to whole 512-byte sectors, as QEMU does.
    pub fn virtual_size(&self) -> u64 {
        match *self {
            DiskFormat::Qcow2 { virtual_size, .. } => virtual_size,
            DiskFormat::Raw { size } => size.div_ceil(SECTOR).saturating_mul(SECTOR),
        }
    }
}

/// Reads the header of the image at `path` and says what it is.
///
/// - qcow2 version 2 or 3: its version, virtual size and recorded backing file and format
///   (the backing file is not opened; see [`backing_chain`](super::backing_chain)). An
///   image with an external data file, encryption, or an incompatible feature vmrun does not
///   accept is refused (`qcow2::features` says which and why).
/// - A file with an MBR or GPT partition table or an ISO 9660 volume is raw, and so is any
///   other file that is a whole number of 512-byte sectors (a disk need not be partitioned).
/// - Other image formats (VMDK, VHDX, VDI, qcow v1, ...) and compressed files or archives
///   are errors that name the format and how to convert it; so are empty files and files
///   that are neither of the above nor whole sectors.
pub fn sniff(path: &Path) -> Result<DiskFormat, Error> {
    let read_error = |source| read_error(path, source);
    let mut file = File::open(path).map_err(read_error)?;
    // Seeking (rather than metadata) also gives a block device's size.
    let len = file.seek(SeekFrom::End(0)).map_err(read_error)?;
    if len == 0 {
        return Err(Error::Empty {
            path: path.to_owned(),
        });
    }
    let head = read_at(&file, 0, len.min(HEAD_LEN)).map_err(read_error)?;
    let tail = if len >= 2 * SECTOR {
        read_at(&file, len - SECTOR, SECTOR).map_err(read_error)?
    } else {
        Vec::new()
    };
    // qcow2 first: its backing name is free text that could contain another format's magic.
    if head.starts_with(MAGIC) {
        return read_qcow2(path, &file, head, len);
    }
    if let Some(format) = ForeignFormat::identify(&head, &tail) {
        return Err(Error::Foreign {
            path: path.to_owned(),
            format,
        });
    }
    if has_disk_structure(&head) || (len >= SECTOR && len % SECTOR == 0) {
        return Ok(DiskFormat::Raw { size: len });
    }
    Err(Error::NotADisk {
        path: path.to_owned(),
        len,
    })
}

/// The error for a failed open or read of `path`.
fn read_error(path: &Path, source: io::Error) -> Error {
    match source.kind() {
        io::ErrorKind::NotFound => Error::Missing {
            path: path.to_owned(),
        },
        _ => Error::Read {
            path: path.to_owned(),
            source,
        },
    }
}

fn read_qcow2(path: &Path, file: &File, mut head: Vec<u8>, len: u64) -> Result<DiskFormat, Error> {
    let version = head
        .get(4..8)
        .map_or(0, |v| u32::from_be_bytes(v.try_into().expect("4 bytes")));
    match version {
        2 | 3 => {}
        1 => {
            return Err(Error::Foreign {
                path: path.to_owned(),
                format: ForeignFormat::Qcow1,
            });
        }
        _ => {
            return Err(Error::UnsupportedQcow2Version {
                path: path.to_owned(),
                version,
            });
        }
    }
    // Clusters over 64 KiB: the backing name may lie past what was read first.
    if let Some(&bits) = head.get(23) {
        let cluster = 1u64 << bits.min(21);
        if cluster > head.len() as u64 && len > head.len() as u64 {
            head = read_at(file, 0, cluster.min(len)).map_err(|e| read_error(path, e))?;
        }
    }
    let first = header::decode(&head).map_err(|reason| Error::CorruptQcow2 {
        path: path.to_owned(),
        reason,
    })?;
    features::check(path, &first)?;
    Ok(DiskFormat::Qcow2 {
        version,
        virtual_size: first.header.size,
        backing: first
            .backing_name
            .map(|name| PathBuf::from(OsStr::from_bytes(&name))),
        backing_format: first.extensions.backing_format,
    })
}

/// Whether `head` starts with an MBR or GPT partition table or holds an ISO 9660 volume.
fn has_disk_structure(head: &[u8]) -> bool {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    at(510, &[0x55, 0xAA]) || at(512, b"EFI PART") || at(0x8001, b"CD001")
}

fn read_at(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::Encryption;
    use crate::disk::qcow2::header::{EXT_BACKING_FORMAT, EXT_DATA_FILE, EXT_FULL_DISK_ENCRYPTION};
    use proptest::prelude::*;

    fn file_with(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn whole_sectors_are_raw() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with(dir.path(), "disk.img", &[0; 4096]);
        assert_eq!(sniff(&path).unwrap(), DiskFormat::Raw { size: 4096 });
    }

    #[test]
    fn an_mbr_makes_a_ragged_file_raw() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = vec![0u8; 1000];
        bytes[510..512].copy_from_slice(&[0x55, 0xAA]);
        let path = file_with(dir.path(), "disk.img", &bytes);
        let format = sniff(&path).unwrap();
        assert_eq!(format, DiskFormat::Raw { size: 1000 });
        assert_eq!(format.virtual_size(), 1024);
    }

    #[test]
    fn junk_empty_and_missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = file_with(dir.path(), "notes.txt", b"hello, world\n");
        let err = sniff(&junk).unwrap_err().to_string();
        assert!(
            err.contains("notes.txt") && err.contains("not a disk image"),
            "{err}"
        );
        let empty = file_with(dir.path(), "empty.img", b"");
        let err = sniff(&empty).unwrap_err().to_string();
        assert!(
            err.contains("empty.img") && err.contains("is empty"),
            "{err}"
        );
        let err = sniff(&dir.path().join("gone.img")).unwrap_err().to_string();
        assert!(
            err.contains("gone.img") && err.contains("does not exist"),
            "{err}"
        );
    }

    #[test]
    fn compressed_images_say_to_decompress() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with(dir.path(), "disk.img.xz", b"\xfd7zXZ\x00\x00\x04rest");
        let err = sniff(&path).unwrap_err().to_string();
        assert!(
            err.contains("disk.img.xz` is xz-compressed; decompress it first"),
            "{err}"
        );
    }

    #[test]
    fn unknown_qcow2_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = vec![0u8; 512];
        bytes[..8].copy_from_slice(b"QFI\xfb\0\0\0\x07");
        let path = file_with(dir.path(), "future.qcow2", &bytes);
        let err = sniff(&path).unwrap_err().to_string();
        assert!(
            err.contains("future.qcow2` is a qcow2 version 7 image"),
            "{err}"
        );
    }

    #[test]
    fn another_formats_magic_in_a_backing_name_is_still_qcow2() {
        use crate::disk::qcow2::layout::Layout;
        // The name starts at byte 136, so "ustar" lands on tar's magic offset, 257.
        let name = format!("/{}ustar", "a".repeat(120));
        let dir = tempfile::tempdir().unwrap();
        let bytes = Layout::new(1 << 20, name.as_bytes(), "raw").to_bytes();
        assert_eq!(&bytes[257..262], b"ustar");
        let path = file_with(dir.path(), "o.qcow2", &bytes);
        assert_eq!(sniff(&path).unwrap().name(), "qcow2");
    }

    /// An overlay's first cluster from vmrun's own writer, with `extensions`, then
    /// `incompatible_features` and `crypt_method` set in its header as a hostile tool would.
    fn qcow2_with(
        extensions: &[(u32, &[u8])],
        incompatible_features: u64,
        crypt_method: u32,
    ) -> Vec<u8> {
        use crate::disk::qcow2::layout::Layout;
        let mut bytes = Layout::with_extensions(1 << 20, b"/base.raw", extensions).pieces[0]
            .1
            .clone();
        bytes[32..36].copy_from_slice(&crypt_method.to_be_bytes());
        bytes[72..80].copy_from_slice(&incompatible_features.to_be_bytes());
        bytes
    }

    fn sniff_error(bytes: &[u8]) -> Error {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with(dir.path(), "evil.qcow2", bytes);
        sniff(&path).unwrap_err()
    }

    #[test]
    fn an_external_data_file_is_refused_with_both_names() {
        let err = sniff_error(&qcow2_with(&[(EXT_DATA_FILE, b"/etc/shadow")], 1 << 2, 0));
        assert!(matches!(err, Error::ExternalDataFile { .. }), "{err}");
        assert_eq!(err.exit_code(), crate::exit_code::BAD_INPUT);
        let message = err.to_string();
        assert!(
            message.contains("evil.qcow2` keeps its data in an external file `/etc/shadow`"),
            "{message}"
        );
    }

    #[test]
    fn encryption_is_refused_by_method_or_by_its_header() {
        let err = sniff_error(&qcow2_with(&[], 0, 2));
        assert!(
            matches!(
                err,
                Error::Encrypted {
                    encryption: Encryption::Luks,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("evil.qcow2` is encrypted (LUKS"),
            "{err}"
        );
        let err = sniff_error(&qcow2_with(&[(EXT_FULL_DISK_ENCRYPTION, &[0; 16])], 0, 0));
        assert!(
            matches!(
                err,
                Error::Encrypted {
                    encryption: Encryption::HeaderOnly,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn corrupt_and_unknown_feature_bits_are_refused() {
        let err = sniff_error(&qcow2_with(&[], 1 << 1, 0));
        assert!(matches!(err, Error::MarkedCorrupt { .. }), "{err}");
        let err = sniff_error(&qcow2_with(&[], 1 << 40, 0));
        assert!(
            matches!(&err, Error::UnknownIncompatibleFeatures { bits, .. } if bits == &[40]),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("evil.qcow2` uses qcow2 incompatible feature bit 40")
        );
    }

    proptest! {
        /// Exactly the images with no data file, no encryption and only the accepted
        /// incompatible bits (dirty, compression type, extended L2) are read.
        #[test]
        fn sniff_accepts_only_accepted_features(
            features in prop_oneof![0u64..32, any::<u64>()],
            crypt_method in prop_oneof![Just(0u32), any::<u32>()],
            data_file in any::<bool>(),
            encryption_header in any::<bool>(),
        ) {
            let mut extensions: Vec<(u32, &[u8])> = vec![(EXT_BACKING_FORMAT, b"raw")];
            if data_file {
                extensions.push((EXT_DATA_FILE, b"disk.data"));
            }
            if encryption_header {
                extensions.push((EXT_FULL_DISK_ENCRYPTION, &[0; 16]));
            }
            let dir = tempfile::tempdir().unwrap();
            let path = file_with(
                dir.path(),
                "o.qcow2",
                &qcow2_with(&extensions, features, crypt_method),
            );
            // Accepted: dirty (bit 0), compression type (3), extended L2 (4).
            let safe = features & !(1 << 0 | 1 << 3 | 1 << 4) == 0
                && crypt_method == 0
                && !data_file
                && !encryption_header;
            match sniff(&path) {
                Ok(format) => prop_assert!(safe, "accepted {:?}", format),
                Err(err) => {
                    prop_assert!(!safe, "refused a safe image: {}", err);
                    prop_assert!(err.to_string().contains("o.qcow2"), "{}", err);
                }
            }
        }

        /// Hostile bytes written over a well-formed first cluster (header, extensions,
        /// backing name) never make the reader panic, and its errors name the file.
        #[test]
        fn sniff_survives_any_damage_to_a_real_header(
            damage in proptest::collection::vec((0usize..256, any::<u8>()), 1..16),
        ) {
            let mut bytes =
                qcow2_with(&[(EXT_DATA_FILE, b"d"), (EXT_BACKING_FORMAT, b"raw")], 0, 0);
            for (at, byte) in damage {
                if let Some(b) = bytes.get_mut(at) {
                    *b = byte;
                }
            }
            let dir = tempfile::tempdir().unwrap();
            let path = file_with(dir.path(), "fuzz.qcow2", &bytes);
            if let Err(err) = sniff(&path) {
                prop_assert!(err.to_string().contains("fuzz.qcow2"), "{}", err);
            }
        }

        /// Whatever the bytes, sniffing returns (never panics), and errors name the file.
        #[test]
        fn sniff_survives_any_bytes(
            mut bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            qcow2_magic in any::<bool>(),
            version in 0u8..5,
        ) {
            if qcow2_magic && bytes.len() >= 8 {
                bytes[..4].copy_from_slice(MAGIC);
                bytes[4..8].copy_from_slice(&[0, 0, 0, version]);
            }
            let dir = tempfile::tempdir().unwrap();
            let path = file_with(dir.path(), "fuzz.img", &bytes);
            if let Err(err) = sniff(&path) {
                prop_assert!(err.to_string().contains("fuzz.img"), "{}", err);
            }
        }
    }
}
