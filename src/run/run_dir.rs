//! A run's private directory under `run/runs/<id>`: its overlay, console log, SSH files and
//! the lock that says the run is alive. A directory whose lock nobody holds belongs to a
//! vmrun that was killed; the next vmrun call ends its QEMU and removes it.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub use crate::path_error::PathError as Error;

const LOCK: &str = "lock";
const QEMU_PID: &str = "qemu.pid";
/// The run's `crate::ssh::ClientFiles`, written once its VM is up.
const SSH_DIR: &str = "ssh";

/// A live run's directory; removed when dropped unless kept.
pub struct RunDir {
    id: String,
    path: PathBuf,
    /// Held (flock) for the run's lifetime: proof to other vmrun calls that it is alive.
    _lock: File,
}

impl RunDir {
    /// Creates `runs/<id>` (0700) and takes its lock.
    pub fn create(runs: &Path, id: &str) -> Result<RunDir, Error> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(runs)
            .map_err(Error::at("create", runs))?;
        // Made under a hidden name and locked before it gets its real one, so a reaper never
        // sees it unlocked.
        let staging = runs.join(format!(".{id}.new"));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(Error::at("create", &staging))?;
        let lock_path = staging.join(LOCK);
        let lock = File::create(&lock_path).map_err(Error::at("create", &lock_path))?;
        lock.lock().map_err(Error::at("lock", &lock_path))?;
        let path = runs.join(id);
        fs::rename(&staging, &path).map_err(Error::at("create", &path))?;
        Ok(RunDir {
            id: id.to_owned(),
            path,
            _lock: lock,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Records QEMU's pid so a later vmrun can end it if this one is killed.
    pub fn record_qemu_pid(&self, pid: u32) -> Result<(), Error> {
        let path = self.file(QEMU_PID);
        let mut f = File::create(&path).map_err(Error::at("write", &path))?;
        writeln!(f, "{pid}").map_err(Error::at("write", &path))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The ssh_config of run `id` in `runs`, once its VM is up; `None` for anything else
/// (no such run, a run still booting, an id that is not a plain name).
pub fn ssh_config(runs: &Path, id: &str) -> Option<PathBuf> {
    if id.is_empty() || id.starts_with('.') || id.contains('/') {
        return None;
    }
    let config = runs
        .join(id)
        .join(SSH_DIR)
        .join(crate::ssh::ClientFiles::SSH_CONFIG);
    config.is_file().then_some(config)
}

/// The ids of the runs in `runs` (a killed run's stays until the next call reaps it).
pub fn run_ids(runs: &Path) -> Vec<String> {
    let mut ids: Vec<String> = fs::read_dir(runs)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    ids.sort();
    ids
}

/// Removes the directories of runs whose vmrun is gone, ending their QEMU first (only a
/// process whose command line names that run's directory: a recycled pid is left alone).
/// Returns the ids reaped.
pub fn reap_orphans(runs: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(runs) else {
        return Vec::new();
    };
    let mut reaped = Vec::new();
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue; // being created
        }
        let dir = entry.path();
        let Ok(lock) = File::open(dir.join(LOCK)) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue; // a live run holds it
        }
        if let Some(pid) = fs::read_to_string(dir.join(QEMU_PID))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            kill_if_ours(pid, &dir);
        }
        if fs::remove_dir_all(&dir).is_ok() {
            reaped.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    reaped
}

fn kill_if_ours(pid: i32, dir: &Path) {
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let needle = dir.as_os_str().as_encoded_bytes();
    if cmdline.windows(needle.len()).any(|w| w == needle) {
        // SAFETY: plain kill(2) of a pid whose command line names our run directory.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    #[test]
    fn live_runs_are_left_alone_and_dropped_runs_leave_nothing() {
        let runs = tempfile::tempdir().unwrap();
        let run = RunDir::create(runs.path(), "aaaa").unwrap();
        let dir = runs.path().join("aaaa");
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(
            reap_orphans(runs.path()).is_empty(),
            "a live run was reaped"
        );
        assert!(dir.exists());
        drop(run);
        assert!(!runs.path().join("aaaa").exists());
    }

    #[test]
    fn a_runs_ssh_config_is_found_by_id_only() {
        let runs = tempfile::tempdir().unwrap();
        let run = RunDir::create(runs.path(), "dddd").unwrap();
        assert_eq!(ssh_config(runs.path(), "dddd"), None, "not up yet");
        let target = crate::ssh::Target {
            port: 2222,
            host_key: "ssh-ed25519 AAAA".into(),
            client_key: "/k".into(),
        };
        let files = crate::ssh::ClientFiles::write(&run.file(SSH_DIR), &target).unwrap();
        assert_eq!(ssh_config(runs.path(), "dddd"), Some(files.ssh_config));
        for other in ["", "eeee", "dddd/ssh", "../x", ".dddd.new"] {
            assert_eq!(ssh_config(runs.path(), other), None, "{other}");
        }
        assert_eq!(run_ids(runs.path()), ["dddd"]);
    }

    #[test]
    fn orphans_are_reaped_with_their_qemu_but_not_a_stranger_with_a_recycled_pid() {
        let runs = tempfile::tempdir().unwrap();
        let orphan = runs.path().join("bbbb");
        fs::create_dir(&orphan).unwrap();
        fs::write(orphan.join(LOCK), "").unwrap();
        // A stand-in for its QEMU: a process whose command line names the run directory.
        let mut ours = Command::new("sh")
            .arg("-c")
            .arg("sleep 30; : ")
            .arg(&orphan)
            .spawn()
            .unwrap();
        fs::write(orphan.join(QEMU_PID), format!("{}\n", ours.id())).unwrap();
        let stranger_dir = runs.path().join("cccc");
        fs::create_dir(&stranger_dir).unwrap();
        fs::write(stranger_dir.join(LOCK), "").unwrap();
        let mut stranger = Command::new("sleep").arg("30").spawn().unwrap();
        fs::write(stranger_dir.join(QEMU_PID), format!("{}\n", stranger.id())).unwrap();

        let mut reaped = reap_orphans(runs.path());
        reaped.sort();
        assert_eq!(reaped, ["bbbb", "cccc"]);
        assert!(
            ours.wait().unwrap().code().is_none(),
            "the orphan's QEMU was killed"
        );
        assert!(
            stranger.try_wait().unwrap().is_none(),
            "a process not naming the run dir survived"
        );
        stranger.kill().unwrap();
        stranger.wait().unwrap();
    }
}
