//! Where a bake starts from: a local qcow2/raw file, an http(s) URL, or `debian:bookworm`
//! built here. Each becomes a file in vmrun's sources directory, identified by a digest, that
//! baked images use as their backing file and that nothing ever writes to.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::atomic_file::{self, Existing, NewFile};
use crate::disk::{self, DiskFormat};
use crate::events::{Event, Sink, phase};
use crate::image::debian::{self, DebianImage};
use crate::image::download;
use crate::path_error::PathError;
use crate::sha256::Sha256;

/// Where Debian images built here are kept, in the sources directory.
const DEBIAN_DIR: &str = "debian";

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error("`debian:{0}` is not a suite vmrun builds")]
    #[diagnostic(help("use debian:bookworm"))]
    UnsupportedSuite(String),
    #[error("`{}` has a backing file; vmrun needs a standalone image", path.display())]
    #[diagnostic(help("flatten it first: qemu-img convert -O qcow2 {} flat.qcow2", path.display()))]
    HasBacking { path: PathBuf },
    #[error("`{}` has sha256 {actual}, not the expected {expected}", path.display())]
    DigestMismatch {
        path: PathBuf,
        expected: Sha256,
        actual: Sha256,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Io(#[from] PathError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Disk(#[from] disk::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Debian(#[from] debian::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Download(#[from] download::Error),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        use crate::exit_code::{BAD_INPUT, IMAGE_FAILED, INTERNAL};
        match self {
            Error::UnsupportedSuite(_)
            | Error::HasBacking { .. }
            | Error::DigestMismatch { .. } => BAD_INPUT,
            Error::Io(_) => INTERNAL,
            Error::Disk(e) => e.exit_code(),
            Error::Debian(_) => IMAGE_FAILED,
            Error::Download(e) => e.exit_code(),
        }
    }
}

/// An image source as the user named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    Debian(String),
    Url {
        url: String,
        sha256: Option<Sha256>,
    },
    File {
        path: PathBuf,
        sha256: Option<Sha256>,
    },
}

/// A source ready to use: a file vmrun owns, and the digest that identifies its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSource {
    pub path: PathBuf,
    pub digest: String,
}

impl ImageSource {
    /// `debian:SUITE`, an http(s) URL, or a path; `sha256` is the expected digest, if given.
    pub fn parse(spec: &str, sha256: Option<Sha256>) -> Result<ImageSource, Error> {
        if let Some(suite) = spec.strip_prefix("debian:") {
            if suite != "bookworm" {
                return Err(Error::UnsupportedSuite(suite.to_owned()));
            }
            return Ok(ImageSource::Debian(suite.to_owned()));
        }
        if spec.starts_with("http://") || spec.starts_with("https://") {
            return Ok(ImageSource::Url {
                url: spec.to_owned(),
                sha256,
            });
        }
        Ok(ImageSource::File {
            path: PathBuf::from(spec),
            sha256,
        })
    }

