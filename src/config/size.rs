//! Sizes: a guest's memory (`vm.memory`, `--memory`) and byte limits
//! (`test.artifacts-max-size`). Both are a number with an optional binary unit; they differ in
//! what a bare number means.

use std::fmt;
use std::marker::PhantomData;
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
        let (number, unit) = number_and_unit(text).ok_or_else(invalid)?;
        let per_unit = match unit.as_str() {
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
        deserialize_parsed(deserializer, "a memory size like 512M or 2G")
    }
}

/// A number of bytes, e.g. a limit on what a run may copy back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize {
    bytes: u64,
}

impl ByteSize {
    pub const fn from_bytes(bytes: u64) -> ByteSize {
        ByteSize { bytes }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// Binary units, smallest first, with their one-letter forms.
const BYTE_UNITS: [(&str, &str, u32); 4] = [
    ("k", "kib", 10),
    ("m", "mib", 20),
    ("g", "gib", 30),
    ("t", "tib", 40),
];

impl FromStr for ByteSize {
    type Err = String;

    /// `500K`, `200M`, `1G`, `2GiB`, `1T`, or a number of bytes (bare or with `B`). Units are
    /// binary (`G` is GiB, as for `vm.memory`) and case-insensitive.
    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || {
            format!("invalid size `{text}`: expected a number of bytes or one with K, M, G or T")
        };
        let (number, unit) = number_and_unit(text).ok_or_else(invalid)?;
        let shift = match BYTE_UNITS
            .iter()
            .find(|(short, long, _)| unit == *short || unit == *long)
        {
            Some((_, _, shift)) => *shift,
            None if unit.is_empty() || unit == "b" => 0,
            None => return Err(invalid()),
        };
        let bytes = number.checked_mul(1 << shift).ok_or_else(invalid)?;
        Ok(ByteSize { bytes })
    }
}

/// The largest unit that divides the size exactly: `1GiB`, `1536MiB`, `1000B`.
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let exact = BYTE_UNITS
            .iter()
            .rev()
            .find(|(_, _, shift)| self.bytes != 0 && self.bytes.is_multiple_of(1 << shift));
        match exact {
            Some((short, _, shift)) => {
                write!(f, "{}{}iB", self.bytes >> shift, short.to_ascii_uppercase())
            }
            None => write!(f, "{}B", self.bytes),
        }
    }
}

/// As written in vmrun.yaml, so a serialized config reads back the same.
impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_parsed(deserializer, "a size like 500M or 1G")
    }
}

/// Leading digits as a number and the rest, lowercased; `None` without digits or when the
/// number does not fit.
fn number_and_unit(text: &str) -> Option<(u64, String)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    Some((number.parse().ok()?, unit.to_ascii_lowercase()))
}

/// Deserializes a `T` from its text form with `T::from_str`, inside the visitor, so that
/// yaml_serde reports a bad value at its own location.
fn deserialize_parsed<'de, D, T>(deserializer: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    struct ParsedVisitor<T>(&'static str, PhantomData<T>);
    impl<T: FromStr<Err = String>> Visitor<'_> for ParsedVisitor<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
            text.parse().map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, number: u64) -> Result<T, E> {
            self.visit_str(&number.to_string())
        }
    }
    // yaml_serde hands plain numbers to `visit_str` too; `visit_u64` is for other formats.
    deserializer.deserialize_str(ParsedVisitor(expecting, PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mib(text: &str) -> u64 {
        text.parse::<MemorySize>().unwrap().mib()
    }

    fn bytes(text: &str) -> u64 {
        text.parse::<ByteSize>().unwrap().bytes()
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

    #[test]
    fn byte_sizes_are_bytes_or_binary_units() {
        assert_eq!(bytes("0"), 0);
        assert_eq!(bytes("1000"), 1000);
        assert_eq!(bytes("500K"), 500 << 10);
        assert_eq!(bytes("500kib"), 500 << 10);
        assert_eq!(bytes("200M"), 200 << 20);
        assert_eq!(bytes("1G"), 1 << 30);
        assert_eq!(bytes("2GiB"), 2 << 30);
        assert_eq!(bytes("1t"), 1 << 40);
        for text in [
            "",
            "G",
            "1.5G",
            "1 G",
            "-1",
            "1GB",
            "1P",
            "20000000T",
            "99999999999999999999",
        ] {
            assert_eq!(
                text.parse::<ByteSize>().unwrap_err(),
                format!(
                    "invalid size `{text}`: expected a number of bytes or one with K, M, G or T"
                )
            );
        }
    }

    #[test]
    fn byte_sizes_display_in_their_largest_exact_unit_and_read_back() {
        for (text, shown) in [
            ("1G", "1GiB"),
            ("1536M", "1536MiB"),
            ("1000", "1000B"),
            ("0", "0B"),
            ("2T", "2TiB"),
        ] {
            let size: ByteSize = text.parse().unwrap();
            assert_eq!(size.to_string(), shown);
            assert_eq!(shown.parse::<ByteSize>().unwrap(), size);
        }
    }
}
