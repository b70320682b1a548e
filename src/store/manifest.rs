//! What a baked image records about itself (`image.json` in its store entry).

use serde::{Deserialize, Serialize};

use crate::qemu::args::MachineSize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The content key the entry is stored under.
    pub key: String,
    /// The source as the user named it (`debian:bookworm`, a URL, a path).
    pub source: String,
    pub source_digest: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub cpus: u32,
    pub memory_mib: u64,
    pub vmrun_version: String,
}

impl Manifest {
    /// The machine the image was baked (and its warm state saved) with.
    pub fn size(&self) -> MachineSize {
        MachineSize {
            cpus: self.cpus,
            memory_mib: self.memory_mib,
        }
    }
}
