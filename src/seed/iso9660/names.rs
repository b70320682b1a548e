//! File names: which ones an image accepts, and the ISO 9660 level-1 identifiers
//! (`USER_DAT.;1`) the primary volume records for them. The real name travels in Rock Ridge NM
//! and in the Joliet tree.

use std::collections::HashSet;

use crate::seed::Error;

/// Longest accepted name, in UTF-8 bytes: small enough that the Rock Ridge entries of a record
/// never need a continuation area, and that the Joliet name stays within 64 UCS-2 characters.
pub(super) const MAX_NAME_BYTES: usize = 64;

/// Checks that `name` can be stored as a file in the root directory of every tree.
pub(super) fn validate(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name == "." || name == ".." {
        "it names a directory"
    } else if name.len() > MAX_NAME_BYTES {
        "it is longer than 64 bytes"
    } else if name
        .chars()
        .any(|c| c.is_control() || "/\\*:;?".contains(c))
    {
        "it contains a control character or one of / \\ * : ; ?"
    } else if name.chars().any(|c| u32::from(c) > 0xFFFF) {
        "it contains a character outside the Basic Multilingual Plane (Joliet is UCS-2)"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// A level-1 file identifier: up to 8 d-characters, a dot, up to 3 d-characters, `;1`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct PrimaryName {
    // Field order is the ECMA-119 9.3 sort order: name, then extension, each as if padded
    // with spaces, which sort below every d-character.
    base: String,
    extension: String,
}

impl PrimaryName {
    /// The identifier as recorded, e.g. `USER_DAT.;1`.
    pub(super) fn identifier(&self) -> Vec<u8> {
        format!("{}.{};1", self.base, self.extension).into_bytes()
    }
}

/// One unique level-1 identifier per name, in the order given.
pub(super) fn primary_names<'n>(names: impl IntoIterator<Item = &'n str>) -> Vec<PrimaryName> {
    let mut taken = HashSet::new();
    names
        .into_iter()
        .map(|name| {
            let (base, extension) = match name.rsplit_once('.') {
                Some((base, ext)) if !ext.is_empty() => {
                    (d_characters(base, 8), d_characters(ext, 3))
                }
                _ => (d_characters(name, 8), String::new()),
            };
            let mut candidate = PrimaryName {
                base: base.clone(),
                extension,
            };
            let mut n = 0u32;
            while taken.contains(&candidate) {
                n += 1;
                let suffix = n.to_string();
                candidate.base = format!("{}{suffix}", &base[..base.len().min(8 - suffix.len())]);
            }
            taken.insert(candidate.clone());
            candidate
        })
        .collect()
}

/// `text` mapped to at most `max` d-characters (A-Z, 0-9, _).
fn d_characters(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(names: &[&str]) -> Vec<String> {
        primary_names(names.iter().copied())
            .iter()
            .map(|p| String::from_utf8(p.identifier()).unwrap())
            .collect()
    }

    #[test]
    fn nocloud_names() {
        assert_eq!(
            ids(&["user-data", "meta-data", "network-config", "vendor-data"]),
            ["USER_DAT.;1", "META_DAT.;1", "NETWORK_.;1", "VENDOR_D.;1"]
        );
    }

    #[test]
    fn extensions_and_collisions() {
        assert_eq!(
            ids(&[
                "a.tar.gz",
                "user-data",
                "user-data2",
                "user_dat",
                ".profile",
                "x.",
                "a-",
                "a_",
                "a+"
            ]),
            [
                "A_TAR.GZ;1",
                "USER_DAT.;1",
                "USER_DA1.;1",
                "USER_DA2.;1",
                ".PRO;1",
                "X_.;1",
                "A_.;1",
                "A_1.;1",
                "A_2.;1"
            ]
        );
    }

    #[test]
    fn rejected_names_say_why() {
        for bad in ["", ".", "..", "a/b", "a;1", "tab\t", "\u{1F600}"] {
            let err = validate(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("`{bad}`")), "{err}");
        }
        assert!(validate(&"a".repeat(65)).is_err());
        assert!(validate(&"a".repeat(64)).is_ok());
        assert!(validate("network-config").is_ok());
    }

    proptest! {
        #[test]
        fn identifiers_are_unique_level_1(
            names in prop::collection::hash_set("[a-z0-9.-]{1,20}", 1..300)
        ) {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let primary = primary_names(names.iter().copied());
            let distinct: HashSet<_> = primary.iter().collect();
            prop_assert_eq!(distinct.len(), names.len());
            for p in &primary {
                prop_assert!(p.base.len() <= 8 && p.extension.len() <= 3);
                prop_assert!(!(p.base.is_empty() && p.extension.is_empty()));
                let d = |s: &str| {
                    s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                };
                prop_assert!(d(&p.base) && d(&p.extension));
            }
        }
    }
}
