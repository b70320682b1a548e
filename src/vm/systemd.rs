//! The systemd user manager, through `systemctl --user`: units are loaded, started, stopped
//! and enabled by it, and it is the authority on whether a VM runs.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::tools::{self, MissingTool};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error(transparent)]
    #[diagnostic(transparent)]
    MissingTool(#[from] MissingTool),
    #[error("no systemd user manager answers: {detail}")]
    #[diagnostic(help(
        "vmrun runs VMs as systemd user units. Log in to a session that has one \
         (XDG_RUNTIME_DIR set), or start one: mkdir -p /run/systemd/system; \
         export XDG_RUNTIME_DIR=/tmp/xdg-$UID; mkdir -m700 -p $XDG_RUNTIME_DIR; \
         /lib/systemd/systemd --user &"
    ))]
    NoManager { detail: String },
    #[error("`systemctl --user {args}` failed: {stderr}")]
    Failed { args: String, stderr: String },
    #[error("cannot run systemctl")]
    Spawn(#[source] std::io::Error),
}

/// A unit as the manager sees it (`systemctl --user show`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    /// `loaded`, `not-found`, `bad-setting`, ...
    pub load_state: String,
    /// `active`, `activating`, `deactivating`, `inactive`, `failed`, ...
    pub active_state: String,
    /// Why it last stopped: `success`, `exit-code`, `signal`, `timeout`, ...
    pub result: String,
    /// `enabled`, `disabled`, `linked`, ... (empty when the manager does not know the file)
    pub unit_file_state: String,
}

impl UnitState {
    /// Whether QEMU is up (or on its way up or down).
    pub fn is_running(&self) -> bool {
        matches!(
            self.active_state.as_str(),
            "active" | "activating" | "deactivating" | "reloading"
        )
    }

    fn parse(text: &str) -> UnitState {
        let mut state = UnitState::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let field = match key {
                "LoadState" => &mut state.load_state,
                "ActiveState" => &mut state.active_state,
                "Result" => &mut state.result,
                "UnitFileState" => &mut state.unit_file_state,
                _ => continue,
            };
            *field = value.to_owned();
        }
        state
    }
}

pub struct Systemctl {
    program: PathBuf,
}

impl Systemctl {
    /// Finds `systemctl` and checks that a user manager answers.
    pub fn connect() -> Result<Systemctl, Error> {
        let systemctl = Systemctl {
            program: tools::find("systemctl")?,
        };
        let out = systemctl.output(&["is-system-running"])?;
        let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        // Answers other than these (offline, unknown) come with a failure to connect.
        if matches!(
            state.as_str(),
            "running" | "degraded" | "starting" | "initializing" | "maintenance" | "stopping"
        ) {
            return Ok(systemctl);
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let detail = if stderr.is_empty() {
            format!("it says `{state}`")
        } else {
            stderr
        };
        Err(Error::NoManager { detail })
    }

    pub fn daemon_reload(&self) -> Result<(), Error> {
        self.run(&["daemon-reload"])
    }

    /// Starts `unit` and waits until systemd has started its program.
    pub fn start(&self, unit: &str) -> Result<(), Error> {
        self.run(&["start", unit])
    }

    /// Stops `unit`, waiting for its ExecStop and, after the stop timeout, its kill.
    pub fn stop(&self, unit: &str) -> Result<(), Error> {
        self.run(&["stop", unit])
    }

    pub fn restart(&self, unit: &str) -> Result<(), Error> {
        self.run(&["restart", unit])
    }

    pub fn enable(&self, unit: &str) -> Result<(), Error> {
        self.run(&["enable", unit])
    }

    pub fn disable(&self, unit: &str) -> Result<(), Error> {
        self.run(&["disable", unit])
    }

    /// Forgets that `unit` failed, so it shows as stopped.
    pub fn reset_failed(&self, unit: &str) -> Result<(), Error> {
        self.run(&["reset-failed", unit])
    }

    pub fn show(&self, unit: &str) -> Result<UnitState, Error> {
        let args = [
            "show",
            unit,
            "--property=LoadState,ActiveState,Result,UnitFileState",
        ];
        let out = self.checked(&args)?;
        Ok(UnitState::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    fn run(&self, args: &[&str]) -> Result<(), Error> {
        self.checked(args).map(drop)
    }

    fn checked(&self, args: &[&str]) -> Result<Output, Error> {
        let out = self.output(args)?;
        if out.status.success() {
            return Ok(out);
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if stderr.contains("Failed to connect to bus") {
            return Err(Error::NoManager { detail: stderr });
        }
        Err(Error::Failed {
            args: args.join(" "),
            stderr,
        })
    }

    fn output(&self, args: &[&str]) -> Result<Output, Error> {
        Command::new(&self.program)
            .arg("--user")
            .args(args.iter().map(OsStr::new))
            .output()
            .map_err(Error::Spawn)
    }
}

/// Where the user's own units live: `$XDG_CONFIG_HOME/systemd/user`, else
/// `~/.config/systemd/user` (the manager reads both; units there survive reboots).
pub fn user_unit_dir(var: impl Fn(&str) -> Option<PathBuf>) -> Option<PathBuf> {
    let config = var("XDG_CONFIG_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| var("HOME").map(|h| h.join(".config")))?;
    Some(config.join("systemd/user"))
}

/// Whether the user manager of `user` runs without a login session (so enabled VMs start at
/// boot): logind's flag file. `None` when that cannot be told (no logind state here).
pub fn lingering(user: &str, linger_dir: &Path) -> Option<bool> {
    if linger_dir.join(user).exists() {
        return Some(true);
    }
    linger_dir
        .parent()
        .is_some_and(Path::exists)
        .then_some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_output() {
        let state = UnitState::parse(
            "LoadState=loaded\nActiveState=failed\nResult=timeout\nUnitFileState=enabled\nX=y=z\n",
        );
        assert_eq!(
            state,
            UnitState {
                load_state: "loaded".into(),
                active_state: "failed".into(),
                result: "timeout".into(),
                unit_file_state: "enabled".into()
            }
        );
        assert!(!state.is_running());
        assert!(UnitState::parse("ActiveState=deactivating").is_running());
    }

    #[test]
    fn unit_dir_from_xdg_or_home() {
        let vars = |pairs: &'static [(&str, &str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| PathBuf::from(v))
            }
        };
        assert_eq!(
            user_unit_dir(vars(&[("HOME", "/h"), ("XDG_CONFIG_HOME", "/c")])),
            Some("/c/systemd/user".into())
        );
        assert_eq!(
            user_unit_dir(vars(&[("HOME", "/h"), ("XDG_CONFIG_HOME", "rel")])),
            Some("/h/.config/systemd/user".into())
        );
        assert_eq!(
            user_unit_dir(vars(&[("HOME", "/h")])),
            Some("/h/.config/systemd/user".into())
        );
        assert_eq!(user_unit_dir(vars(&[])), None);
    }

    #[test]
    fn lingering_flag_files() {
        let dir = tempfile::tempdir().unwrap();
        let linger = dir.path().join("linger");
        assert_eq!(
            lingering("ann", &linger),
            Some(false),
            "logind's state exists but no linger dir: off"
        );
        std::fs::create_dir(&linger).unwrap();
        assert_eq!(lingering("ann", &linger), Some(false));
        std::fs::write(linger.join("ann"), "").unwrap();
        assert_eq!(lingering("ann", &linger), Some(true));
        assert_eq!(
            lingering("ann", Path::new("/nonexistent/systemd/linger")),
            None
        );
    }
}
