//! `test:`: what `vmrun test` runs and what it copies in and out.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::{ByteSize, Command, duration, or_default};
use crate::net::Network;

/// What a run may copy back when `test.artifacts-max-size` is not set: large enough for
/// test reports, coverage and logs; small enough that a runaway (or hostile) guest cannot
/// fill the host's disk.
pub const DEFAULT_ARTIFACTS_MAX_SIZE: ByteSize = ByteSize::from_bytes(1 << 30);

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestConfig {
    /// Run in the synced copy of the project; `vmrun test -- COMMAND` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Command>,
    /// Names match `[A-Za-z_][A-Za-z0-9_]*`.
    #[serde(default, deserialize_with = "env")]
    pub env: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "or_default")]
    pub sync: SyncConfig,
    /// Globs, relative to the project, copied back after the command.
    #[serde(default, deserialize_with = "or_default")]
    pub artifacts: Vec<String>,
    /// The most bytes of artifacts one run copies back, all files together.
    #[serde(
        rename = "artifacts-max-size",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub artifacts_max_size: Option<ByteSize>,
    /// More than zero.
    #[serde(
        default,
        deserialize_with = "duration::deserialize_option",
        serialize_with = "duration::serialize_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// What the guest may reach.
    #[serde(default)]
    pub network: Network,
}

impl TestConfig {
    pub fn artifacts_max_size_or_default(&self) -> ByteSize {
        self.artifacts_max_size
            .unwrap_or(DEFAULT_ARTIFACTS_MAX_SIZE)
    }
}

/// Which files of the project are copied into the guest (globs, relative to the project).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncConfig {
    #[serde(default, deserialize_with = "or_default")]
    pub include: Vec<String>,
    #[serde(default, deserialize_with = "or_default")]
    pub exclude: Vec<String>,
}

fn check_env_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let valid = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid environment variable name `{name}`: expected letters, digits and `_`, \
             not starting with a digit"
        ))
    }
}

checked_string!(EnvName, check_env_name, "an environment variable name");

fn env<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error> {
    let env: Option<BTreeMap<EnvName, String>> = Deserialize::deserialize(deserializer)?;
    Ok(env
        .into_iter()
        .flatten()
        .map(|(name, value)| (name.0, value))
        .collect())
}
