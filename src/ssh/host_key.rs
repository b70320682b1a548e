//! The guest's pinned host key: parsed from its OpenSSH public key line, compared byte for
//! byte with the key the server shows in the handshake, and fingerprinted like
//! `ssh-keygen -l` for messages.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest, Sha256};

/// A public key in SSH wire format (the base64 part of a `.pub` line, decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    blob: Vec<u8>,
}

impl HostKey {
    /// Parses `TYPE BASE64 [COMMENT]`. The type named on the line must be the one inside the
    /// blob, so a line that was edited by hand cannot pass for another key type.
    pub fn parse_line(line: &str) -> Result<HostKey, String> {
        let mut fields = line.split_whitespace();
        let (Some(kind), Some(data)) = (fields.next(), fields.next()) else {
            return Err("expected `TYPE BASE64 [COMMENT]`".into());
        };
        let blob = STANDARD
            .decode(data)
            .map_err(|e| format!("the key is not base64: {e}"))?;
        let key = HostKey::from_blob(blob);
        match key.key_type() {
            Some(inner) if inner == kind => Ok(key),
            Some(inner) => Err(format!("the line says `{kind}` but the key is `{inner}`")),
            None => Err("the key blob is truncated".into()),
        }
    }

    pub fn from_blob(blob: Vec<u8>) -> HostKey {
        HostKey { blob }
    }

    /// The algorithm name at the start of the blob (`ssh-ed25519`, ...).
    pub fn key_type(&self) -> Option<&str> {
        let len = u32::from_be_bytes(self.blob.get(..4)?.try_into().ok()?) as usize;
        std::str::from_utf8(self.blob.get(4..4usize.checked_add(len)?)?).ok()
    }

    /// `SHA256:<base64 without padding>`, as `ssh-keygen -l` and ssh's own messages print it.
    pub fn fingerprint(&self) -> String {
        format!(
            "SHA256:{}",
            STANDARD_NO_PAD.encode(Sha256::digest(&self.blob))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn generate(dir: &std::path::Path, kind: &str) -> String {
        let path = dir.join(format!("key-{kind}"));
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-N", "", "-C", "a comment", "-f"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read_to_string(path.with_file_name(format!("key-{kind}.pub"))).unwrap()
    }

    #[test]
    fn fingerprint_matches_ssh_keygen() {
        let dir = tempfile::tempdir().unwrap();
        for kind in ["ed25519", "ecdsa", "rsa"] {
            let line = generate(dir.path(), kind);
            let out = Command::new("ssh-keygen")
                .arg("-lf")
                .arg(dir.path().join(format!("key-{kind}.pub")))
                .output()
                .unwrap();
            let expected = String::from_utf8(out.stdout)
                .unwrap()
                .split_whitespace()
                .nth(1)
                .unwrap()
                .to_owned();
            assert_eq!(
                HostKey::parse_line(&line).unwrap().fingerprint(),
                expected,
                "{kind}"
            );
        }
    }

    #[test]
    fn parsed_line_carries_its_type_and_compares_by_blob() {
        let dir = tempfile::tempdir().unwrap();
        let line = generate(dir.path(), "ed25519");
        let key = HostKey::parse_line(&line).unwrap();
        assert_eq!(key.key_type(), Some("ssh-ed25519"));
        let data = line.split_whitespace().nth(1).unwrap();
        assert_eq!(key, HostKey::from_blob(STANDARD.decode(data).unwrap()));
        // Without the comment, with other spacing: the same key.
        assert_eq!(
            HostKey::parse_line(&format!("  ssh-ed25519\t{data}\n")).unwrap(),
            key
        );
        let other =
            HostKey::parse_line(&generate(tempfile::tempdir().unwrap().path(), "ed25519")).unwrap();
        assert_ne!(key, other);
    }

    #[test]
    fn bad_lines_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let data = generate(dir.path(), "ed25519")
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_owned();
        assert!(HostKey::parse_line("").unwrap_err().contains("expected"));
        assert!(
            HostKey::parse_line("ssh-ed25519")
                .unwrap_err()
                .contains("expected")
        );
        assert!(
            HostKey::parse_line("ssh-ed25519 not*base64")
                .unwrap_err()
                .contains("base64")
        );
        assert_eq!(
            HostKey::parse_line(&format!("ssh-rsa {data}")).unwrap_err(),
            "the line says `ssh-rsa` but the key is `ssh-ed25519`"
        );
        assert_eq!(
            HostKey::parse_line("ssh-ed25519 AAAA").unwrap_err(),
            "the key blob is truncated"
        );
    }
}
