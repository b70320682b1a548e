//! `vm:`: the guest's hardware.

use std::fmt;
use std::ops::RangeInclusive;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::MemorySize;
use crate::qemu::args::MachineSize;

/// How many vCPUs a guest may have (`vm.cpus`, `--cpus`).
pub const CPUS: RangeInclusive<u32> = 1..=64;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Within [`CPUS`].
    #[serde(
        default,
        deserialize_with = "cpus",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemorySize>,
}

impl VmConfig {
    /// A baked image's machine when `vm:` does not say: 2 cpus.
    pub const DEFAULT_CPUS: u32 = 2;
    /// ... and 1 GiB.
    pub const DEFAULT_MEMORY_MIB: u64 = 1024;

    /// The size `vm:` asks for, each part not given taken from `base`.
    pub fn size_or(&self, base: MachineSize) -> MachineSize {
        MachineSize {
            cpus: self.cpus.unwrap_or(base.cpus),
            memory_mib: self.memory.as_ref().map_or(base.memory_mib, |m| m.mib()),
        }
    }

    /// The size of a machine to bake: what `vm:` says, else [`Self::DEFAULT_CPUS`] and
    /// [`Self::DEFAULT_MEMORY_MIB`].
    pub fn size_or_default(&self) -> MachineSize {
        self.size_or(MachineSize {
            cpus: Self::DEFAULT_CPUS,
            memory_mib: Self::DEFAULT_MEMORY_MIB,
        })
    }
}

fn cpus<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    struct Cpus(u32);
    impl<'de> Deserialize<'de> for Cpus {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(CpusVisitor)
        }
    }
    struct CpusVisitor;
    impl Visitor<'_> for CpusVisitor {
        type Value = Cpus;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(
                f,
                "a number of cpus from {} to {}",
                CPUS.start(),
                CPUS.end()
            )
        }
        fn visit_u64<E: de::Error>(self, count: u64) -> Result<Cpus, E> {
            match u32::try_from(count) {
                Ok(count) if CPUS.contains(&count) => Ok(Cpus(count)),
                _ => Err(out_of_range(count)),
            }
        }
        fn visit_i64<E: de::Error>(self, count: i64) -> Result<Cpus, E> {
            let count = u64::try_from(count).map_err(|_| out_of_range(count))?;
            self.visit_u64(count)
        }
    }
    fn out_of_range<E: de::Error>(count: impl fmt::Display) -> E {
        E::custom(format!(
            "invalid cpu count `{count}`: expected {} to {}",
            CPUS.start(),
            CPUS.end()
        ))
    }
    Ok(Option::<Cpus>::deserialize(deserializer)?.map(|cpus| cpus.0))
}
