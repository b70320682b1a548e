//! A systemd user manager, which `vmrun vm` runs persistent VMs under. `vmrun test` and
//! `vmrun bake` do not need one, so its absence is a warning.

use std::path::Path;
use std::process::Command;

use super::Finding;
use crate::tools;

const CHECK: &str = "systemd";

const START_ONE: &str = "log in to a session that has one, or start one: \
     mkdir -p /run/systemd/system; export XDG_RUNTIME_DIR=/tmp/xdg-$UID; \
     mkdir -m700 -p $XDG_RUNTIME_DIR; /lib/systemd/systemd --user &";

pub(super) fn check(runtime_dir: Option<&Path>) -> Finding {
    if runtime_dir.is_none() {
        return Finding::warn(
            CHECK,
            "XDG_RUNTIME_DIR is not set, so no systemd user manager can be reached \
             (`vmrun vm` needs one)",
            START_ONE,
        );
    }
    let systemctl = match tools::find("systemctl") {
        Ok(path) => path,
        Err(e) => {
            return Finding::warn(
                CHECK,
                format!("{e} (`vmrun vm` needs it)"),
                "apt-get install systemd",
            );
        }
    };
    let answer = Command::new(systemctl)
        .args(["--user", "is-system-running"])
        .output();
    match answer {
        Ok(out) => judge(
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim(),
        ),
        Err(e) => Finding::warn(CHECK, format!("cannot run systemctl: {e}"), START_ONE),
    }
}

/// Judges `systemctl --user is-system-running`'s answer, as `vmrun vm` does.
fn judge(state: &str, stderr: &str) -> Finding {
    match state {
        "running" | "degraded" | "starting" | "initializing" | "maintenance" => Finding::ok(
            CHECK,
            format!("a systemd user manager answers (is-system-running: {state}), for `vmrun vm`"),
        ),
        _ => {
            let said = if stderr.is_empty() {
                format!("it says `{state}`")
            } else {
                stderr.to_owned()
            };
            Finding::warn(
                CHECK,
                format!("no systemd user manager answers ({said}); `vmrun vm` needs one"),
                START_ONE,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn a_running_or_degraded_manager_is_ok() {
        assert_eq!(judge("running", "").status, Status::Ok);
        assert_eq!(judge("degraded", "").status, Status::Ok);
    }

    #[test]
    fn no_manager_says_what_systemctl_said_and_how_to_start_one() {
        let f = judge(
            "offline",
            "Failed to connect to bus: No such file or directory",
        );
        assert_eq!(f.status, Status::Warn);
        assert!(
            f.detail.contains("Failed to connect to bus"),
            "{}",
            f.detail
        );
        assert!(f.fix.unwrap().contains("systemd --user"));
        assert!(judge("offline", "").detail.contains("it says `offline`"));
    }

    #[test]
    fn no_runtime_dir_is_named() {
        let f = check(None);
        assert_eq!(f.status, Status::Warn);
        assert!(f.detail.starts_with("XDG_RUNTIME_DIR is not set"));
    }
}
