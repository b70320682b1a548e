//! `vmrun.yaml`: parsed and validated once, here, into [`Config`]; the rest of vmrun never
//! re-checks what it holds.
//!
//! Every value is validated inside its own `Deserialize` impl, so that yaml_serde attaches the
//! location of the value at fault (and its dotted key path) to the error; [`Error::Invalid`]
//! turns that into a miette report pointing at the file, line and column.

/// Declares a private string newtype whose `Deserialize` runs `check` (`&str -> Result<(),
/// String>`) inside the visitor, where yaml_serde still knows the value's location; a check
/// that ran after deserializing would be reported at the enclosing mapping instead.
macro_rules! checked_string {
    ($name:ident, $check:path, $expecting:literal) => {
        #[derive(PartialEq, Eq, PartialOrd, Ord)]
        struct $name(String);

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D>(deserializer: D) -> Result<Self, D::Error>
            where
                D: ::serde::Deserializer<'de>,
            {
                struct V;
                impl ::serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut ::std::fmt::Formatter) -> ::std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: ::serde::de::Error>(self, value: &str) -> Result<$name, E> {
                        $check(value).map_err(E::custom)?;
                        Ok($name(value.to_owned()))
                    }
                }
                deserializer.deserialize_str(V)
            }
        }
    };
}

mod bake;
mod command;
mod duration;
mod image;
mod size;
mod test_section;
mod vm;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use miette::{NamedSource, SourceSpan};
use serde::{Deserialize, Deserializer, Serialize};

pub use bake::{BakeConfig, BakeFile};
pub use command::Command;
pub use duration::parse_duration;
pub use image::ImageSpec;
pub use size::{ByteSize, MemorySize};
pub use test_section::{DEFAULT_ARTIFACTS_MAX_SIZE, SyncConfig, TestConfig};
pub use vm::{CPUS, VmConfig};

use crate::exit_code;

/// The file `vmrun test` and `vmrun bake` look for in the current directory.
pub const FILE_NAME: &str = "vmrun.yaml";

/// The whole of `vmrun.yaml`. Every section is optional; `Config::default()` is an empty file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSpec>,
    #[serde(default, deserialize_with = "or_default")]
    pub vm: VmConfig,
    #[serde(default, deserialize_with = "or_default")]
    pub bake: BakeConfig,
    #[serde(default, deserialize_with = "or_default")]
    pub test: TestConfig,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error("cannot read {}", path.display())]
    #[diagnostic(code(vmrun::config::read))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Broken YAML, a wrong type, an unknown key or a value that fails validation.
    #[error("{message}")]
    #[diagnostic(code(vmrun::config::invalid))]
    Invalid {
        message: String,
        #[source_code]
        source_code: NamedSource<String>,
        #[label("here")]
        span: Option<SourceSpan>,
    },
}

impl Error {
    /// Every configuration failure is about the user's input.
    pub fn exit_code(&self) -> u8 {
        exit_code::BAD_INPUT
    }

    fn invalid(error: &yaml_serde::Error, text: &str, origin: &Path) -> Error {
        let span = error
            .location()
            .map(|location| token_span(text, location.index()));
        Error::Invalid {
            message: without_positions(&error.to_string()),
            source_code: NamedSource::new(origin.display().to_string(), text.to_owned()),
            span,
        }
    }
}

/// Parses `text`, the contents of the file at `origin` (which names the file in errors).
pub fn parse(text: &str, origin: &Path) -> Result<Config, Error> {
    yaml_serde::from_str(text).map_err(|error| Error::invalid(&error, text, origin))
}

/// Reads and parses the file at `path`.
pub fn load(path: &Path) -> Result<Config, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// The configuration for a command run in `cwd`: the `explicit` file (`--config`, relative to
/// `cwd`), which must exist; else `cwd/vmrun.yaml` if there is one; else an empty config.
pub fn load_default(explicit: Option<&Path>, cwd: &Path) -> Result<Config, Error> {
    if let Some(path) = explicit {
        return load(&cwd.join(path));
    }
    let path = cwd.join(FILE_NAME);
    if path.exists() {
        load(&path)
    } else {
        Ok(Config::default())
    }
}

/// For sections and lists: a key with no value (`vm:` with everything under it commented out)
/// means the same as a missing key.
fn or_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// yaml_serde's message without the " at line L column C" it appends: the report's label shows
/// the position instead.
fn without_positions(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(" at ") {
        out.push_str(&rest[..at]);
        let after = &rest[at + " at ".len()..];
        match position_len(after) {
            Some(len) => rest = &after[len..],
            None => {
                out.push_str(" at ");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The length of a leading "line L column C" or "position N", if `text` starts with one.
fn position_len(text: &str) -> Option<usize> {
    fn digits(text: &str) -> usize {
        text.bytes().take_while(u8::is_ascii_digit).count()
    }
    fn number_after<'a>(text: &'a str, word: &str) -> Option<&'a str> {
        let rest = text.strip_prefix(word)?;
        let n = digits(rest);
        (n > 0).then(|| &rest[n..])
    }
    let rest = match number_after(text, "line ") {
        Some(rest) => number_after(rest, " column ")?,
        None => number_after(text, "position ")?,
    };
    Some(text.len() - rest.len())
}

/// The span of the token starting at byte `index`: a quoted scalar up to its closing quote, a
/// plain scalar or key up to the next separator, a single `{` or `[`.
fn token_span(text: &str, index: usize) -> SourceSpan {
    let mut start = index.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let rest = &text[start..];
    let len = match rest.chars().next() {
        None => 0,
        Some('{' | '[') => 1,
        Some(quote @ ('"' | '\'')) => rest[1..]
            .find(quote)
            .map_or_else(|| line_len(rest), |end| end + 2),
        Some(_) => {
            let line = &rest[..line_len(rest)];
            line.char_indices()
                .find(|&(i, c)| {
                    let followed_by_space =
                        || line[i + 1..].chars().next().is_none_or(char::is_whitespace);
                    let after_space = || line[..i].ends_with(char::is_whitespace);
                    matches!(c, ',' | ']' | '}')
                        || (c == ':' && followed_by_space())
                        || (c == '#' && after_space())
                })
                .map_or(line.len(), |(i, _)| i)
                .min(line.trim_end().len())
        }
    };
    SourceSpan::new(start.into(), len)
}

fn line_len(text: &str) -> usize {
    text.find(['\n', '\r']).unwrap_or(text.len())
}
