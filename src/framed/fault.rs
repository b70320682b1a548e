//! What is wrong with a file vmrun was handed (an image export, a bundle): the framing's
//! faults, which every kind shares, and the few each kind adds. Messages name the fault, not
//! the file: the error that holds one names the file.

use crate::sha256::Sha256;
use crate::store::transfer::format::{MAGIC_TEXT as EXPORT_MAGIC, VERSION as EXPORT_VERSION};

use crate::bundle::format::{MAGIC_TEXT as BUNDLE_MAGIC, VERSION as BUNDLE_VERSION};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("it is not a vmrun image export (it does not start with `{EXPORT_MAGIC}`)")]
    NotAnExport,
    #[error("it is not a vmrun bundle (it does not start with `{BUNDLE_MAGIC}`)")]
    NotABundle,
    #[error("it is format version {version}; this vmrun reads versions 1 to {EXPORT_VERSION}")]
    NewerFormat { version: u32 },
    #[error("it is format version {version}; this vmrun reads versions 1 to {BUNDLE_VERSION}")]
    NewerBundle { version: u32 },
    #[error("it is cut short: {what}")]
    CutShort { what: String },
    #[error("it is damaged: {what}")]
    Damaged { what: String },
    #[error("its header is invalid: {what}")]
    Header { what: String },
    #[error(
        "`{member}` does not match its sha256 in the header (expected {expected}, got {actual})"
    )]
    Digest {
        member: &'static str,
        expected: Sha256,
        actual: Sha256,
    },
    /// An export's header and manifest disagree on the image's key.
    #[error("its header says key {header}, but its image.json says {manifest}")]
    Key { header: String, manifest: String },
    /// A bundle's header is not sealed with the key of the image it names.
    #[error(
        "its seal does not match: it was changed after it was written, or it was made for \
         another image than the one stored under key {key}"
    )]
    Seal { key: String },
}
