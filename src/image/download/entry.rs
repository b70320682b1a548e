//! One URL's place in the source cache, `url-<key16>/`:
//!
//! - `image` and `image.sha256`: the finished download and its verified digest. The digest
//!   file is written last, so its presence is what makes the entry complete.
//! - `image.part` and `image.part.validator`: an unfinished download and the ETag or
//!   Last-Modified it came with, so a resume can tell whether the file changed meanwhile.
//! - `lock`: held by the one process downloading; never deleted, since unlinking a lock file
//!   lets a waiter and a newcomer hold two different locks.

use crate::path_error::PathError;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::Digest;

use super::{Error, Fetched};
use crate::atomic_file;
use crate::events::{Event, Sink};
use crate::lock_file::LockFile;
use crate::sha256::Sha256;

pub(super) struct Entry {
    dir: PathBuf,
}

impl Entry {
    /// The entry for `url` verified against `expected`: a different expected digest is a
    /// different entry, so a corrected digest never meets a file kept for a wrong one.
    pub fn new(cache_dir: &Path, url: &str, expected: Option<Sha256>) -> Entry {
        Entry {
            dir: cache_dir.join(format!("url-{}", key(url, expected))),
        }
    }

    pub fn image(&self) -> PathBuf {
        self.dir.join("image")
    }

    pub fn part(&self) -> PathBuf {
        self.dir.join("image.part")
    }

    fn digest_file(&self) -> PathBuf {
        self.dir.join("image.sha256")
    }

    fn validator_file(&self) -> PathBuf {
        self.dir.join("image.part.validator")
    }

    /// The finished download, if there is one.
    pub fn complete(&self) -> Option<Fetched> {
        let sha256 = fs::read_to_string(self.digest_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let path = self.image();
        path.is_file().then_some(Fetched { path, sha256 })
    }

    /// Creates the entry's directory and takes its lock, waiting (and saying so) while
    /// another process holds it. The lock lasts as long as the returned guard lives.
    pub fn lock(&self, url: &str, sink: Sink) -> Result<LockFile, Error> {
        fs::create_dir_all(&self.dir).map_err(PathError::at("create", &self.dir))?;
        Ok(LockFile::acquire(&self.dir.join("lock"), || {
            sink(Event::Notice(format!(
                "waiting for another vmrun downloading {url}"
            )))
        })?)
    }

    /// Length of the unfinished download (0 when there is none).
    pub fn part_len(&self) -> Result<u64, Error> {
        let part = self.part();
        match fs::metadata(&part) {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(source) => Err(PathError::at("read", &part)(source).into()),
        }
    }

    /// The ETag or Last-Modified the unfinished download came with.
    pub fn validator(&self) -> Option<String> {
        let value = fs::read_to_string(self.validator_file()).ok()?;
        Some(value.trim().to_owned()).filter(|v| !v.is_empty())
    }

    pub fn set_validator(&self, validator: Option<&str>) -> Result<(), Error> {
        let path = self.validator_file();
        match validator {
            Some(value) => Ok(fs::write(&path, value).map_err(PathError::at("write", &path))?),
            None => remove(&path),
        }
    }

    /// Forgets the unfinished download.
    pub fn discard_part(&self) -> Result<(), Error> {
        remove(&self.part())?;
        remove(&self.validator_file())
    }

    /// Turns the verified part into the finished image, then marks the entry complete.
    pub fn commit(&self, sha256: Sha256) -> Result<Fetched, Error> {
        let (part, image) = (self.part(), self.image());
        fs::rename(&part, &image).map_err(PathError::at("rename", &part))?;
        remove(&self.validator_file())?;
        atomic_file::write(&self.digest_file(), format!("{sha256}\n").as_bytes())?;
        Ok(Fetched {
            path: image,
            sha256,
        })
    }
}

/// 16 hex digits of sha256(url, NUL, expected digest in lowercase hex or nothing).
fn key(url: &str, expected: Option<Sha256>) -> String {
    let mut hasher = sha2::Sha256::new();
    hasher.update(url.as_bytes());
    hasher.update([0]);
    hasher.update(expected.map(|e| e.to_string()).unwrap_or_default());
    let mut key = crate::hex::encode(&hasher.finalize());
    key.truncate(16);
    key
}

fn remove(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(PathError::at("remove", path)(e).into())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn digest() -> Sha256 {
        DIGEST.parse().unwrap()
    }

    #[test]
    fn key_depends_on_url_and_expected_digest() {
        let plain = key("https://example.org/a.img", None);
        assert_eq!(plain.len(), 16);
        assert!(plain.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(plain, key("https://example.org/a.img", None));
        assert_ne!(plain, key("https://example.org/b.img", None));
        assert_ne!(plain, key("https://example.org/a.img", Some(digest())));
        // The NUL keeps "url + digest" from colliding with a longer URL.
        assert_ne!(key(&format!("a{DIGEST}"), None), key("a", Some(digest())));
        // Entries downloaded by earlier versions keep their keys: the digest is hashed as
        // lowercase hex, however the user wrote it.
        let upper = DIGEST.to_ascii_uppercase().parse().unwrap();
        assert_eq!(
            key("https://example.org/a.img", Some(upper)),
            "17751f30b6e51059"
        );
    }

    #[test]
    fn entry_is_complete_only_with_image_and_valid_digest() {
        let dir = tempfile::tempdir().unwrap();
        let entry = Entry::new(dir.path(), "http://h/x", None);
        let sink = |_: Event| {};
        let _lock = entry.lock("http://h/x", &sink).unwrap();
        assert!(entry.complete().is_none());

        fs::write(entry.part(), b"data").unwrap();
        entry.set_validator(Some("\"v1\"")).unwrap();
        assert_eq!(entry.part_len().unwrap(), 4);
        assert_eq!(entry.validator().as_deref(), Some("\"v1\""));
        assert!(entry.complete().is_none());

        let fetched = entry.commit(digest()).unwrap();
        assert_eq!(fetched.path, entry.image());
        assert_eq!(fs::read(&fetched.path).unwrap(), b"data");
        assert_eq!(entry.part_len().unwrap(), 0);
        assert_eq!(entry.validator(), None);
        let found = entry.complete().unwrap();
        assert_eq!((found.path, found.sha256), (fetched.path, digest()));

        fs::write(entry.digest_file(), "not a digest\n").unwrap();
        assert!(entry.complete().is_none());
    }

    #[test]
    fn discarding_a_missing_part_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let entry = Entry::new(dir.path(), "http://h/x", None);
        entry.discard_part().unwrap();
    }
}
