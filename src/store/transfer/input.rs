//! Where an import reads from, and the copying of each file out of it into staging
//! ([`framed::copy_member`]), with errors that name it.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::error::{Error, Fault};
use super::format::{FileEntry, Reading};
use crate::events::Sink;
use crate::framed;

pub use crate::framed::CHUNK;

/// A file or standard input (`-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

impl Input {
    pub fn parse(arg: &Path) -> Input {
        match arg.as_os_str() == "-" {
            true => Input::Stdin,
            false => Input::File(arg.to_owned()),
        }
    }

    /// How messages name it.
    pub fn label(&self) -> String {
        match self {
            Input::Stdin => "standard input".into(),
            Input::File(path) => format!("`{}`", path.display()),
        }
    }

    pub fn open(&self) -> Result<Box<dyn Read>, Error> {
        match self {
            Input::Stdin => Ok(Box::new(io::stdin().lock())),
            Input::File(path) => File::open(path)
                .map(|f| Box::new(f) as Box<dyn Read>)
                .map_err(|source| Error::Read {
                    file: self.label(),
                    source,
                }),
        }
    }

    /// The error for a failed read of the export.
    pub fn error(&self, reading: Reading) -> Error {
        match reading {
            Reading::Fault(fault) => self.fault(fault),
            Reading::Io(source) => Error::Read {
                file: self.label(),
                source,
            },
            Reading::Output(e) => Error::Io(e),
        }
    }

    pub fn fault(&self, fault: Fault) -> Error {
        Error::Invalid {
            file: self.label(),
            fault,
        }
    }
}

/// Copies `entry` out of `input` into a new file `dir/entry.name` (never an existing file or
/// a link) and checks its digest. Which file and what is wrong is in the error.
pub fn copy_member(
    input: &mut impl Read,
    source: &Input,
    entry: &FileEntry,
    dir: &Path,
    sink: Sink,
) -> Result<(), Error> {
    framed::copy_member(input, entry, dir, sink).map_err(|e| source.error(e))
}

/// Checks that nothing follows the last file.
pub fn expect_end(input: &mut impl Read, source: &Input) -> Result<(), Error> {
    framed::expect_end(input).map_err(|e| source.error(e))
}