    /// The name a baked image gets when the user gives none.
    pub fn default_name(&self) -> String {
        let stem = match self {
            ImageSource::Debian(suite) => return format!("debian-{suite}"),
            ImageSource::Url { url, .. } => url.rsplit('/').next().unwrap_or_default().to_owned(),
            ImageSource::File { path, .. } => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let stem = stem.split('.').next().unwrap_or_default();
        let name: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        if name.is_empty() {
            "image".to_owned()
        } else {
            name
        }
    }

    /// How the source is shown in `vmrun images`.
    pub fn describe(&self) -> String {
        match self {
            ImageSource::Debian(suite) => format!("debian:{suite}"),
            ImageSource::Url { url, .. } => url.clone(),
            ImageSource::File { path, .. } => path.display().to_string(),
        }
    }

    /// Removes what materializing by killed vmruns left in `sources_dir`; their names.
    pub fn reap(sources_dir: &Path) -> Vec<String> {
        DebianImage::reap(&sources_dir.join(DEBIAN_DIR))
    }

    /// Fetches, builds or imports the source into `sources_dir`; cheap when already there.
    pub fn materialize(&self, sources_dir: &Path, sink: Sink) -> Result<LocalSource, Error> {
        match self {
            ImageSource::Debian(_) => {
                let image = DebianImage::bookworm();
                let path = image.ensure_cached(&sources_dir.join(DEBIAN_DIR), sink)?;
                // Built here, yet read like any image from outside: every source vmrun bakes
                // from passes the same checks.
                check_standalone(&path)?;
                Ok(LocalSource {
                    path,
                    digest: format!("debian-builder:{}", image.cache_key()),
                })
            }
            ImageSource::Url { url, sha256 } => {
                let fetched = download::fetch(url, *sha256, &sources_dir.join("downloads"), sink)?;
                check_standalone(&fetched.path)?;
                Ok(LocalSource {
                    path: fetched.path,
                    digest: fetched.sha256.to_string(),
                })
            }
            ImageSource::File { path, sha256 } => {
                import_file(path, *sha256, &sources_dir.join("files"), sink)
            }
        }
    }
}

/// A qcow2 or raw image with no backing file: anything else cannot be a bake's base.
fn check_standalone(path: &Path) -> Result<DiskFormat, Error> {
    let format = disk::sniff(path)?;
    if let DiskFormat::Qcow2 {
        backing: Some(_), ..
    } = format
    {
        return Err(Error::HasBacking {
            path: path.to_owned(),
        });
    }
    Ok(format)
}

/// Copies a local image into `dir` under its digest, hashing while copying. The digest of a
/// file is remembered by its identity (device, inode, size, mtime), so importing the same
/// unchanged file again reads nothing.
fn import_file(
    path: &Path,
    expected: Option<Sha256>,
    dir: &Path,
    sink: Sink,
) -> Result<LocalSource, Error> {
    let format = check_standalone(path)?;
    fs::create_dir_all(dir).map_err(PathError::at("create", dir))?;
    let meta = fs::metadata(path).map_err(PathError::at("read", path))?;
    let identity = format!(
        "{} {} {} {}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000
    );
    let memo = dir.join(format!("{}.digest", Sha256::of(identity)));
    let remembered = fs::read_to_string(&memo)
        .ok()
        .and_then(|text| text.parse::<Sha256>().ok());
    if let Some(digest) = remembered {
        let imported = dir.join(format!("{digest}.{}", format.name()));
        if imported.exists() {
            check_expected(path, expected, digest)?;
            return Ok(LocalSource {
                path: imported,
                digest: digest.to_string(),
            });
        }
    }
    let digest = phase(sink, &format!("import {}", path.display()), || {
        let mut staging = NewFile::in_dir(dir)?;
        let digest = copy_hashing(path, staging.file(), sink)?;
        check_expected(path, expected, digest)?;
        let imported = dir.join(format!("{digest}.{}", format.name()));
        staging.commit(&imported, Existing::Replace)?;
        Ok::<_, Error>(digest)
    })?;
    atomic_file::write(&memo, digest.to_string().as_bytes())?;
    Ok(LocalSource {
        path: dir.join(format!("{digest}.{}", format.name())),
        digest: digest.to_string(),
    })
}

fn check_expected(path: &Path, expected: Option<Sha256>, actual: Sha256) -> Result<(), Error> {
    match expected {
        Some(expected) if expected != actual => Err(Error::DigestMismatch {
            path: path.to_owned(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

/// Copies `from` into `to` and returns the sha256 of the contents. Runs of zeros are skipped,
/// not written, so a sparse raw disk stays sparse.
fn copy_hashing(from: &Path, mut to: &File, sink: Sink) -> Result<Sha256, Error> {
    const CHUNK: usize = 1 << 20;
    let mut input = File::open(from).map_err(PathError::at("read", from))?;
    let total = input.metadata().map_err(PathError::at("read", from))?.len();
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    loop {
        let n = read_full(&mut input, &mut buf).map_err(PathError::at("read", from))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if buf[..n].iter().all(|&b| b == 0) {
            to.seek(SeekFrom::Current(n as i64))
                .map_err(PathError::at("write", from))?;
        } else {
            to.write_all(&buf[..n])
                .map_err(PathError::at("write", from))?;
        }
        done += n as u64;
        sink(Event::Bytes {
            done,
            total: Some(total),
        });
    }
    to.set_len(done).map_err(PathError::at("write", from))?;
    Ok(Sha256::finish(hasher))
}

fn read_full(input: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_kinds() {
        assert_eq!(
            ImageSource::parse("debian:bookworm", None).unwrap(),
            ImageSource::Debian("bookworm".into())
        );
        assert!(matches!(
            ImageSource::parse("debian:sid", None),
            Err(Error::UnsupportedSuite(s)) if s == "sid"
        ));
        assert_eq!(
            ImageSource::parse("https://h/x.qcow2", Some(Sha256::of("x"))).unwrap(),
            ImageSource::Url {
                url: "https://h/x.qcow2".into(),
                sha256: Some(Sha256::of("x"))
            }
        );
        assert_eq!(
            ImageSource::parse("./disk.img", None).unwrap(),
            ImageSource::File {
                path: "./disk.img".into(),
                sha256: None
            }
        );
    }

    #[test]
    fn default_names() {
        let name = |s: &str| ImageSource::parse(s, None).unwrap().default_name();
        assert_eq!(name("debian:bookworm"), "debian-bookworm");
        assert_eq!(
            name("https://cloud.example/jammy-server-cloudimg-amd64.img"),
            "jammy-server-cloudimg-amd64"
        );
        assert_eq!(name("/images/My Disk.qcow2"), "my-disk");
    }

    #[test]
    fn import_copies_once_keeps_sparseness_and_checks_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        let f = File::create(&raw).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"\x55\xaa", 510).unwrap();
        drop(f);
        let sources = dir.path().join("sources");
        let first = import_file(&raw, None, &sources, &|_| {}).unwrap();
        assert_eq!(fs::read(&first.path).unwrap(), fs::read(&raw).unwrap());
        assert!(
            fs::metadata(&first.path).unwrap().blocks() * 512 <= 2 << 20,
            "copy of 64 MiB with one non-zero MiB is sparse"
        );
        let events = std::sync::Mutex::new(0);
        // The digest as a user may paste it, in capitals: the same digest.
        let upper = first.digest.to_ascii_uppercase().parse().unwrap();
        let again = import_file(&raw, Some(upper), &sources, &|_| {
            *events.lock().unwrap() += 1
        })
        .unwrap();
        assert_eq!(again, first);
        assert_eq!(*events.lock().unwrap(), 0, "second import read nothing");
        let other = Sha256::of("other");
        let wrong = import_file(&raw, Some(other), &sources, &|_| {}).unwrap_err();
        assert!(
            wrong.to_string().ends_with(&format!(
                "has sha256 {}, not the expected {other}",
                first.digest
            )),
            "{wrong}"
        );
    }

    #[test]
    fn an_upper_case_digest_matches_on_the_first_import() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("disk.raw");
        let f = File::create(&raw).unwrap();
        f.set_len(1 << 20).unwrap();
        f.write_all_at(b"\x55\xaa", 510).unwrap();
        drop(f);
        let digest = Sha256::of(fs::read(&raw).unwrap());
        let upper = digest.to_string().to_ascii_uppercase().parse().unwrap();
        let source = ImageSource::parse(raw.to_str().unwrap(), Some(upper)).unwrap();
        let local = source
            .materialize(&dir.path().join("sources"), &|_| {})
            .unwrap();
        assert_eq!(local.digest, digest.to_string());
    }

    use std::os::unix::fs::FileExt;
}
