//! Why an image could not be exported or imported. An import reads a file someone handed
//! us: what is wrong with it is a [`Fault`], named with the file, and is bad input.

use std::path::PathBuf;

use crate::exit_code::{BAD_INPUT, INTERNAL};
use crate::path_error::PathError;
use crate::sha256::Sha256;

use super::format::{MAGIC_TEXT, VERSION};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error("{file} cannot be imported: {fault}")]
    #[diagnostic(help("{}", fault.help()))]
    Invalid { file: String, fault: Fault },

    #[error("{file} cannot be imported: its layer `{member}` is refused")]
    UnsafeLayer {
        file: String,
        member: &'static str,
        #[source]
        #[diagnostic_source]
        source: crate::disk::Error,
    },

    #[error("cannot read {file}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },

    #[error("image `{name}` cannot be exported: {reason}")]
    NotExportable { name: String, reason: String },

    #[error("refusing to write an image export to a terminal")]
    #[diagnostic(help("redirect it: vmrun images export NAME -o - > FILE, or use -o FILE"))]
    Terminal,

    #[error("{} has {free} bytes free; the import needs {needed}", .dir.display())]
    NoSpace {
        dir: PathBuf,
        needed: u64,
        free: u64,
    },

    #[error(transparent)]
    #[diagnostic(transparent)]
    Disk(#[from] crate::disk::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Store(#[from] crate::store::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    InvalidName(#[from] crate::name::InvalidName),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Io(#[from] PathError),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Invalid { .. }
            | Error::UnsafeLayer { .. }
            | Error::Read { .. }
            | Error::NotExportable { .. }
            | Error::Terminal
            | Error::InvalidName(_) => BAD_INPUT,
            Error::Disk(e) => e.exit_code(),
            Error::Store(e) => e.exit_code(),
            Error::NoSpace { .. } | Error::Io(_) => INTERNAL,
        }
    }
}

/// What is wrong with a file given to `images import`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("it is not a vmrun image export (it does not start with `{MAGIC_TEXT}`)")]
    NotAnExport,
    #[error("it is format version {version}; this vmrun reads versions 1 to {VERSION}")]
    NewerFormat { version: u32 },
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
    #[error("its header says key {header}, but its image.json says {manifest}")]
    Key { header: String, manifest: String },
}

impl Fault {
    fn help(&self) -> &'static str {
        match self {
            Fault::NotAnExport => "make one with: vmrun images export NAME -o FILE",
            Fault::NewerFormat { .. } => {
                "import it with the vmrun that exported it, or a newer one"
            }
            _ => "export the image again; nothing was stored",
        }
    }
}
