//! `bake:`: how `vmrun bake` provisions an image.

use serde::{Deserialize, Serialize};

use super::{Command, or_default};

/// Serialized canonically (fixed field order, `user-data` in file order) into the bake's cache
/// key.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BakeConfig {
    /// Debian packages to install.
    #[serde(default, deserialize_with = "or_default")]
    pub packages: Vec<String>,
    /// Commands run in order, after the packages are installed and the files written.
    #[serde(default, deserialize_with = "or_default")]
    pub run: Vec<Command>,
    #[serde(default, deserialize_with = "or_default")]
    pub files: Vec<BakeFile>,
    /// Extra cloud-config, merged into what vmrun renders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<yaml_serde::Mapping>,
}

/// A file written into the image, as cloud-init's `write_files` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BakeFile {
    /// Absolute.
    #[serde(deserialize_with = "absolute_path")]
    pub path: String,
    #[serde(default)]
    pub content: String,
    /// 3 or 4 octal digits, as a string (`"0644"`).
    #[serde(
        default,
        deserialize_with = "permissions",
        skip_serializing_if = "Option::is_none"
    )]
    pub permissions: Option<String>,
    /// `user:group` or `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

fn check_absolute(path: &str) -> Result<(), String> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(format!("invalid path `{path}`: expected an absolute path"))
    }
}

fn check_permissions(mode: &str) -> Result<(), String> {
    if (3..=4).contains(&mode.len()) && mode.bytes().all(|b| matches!(b, b'0'..=b'7')) {
        Ok(())
    } else {
        Err(format!(
            "invalid permissions `{mode}`: expected 3 or 4 octal digits, like \"0644\""
        ))
    }
}

checked_string!(AbsolutePath, check_absolute, "an absolute path");
checked_string!(Permissions, check_permissions, "3 or 4 octal digits");

fn absolute_path<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(AbsolutePath::deserialize(deserializer)?.0)
}

fn permissions<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Ok(Option::<Permissions>::deserialize(deserializer)?.map(|mode| mode.0))
}
