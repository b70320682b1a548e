//! Copying each file out of the decompressed stream: exactly the size the header gives,
//! hashed as it goes, zeros skipped so disks stay sparse; then checking nothing follows.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use sha2::Digest as _;

use super::{Fault, FileEntry, Member, Reading, from_stream};
use crate::events::{Event, Sink};
use crate::path_error::PathError;
use crate::sha256::Sha256;

/// How much is read and written at a time.
pub const CHUNK: usize = 1 << 20;

/// Copies `entry` out of `input` into a new file `dir/entry.name` (never an existing file or
/// a link) and checks its digest. Which file and what is wrong is in the error.
pub fn copy_member<M: Member>(
    input: &mut impl Read,
    entry: &FileEntry<M>,
    dir: &Path,
    sink: Sink,
) -> Result<(), Reading> {
    let path = dir.join(entry.name.name());
    let write_error = |e| Reading::Output(PathError::at("write", &path)(e));
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(entry.name.mode())
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| Reading::Output(PathError::at("create", &path)(e)))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < entry.size {
        let want = (entry.size - done).min(CHUNK as u64) as usize;
        let n = match input.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(Fault::CutShort {
                    what: format!(
                        "it ends inside `{}`, after {done} of its {} bytes",
                        entry.name, entry.size
                    ),
                }
                .into());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(from_stream(e)),
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
        return Err(Fault::Digest {
            member: entry.name.name(),
            expected: entry.sha256,
            actual,
        }
        .into());
    }
    Ok(())
}

/// Checks that nothing follows the last file.
pub fn expect_end(input: &mut impl Read) -> Result<(), Reading> {
    let mut byte = [0u8; 1];
    loop {
        return match input.read(&mut byte) {
            Ok(0) => Ok(()),
            Ok(_) => Err(Fault::Damaged {
                what: "there are bytes after its last file".into(),
            }
            .into()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(from_stream(e)),
        };
    }
}

/// The size and sha256 of the file at `path`.
pub fn hash(path: &Path) -> Result<(u64, Sha256), PathError> {
    let mut hasher = sha2::Sha256::new();
    let size = File::open(path)
        .and_then(|mut file| io::copy(&mut file, &mut hasher))
        .map_err(PathError::at("read", path))?;
    Ok((size, Sha256::finish(hasher)))
}
