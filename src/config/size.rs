//! Memory sizes: `vm.memory` and `--memory`.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A guest's memory, in MiB; at least [`MemorySize::MIN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemorySize {
    mib: u64,
}

impl MemorySize {
    /// Less than this and a Debian guest does not finish booting.
    pub const MIN: MemorySize = MemorySize { mib: 128 };

    pub fn mib(&self) -> u64 {
        self.mib
    }
}

impl FromStr for MemorySize {
    type Err = String;

    /// `512M`, `2G`, `2GiB`, `1536MiB`, or a bare number of MiB. `M` is MiB and `G` is GiB, as
    /// QEMU's `-m` takes them; units are case-insensitive.
    fn from_str(text: &str) -> Result<Self, String> {
        let invalid =
            || format!("invalid memory size `{text}`: expected a number with M, G, MiB or GiB");
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = text.split_at(digits);
        let number: u64 = number.parse().map_err(|_| invalid())?;
        let per_unit = match unit.to_ascii_lowercase().as_str() {
            "" | "m" | "mib" => 1,
            "g" | "gib" => 1024,
            _ => return Err(invalid()),
        };
        let mib = number.checked_mul(per_unit).ok_or_else(invalid)?;
        if mib < Self::MIN.mib {
            return Err(format!(
                "invalid memory size `{text}`: at least {} MiB",
                Self::MIN.mib
            ));
        }
        Ok(MemorySize { mib })
    }
}

impl fmt::Display for MemorySize {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.mib % 1024 {
            0 => write!(f, "{}GiB", self.mib / 1024),
            _ => write!(f, "{}MiB", self.mib),
        }
    }
}

/// A number of MiB: what a bare number means in vmrun.yaml.
impl Serialize for MemorySize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.mib)
    }
}

impl<'de> Deserialize<'de> for MemorySize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = MemorySize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a memory size like 512M or 2G")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<MemorySize, E> {
                text.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, mib: u64) -> Result<MemorySize, E> {
                self.visit_str(&mib.to_string())
            }
        }
        // yaml_serde hands plain numbers to `visit_str` too; `visit_u64` is for other formats.
        deserializer.deserialize_str(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mib(text: &str) -> u64 {
        text.parse::<MemorySize>().unwrap().mib()
    }

    #[test]
    fn units_and_bare_numbers() {
        assert_eq!(mib("512M"), 512);
        assert_eq!(mib("2G"), 2048);
        assert_eq!(mib("2GiB"), 2048);
        assert_eq!(mib("1536MiB"), 1536);
        assert_eq!(mib("1536"), 1536);
        assert_eq!(mib("4g"), 4096);
        assert_eq!(mib("128m"), 128);
    }

    #[test]
    fn rejects_unknown_units_and_malformed_numbers() {
        for text in [
            "12Q",
            "",
            "G",
            "1.5G",
            "2 G",
            "-1G",
            "2GB",
            "99999999999999999999G",
        ] {
            let err = text.parse::<MemorySize>().unwrap_err();
            assert_eq!(
                err,
                format!("invalid memory size `{text}`: expected a number with M, G, MiB or GiB")
            );
        }
    }

    #[test]
    fn rejects_less_than_the_minimum() {
        assert_eq!(
            "127M".parse::<MemorySize>().unwrap_err(),
            "invalid memory size `127M`: at least 128 MiB"
        );
        assert_eq!(mib("128"), 128);
    }

    #[test]
    fn displays_whole_gibibytes_as_gib() {
        assert_eq!("2048".parse::<MemorySize>().unwrap().to_string(), "2GiB");
        assert_eq!(
            "1536M".parse::<MemorySize>().unwrap().to_string(),
            "1536MiB"
        );
    }
}
