use std::io;

use miette::Diagnostic;
use ureq::http::StatusCode;

use crate::exit_code;
use crate::path_error::PathError;
use crate::sha256::Sha256;

/// Why an image could not be downloaded. Every message names the URL or the file at fault.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum Error {
    #[error("cannot download `{url}`: {reason}")]
    #[diagnostic(code(vmrun::download::bad_url))]
    BadUrl { url: String, reason: &'static str },

    #[error("cannot fetch `{url}`")]
    #[diagnostic(code(vmrun::download::request))]
    Request {
        url: String,
        #[source]
        source: ureq::Error,
    },

    #[error("fetching `{url}` failed: HTTP {status}")]
    #[diagnostic(code(vmrun::download::status))]
    Status { url: String, status: StatusCode },

    #[error("`{url}` came with content-encoding `{encoding}`, not as the bytes themselves")]
    #[diagnostic(
        code(vmrun::download::encoded),
        help("vmrun asks for `Accept-Encoding: identity`; the server ignored it")
    )]
    Encoded { url: String, encoding: String },

    #[error("download of `{url}` broke off after {done} bytes")]
    #[diagnostic(
        code(vmrun::download::interrupted),
        help("run the command again: the download resumes where it stopped")
    )]
    Interrupted {
        url: String,
        done: u64,
        #[source]
        source: io::Error,
    },

    #[error("download of `{url}` ended after {done} of {total} bytes")]
    #[diagnostic(code(vmrun::download::length))]
    Length { url: String, done: u64, total: u64 },

    #[error("sha256 of `{url}` is {actual}, expected {expected}")]
    #[diagnostic(
        code(vmrun::download::digest_mismatch),
        help("the downloaded file was deleted; check the URL and the expected digest")
    )]
    DigestMismatch {
        url: String,
        expected: Sha256,
        actual: Sha256,
    },

    #[error(transparent)]
    #[diagnostic(transparent)]
    Io(#[from] PathError),
}

impl Error {
    /// The documented exit code for this failure (see `exit_code`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::BadUrl { .. } => exit_code::BAD_INPUT,
            _ => exit_code::IMAGE_FAILED,
        }
    }
}
