//! [`backing_chain`]: an image and the backing files under it, down to the base.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{DiskFormat, Error, format};

/// One image in a backing chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEntry {
    /// Where the image is: the path given for the first entry, then each backing path as
    /// recorded, resolved against the directory of the image that records it.
    pub path: PathBuf,
    pub format: DiskFormat,
}

/// Follows backing files from the image at `path` to the base, which is the last entry.
///
/// A relative backing path is resolved against the directory of the image that records it,
/// as QEMU does. A recorded backing format is obeyed, as QEMU does: a backing file recorded as
/// raw is raw whatever its content (so the chain ends there); one recorded as qcow2 must be
/// qcow2, and is read with [`format::sniff`]'s checks. Missing backing files, loops, and
/// formats other than raw and qcow2 are errors that name the file.
///
/// Two backing references QEMU would follow are refused, because they reach beyond the
/// image's files: one with no recorded format (QEMU would probe it, and a raw disk a guest
/// wrote a qcow2 header into would be read as qcow2, with whatever backing file the guest
/// named), and one QEMU reads as a protocol (`nbd:HOST:PORT`, `json:{...}`) rather than a path.
pub fn backing_chain(path: &Path) -> Result<Vec<ChainEntry>, Error> {
    let mut chain: Vec<ChainEntry> = Vec::new();
    let mut seen = HashSet::new();
    let mut next = Some((path.to_owned(), None::<String>));
    while let Some((current, recorded_format)) = next.take() {
        let overlay = chain.last().map(|entry| entry.path.as_path());
        let canonical =
            fs::canonicalize(&current).map_err(|source| match (source.kind(), overlay) {
                (io::ErrorKind::NotFound, Some(overlay)) => Error::MissingBacking {
                    overlay: overlay.to_owned(),
                    backing: current.clone(),
                },
                (io::ErrorKind::NotFound, None) => Error::Missing {
                    path: current.clone(),
                },
                _ => Error::Read {
                    path: current.clone(),
                    source,
                },
            })?;
        if !seen.insert(canonical) {
            return Err(Error::BackingLoop {
                start: path.to_owned(),
                path: current,
            });
        }
        let format = match (recorded_format.as_deref(), overlay) {
            (Some("raw"), _) => DiskFormat::Raw {
                size: file_len(&current)?,
            },
            (Some("qcow2"), Some(overlay)) => match format::sniff(&current)? {
                qcow2 @ DiskFormat::Qcow2 { .. } => qcow2,
                DiskFormat::Raw { .. } => {
                    return Err(Error::BackingFormatMismatch {
                        overlay: overlay.to_owned(),
                        backing: current,
                    });
                }
            },
            (Some(other), Some(overlay)) => {
                return Err(Error::UnsupportedBackingFormat {
                    path: overlay.to_owned(),
                    format: other.to_owned(),
                });
            }
            _ => format::sniff(&current)?,
        };
        if let DiskFormat::Qcow2 {
            backing: Some(backing),
            backing_format,
            ..
        } = &format
        {
            if names_a_protocol(backing) {
                return Err(Error::BackingProtocol {
                    overlay: current,
                    backing: backing.clone(),
                });
            }
            let Some(backing_format) = backing_format else {
                return Err(Error::UnrecordedBackingFormat {
                    overlay: current,
                    backing: backing.clone(),
                });
            };
            let dir = current.parent().unwrap_or(Path::new(""));
            next = Some((dir.join(backing), Some(backing_format.clone())));
        }
        chain.push(ChainEntry {
            path: current,
            format,
        });
    }
    Ok(chain)
}

/// Whether QEMU reads a backing name as a protocol address rather than a file path: it does
/// when a colon comes before any slash (QEMU's `path_has_protocol`).
fn names_a_protocol(name: &Path) -> bool {
    let bytes = name.as_os_str().as_bytes();
    bytes.iter().find(|&&b| b == b':' || b == b'/') == Some(&b':')
}

