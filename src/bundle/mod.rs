//! Bundles: a failed run's VM, captured to one file (`RUN_ID.vmrun`) by
//! `vmrun test --capture-failures DIR` and opened later, maybe on another machine, by
//! `vmrun open`. It holds the VM's disk overlay and its saved RAM and device state, and a
//! header saying what ran, on which image and machine, and how it ended.
//!
//! The file is framed as an image export is ([`crate::framed`]), with magic `VMRUNBDL`; the
//! header's trailer is a seal ([`seal`]) keyed by the image's private client key, so only
//! someone who holds the image can make a bundle that opens on it. The files' digests are in
//! the sealed header, so the seal covers everything.
//!
//! A bundle is untrusted input: its header is bounded and checked, its seal is checked
//! before anything is written, and only its two fixed members are ever written, into the
//! directory the caller gives.

mod error;
pub mod format;
mod header;
mod info;
mod read;
mod seal;
mod write;

pub use error::{Error, Fault};
pub use format::Member;
pub use header::{BootKind, FileEntry, Header, ImageRef, MachineRecord, PhaseTime};
pub use info::{Verified, info_json, info_text};
pub use read::{Sealed, extract, read_header};
pub use seal::SealKey;
pub use write::write;

/// A bundle's file name ends in `.vmrun`: `RUN_ID.vmrun`.
pub const EXTENSION: &str = "vmrun";

#[cfg(test)]
mod tests;
