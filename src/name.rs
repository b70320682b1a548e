//! Names users give to images, VMs and snapshots: checked before anything is written,
//! because they become file names, systemd unit names and symlinks. A checked name is a type
//! ([`ImageName`], [`VmName`], [`SnapshotTag`]): the command line checks once, and the code it
//! hands the name to cannot be given an unchecked one, so it never checks again.

/// Longest name: leaves room in a unit name (`vmrun-NAME.service`) and socket paths.
const MAX_LEN: usize = 48;

#[derive(Debug, thiserror::Error, miette::Diagnostic, PartialEq)]
#[error("invalid {kind} name `{name}`: {reason}")]
#[diagnostic(help("use 1 to 48 letters, digits and '-', starting with a letter or digit"))]
pub struct InvalidName {
    pub kind: &'static str,
    pub name: String,
    pub reason: &'static str,
}

/// Checks `name` for a thing of `kind` ("image", "vm").
pub fn check(kind: &'static str, name: &str) -> Result<(), InvalidName> {
    let invalid = |reason| {
        Err(InvalidName {
            kind,
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("it is empty");
    }
    if name.len() > MAX_LEN {
        return invalid("it is longer than 48 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return invalid("it must start with a letter or digit");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return invalid("only letters, digits and '-' are allowed");
    }
    Ok(())
}

/// A name of `kind` that passed [`check`]; made only by `new`.
macro_rules! checked_name {
    ($(#[$doc:meta])* $type:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $type(String);

        impl $type {
            pub fn new(name: &str) -> Result<$type, InvalidName> {
                check($kind, name)?;
                Ok($type(name.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_name!(
    /// A persistent VM's name: its directories, unit and socket paths are made from it.
    VmName,
    "vm"
);
checked_name!(
    /// A baked image's name: a symlink in the store's names directory.
    ImageName,
    "image"
);
checked_name!(
    /// A snapshot's tag, as QEMU's `savevm` stores it in the VM's disk.
    SnapshotTag,
    "snapshot"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names() {
        for ok in ["base", "debian-bookworm", "Db2", "a", &"x".repeat(48)] {
            assert_eq!(check("image", ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_what_could_escape_a_path_or_unit() {
        for (bad, reason) in [
            ("", "it is empty"),
            ("-x", "it must start with a letter or digit"),
            ("../etc", "it must start with a letter or digit"),
            ("a/b", "only letters, digits and '-' are allowed"),
            ("a b", "only letters, digits and '-' are allowed"),
            ("a.service", "only letters, digits and '-' are allowed"),
            ("é", "it must start with a letter or digit"),
        ] {
            let err = check("vm", bad).unwrap_err();
            assert_eq!(err.reason, reason, "{bad}");
        }
        assert_eq!(
            check("vm", &"x".repeat(49)).unwrap_err().reason,
            "it is longer than 48 characters"
        );
    }

    #[test]
    fn checked_names_are_made_only_from_good_names() {
        assert_eq!(VmName::new("db").unwrap().as_str(), "db");
        assert_eq!(VmName::new("db").unwrap().to_string(), "db");
        let err = VmName::new("a/b").unwrap_err();
        assert_eq!((err.kind, err.name.as_str()), ("vm", "a/b"));
        assert_eq!(SnapshotTag::new("../s").unwrap_err().kind, "snapshot");
    }
}
