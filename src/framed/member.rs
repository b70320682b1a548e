//! The files a framed file holds: each kind has a closed set of members, each with a fixed
//! name (its only place when written out), a mode and a largest size. A name that is not one
//! of them is refused, so a reader writes nowhere but those places.

use std::collections::HashSet;
use std::fmt::Display;
use std::hash::Hash;

use serde::de::{self, Deserialize, Deserializer};

use super::shown;
use crate::sha256::Sha256;

pub trait Member: Copy + Eq + Hash + Display + 'static {
    /// Its name in the file, and its path relative to the directory it is written to.
    fn name(self) -> &'static str;
    /// The mode it is written with.
    fn mode(self) -> u32;
    fn max_size(self) -> u64;
}

/// One file as the header lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry<M> {
    pub name: M,
    pub size: u64,
    pub sha256: Sha256,
}

/// Each member at most once and within its size; returns the members listed.
pub fn check_files<M: Member>(files: &[FileEntry<M>]) -> Result<HashSet<M>, String> {
    let mut seen = HashSet::new();
    for file in files {
        if !seen.insert(file.name) {
            return Err(format!("it lists `{}` twice", file.name));
        }
        if file.size > file.name.max_size() {
            return Err(format!(
                "`{}` is {} bytes, more than the {} it may be",
                file.name,
                file.size,
                file.name.max_size()
            ));
        }
    }
    Ok(seen)
}

/// A member by its name; any other name is refused as not a file `kind` ("an image export")
/// may hold.
pub fn deserialize_member<'de, D: Deserializer<'de>, M>(
    deserializer: D,
    from_name: fn(&str) -> Option<M>,
    kind: &str,
) -> Result<M, D::Error> {
    let name = String::deserialize(deserializer)?;
    from_name(&name).ok_or_else(|| {
        de::Error::custom(format!("`{}` is not a file {kind} may hold", shown(&name)))
    })
}

/// The size of the files together.
pub fn total_size<M>(files: &[FileEntry<M>]) -> u64 {
    files.iter().map(|f| f.size).fold(0, u64::saturating_add)
}

/// `Display`, `Serialize` and `Deserialize` of a member type by its `name()`, any other name
/// refused as not a file `$kind` ("an image export") may hold.
macro_rules! by_name {
    ($member:ty, $kind:literal) => {
        impl std::fmt::Display for $member {
            fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl serde::Serialize for $member {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $member {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                $crate::framed::deserialize_member(deserializer, <$member>::from_name, $kind)
            }
        }
    };
}
pub(crate) use by_name;
