//! A run's private directory under `run/runs/<id>`: its overlay, console log, SSH files.
//! It is a [`Scratch`]: locked while the run lives. One whose lock nobody holds belongs to a
//! vmrun that was killed; the next vmrun call ends its QEMU and removes it (and any other
//! directory a killed vmrun left there, such as a warm capture's).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

pub use crate::path_error::PathError as Error;
use crate::scratch::{self, Scratch};

const QEMU_PID: &str = "qemu.pid";
/// The run's `crate::ssh::ClientFiles`, written once its VM is up.
const SSH_DIR: &str = "ssh";

/// A live run's directory; removed when dropped.
pub struct RunDir {
    id: String,
    dir: Scratch,
}

impl RunDir {
    /// Creates `runs/<id>` (0700) and takes its lock.
    pub fn create(runs: &Path, id: &str) -> Result<RunDir, Error> {
        Ok(RunDir {
            id: id.to_owned(),
            dir: Scratch::named(runs, id)?,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// Where the run's files for the system ssh go.
    pub fn ssh_dir(&self) -> PathBuf {
        self.file(SSH_DIR)
    }

    /// Records QEMU's pid so a later vmrun can end it if this one is killed.
    pub fn record_qemu_pid(&self, pid: u32) -> Result<(), Error> {
        let path = self.file(QEMU_PID);
        let mut f = File::create(&path).map_err(Error::at("write", &path))?;
        writeln!(f, "{pid}").map_err(Error::at("write", &path))
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
        .filter(|n| !n.starts_with('.') && !n.ends_with(".new"))
        .collect();
    ids.sort();
    ids
}

/// Removes what runs of a vmrun that is gone left in `runs`, ending their QEMU first (only a
/// process whose command line names that run's directory: a recycled pid is left alone).
/// Returns the names reaped.
pub fn reap_orphans(runs: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(runs) else {
        return Vec::new();
    };
    let mut reaped = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        if scratch::state(&dir) != scratch::State::LeftBehind {
            continue;
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
        let mut stranger = Command::new("sleep").arg("30").spawn().unwrap();
        fs::write(stranger_dir.join(QEMU_PID), format!("{}\n", stranger.id())).unwrap();
        // What a killed warm capture leaves.
        let capture = runs.path().join(".warm-0123");
        fs::create_dir(&capture).unwrap();
        fs::write(capture.join("qmp"), "").unwrap();

        let mut reaped = reap_orphans(runs.path());
        reaped.sort();
        assert_eq!(reaped, [".warm-0123", "bbbb", "cccc"]);
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
