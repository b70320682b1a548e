//! The top-level error: each module's typed error, wrapped, with its exit code.

use miette::Diagnostic;

use crate::exit_code;
use crate::tools::MissingTool;

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum Error {
    #[error("`vmrun {0}` is not built yet")]
    #[diagnostic(code(vmrun::not_built), help("this command is part of the planned command-line contract; see README.md"))]
    NotBuilt(&'static str),

    #[error(transparent)]
    #[diagnostic(transparent)]
    MissingTool(#[from] MissingTool),

    /// `vmrun seed`: unreadable inputs are BAD_INPUT, write failures INTERNAL.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Seed(#[from] crate::seed::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Disk(#[from] crate::disk::Error),
}

impl Error {
    /// The documented exit code for this failure (see `exit_code`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::NotBuilt(_) => exit_code::NOT_BUILT,
            Error::MissingTool(_) => exit_code::MISSING_TOOL,
            Error::Seed(e) => e.exit_code(),
            Error::Disk(e) => e.exit_code(),
        }
    }
}
