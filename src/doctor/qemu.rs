//! QEMU itself: found on PATH, and a version vmrun's command lines work with.

use std::path::PathBuf;

use super::Finding;
use crate::tools;

/// The oldest QEMU vmrun is tested with (Debian bookworm's): `-netdev stream`, `-incoming fd:`
/// and the warm state's QMP commands are all there.
const OLDEST: (u32, u32) = (7, 2);

pub(super) struct Qemu {
    pub finding: Finding,
    /// The binary, when found: the KVM check's probe runs it.
    pub path: Option<PathBuf>,
}

pub(super) fn check() -> Qemu {
    let program = "qemu-system-x86_64";
    let path = match tools::find(program) {
        Ok(path) => path,
        Err(e) => {
            return Qemu {
                finding: Finding::fail(
                    "qemu",
                    format!("{e}: vmrun runs every VM with it"),
                    format!("apt-get install {}", e.package),
                ),
                path: None,
            };
        }
    };
    let finding = match crate::warm::qemu_version(&path) {
        Ok(line) => judge(&path.display().to_string(), &line),
        Err(e) => Finding::fail(
            "qemu",
            format!("{} does not say its version: {e}", path.display()),
            "reinstall qemu-system-x86",
        ),
    };
    Qemu {
        finding,
        path: Some(path),
    }
}

/// Judges `qemu --version`'s first line.
fn judge(path: &str, version_line: &str) -> Finding {
    let Some(version) = parse_version(version_line) else {
        return Finding::warn(
            "qemu",
            format!("{path}: cannot read a version in `{version_line}`"),
            format!(
                "vmrun is tested with QEMU {}.{} or newer",
                OLDEST.0, OLDEST.1
            ),
        );
    };
    let detail = format!("QEMU {}.{}.{} ({path})", version.0, version.1, version.2);
    if (version.0, version.1) < OLDEST {
        return Finding::fail(
            "qemu",
            detail,
            format!(
                "install QEMU {}.{} or newer (Debian bookworm's qemu-system-x86 or later)",
                OLDEST.0, OLDEST.1
            ),
        );
    }
    Finding::ok("qemu", detail)
}

/// `QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)` gives (7, 2, 22).
fn parse_version(line: &str) -> Option<(u32, u32, u32)> {
    let rest = &line[line.find("version ")? + "version ".len()..];
    let word = rest.split_whitespace().next()?;
    let mut parts = word.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next()??;
    let micro = parts.next().flatten().unwrap_or(0);
    Some((major, minor, micro))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn versions_as_qemu_prints_them() {
        assert_eq!(
            parse_version("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"),
            Some((7, 2, 22))
        );
        assert_eq!(
            parse_version("QEMU emulator version 8.2.2"),
            Some((8, 2, 2))
        );
        assert_eq!(
            parse_version("QEMU emulator version 10.0"),
            Some((10, 0, 0))
        );
        assert_eq!(parse_version("QEMU emulator version x.y"), None);
        assert_eq!(parse_version("something else"), None);
    }

    #[test]
    fn old_qemu_fails_and_new_passes() {
        let ok = judge(
            "/usr/bin/q",
            "QEMU emulator version 8.2.2 (Debian 1:8.2.2+ds-0ubuntu1)",
        );
        assert_eq!(ok, Finding::ok("qemu", "QEMU 8.2.2 (/usr/bin/q)"));
        let old = judge("/usr/bin/q", "QEMU emulator version 6.2.0");
        assert_eq!(old.status, Status::Fail);
        assert!(old.fix.unwrap().contains("7.2 or newer"));
        assert_eq!(judge("/q", "QEMU emulator version ?").status, Status::Warn);
    }
}
