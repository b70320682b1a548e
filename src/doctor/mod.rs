//! `vmrun doctor`: checks what vmrun needs on this host and says what to install or change.
//!
//! Each check is a function in a file of its own that returns [`Finding`]s; this module runs
//! them in order and judges the whole. A check never fails the command itself: what it could
//! not find out is a finding too.

mod kvm;
mod programs;
mod qemu;
mod space;
mod systemd;
mod userns;

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::events::Sink;
use crate::paths::Home;
use crate::qemu::accel::AccelChoice;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// What vmrun needs is there.
    Ok,
    /// vmrun works, but slower or with a feature missing.
    Warn,
    /// Something vmrun needs is missing or broken.
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// A short name: `qemu`, `kvm`, `rsync`, ...
    pub check: String,
    pub status: Status,
    /// What was found, in one line.
    pub detail: String,
    /// What to install or change; `None` when nothing needs doing.
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(check: &str, detail: impl Into<String>) -> Finding {
        Finding {
            check: check.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn warn(check: &str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            status: Status::Warn,
            fix: Some(fix.into()),
            ..Finding::ok(check, detail)
        }
    }

    pub fn fail(check: &str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            status: Status::Fail,
            fix: Some(fix.into()),
            ..Finding::ok(check, detail)
        }
    }

    /// The `--json` form: `{check, status, detail, fix}`, `fix` null when nothing needs doing.
    pub fn to_json(&self) -> Value {
        json!({
            "check": self.check,
            "status": self.status.label(),
            "detail": self.detail,
            "fix": self.fix,
        })
    }

    /// One line: status, check, detail, and what to do after ` -> `.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{:<4}  {:<12} {}",
            self.status.label(),
            self.check,
            self.detail
        );
        if let Some(fix) = &self.fix {
            line += " -> ";
            line += fix;
        }
        line
    }
}

/// What the checks look at, resolved once from the environment.
pub struct Host<'a> {
    pub home: Home,
    /// `VMRUN_ACCEL` as given, or why it is not a value vmrun takes.
    pub accel: Result<AccelChoice, String>,
    pub kvm_device: PathBuf,
    /// `XDG_RUNTIME_DIR`, when set and not empty.
    pub runtime_dir: Option<PathBuf>,
    /// Progress of the one slow check (the KVM probe, up to 5 s, once per host).
    pub sink: Sink<'a>,
}

/// Runs every check, in the order a user fixes things: programs, then KVM, then the rest.
pub fn examine(host: &Host) -> Vec<Finding> {
    let qemu = qemu::check();
    let mut findings = vec![qemu.finding];
    findings.extend(programs::check());
    findings.push(userns::check());
    findings.push(kvm::check(host, qemu.path.as_deref()));
    findings.push(systemd::check(host.runtime_dir.as_deref()));
    findings.push(space::check(&host.home));
    findings
}

/// The exit code of `vmrun doctor`: 0 when nothing failed (warnings allowed), else
/// [`FAILED`].
pub fn exit_code(findings: &[Finding]) -> u8 {
    if findings.iter().any(|f| f.status == Status::Fail) {
        FAILED
    } else {
        0
    }
}

/// `vmrun doctor`'s exit code when a check failed (README, "Commands").
pub const FAILED: u8 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_status_check_detail_and_fix() {
        let f = Finding::warn("kvm", "no /dev/kvm", "load kvm_intel");
        assert_eq!(f.line(), "warn  kvm          no /dev/kvm -> load kvm_intel");
        assert_eq!(
            Finding::ok("rsync", "/usr/bin/rsync").line(),
            "ok    rsync        /usr/bin/rsync"
        );
    }

    #[test]
    fn json_has_check_status_detail_and_fix() {
        let f = Finding::fail("qemu", "not found", "apt-get install qemu-system-x86");
        assert_eq!(
            f.to_json(),
            json!({
                "check": "qemu",
                "status": "fail",
                "detail": "not found",
                "fix": "apt-get install qemu-system-x86"
            })
        );
        assert_eq!(Finding::ok("ip", "x").to_json()["fix"], Value::Null);
    }

    #[test]
    fn only_a_failure_fails() {
        let ok = Finding::ok("a", "");
        let warn = Finding::warn("b", "", "");
        assert_eq!(exit_code(&[ok.clone(), warn.clone()]), 0);
        assert_eq!(exit_code(&[ok, warn, Finding::fail("c", "", "")]), FAILED);
        assert_eq!(exit_code(&[]), 0);
    }
}
