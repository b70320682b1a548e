//! Who stands on a store entry: one file per holder in `store/.references/<key>/`, so an
//! entry is never removed while anything uses it, whichever name it was reached by (a name
//! can be pointed at another entry by a later bake; the key a VM or run uses never changes).
//!
//! - A persistent VM registers `vm.NAME` when it is created and releases it when it is
//!   deleted: the file lives as long as the VM, without any vmrun process.
//! - A live `vmrun test` run holds `run.ID` for as long as it runs, by keeping the file open
//!   with an exclusive flock ([`Reference`]). The kernel drops a flock when the process that
//!   holds it dies, whatever kills it (`kill -9` too), so a run file that nobody has locked is
//!   a dead run's, and whoever counts holders removes it. Nothing depends on a pid that could
//!   be recycled, on the clock, or on the run directory's reaper having run.
//! - `.lock` orders taking a reference (shared) against counting holders to remove an entry
//!   (exclusive): an entry is never removed between a holder's check that it exists and its
//!   reference, and a dead run's file is only removed while no reference is being taken.

use std::fmt;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::lock_file::{LockFile, is_held};
use crate::path_error::{PathError, create_private_dir};

const DIR: &str = ".references";
const LOCK: &str = ".lock";

/// What holds a reference. Its file name is `KIND.NAME`; VM names and run ids have no `.`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Holder {
    /// A persistent VM, by name: its disk's backing file is in the entry.
    Vm(String),
    /// A live `vmrun test` run, by id.
    Run(String),
}

impl Holder {
    fn file_name(&self) -> String {
        match self {
            Holder::Vm(name) => format!("vm.{name}"),
            Holder::Run(id) => format!("run.{id}"),
        }
    }

    fn from_file_name(file_name: &str) -> Option<Holder> {
        match file_name.split_once('.')? {
            ("vm", name) => Some(Holder::Vm(name.to_owned())),
            ("run", id) => Some(Holder::Run(id.to_owned())),
            _ => None,
        }
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Vm(name) => write!(f, "VM `{name}`"),
            Holder::Run(id) => write!(f, "run `{id}`"),
        }
    }
}

/// A live run's hold on a store entry: the entry stays while this lives. Dropping it (or the
/// process dying) lets go.
#[derive(Debug)]
pub struct Reference {
    path: PathBuf,
    /// Held until dropped: the proof that the run is alive.
    _lock: LockFile,
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The reference files of one store.
pub(super) struct References {
    dir: PathBuf,
}

impl References {
    /// The references of the store whose entries are in `store`.
    pub(super) fn new(store: &Path) -> References {
        References {
            dir: store.join(DIR),
        }
    }

    /// Held while a reference is taken or a name is set.
    pub(super) fn shared(&self) -> Result<LockFile, PathError> {
        create_private_dir(&self.dir)?;
        LockFile::shared(&self.dir.join(LOCK))
    }

    /// Held while holders are counted and an entry is removed.
    pub(super) fn exclusive(&self) -> Result<LockFile, PathError> {
        create_private_dir(&self.dir)?;
        LockFile::acquire(&self.dir.join(LOCK), || ())
    }

