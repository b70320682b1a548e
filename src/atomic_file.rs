//! Files that appear whole or not at all: written to a temporary file in their final
//! directory (so on the same file system), flushed to disk, then renamed into place. A write
//! that fails or is interrupted leaves the old file (or none); the temporary file is removed
//! when dropped, and one left by a killed process is named [`TEMP_PREFIX`]`...`.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::path_error::PathError;

/// How every temporary file vmrun writes before renaming it into place begins.
pub const TEMP_PREFIX: &str = ".vmrun-new-";

/// What [`NewFile::commit`] does when its path already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Replace it in one rename: readers see the old file or the new one.
    Replace,
    /// Leave it, and fail with an error whose source is [`io::ErrorKind::AlreadyExists`].
    Keep,
}

/// A file being written: created empty (mode 0600) in its directory under a temporary name,
/// and visible under its real name only once [`commit`](Self::commit)ted.
pub struct NewFile {
    temp: tempfile::NamedTempFile,
    dir: PathBuf,
}

impl NewFile {
    /// A new file to be committed in `dir`, for contents whose name is known only once they
    /// are written (a file named by its digest).
    pub fn in_dir(dir: &Path) -> Result<NewFile, PathError> {
        let temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(dir)
            .map_err(PathError::at("create a temporary file in", dir))?;
        Ok(NewFile {
            temp,
            dir: dir.to_owned(),
        })
    }

    /// A new file to be committed as `path` (in the current directory for a bare name).
    pub fn beside(path: &Path) -> Result<NewFile, PathError> {
        NewFile::in_dir(parent(path))
    }

    pub fn file(&mut self) -> &mut File {
        self.temp.as_file_mut()
    }

    /// Flushes the file to disk and gives it its name, `path`, which must be in the directory
    /// it was made in (a rename does not cross file systems). Errors name `path`.
    pub fn commit(self, path: &Path, existing: Existing) -> Result<(), PathError> {
        if parent(path) != self.dir {
            return Err(PathError {
                action: "write",
                path: path.to_owned(),
                source: io::Error::other(format!(
                    "it is not in {}, where it was written",
                    self.dir.display()
                )),
            });
        }
        self.temp
            .as_file()
            .sync_all()
            .map_err(PathError::at("write", path))?;
        let renamed = match existing {
            Existing::Replace => self.temp.persist(path),
            Existing::Keep => self.temp.persist_noclobber(path),
        };
        renamed.map(drop).map_err(|e| PathError {
            action: "create",
            path: path.to_owned(),
            source: e.error,
        })
    }
}

/// Writes `bytes` to `path` whole or not at all, replacing what was there.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), PathError> {
    let mut new = NewFile::beside(path)?;
    io::Write::write_all(new.file(), bytes).map_err(PathError::at("write", path))?;
    new.commit(path, Existing::Replace)
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn appears_only_when_committed_and_replaces_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("state.json");
        write(&target, b"old").unwrap();
        let mut new = NewFile::beside(&target).unwrap();
        io::Write::write_all(new.file(), b"new contents").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"old", "not yet committed");
        let names = names_in(dir.path());
        assert_eq!(names.len(), 2);
        assert!(names[0].starts_with(TEMP_PREFIX), "{names:?}");
        new.commit(&target, Existing::Replace).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new contents");
        assert_eq!(names_in(dir.path()), ["state.json"]);
    }

    #[test]
    fn a_dropped_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut new = NewFile::in_dir(dir.path()).unwrap();
        io::Write::write_all(new.file(), b"half").unwrap();
        drop(new);
        assert_eq!(names_in(dir.path()), Vec::<String>::new());
    }

    #[test]
    fn keep_refuses_an_existing_file_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("disk.qcow2");
        fs::write(&target, b"theirs").unwrap();
        let new = NewFile::beside(&target).unwrap();
        let err = new.commit(&target, Existing::Keep).unwrap_err();
        assert_eq!(err.source.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(err.path, target);
        assert_eq!(fs::read(&target).unwrap(), b"theirs");
        assert_eq!(names_in(dir.path()), ["disk.qcow2"]);
    }

    #[test]
    fn named_after_writing_in_its_directory_only() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        let mut new = NewFile::in_dir(dir.path()).unwrap();
        io::Write::write_all(new.file(), b"x").unwrap();
        let elsewhere = dir.path().join("sub/x");
        let err = new.commit(&elsewhere, Existing::Replace).unwrap_err();
        assert_eq!(err.path, elsewhere);
        assert!(err.source.to_string().contains("not in"), "{err}");
        assert_eq!(names_in(dir.path()), ["sub"]);
    }

    #[test]
    fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/file");
        let err = write(&missing, b"x").unwrap_err();
        assert_eq!(err.path, dir.path().join("no/such/dir"));
        assert!(
            err.to_string()
                .starts_with("cannot create a temporary file in")
        );
    }

    #[test]
    fn a_bare_name_is_in_the_current_directory() {
        assert_eq!(parent(Path::new("file")), Path::new("."));
        assert_eq!(parent(Path::new("/a/file")), Path::new("/a"));
    }
}
