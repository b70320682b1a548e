//! A sha256 digest: the one type for the digests vmrun computes (image contents, cache keys)
//! and the ones users pin (`--sha256`, `image.sha256`), so every digest is parsed, compared
//! and shown one way: 64 hex digits in, either case; lowercase out.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use sha2::Digest as _;

use crate::hex;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256([u8; 32]);

/// A value that is not a sha256 digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sha256 `{value}`: expected 64 hex digits")]
pub struct BadSha256 {
    pub value: String,
}

impl Sha256 {
    /// The digest of `bytes`.
    pub fn of(bytes: impl AsRef<[u8]>) -> Sha256 {
        Sha256::finish(sha2::Sha256::new_with_prefix(bytes))
    }

    /// The digest of what went into `hasher`.
    pub fn finish(hasher: sha2::Sha256) -> Sha256 {
        Sha256(hasher.finalize().into())
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl FromStr for Sha256 {
    type Err = BadSha256;

    fn from_str(value: &str) -> Result<Sha256, BadSha256> {
        hex::decode(value)
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .map(Sha256)
            .ok_or_else(|| BadSha256 {
                value: value.to_owned(),
            })
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

impl Serialize for Sha256 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DigestVisitor;
        impl Visitor<'_> for DigestVisitor {
            type Value = Sha256;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a sha256 of 64 hex digits")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Sha256, E> {
                value.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(DigestVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sha256("test").
    const TEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn computes_and_shows_lowercase() {
        assert_eq!(Sha256::of("test").to_string(), TEST);
        let mut hasher = sha2::Sha256::new();
        hasher.update("te");
        hasher.update("st");
        assert_eq!(Sha256::finish(hasher), Sha256::of(b"test"));
    }

    #[test]
    fn parses_either_case_as_the_same_digest() {
        let lower: Sha256 = TEST.parse().unwrap();
        let upper: Sha256 = TEST.to_ascii_uppercase().parse().unwrap();
        assert_eq!(lower, upper);
        assert_eq!(upper, Sha256::of("test"));
        assert_eq!(upper.to_string(), TEST);
    }

    #[test]
    fn anything_but_64_hex_digits_is_refused_by_name() {
        for bad in [
            "",
            "ABC",
            &TEST[1..],
            &format!("{TEST}0"),
            &format!("{}g", &TEST[1..]),
            &format!(" {}", &TEST[1..]),
            &format!("{TEST}\n"),
            &"é".repeat(32),
        ] {
            let err = bad.parse::<Sha256>().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid sha256 `{bad}`: expected 64 hex digits")
            );
        }
    }

    #[test]
    fn serde_is_the_string_form() {
        let json = serde_json::to_string(&Sha256::of("test")).unwrap();
        assert_eq!(json, format!("\"{TEST}\""));
        let upper = format!("\"{}\"", TEST.to_ascii_uppercase());
        assert_eq!(
            serde_json::from_str::<Sha256>(&upper).unwrap(),
            Sha256::of("test")
        );
        let err = serde_json::from_str::<Sha256>("\"ab\"").unwrap_err();
        assert!(err.to_string().starts_with("invalid sha256 `ab`"), "{err}");
        assert!(serde_json::from_str::<Sha256>("12").is_err());
    }
}
