//! Lock files: one process at a time past a point (building an image, downloading a URL,
//! changing a VM), or many readers against one writer (the store's references), and a
//! held lock as proof that its holder lives (a run's reference to its image). The lock is
//! the kernel's advisory `flock` on an open file, so it dies with its process and a killed
//! vmrun never leaves a stale one. A mutual-exclusion lock file is never deleted: unlinking
//! it lets a waiter and a newcomer hold two different locks.

use std::fs::{File, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::path_error::PathError;

/// A held lock, released when dropped.
#[derive(Debug)]
pub struct LockFile {
    _file: File,
}

impl LockFile {
    /// Locks `path` (created empty, mode 0600, if missing), waiting while another process
    /// holds it; `waiting` is called once, before the wait, so the caller can say so.
    pub fn acquire(path: &Path, waiting: impl FnOnce()) -> Result<LockFile, PathError> {
        let file = open(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                waiting();
                file.lock().map_err(PathError::at("lock", path))?;
            }
            Err(TryLockError::Error(source)) => {
                return Err(PathError::at("lock", path)(source));
            }
        }
        Ok(LockFile { _file: file })
    }

    /// Locks `path` shared: with other shared holders, never with an exclusive one.
    pub fn shared(path: &Path) -> Result<LockFile, PathError> {
        let file = open(path)?;
        file.lock_shared().map_err(PathError::at("lock", path))?;
        Ok(LockFile { _file: file })
    }
}

/// Whether a live process holds a lock on `file` (an open lock file, or a directory).
pub fn is_held(file: &File, path: &Path) -> Result<bool, PathError> {
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            Ok(false)
        }
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(e)) => Err(PathError::at("lock", path)(e)),
    }
}

fn open(path: &Path) -> Result<File, PathError> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(PathError::at("open", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn one_holder_at_a_time_and_the_next_is_told_it_waits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("build.lock");
        let mut waited = false;
        let first = LockFile::acquire(&path, || waited = true).unwrap();
        assert!(!waited, "a free lock is taken at once");

        let (said, heard) = mpsc::channel();
        let (got, holding) = mpsc::channel();
        let other = path.clone();
        let second = std::thread::spawn(move || {
            // Another open file description: flock excludes it as it would another process.
            let lock = LockFile::acquire(&other, || said.send(()).unwrap()).unwrap();
            got.send(()).unwrap();
            drop(lock);
        });
        heard
            .recv_timeout(Duration::from_secs(5))
            .expect("told it waits");
        assert!(
            holding.recv_timeout(Duration::from_millis(200)).is_err(),
            "the second got the lock while the first held it"
        );
        drop(first);
        holding
            .recv_timeout(Duration::from_secs(5))
            .expect("got it once released");
        second.join().unwrap();
        assert!(path.exists(), "the lock file stays");
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir/x.lock");
        let err = LockFile::acquire(&path, || ()).unwrap_err();
        assert_eq!(err.to_string(), format!("cannot open {}", path.display()));
    }
}
