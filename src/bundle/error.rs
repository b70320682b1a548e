//! Why a bundle could not be written or opened. A bundle is a file someone handed us: what
//! is wrong with it is a [`Fault`], named with the file, and is bad input.

use crate::exit_code::{BAD_INPUT, INTERNAL};
use crate::framed::Reading;
use crate::path_error::PathError;

pub use crate::framed::Fault;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error("{file} cannot be opened: {fault}")]
    #[diagnostic(help("{}", help(fault)))]
    Invalid { file: String, fault: Fault },

    #[error("cannot read {file}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    #[diagnostic(transparent)]
    Io(#[from] PathError),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Invalid { .. } => BAD_INPUT,
            Error::Read { .. } | Error::Io(_) => INTERNAL,
        }
    }

    /// The error for a failed read of the bundle `file` (as messages name it).
    pub(super) fn reading(file: &str, reading: Reading) -> Error {
        match reading {
            Reading::Fault(fault) => Error::Invalid {
                file: file.to_owned(),
                fault,
            },
            Reading::Io(source) => Error::Read {
                file: file.to_owned(),
                source,
            },
            Reading::Output(e) => Error::Io(e),
        }
    }
}

/// What to do about a bundle that does not open.
fn help(fault: &Fault) -> &'static str {
    match fault {
        Fault::NotABundle => "bundles are written by: vmrun test --capture-failures DIR",
        Fault::NewerBundle { .. } => "open it with the vmrun that wrote it, or a newer one",
        Fault::Seal { .. } => {
            "open it where the image it was captured from is stored (vmrun images export, \
             then images import there); a bundle that was changed cannot be opened"
        }
        _ => "capture the failure again; nothing was written",
    }
}
