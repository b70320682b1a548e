//! Whether this host's KVM runs the CPU model warm machines are saved with
//! ([`crate::qemu::args::PORTABLE_CPU`]): a state saved on another host resumes here only if
//! it does. QEMU, started paused with the model and `enforce`, either refuses at once and
//! names the features the host lacks, or runs; it is then ended.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::qemu::args::portable_cpu_check_command_line;
use crate::wait::{Stop, Watch};

/// How long a QEMU that accepts the model is given to refuse it after all.
const CHECK: Duration = Duration::from_millis(1500);
/// Lines of QEMU's refusal quoted.
const REASON_LINES: usize = 3;

/// `Ok` when `qemu` runs the portable CPU model under KVM on this host; otherwise why not, in
/// QEMU's words.
pub fn host_runs_portable_cpu(qemu: &Path) -> Result<Result<(), String>, Stop> {
    let mut child = match Command::new(qemu)
        .args(portable_cpu_check_command_line())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return Ok(Err(format!("cannot start {}: {e}", qemu.display()))),
    };
    let exited = Watch::signals().until(Instant::now() + CHECK, CHECK / 15, || {
        Ok::<_, Stop>(crate::child::peek_exit(child.id()))
    });
    // Ended by its pid, which this function started and has not reaped.
    let _ = child.kill();
    let _ = child.wait();
    let mut said = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut said);
    }
    Ok(match exited? {
        None => Ok(()),
        Some(status) => Err(refusal(&said, status)),
    })
}

fn refusal(said: &str, status: std::process::ExitStatus) -> String {
    let lines: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.len() {
        0 => format!("QEMU exited ({})", crate::child::describe(status)),
        n => crate::guest_text::line(lines[n.saturating_sub(REASON_LINES)..].join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fake_qemu(dir: &Path, script: &str) -> std::path::PathBuf {
        let path = dir.join("qemu");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_qemu_that_keeps_running_runs_the_model() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = fake_qemu(dir.path(), "exec sleep 30");
        assert_eq!(host_runs_portable_cpu(&qemu), Ok(Ok(())));
    }

    #[test]
    fn a_refusal_is_given_in_qemus_words() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = fake_qemu(
            dir.path(),
            "echo 'qemu-system-x86_64: warning: host doesn'\\''t support requested feature: \
             CPUID.07H:EBX.avx2 [bit 5]' >&2; exit 1",
        );
        let reason = host_runs_portable_cpu(&qemu).unwrap().unwrap_err();
        assert!(reason.contains("CPUID.07H:EBX.avx2"), "{reason}");
    }

    #[test]
    fn the_check_is_vmruns_own_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("args");
        let qemu = fake_qemu(
            dir.path(),
            &format!("echo \"$@\" > {}; exit 1", seen.display()),
        );
        let _ = host_runs_portable_cpu(&qemu);
        let args = std::fs::read_to_string(&seen).unwrap();
        assert!(
            args.contains("-accel kvm -cpu Haswell-noTSX,-pcid,-invpcid,enforce"),
            "{args}"
        );
        assert!(args.trim_end().ends_with("-S"), "{args}");
    }
}
