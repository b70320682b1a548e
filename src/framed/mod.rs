//! The framing vmrun's self-describing files share (image exports, failure bundles). Version
//! 1 of each:
//!
//! ```text
//! magic               8 bytes, the kind of file
//! version             u32, big-endian
//! zstd stream of:
//!   header length     u32, big-endian, at most MAX_HEADER
//!   header            JSON, listing the files: [{"name", "size", "sha256"}, ...]
//!   trailer           32 bytes over the header's JSON bytes (a digest, or a seal)
//!   the files         each exactly `size` bytes, in the header's order
//! ```
//!
//! The magic and version come before the compression, so a file of another kind, or one
//! from a newer vmrun, is named as such before anything is decompressed. The header lists
//! every file before its bytes, so a reader checks names and sizes before it writes, and
//! each file's digest as it is written. Nothing follows the last file.

mod copy;
mod fault;
mod member;
mod write;

pub use copy::{CHUNK, copy_member, expect_end, hash};
pub use fault::Fault;
pub(crate) use member::by_name;
pub use member::{FileEntry, Member, check_files, deserialize_member, total_size};
pub use write::write;

use std::io::{self, Read, Write};

use crate::path_error::PathError;

/// The largest header: a few hundred bytes in practice (a bundle's command line may make it
/// a few KiB more).
pub const MAX_HEADER: u32 = 64 << 10;

/// A kind of framed file: its magic, the newest version this vmrun reads and writes, and how
/// its faults say that a file is not one, or is newer.
#[derive(Clone, Copy)]
pub struct Kind {
    pub magic: &'static [u8; 8],
    pub version: u32,
    pub max_header: u32,
    pub not_this_kind: fn() -> Fault,
    pub newer: fn(u32) -> Fault,
}

/// A header as read: its JSON bytes and the 32 bytes after them, neither checked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawHeader {
    pub json: Vec<u8>,
    pub trailer: [u8; 32],
}

/// Why reading failed: the file is at fault, reading it failed, or writing what was read did.
#[derive(Debug)]
pub enum Reading {
    Fault(Fault),
    Io(io::Error),
    Output(PathError),
}

impl From<Fault> for Reading {
    fn from(fault: Fault) -> Reading {
        Reading::Fault(fault)
    }
}

pub fn damaged(what: &str) -> Reading {
    Fault::Damaged { what: what.into() }.into()
}

/// At most 80 characters of untrusted text, with control characters made visible.
pub fn shown(text: &str) -> String {
    text.escape_debug().take(80).collect()
}

impl Kind {
    /// Writes the magic and the version: what comes before the compressed stream.
    pub fn write_prelude(&self, out: &mut (impl Write + ?Sized)) -> io::Result<()> {
        out.write_all(self.magic)?;
        out.write_all(&self.version.to_be_bytes())
    }

    /// Reads the magic and the version; returns the version (1..=`version`).
    pub fn read_prelude(&self, input: &mut impl Read) -> Result<u32, Reading> {
        let mut magic = [0u8; 8];
        read_exact(input, &mut magic, "its start")?;
        if &magic != self.magic {
            return Err((self.not_this_kind)().into());
        }
        let mut version = [0u8; 4];
        read_exact(input, &mut version, "its format version")?;
        match u32::from_be_bytes(version) {
            0 => Err(damaged("its format version is 0")),
            version if version > self.version => Err((self.newer)(version).into()),
            version => Ok(version),
        }
    }

    /// Writes the header's JSON, its length before it and `trailer` after it.
    pub fn write_header(
        &self,
        out: &mut (impl Write + ?Sized),
        json: &[u8],
        trailer: &[u8; 32],
    ) -> io::Result<()> {
        let len = u32::try_from(json.len())
            .ok()
            .filter(|&len| len <= self.max_header)
            .ok_or_else(|| io::Error::other("the header is too long"))?;
        out.write_all(&len.to_be_bytes())?;
        out.write_all(json)?;
        out.write_all(trailer)
    }

    /// Reads the header's JSON and its trailer from the decompressed stream.
    pub fn read_header(&self, input: &mut impl Read) -> Result<RawHeader, Reading> {
        let mut len = [0u8; 4];
        read_exact(input, &mut len, "its header")?;
        let len = u32::from_be_bytes(len);
        if len > self.max_header {
            return Err(damaged(&format!(
                "its header is {len} bytes long (at most {})",
                self.max_header
            )));
        }
        let mut json = vec![0u8; len as usize];
        read_exact(input, &mut json, "its header")?;
        let mut trailer = [0u8; 32];
        read_exact(input, &mut trailer, "its header")?;
        Ok(RawHeader { json, trailer })
    }
}

/// The header's JSON as `T`; what does not parse is an invalid header.
pub fn parse<T: serde::de::DeserializeOwned>(json: &[u8]) -> Result<T, Fault> {
    serde_json::from_slice(json).map_err(|e| Fault::Header {
        what: e.to_string(),
    })
}

/// Fills `buf`; an end of input first is the file being cut short inside `what`.
pub fn read_exact(input: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), Reading> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Fault::CutShort {
            what: format!("it ends inside {what}"),
        }
        .into(),
        _ => from_stream(e),
    })
}

/// A failure of the decompressing reader: the compressed data is broken (or cut short,
/// which zstd says as a frame it cannot finish), unless reading the input itself failed.
pub fn from_stream(e: io::Error) -> Reading {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => Fault::CutShort {
            what: "its compressed data ends before its files do".into(),
        }
        .into(),
        io::ErrorKind::Other | io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
            Fault::Damaged {
                what: format!("its compressed data is broken ({e})"),
            }
            .into()
        }
        _ => Reading::Io(e),
    }
}
