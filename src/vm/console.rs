//! A persistent VM's serial console, capped like a test run's. systemd runs the VM and no
//! vmrun process stays with it, so the unit's ExecStart is a small vmrun process beside QEMU
//! (`vmrun vm qemu --console LOG -- QEMU...`): it starts QEMU with the console's pipe at a
//! fixed descriptor (the unit's QEMU line names it), writes the log from the other end as a
//! run does ([`Console`]), and ends with QEMU's status, so systemd sees QEMU's fate.

use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use super::Error;
use crate::path_error::PathError;
use crate::qemu::serial::Console;

/// Where QEMU finds its console pipe. The first descriptor after stdio: systemd starts the
/// unit's process with nothing else open.
pub const CONSOLE_FD: RawFd = 3;

/// The unit's ExecStart: vmrun's console writer, then QEMU's own command line.
pub fn exec_start(vmrun: &Path, serial_log: &Path, qemu_argv: Vec<OsString>) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![
        vmrun.into(),
        "vm".into(),
        "qemu".into(),
        "--console".into(),
        serial_log.into(),
        "--".into(),
    ];
    argv.extend(qemu_argv);
    argv
}

/// Runs QEMU (`argv`, program first) with its console pipe at [`CONSOLE_FD`], writing the
/// console to `log`, until QEMU exits and its last console bytes are in the log.
pub fn run_qemu(log: &Path, argv: &[OsString]) -> Result<ExitStatus, Error> {
    let (program, args) = argv
        .split_first()
        .expect("clap requires QEMU's command line");
    let mut console = Console::at_fd(log, CONSOLE_FD).map_err(PathError::at("create", log))?;
    let mut qemu = Command::new(program);
    qemu.args(args).stdin(Stdio::null());
    // SAFETY: fcntl is async-signal-safe, and CONSOLE_FD is open: `console` holds it.
    unsafe {
        qemu.pre_exec(|| match libc::fcntl(CONSOLE_FD, libc::F_SETFD, 0) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
    let mut child = qemu
        .spawn()
        .map_err(PathError::at("run", Path::new(program)))?;
    console.qemu_started();
    // Stopping the unit: ExecStop powers the guest off, then systemd sends SIGTERM to every
    // process left. This one stays until QEMU's last console bytes are in the log; it ends
    // when QEMU does (QEMU gets the same SIGTERM, and has its own handler).
    // SAFETY: ignoring signals changes no memory.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    let status = child
        .wait()
        .map_err(PathError::at("wait for", Path::new(program)))?;
    console.finish();
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_comes_first() {
        let argv = exec_start(
            Path::new("/bin/vmrun"),
            Path::new("/s/serial.log"),
            vec!["/bin/qemu".into(), "-m".into()],
        );
        assert_eq!(
            argv,
            [
                "/bin/vmrun",
                "vm",
                "qemu",
                "--console",
                "/s/serial.log",
                "--",
                "/bin/qemu",
                "-m"
            ]
        );
    }
}
