//! Where an import reads from, and the copying of each file out of it into staging: exactly
//! the size the header gives, hashed as it goes, zeros skipped so disks stay sparse.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use super::error::{Error, Fault};
use super::format::{FileEntry, Reading, from_stream};
use crate::events::{Event, Sink};
use crate::path_error::PathError;
use crate::sha256::Sha256;

/// How much is read and written at a time.
pub const CHUNK: usize = 1 << 20;

/// A file or standard input (`-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin,
    File(PathBuf),
}

impl Input {
    pub fn parse(arg: &Path) -> Input {
        match arg.as_os_str() == "-" {
            true => Input::Stdin,
            false => Input::File(arg.to_owned()),
        }
    }

    /// How messages name it.
    pub fn label(&self) -> String {
        match self {
            Input::Stdin => "standard input".into(),
            Input::File(path) => format!("`{}`", path.display()),
        }
    }

    pub fn open(&self) -> Result<Box<dyn Read>, Error> {
        match self {
            Input::Stdin => Ok(Box::new(io::stdin().lock())),
            Input::File(path) => File::open(path)
                .map(|f| Box::new(f) as Box<dyn Read>)
                .map_err(|source| Error::Read {
                    file: self.label(),
                    source,
                }),
        }
    }

    /// The error for a failed read of the export.
    pub fn error(&self, reading: Reading) -> Error {
        match reading {
            Reading::Fault(fault) => self.fault(fault),
            Reading::Io(source) => Error::Read {
                file: self.label(),
                source,
            },
        }
    }

    pub fn fault(&self, fault: Fault) -> Error {
        Error::Invalid {
            file: self.label(),
            fault,
        }
    }
}

/// Copies `entry` out of `input` into a new file `dir/entry.name` (never an existing file or
/// a link) and checks its digest. Which file and what is wrong is in the error.
pub fn copy_member(
    input: &mut impl Read,
    source: &Input,
    entry: &FileEntry,
    dir: &Path,
    sink: Sink,
) -> Result<(), Error> {
    let path = dir.join(entry.name.name());
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(entry.name.mode())
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(PathError::at("create", &path))?;
    let write_error = |e| PathError::at("write", &path)(e);
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < entry.size {
        let want = (entry.size - done).min(CHUNK as u64) as usize;
        let n = match input.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(source.fault(Fault::CutShort {
                    what: format!(
                        "it ends inside `{}`, after {done} of its {} bytes",
                        entry.name, entry.size
                    ),
                }));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(source.error(from_stream(e))),
        };
        let chunk = &buf[..n];
        hasher.update(chunk);
        if chunk.iter().all(|&b| b == 0) {
            out.seek(SeekFrom::Current(n as i64)).map_err(write_error)?;
        } else {
            out.write_all(chunk).map_err(write_error)?;
        }
        done += n as u64;
        sink(Event::Bytes {
            done,
            total: Some(entry.size),
        });
    }
    out.set_len(entry.size)
        .and_then(|()| out.sync_all())
        .map_err(write_error)?;
    let actual = Sha256::finish(hasher);
    if actual != entry.sha256 {
        return Err(source.fault(Fault::Digest {
            member: entry.name.name(),
            expected: entry.sha256,
            actual,
        }));
    }
    Ok(())
}

/// Checks that nothing follows the last file.
pub fn expect_end(input: &mut impl Read, source: &Input) -> Result<(), Error> {
    let mut byte = [0u8; 1];
    loop {
        return match input.read(&mut byte) {
            Ok(0) => Ok(()),
            Ok(_) => Err(source.fault(Fault::Damaged {
                what: "there are bytes after its last file".into(),
            })),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(source.error(from_stream(e))),
        };
    }
}
