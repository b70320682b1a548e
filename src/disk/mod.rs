//! Disk images: native qcow2 overlays, and a sniffer that says what an image file is.
//!
//! - [`Overlay::create`] writes a qcow2 v3 image backed by a raw or qcow2 base, the way
//!   `qemu-img create -f qcow2 -b BASE -F FMT` does, without running qemu-img.
//! - [`format::sniff`] reads a file's header and says whether it is qcow2 (with its backing
//!   file) or raw, or names the other format it is. It refuses qcow2 images that would make
//!   QEMU read a host file (an external data file), need a key (encryption), or use an
//!   incompatible feature vmrun does not know.
//! - [`backing_chain`] follows backing files from an overlay down to its base, checking each.
//! - [`set_backing_name`] gives a qcow2 image another backing file name (an imported layer).

mod chain;
mod foreign;
pub mod format;
mod qcow2;

use std::io;
use std::path::PathBuf;

use miette::Diagnostic;

pub use chain::{ChainEntry, backing_chain};
pub use foreign::ForeignFormat;
pub use format::{DiskFormat, sniff};
pub use qcow2::features::Encryption;
pub use qcow2::{Overlay, set_backing_name};

use crate::exit_code;
use qcow2::features::{bit_list, data_file_name};

/// Why a disk image could not be read or written. Every message names the file at fault.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum Error {
    #[error("`{}` does not exist", .path.display())]
    #[diagnostic(code(vmrun::disk::missing))]
    Missing { path: PathBuf },

    #[error("backing file `{}` of `{}` does not exist", .backing.display(), .overlay.display())]
    #[diagnostic(
        code(vmrun::disk::missing_backing),
        help("the base image was moved or deleted; put it back, or recreate the overlay")
    )]
    MissingBacking { overlay: PathBuf, backing: PathBuf },

    #[error("cannot read `{}`", .path.display())]
    #[diagnostic(code(vmrun::disk::read))]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot write `{}`", .path.display())]
    #[diagnostic(code(vmrun::disk::write))]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("`{}` already exists", .path.display())]
    #[diagnostic(
        code(vmrun::disk::exists),
        help("an overlay is never written over an existing file")
    )]
    AlreadyExists { path: PathBuf },

    #[error("`{}` is empty", .path.display())]
    #[diagnostic(code(vmrun::disk::empty))]
    Empty { path: PathBuf },

    #[error(
        "`{}` is not a disk image: it has no partition table \
         and its {len} bytes are not a whole number of 512-byte sectors",
        .path.display()
    )]
    #[diagnostic(code(vmrun::disk::not_a_disk))]
    NotADisk { path: PathBuf, len: u64 },

    #[error("`{}` is {}; {}", .path.display(), .format.description(), .format.remedy())]
    #[diagnostic(code(vmrun::disk::foreign_format))]
    Foreign {
        path: PathBuf,
        format: ForeignFormat,
    },

    #[error("`{}` is a damaged qcow2 image: {reason}", .path.display())]
    #[diagnostic(code(vmrun::disk::corrupt_qcow2))]
    CorruptQcow2 { path: PathBuf, reason: String },

    #[error(
        "`{}` is a qcow2 version {version} image; only versions 2 and 3 are supported",
        .path.display()
    )]
    #[diagnostic(code(vmrun::disk::qcow2_version))]
    UnsupportedQcow2Version { path: PathBuf, version: u32 },

    #[error(
        "the backing chain of `{}` loops: it reaches `{}` twice",
        .start.display(), .path.display()
    )]
    #[diagnostic(code(vmrun::disk::backing_loop))]
    BackingLoop { start: PathBuf, path: PathBuf },

    #[error(
        "`{}` does not record the format of its backing file `{}`, \
         so QEMU would guess it from the file's contents",
        .overlay.display(), .backing.display()
    )]
    #[diagnostic(
        code(vmrun::disk::unrecorded_backing_format),
        help(
            "a guest can make a raw disk look like qcow2; record the format: \
             qemu-img rebase -u -F raw|qcow2 -b BACKING IMAGE"
        )
    )]
    UnrecordedBackingFormat { overlay: PathBuf, backing: PathBuf },

    #[error(
        "`{}` names its backing file `{}`, which QEMU reads as a protocol address, not a file; \
         vmrun refuses images that reach beyond their own files",
        .overlay.display(), .backing.display()
    )]
    #[diagnostic(
        code(vmrun::disk::backing_protocol),
        help(
            "name the backing file by an absolute path: qemu-img rebase -u -F FORMAT -b /PATH IMAGE"
        )
    )]
    BackingProtocol { overlay: PathBuf, backing: PathBuf },

    #[error(
        "`{}` records backing format `{format}`; only raw and qcow2 are supported",
        .path.display()
    )]
    #[diagnostic(code(vmrun::disk::backing_format))]
    UnsupportedBackingFormat { path: PathBuf, format: String },

    #[error(
        "`{}` records its backing file `{}` as qcow2, but it is not a qcow2 image",
        .overlay.display(), .backing.display()
    )]
    #[diagnostic(code(vmrun::disk::backing_format_mismatch))]
    BackingFormatMismatch { overlay: PathBuf, backing: PathBuf },

    #[error(
        "`{}` has room for a backing file name of {room} bytes in its first cluster, not {len}",
        .path.display()
    )]
    #[diagnostic(code(vmrun::disk::backing_name_no_room))]
    BackingNameNoRoom {
        path: PathBuf,
        len: usize,
        room: u64,
    },

    #[error("backing path `{}` is {len} bytes long; qcow2 allows at most 1023", .path.display())]
    #[diagnostic(
        code(vmrun::disk::backing_path_too_long),
        help("move the base image to a shorter path")
    )]
    BackingPathTooLong { path: PathBuf, len: usize },

    #[error(
        "`{}` keeps its data in an external file {}; vmrun refuses images that read host files",
        .path.display(), data_file_name(.data_file)
    )]
    #[diagnostic(
        code(vmrun::disk::external_data_file),
        help(
            "if you trust it, make it self-contained: \
             qemu-img convert -O qcow2 IMAGE standalone.qcow2"
        )
    )]
    ExternalDataFile {
        path: PathBuf,
        /// As recorded in the image (possibly relative to it); `None` when only the feature
        /// bit is set.
        data_file: Option<PathBuf>,
    },

    #[error(
        "`{}` is encrypted ({encryption}); vmrun has no key for it \
         and uses only unencrypted images",
        .path.display()
    )]
    #[diagnostic(
        code(vmrun::disk::encrypted),
        help(
            "decrypt it first: \
             qemu-img convert --object secret,id=k,file=KEYFILE --image-opts \
             driver=qcow2,file.filename=IMAGE,encrypt.key-secret=k -O qcow2 plain.qcow2"
        )
    )]
    Encrypted {
        path: PathBuf,
        encryption: Encryption,
    },

    #[error(
        "`{}` is marked corrupt (incompatible feature bit 1): QEMU found its metadata inconsistent",
        .path.display()
    )]
    #[diagnostic(
        code(vmrun::disk::marked_corrupt),
        help("check and repair it: qemu-img check -r all IMAGE")
    )]
    MarkedCorrupt { path: PathBuf },

    #[error(
        "`{}` uses qcow2 incompatible feature {}, which vmrun does not know; \
         an image a reader does not fully understand must not be opened",
        .path.display(), bit_list(.bits)
    )]
    #[diagnostic(
        code(vmrun::disk::unknown_features),
        help(
            "an image from a newer QEMU? convert it with this host's qemu-img: \
             qemu-img convert -O qcow2 IMAGE older.qcow2"
        )
    )]
    UnknownIncompatibleFeatures { path: PathBuf, bits: Vec<u32> },

    #[error("cannot give `{}` a virtual size of {size} bytes: {reason}", .path.display())]
    #[diagnostic(code(vmrun::disk::size))]
    InvalidSize {
        path: PathBuf,
        size: u64,
        reason: &'static str,
    },
}

impl Error {
    /// The exit code for this failure: bad input when an input image is missing, junk or
    /// unreadable; internal when vmrun could not write its own file.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Write { .. } | Error::AlreadyExists { .. } => exit_code::INTERNAL,
            _ => exit_code::BAD_INPUT,
        }
    }
}
