//! `image:`: where runs and bakes get their disk from.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::sha256::Sha256;

/// A baked image name, a local path, an http(s) URL or `debian:<suite>`, optionally pinned by
/// its sha256. In YAML either a string or `{source: ..., sha256: ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageSpec {
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Sha256>,
}

impl FromStr for ImageSpec {
    type Err = String;

    /// The string form, as `--image` takes it.
    fn from_str(source: &str) -> Result<Self, String> {
        check_source(source)?;
        Ok(ImageSpec {
            source: source.to_owned(),
            sha256: None,
        })
    }
}

fn check_source(source: &str) -> Result<(), String> {
    let url_scheme = source.split_once("://").map(|(scheme, _)| scheme);
    let ok = match (url_scheme, source.strip_prefix("debian:")) {
        (Some(scheme), _) => scheme == "http" || scheme == "https",
        (None, Some(suite)) => {
            !suite.is_empty()
                && suite
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        }
        (None, None) => !source.trim().is_empty(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid image `{source}`: expected a baked image name, a local path, \
             an http(s) URL or debian:<suite>"
        ))
    }
}

impl<'de> Deserialize<'de> for ImageSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ImageVisitor)
    }
}

struct ImageVisitor;

impl<'de> Visitor<'de> for ImageVisitor {
    type Value = ImageSpec;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "an image name, path, URL or debian:<suite>, or a mapping with source and sha256",
        )
    }

    fn visit_str<E: de::Error>(self, source: &str) -> Result<ImageSpec, E> {
        source.parse().map_err(E::custom)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ImageSpec, A::Error> {
        let pinned = PinnedImage::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(ImageSpec {
            source: pinned.source.0,
            sha256: pinned.sha256,
        })
    }
}

/// The mapping form; its fields are checked one by one so each error points at its value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinnedImage {
    source: Source,
    #[serde(default)]
    sha256: Option<Sha256>,
}

checked_string!(
    Source,
    check_source,
    "an image name, path, URL or debian:<suite>"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_sources_cover_every_kind() {
        for source in [
            "base",
            "./disk.qcow2",
            "/var/x.img",
            "https://h/x.qcow2",
            "http://h/x",
            "debian:bookworm",
        ] {
            let spec: ImageSpec = source.parse().unwrap();
            assert_eq!(
                spec,
                ImageSpec {
                    source: source.into(),
                    sha256: None
                }
            );
        }
    }

    #[test]
    fn rejects_other_schemes_empty_names_and_suites() {
        for source in ["", " ", "ftp://h/x", "debian:", "debian:Bookworm"] {
            let err = source.parse::<ImageSpec>().unwrap_err();
            assert!(
                err.starts_with(&format!("invalid image `{source}`")),
                "{err}"
            );
        }
    }
}
