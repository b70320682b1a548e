//! Commands in `bake.run` and `test.command`.

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// A command for the guest: a string run by the guest's shell, or an argv run as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Command {
    Shell(String),
    /// Never empty.
    Argv(Vec<String>),
}

impl Command {
    /// The words the guest runs: a shell command line through `sh -c`.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Shell(line) => vec!["sh".to_owned(), "-c".to_owned(), line.clone()],
            Command::Argv(argv) => argv.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CommandVisitor)
    }
}

struct CommandVisitor;

impl<'de> Visitor<'de> for CommandVisitor {
    type Value = Command;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a shell command string or a list of arguments")
    }

    fn visit_str<E: de::Error>(self, line: &str) -> Result<Command, E> {
        if line.trim().is_empty() {
            return Err(E::custom("invalid command: the command string is empty"));
        }
        Ok(Command::Shell(line.to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Command, A::Error> {
        let mut argv = Vec::new();
        while let Some(arg) = seq.next_element::<String>()? {
            argv.push(arg);
        }
        if argv.is_empty() {
            return Err(de::Error::custom(
                "invalid command: the argument list is empty",
            ));
        }
        Ok(Command::Argv(argv))
    }
}