    fn key_dir(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// Registers a persistent holder (a VM); registering again changes nothing. The caller
    /// holds [`References::shared`] and has checked that the entry exists.
    pub(super) fn add(&self, key: &str, holder: &Holder) -> Result<(), PathError> {
        let path = self.file(key, holder)?;
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(PathError::at("create", &path))?;
        Ok(())
    }

    /// Takes a live run's reference. The caller holds [`References::shared`] (so no one
    /// counting holders sees the file before it is locked) and has checked the entry exists.
    pub(super) fn hold(&self, key: &str, run_id: &str) -> Result<Reference, PathError> {
        let path = self.file(key, &Holder::Run(run_id.to_owned()))?;
        let lock = LockFile::acquire(&path, || ())?;
        Ok(Reference { path, _lock: lock })
    }

    fn file(&self, key: &str, holder: &Holder) -> Result<PathBuf, PathError> {
        let dir = self.key_dir(key);
        create_private_dir(&dir)?;
        Ok(dir.join(holder.file_name()))
    }

    /// Removes `holder`'s reference, if it has one.
    pub(super) fn remove(&self, key: &str, holder: &Holder) -> Result<(), PathError> {
        let path = self.key_dir(key).join(holder.file_name());
        match fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(PathError::at("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Who holds `key`, sorted; dead runs' files are removed on the way. The caller holds
    /// [`References::exclusive`].
    pub(super) fn holders(&self, key: &str) -> Result<Vec<Holder>, PathError> {
        let dir = self.key_dir(key);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(PathError::at("read", &dir)(e)),
        };
        let mut holders = Vec::new();
        for entry in entries {
            let entry = entry.map_err(PathError::at("read", &dir))?;
            let Some(holder) = entry.file_name().to_str().and_then(Holder::from_file_name) else {
                continue;
            };
            if matches!(holder, Holder::Run(_)) && !run_is_alive(&entry.path())? {
                let path = entry.path();
                fs::remove_file(&path).map_err(PathError::at("remove", &path))?;
                continue;
            }
            holders.push(holder);
        }
        holders.sort();
        Ok(holders)
    }

    /// Forgets `key` once its entry is gone (its directory is empty then).
    pub(super) fn forget(&self, key: &str) {
        let _ = fs::remove_dir(self.key_dir(key));
    }
}

/// Whether the run whose reference file is `path` still holds its lock.
fn run_is_alive(path: &Path) -> Result<bool, PathError> {
    match File::open(path) {
        Ok(file) => is_held(&file, path),
        // Its run let go meanwhile.
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(PathError::at("open", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_file_names_round_trip() {
        for holder in [Holder::Vm("db".into()), Holder::Run("k3x9".into())] {
            assert_eq!(
                Holder::from_file_name(&holder.file_name()),
                Some(holder.clone())
            );
        }
        assert_eq!(Holder::from_file_name(".lock"), None);
        assert_eq!(Holder::from_file_name("other.x"), None);
        assert_eq!(Holder::Vm("db".into()).to_string(), "VM `db`");
        assert_eq!(Holder::Run("k3".into()).to_string(), "run `k3`");
    }

    #[test]
    fn a_run_holds_while_its_reference_lives() {
        let store = tempfile::tempdir().unwrap();
        let refs = References::new(store.path());
        let reference = {
            let _order = refs.shared().unwrap();
            refs.hold("k1", "r1").unwrap()
        };
        refs.add("k1", &Holder::Vm("db".into())).unwrap();
        let _order = refs.exclusive().unwrap();
        assert_eq!(
            refs.holders("k1").unwrap(),
            [Holder::Vm("db".into()), Holder::Run("r1".into())]
        );
        drop(reference);
        refs.remove("k1", &Holder::Vm("db".into())).unwrap();
        assert!(refs.holders("k1").unwrap().is_empty());
        refs.forget("k1");
        assert!(!store.path().join(DIR).join("k1").exists());
    }

    /// What a run killed with SIGKILL leaves: its file, with no lock on it.
    #[test]
    fn a_dead_runs_file_holds_nothing_and_is_removed() {
        let store = tempfile::tempdir().unwrap();
        let refs = References::new(store.path());
        let _order = refs.exclusive().unwrap();
        let dead = refs.file("k1", &Holder::Run("gone".into())).unwrap();
        fs::write(&dead, "").unwrap();
        assert!(refs.holders("k1").unwrap().is_empty());
        assert!(!dead.exists());
    }

    #[test]
    fn a_run_killed_with_sigkill_lets_go() {
        use std::process::Command;
        let store = tempfile::tempdir().unwrap();
        let refs = References::new(store.path());
        let path = refs.file("k1", &Holder::Run("r2".into())).unwrap();
        // A process that holds the lock as a run's vmrun would (the shell becomes `sleep`,
        // which keeps the locked descriptor).
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec 9>>\"$0\" && flock 9 && exec sleep 30")
            .arg(&path)
            .spawn()
            .unwrap();
        let held = std::time::Instant::now();
        while !run_is_alive(&path).unwrap() {
            assert!(held.elapsed().as_secs() < 10, "flock never took the lock");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(refs.holders("k1").unwrap(), [Holder::Run("r2".into())]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(refs.holders("k1").unwrap().is_empty());
    }
}
