//! vmrun's temporary directories: a bake's staging entry, a Debian image build, the warm
//! capture's sockets, a run's directory. Each is locked (flock on the directory itself) for
//! as long as the vmrun that made it lives, and removed when dropped. A vmrun killed before
//! that (kill -9, a crash) leaves it unlocked: the next vmrun call's [`reap`] removes it.
//!
//! A directory is made under a name ending in [`NEW`], locked, and only then renamed to its
//! own name: under its own name it is never unlocked while in use. One still named `*.new`
//! may be in that moment between making and locking, so it counts as left behind only when
//! it is also older than [`GRACE`] (a vmrun killed in that moment).

use std::fs::{self, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::path_error::PathError;

/// How old an unlocked `*.new` directory must be before it counts as left behind.
const GRACE: Duration = Duration::from_secs(10);
/// The suffix of a directory between its making and its lock.
const NEW: &str = ".new";

/// A temporary directory (0700) that lives as long as this value, and no longer than vmrun.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
    /// Held for the directory's life: proof to [`reap`] that it is in use.
    lock: File,
    keep: bool,
}

impl Scratch {
    /// A new directory in `parent` (made 0700 if missing, else left as it is) named `prefix`
    /// + random letters.
    pub fn new_in(parent: &Path, prefix: &str) -> Result<Scratch, PathError> {
        loop {
            match Scratch::named(parent, &format!("{prefix}{}", crate::random::hex(6))) {
                Err(e) if e.source.kind() == std::io::ErrorKind::AlreadyExists => continue,
                made => return made,
            }
        }
    }

    /// The directory `parent/name` (0700), which must not exist yet. A missing `parent` is
    /// made 0700; an existing one is left as it is (it may be a shared one, like /tmp).
    pub fn named(parent: &Path, name: &str) -> Result<Scratch, PathError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(PathError::at("create", parent))?;
        let path = parent.join(name);
        let refuse_existing = || match path.exists() {
            true => Err(PathError::at("create", &path)(
                std::io::ErrorKind::AlreadyExists.into(),
            )),
            false => Ok(()),
        };
        refuse_existing()?;
        let new = parent.join(format!("{name}{NEW}"));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&new)
            .map_err(PathError::at("create", &new))?;
        let locked = File::open(&new)
            .and_then(|dir| dir.try_lock().map(|()| dir).map_err(Into::into))
            .map_err(PathError::at("lock", &new))
            .and_then(|lock| {
                // rename(2) would replace an empty directory made meanwhile: refuse instead.
                refuse_existing()?;
                fs::rename(&new, &path).map_err(PathError::at("create", &path))?;
                Ok(lock)
            });
        match locked {
            Ok(lock) => Ok(Scratch {
                path,
                lock,
                keep: false,
            }),
            Err(e) => {
                let _ = fs::remove_dir(&new);
                Err(e)
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the directory to `to` (same file system) and keeps it there: it is no longer
    /// temporary. On failure it stays temporary, and is removed when dropped.
    pub fn persist(mut self, to: &Path) -> Result<(), PathError> {
        fs::rename(&self.path, to).map_err(PathError::at("move", &self.path))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.path);
        }
        let _ = self.lock.unlock();
    }
}

/// What a directory in a parent is, for [`reap`].
#[derive(Debug, PartialEq, Eq)]
pub enum State {
    /// Its maker is alive (or it is too new to tell).
    InUse,
    /// Unlocked (and, named `*.new`, older than [`GRACE`]): its maker is gone.
    LeftBehind,
}

/// Whether `dir` is in use: locked, or too new to tell.
pub fn state(dir: &Path) -> State {
    let Ok(handle) = File::open(dir) else {
        return State::InUse; // gone already, or not ours to judge
    };
    if crate::lock_file::is_held(&handle, dir).unwrap_or(true) {
        return State::InUse;
    }
    if !dir.as_os_str().to_string_lossy().ends_with(NEW) {
        return State::LeftBehind;
    }
    let age = handle
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok());
    match age {
        Some(age) if age >= GRACE => State::LeftBehind,
        _ => State::InUse,
    }
}

/// Removes the directories in `parent` whose names start with `prefix` and that were left
/// behind (see [`state`]); returns their names.
pub fn reap(parent: &Path, prefix: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut reaped = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir
            && name.starts_with(prefix)
            && state(&entry.path()) == State::LeftBehind
            && fs::remove_dir_all(entry.path()).is_ok()
        {
            reaped.push(name);
        }
    }
    reaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn age(dir: &Path, by: Duration) {
        let then = SystemTime::now() - by;
        File::open(dir).unwrap().set_modified(then).unwrap();
    }

    #[test]
    fn a_scratch_is_private_locked_and_removed_when_dropped() {
        let parent = tempfile::tempdir().unwrap();
        let scratch = Scratch::new_in(parent.path(), ".staging-").unwrap();
        let path = scratch.path().to_owned();
        assert!(
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".staging-")
        );
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::write(path.join("disk"), "x").unwrap();
        assert_eq!(state(&path), State::InUse);
        assert!(
            reap(parent.path(), ".staging-").is_empty(),
            "a live one was reaped"
        );
        drop(scratch);
        assert!(!path.exists());
    }

    #[test]
    fn unlocked_directories_with_the_prefix_are_reaped_but_a_new_one_only_when_old() {
        let parent = tempfile::tempdir().unwrap();
        let make = |name: &str, old: bool| {
            let dir = parent.path().join(name);
            fs::create_dir(&dir).unwrap();
            fs::write(dir.join("file"), "x").unwrap();
            if old {
                age(&dir, GRACE * 2);
            }
            dir
        };
        let left = make(".staging-a", false);
        let being_made = make(".staging-b.new", false);
        let killed_while_made = make(".staging-c.new", true);
        let other = make("keep", true);
        let mut reaped = reap(parent.path(), ".staging-");
        reaped.sort();
        assert_eq!(reaped, [".staging-a", ".staging-c.new"]);
        assert!(!left.exists() && !killed_while_made.exists());
        assert!(
            being_made.exists(),
            "a directory too new to judge was reaped"
        );
        assert!(other.exists(), "a directory without the prefix was reaped");
    }

    #[test]
    fn a_shared_parent_keeps_its_mode_and_a_missing_one_is_private() {
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("tmp");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        let _in_shared = Scratch::new_in(&shared, ".probe-").unwrap();
        assert_eq!(
            fs::metadata(&shared).unwrap().permissions().mode() & 0o7777,
            0o1777
        );
        let missing = root.path().join("runs");
        let _in_missing = Scratch::new_in(&missing, ".warm-").unwrap();
        assert_eq!(
            fs::metadata(&missing).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }

    #[test]
    fn a_persisted_scratch_stays() {
        let parent = tempfile::tempdir().unwrap();
        let scratch = Scratch::new_in(parent.path(), ".staging-").unwrap();
        fs::write(scratch.path().join("image.json"), "{}").unwrap();
        let to = parent.path().join("key");
        scratch.persist(&to).unwrap();
        assert!(to.join("image.json").exists());
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 1);
    }

    #[test]
    fn named_refuses_an_existing_directory() {
        let parent = tempfile::tempdir().unwrap();
        let first = Scratch::named(parent.path(), "abcd").unwrap();
        let err = Scratch::named(parent.path(), "abcd").unwrap_err();
        assert_eq!(err.action, "create");
        drop(first);
    }
}
