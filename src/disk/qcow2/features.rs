//! Which qcow2 images vmrun lets QEMU open. An image is untrusted input (a download, a file
//! from anywhere, a store entry someone changed), and some qcow2 features make QEMU read more
//! than the image file, or need what vmrun does not have:
//!
//! - An external data file: the guest's data lives in another file, named in the header. It
//!   can be any host file (`/etc/shadow`), and a VM on the image reads it as its disk.
//! - Encryption (AES, or LUKS with its full-disk-encryption header): it needs a secret vmrun
//!   does not have.
//! - Incompatible feature bits vmrun does not know: by the format's rules a reader that does
//!   not understand one must not open the image, since it changes what the bytes mean.
//!
//! Of the known incompatible bits vmrun accepts dirty (refcounts may be stale after a crash
//! with lazy refcounts; QEMU repairs them, and a base is only ever read), the compression
//! type (zstd instead of zlib) and extended L2 entries (subclusters): all three change only
//! how QEMU reads the image's own clusters. It refuses corrupt: QEMU found the metadata
//! inconsistent, and QEMU itself no longer writes to such an image.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::header::FirstCluster;
use crate::disk::Error;

const DIRTY: u64 = 1 << 0;
const CORRUPT: u64 = 1 << 1;
const EXTERNAL_DATA_FILE: u64 = 1 << 2;
const COMPRESSION_TYPE: u64 = 1 << 3;
const EXTENDED_L2: u64 = 1 << 4;
/// The incompatible feature bits an image vmrun accepts may have set.
const ACCEPTED: u64 = DIRTY | COMPRESSION_TYPE | EXTENDED_L2;

/// How a qcow2 image is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// `crypt_method` 1: QEMU's old built-in AES.
    Aes,
    /// `crypt_method` 2: LUKS.
    Luks,
    /// A `crypt_method` no QEMU knows.
    Unknown(u32),
    /// No `crypt_method`, but a full-disk-encryption header extension.
    HeaderOnly,
}

impl fmt::Display for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Encryption::Aes => f.write_str("AES, crypt_method 1"),
            Encryption::Luks => f.write_str("LUKS, crypt_method 2"),
            Encryption::Unknown(method) => write!(f, "crypt_method {method}"),
            Encryption::HeaderOnly => f.write_str("it has a full-disk-encryption header"),
        }
    }
}

/// "bit 5" or "bits 17, 63", for messages.
pub(crate) fn bit_list(bits: &[u32]) -> String {
    let list: Vec<String> = bits.iter().map(u32::to_string).collect();
    match list.len() {
        1 => format!("bit {}", list[0]),
        _ => format!("bits {}", list.join(", ")),
    }
}

/// How a message names an external data file: by its name, or by the feature bit when the
/// image records none (QEMU then takes it from an option).
pub(crate) fn data_file_name(data_file: &Option<PathBuf>) -> String {
    match data_file {
        Some(name) => format!("`{}`", name.display()),
        None => "(incompatible feature bit 2)".to_owned(),
    }
}

/// Refuses the image at `path`, whose first cluster is `first`, if it has a feature vmrun
/// does not let QEMU open (see the module's documentation).
pub(crate) fn check(path: &Path, first: &FirstCluster) -> Result<(), Error> {
    let features = first.header.incompatible_features;
    let data_file = first.extensions.data_file.as_deref();
    if data_file.is_some() || features & EXTERNAL_DATA_FILE != 0 {
        return Err(Error::ExternalDataFile {
            path: path.to_owned(),
            data_file: data_file.map(|name| PathBuf::from(OsStr::from_bytes(name))),
        });
    }
    let encryption = match first.header.crypt_method {
        0 if first.extensions.full_disk_encryption => Some(Encryption::HeaderOnly),
        0 => None,
        1 => Some(Encryption::Aes),
        2 => Some(Encryption::Luks),
        other => Some(Encryption::Unknown(other)),
    };
    if let Some(encryption) = encryption {
        return Err(Error::Encrypted {
            path: path.to_owned(),
            encryption,
        });
    }
    if features & CORRUPT != 0 {
        return Err(Error::MarkedCorrupt {
            path: path.to_owned(),
        });
    }
    let unknown = features & !ACCEPTED;
    if unknown != 0 {
        return Err(Error::UnknownIncompatibleFeatures {
            path: path.to_owned(),
            bits: (0..64).filter(|bit| unknown >> bit & 1 == 1).collect(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::header::{Extensions, Header};
    use super::*;

    fn image(
        incompatible_features: u64,
        crypt_method: u32,
        extensions: Extensions,
    ) -> FirstCluster {
        FirstCluster {
            header: Header {
                version: 3,
                crypt_method,
                incompatible_features,
                ..Header::default()
            },
            extensions,
            backing_name: None,
        }
    }

    fn refusal(first: FirstCluster) -> String {
        check(Path::new("/x/evil.qcow2"), &first)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn dirty_zstd_and_extended_l2_are_accepted() {
        let accepted = image(
            DIRTY | COMPRESSION_TYPE | EXTENDED_L2,
            0,
            Extensions::default(),
        );
        assert!(check(Path::new("/x/ok.qcow2"), &accepted).is_ok());
    }

    #[test]
    fn a_data_file_is_refused_by_name_or_by_its_bit() {
        let named = Extensions {
            data_file: Some(b"/etc/shadow".to_vec()),
            ..Extensions::default()
        };
        assert_eq!(
            refusal(image(EXTERNAL_DATA_FILE, 0, named.clone())),
            "`/x/evil.qcow2` keeps its data in an external file `/etc/shadow`; \
             vmrun refuses images that read host files"
        );
        // Either half alone is enough: QEMU may be given the file's name another way.
        assert!(refusal(image(0, 0, named)).contains("`/etc/shadow`"));
        assert_eq!(
            refusal(image(EXTERNAL_DATA_FILE, 0, Extensions::default())),
            "`/x/evil.qcow2` keeps its data in an external file (incompatible feature bit 2); \
             vmrun refuses images that read host files"
        );
    }

    #[test]
    fn every_encryption_is_refused_and_named() {
        let plain = Extensions::default;
        for (method, name) in [
            (1, "AES, crypt_method 1"),
            (2, "LUKS, crypt_method 2"),
            (9, "crypt_method 9"),
        ] {
            assert!(
                refusal(image(0, method, plain())).starts_with(&format!(
                    "`/x/evil.qcow2` is encrypted ({name}); vmrun has no key"
                )),
                "{method}"
            );
        }
        let fde = Extensions {
            full_disk_encryption: true,
            ..plain()
        };
        assert!(refusal(image(0, 0, fde)).contains("(it has a full-disk-encryption header)"));
    }

    #[test]
    fn corrupt_is_refused() {
        assert!(
            refusal(image(CORRUPT | DIRTY, 0, Extensions::default()))
                .starts_with("`/x/evil.qcow2` is marked corrupt (incompatible feature bit 1)")
        );
    }

    #[test]
    fn unknown_bits_are_refused_each_named() {
        assert_eq!(
            refusal(image(1 << 5 | DIRTY, 0, Extensions::default())),
            "`/x/evil.qcow2` uses qcow2 incompatible feature bit 5, which vmrun does not know; \
             an image a reader does not fully understand must not be opened"
        );
        assert!(
            refusal(image(1 << 63 | 1 << 17, 0, Extensions::default()))
                .contains("incompatible feature bits 17, 63,")
        );
    }
}
