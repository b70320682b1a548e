//! SSH keys made for a bake with ssh-keygen: the guest's host key (pinned by every later
//! connection) and vmrun's client key for the run user.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::external::{self, ExternalError};
use crate::tools::{self, MissingTool};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error(transparent)]
    #[diagnostic(transparent)]
    MissingTool(#[from] MissingTool),
    #[error("ssh-keygen could not make {}", path.display())]
    Keygen {
        path: PathBuf,
        #[source]
        source: ExternalError,
    },
    #[error("cannot read the key {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An ed25519 key pair on disk: the private key file (0600, as ssh-keygen writes it) and
/// its public key line.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyPair {
    pub private_path: PathBuf,
    pub public_line: String,
}

impl KeyPair {
    /// Makes a new ed25519 key at `path` (and `path.pub`), without a passphrase.
    pub fn generate(path: &Path, comment: &str) -> Result<KeyPair, Error> {
        let keygen = tools::find("ssh-keygen")?;
        external::run(
            Command::new(keygen)
                .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(path),
        )
        .map_err(|source| Error::Keygen {
            path: path.to_owned(),
            source,
        })?;
        let mut public_path = path.as_os_str().to_owned();
        public_path.push(".pub");
        let public_path = PathBuf::from(public_path);
        let public = std::fs::read_to_string(&public_path).map_err(|source| Error::Read {
            path: public_path,
            source,
        })?;
        Ok(KeyPair {
            private_path: path.to_owned(),
            public_line: public.trim().to_owned(),
        })
    }

    pub fn private_key(&self) -> Result<String, Error> {
        std::fs::read_to_string(&self.private_path).map_err(|source| Error::Read {
            path: self.private_path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generates_a_private_key_only_its_owner_reads() {
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate(&dir.path().join("host_ed25519"), "vmrun host").unwrap();
        assert!(
            key.public_line.starts_with("ssh-ed25519 AAAA"),
            "{}",
            key.public_line
        );
        assert!(key.public_line.ends_with(" vmrun host"));
        assert!(
            key.private_key()
                .unwrap()
                .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")
        );
        let mode = std::fs::metadata(&key.private_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }
}
