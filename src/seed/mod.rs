//! cloud-init NoCloud seeds: [`SeedIso`] renders user-data, meta-data and friends into an
//! ISO 9660 volume labelled `cidata`, written by the native [`iso9660`] writer.

pub mod iso9660;
mod nocloud;

use std::path::PathBuf;

pub use iso9660::Timestamp;
pub use nocloud::SeedIso;

use crate::exit_code;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    /// An input file (user-data, meta-data, ...) cannot be read: bad input.
    #[error("cannot read {}", path.display())]
    #[diagnostic(code(vmrun::seed::read_input))]
    ReadInput {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The seed cannot be written: an I/O failure, reported as internal.
    #[error("cannot write {}", path.display())]
    #[diagnostic(code(vmrun::seed::write_output))]
    WriteOutput {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid SOURCE_DATE_EPOCH `{value}`")]
    #[diagnostic(
        code(vmrun::seed::source_date_epoch),
        help(
            "set it to whole seconds since 1970-01-01T00:00:00Z, at most 5869583999 (2155-12-31), \
             or unset it"
        )
    )]
    SourceDateEpoch { value: String },

    #[error("invalid file name `{name}` in the image: {reason}")]
    #[diagnostic(code(vmrun::seed::invalid_name))]
    InvalidName { name: String, reason: &'static str },

    #[error("file name `{name}` is already in the image")]
    #[diagnostic(code(vmrun::seed::duplicate_name))]
    DuplicateName { name: String },

    #[error("invalid volume identifier `{volume_id}`")]
    #[diagnostic(
        code(vmrun::seed::invalid_volume_id),
        help("use 1 to 16 ASCII letters, digits, `_` or `-`")
    )]
    InvalidVolumeId { volume_id: String },

    #[error("adding `{name}` makes the image larger than 4 TiB")]
    #[diagnostic(code(vmrun::seed::too_large))]
    TooLarge { name: String },
}

impl Error {
    /// Write failures are vmrun's own (`INTERNAL`); everything else is about the inputs
    /// (`BAD_INPUT`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::WriteOutput { .. } => exit_code::INTERNAL,
            _ => exit_code::BAD_INPUT,
        }
    }
}
