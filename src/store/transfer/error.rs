//! Why an image could not be exported or imported. An import reads a file someone handed
//! us: what is wrong with it is a [`Fault`], named with the file, and is bad input.

use std::path::PathBuf;

use crate::exit_code::{BAD_INPUT, INTERNAL};
use crate::path_error::PathError;

pub use crate::framed::Fault;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error("{file} cannot be imported: {fault}")]
    #[diagnostic(help("{}", help(fault)))]
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

/// What to do about a file `images import` refused.
fn help(fault: &Fault) -> &'static str {
    match fault {
        Fault::NotAnExport => "make one with: vmrun images export NAME -o FILE",
        Fault::NewerFormat { .. } => "import it with the vmrun that exported it, or a newer one",
        _ => "export the image again; nothing was stored",
    }
}