fn file_len(path: &Path) -> Result<u64, Error> {
    let read_error = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::File::open(path).map_err(read_error)?;
    file.seek(SeekFrom::End(0)).map_err(read_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::Overlay;
    use crate::disk::qcow2::header::{EXT_BACKING_FORMAT, EXT_DATA_FILE};
    use crate::disk::qcow2::layout::Layout;

    /// Writes a qcow2 overlay recording exactly `backing` (which may be relative or bogus).
    fn overlay_naming(path: &Path, backing: &str, format: &str) {
        fs::write(
            path,
            Layout::new(1 << 20, backing.as_bytes(), format).to_bytes(),
        )
        .unwrap();
    }

    #[test]
    fn chain_runs_from_overlay_to_base() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        fs::write(&base, vec![0u8; 1 << 20]).unwrap();
        let middle = Overlay::create(&dir.path().join("middle.qcow2"), &base).unwrap();
        let top = Overlay::create(&dir.path().join("top.qcow2"), middle.path()).unwrap();
        let chain = backing_chain(top.path()).unwrap();
        let names: Vec<_> = chain
            .iter()
            .map(|e| (e.path.file_name().unwrap(), e.format.name()))
            .collect();
        assert_eq!(
            names,
            [
                ("top.qcow2".as_ref(), "qcow2"),
                ("middle.qcow2".as_ref(), "qcow2"),
                ("base.raw".as_ref(), "raw")
            ]
        );
    }

    #[test]
    fn relative_backing_resolves_against_the_overlay_directory() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/base.raw"), vec![0u8; 4096]).unwrap();
        overlay_naming(&dir.path().join("sub/top.qcow2"), "base.raw", "raw");
        let chain = backing_chain(&dir.path().join("sub/top.qcow2")).unwrap();
        assert_eq!(chain[1].path, dir.path().join("sub/base.raw"));
    }

    #[test]
    fn loops_and_missing_backing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        overlay_naming(&dir.path().join("a.qcow2"), "b.qcow2", "qcow2");
        overlay_naming(&dir.path().join("b.qcow2"), "a.qcow2", "qcow2");
        let err = backing_chain(&dir.path().join("a.qcow2"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("loops") && err.contains("a.qcow2"), "{err}");

        overlay_naming(&dir.path().join("c.qcow2"), "gone.raw", "raw");
        let err = backing_chain(&dir.path().join("c.qcow2"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gone.raw") && err.contains("c.qcow2") && err.contains("does not exist"),
            "{err}"
        );
    }

    #[test]
    fn every_layer_is_checked_by_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let evil = Layout::with_extensions(
            1 << 20,
            b"base.raw",
            &[
                (EXT_BACKING_FORMAT, b"raw"),
                (EXT_DATA_FILE, b"/etc/shadow"),
            ],
        );
        fs::write(dir.path().join("evil.qcow2"), evil.to_bytes()).unwrap();
        overlay_naming(&dir.path().join("top.qcow2"), "evil.qcow2", "qcow2");
        let err = backing_chain(&dir.path().join("top.qcow2")).unwrap_err();
        assert!(
            matches!(&err, Error::ExternalDataFile { path, .. } if path.ends_with("evil.qcow2")),
            "{err}"
        );
    }

    #[test]
    fn a_backing_file_without_a_recorded_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("base.raw"), vec![0u8; 4096]).unwrap();
        let unrecorded = Layout::with_extensions(1 << 20, b"base.raw", &[]);
        fs::write(dir.path().join("probe.qcow2"), unrecorded.to_bytes()).unwrap();
        let err = backing_chain(&dir.path().join("probe.qcow2"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("probe.qcow2` does not record the format of its backing file `base.raw`"),
            "{err}"
        );
    }

    #[test]
    fn backing_names_qemu_reads_as_protocols_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // Even when a file of that name exists: QEMU would not open it.
        fs::write(dir.path().join("nbd:127.0.0.1:10809"), vec![0u8; 4096]).unwrap();
        for name in [
            "nbd:127.0.0.1:10809",
            "json:{\"file.filename\":\"/etc/shadow\"}",
        ] {
            overlay_naming(&dir.path().join("top.qcow2"), name, "raw");
            let err = backing_chain(&dir.path().join("top.qcow2")).unwrap_err();
            assert!(
                matches!(err, Error::BackingProtocol { .. }),
                "{name}: {err}"
            );
            assert!(
                err.to_string().contains("reads as a protocol address"),
                "{err}"
            );
            fs::remove_file(dir.path().join("top.qcow2")).unwrap();
        }
        // A colon after a slash is a file name.
        assert!(!names_a_protocol(Path::new("/images/a:b.raw")));
        assert!(!names_a_protocol(Path::new("./a:b.raw")));
    }

    #[test]
    fn recorded_formats_are_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("base.raw"), vec![0u8; 4096]).unwrap();
        overlay_naming(&dir.path().join("liar.qcow2"), "base.raw", "qcow2");
        let err = backing_chain(&dir.path().join("liar.qcow2"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("liar.qcow2") && err.contains("not a qcow2 image"),
            "{err}"
        );
        overlay_naming(&dir.path().join("vmdk.qcow2"), "base.raw", "vmdk");
        let err = backing_chain(&dir.path().join("vmdk.qcow2"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("vmdk.qcow2") && err.contains("`vmdk`"),
            "{err}"
        );
    }
}
