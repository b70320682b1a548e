//! The bundle among framed files: its magic and version, and the two files it holds.

use crate::framed::{self, Fault, Kind};

pub const MAGIC: &[u8; 8] = b"VMRUNBDL";
/// The magic as messages show it.
pub const MAGIC_TEXT: &str = "VMRUNBDL";
/// The format this vmrun writes, and the newest it reads.
pub const VERSION: u32 = 1;

pub const BUNDLE: Kind = Kind {
    magic: MAGIC,
    version: VERSION,
    max_header: framed::MAX_HEADER,
    not_this_kind: || Fault::NotABundle,
    newer: |version| Fault::NewerBundle { version },
};

/// Largest disk overlay or saved state: far beyond a test VM's, and a bound a hostile header
/// cannot get past.
const LARGE: u64 = 1 << 40;

/// A file a bundle holds, in the order it holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Member {
    /// The run's disk overlay (qcow2, on the image's disk).
    Disk,
    /// The VM's RAM and device state: a QEMU migration stream.
    State,
}

impl Member {
    pub const ALL: [Member; 2] = [Member::Disk, Member::State];

    pub fn name(self) -> &'static str {
        match self {
            Member::Disk => "disk.qcow2",
            Member::State => "state",
        }
    }

    pub fn from_name(name: &str) -> Option<Member> {
        Member::ALL.into_iter().find(|m| m.name() == name)
    }
}

impl framed::Member for Member {
    fn name(self) -> &'static str {
        Member::name(self)
    }
    /// Private: the guest's memory and disk may hold secrets.
    fn mode(self) -> u32 {
        0o600
    }
    fn max_size(self) -> u64 {
        LARGE
    }
}

framed::by_name!(Member, "a bundle");
