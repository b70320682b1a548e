//! A running QEMU that cannot outlive vmrun: killed when dropped, and by the kernel
//! (PR_SET_PDEATHSIG) when vmrun dies, even by SIGKILL. It owns its serial console, which
//! is complete on disk once QEMU is gone.

use super::serial::{Console, last_lines};
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// Lines of QEMU's own log quoted when it exits unasked.
const LOG_LINES: usize = 15;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error("cannot start {}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create QEMU's log {}", path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for QEMU (pid {pid})")]
    Wait {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

pub struct QemuProcess {
    child: Child,
    console: Console,
    /// QEMU's own stdout and stderr.
    log: PathBuf,
}

/// QEMU's end as vmrun reports it: how it exited and the end of its own log.
#[derive(Debug, Clone, PartialEq, thiserror::Error, miette::Diagnostic)]
#[error("QEMU exited ({})\n{log}", crate::child::describe(*status))]
pub struct Exited {
    pub status: ExitStatus,
    /// The last lines of QEMU's log, introduced by a line naming the file.
    pub log: String,
}

impl QemuProcess {
    /// Starts `qemu` with `args` and `console`'s descriptor; its stdout and stderr (QEMU's own
    /// messages, not the guest's console) go to `log`.
    ///
    /// The death signal is tied to the thread that spawns, so call this from a thread that
    /// lives as long as the VM should (the main thread, or one that owns the VM).
    pub fn spawn(
        qemu: &Path,
        args: &[OsString],
        log: &Path,
        console: Console,
    ) -> Result<QemuProcess, Error> {
        Self::start(qemu, args, log, console, None)
    }

    /// [`spawn`](Self::spawn), with `passed` open in QEMU under the same number (for
    /// arguments like `-incoming fd:N`). The descriptor stays close-on-exec here, so no other
    /// program vmrun starts meanwhile gets it.
    pub fn spawn_passing(
        qemu: &Path,
        args: &[OsString],
        log: &Path,
        console: Console,
        passed: BorrowedFd,
    ) -> Result<QemuProcess, Error> {
        Self::start(qemu, args, log, console, Some(passed.as_raw_fd()))
    }

    fn start(
        qemu: &Path,
        args: &[OsString],
        log: &Path,
        mut console: Console,
        passed: Option<RawFd>,
    ) -> Result<QemuProcess, Error> {
        let out = File::create(log).map_err(|source| Error::Log {
            path: log.to_owned(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| Error::Log {
            path: log.to_owned(),
            source,
        })?;
        let console_fd = console
            .qemu_end()
            .expect("a console not given to a QEMU yet")
            .as_raw_fd();
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        let mut command = Command::new(qemu);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: a Ctrl-C in the terminal reaches vmrun, which ends QEMU
            // by pid when it is done with it (an interrupted run may first save the VM, for
            // `--capture-failures`), and not QEMU at the same instant.
            .process_group(0);
        // SAFETY: the closure only calls async-signal-safe functions (fcntl, prctl, getppid,
        // _exit), and the descriptors are open: their owners outlive this call.
        unsafe {
            command.pre_exec(move || {
                for fd in [Some(console_fd), passed].into_iter().flatten() {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|source| Error::Spawn {
            program: qemu.to_owned(),
            source,
        })?;
        console.qemu_started();
        Ok(QemuProcess {
            child,
            console,
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How QEMU exited, if it has, with the end of its log. Only [`kill`](Self::kill) (and
    /// drop) reap QEMU, so this needs no `&mut` and any wait can ask it (see
    /// [`crate::wait::Watch`]).
    pub fn exited(&self) -> Option<Exited> {
        let status = crate::child::peek_exit(self.pid())?;
        let tail = last_lines(&self.log, LOG_LINES);
        let log = if tail.is_empty() {
            format!("(QEMU's log {} is empty)", self.log.display())
        } else {
            format!("last lines of QEMU's log ({}):\n{tail}", self.log.display())
        };
        Some(Exited { status, log })
    }

    /// Kills QEMU (SIGKILL to its pid, which this process started, and not reaped yet) and
    /// reaps it. Its console log is complete then.
    pub fn kill(&mut self) -> Result<ExitStatus, Error> {
        let pid = self.pid();
        // Already exited is fine: wait reaps it either way.
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .map_err(|source| Error::Wait { pid, source })?;
        self.console.finish();
        Ok(status)
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// A stand-in QEMU for unit tests of what waits on one: `sh -c SCRIPT`.
#[cfg(test)]
pub fn fake(script: &str) -> (tempfile::TempDir, QemuProcess) {
    let dir = tempfile::tempdir().unwrap();
    let console = Console::to_log(&dir.path().join("serial.log")).unwrap();
    let args: Vec<OsString> = vec!["-c".into(), script.into()];
    let qemu = QemuProcess::spawn(
        Path::new("/bin/sh"),
        &args,
        &dir.path().join("log"),
        console,
    );
    (dir, qemu.unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::time::{Duration, Instant};

    /// Polls until the process exits or `timeout` passes.
    fn wait_timeout(p: &QemuProcess, timeout: Duration) -> Option<Exited> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(exited) = p.exited() {
                return Some(exited);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn console(dir: &tempfile::TempDir) -> Console {
        Console::to_log(&dir.path().join("serial.log")).unwrap()
    }

    #[test]
    fn the_console_is_written_through_its_descriptor_and_complete_once_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let console = console(&dir);
        let args: Vec<OsString> = vec![
            "-c".into(),
            format!("echo console > /dev/fd/{}; echo own", console.fd()).into(),
        ];
        let p = QemuProcess::spawn(
            Path::new("/bin/sh"),
            &args,
            &dir.path().join("log"),
            console,
        )
        .unwrap();
        assert_eq!(
            wait_timeout(&p, Duration::from_secs(10))
                .unwrap()
                .status
                .code(),
            Some(0)
        );
        drop(p);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("serial.log")).unwrap(),
            "console\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("log")).unwrap(),
            "own\n"
        );
    }

    #[test]
    fn wait_timeout_and_kill_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let args: Vec<OsString> = vec!["-c".into(), "echo started; exec sleep 30".into()];
        let p = QemuProcess::spawn(Path::new("/bin/sh"), &args, &log, console(&dir)).unwrap();
        let pid = p.pid() as i32;
        assert_eq!(wait_timeout(&p, Duration::from_millis(200)), None);
        drop(p);
        // SAFETY: signal 0 only checks whether the pid exists.
        assert_eq!(
            unsafe { libc::kill(pid, 0) },
            -1,
            "process {pid} outlived its handle"
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "started\n");
    }

    #[test]
    fn exit_status_and_log_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let args: Vec<OsString> = vec!["-c".into(), "echo cannot bind; exit 3".into()];
        let p = QemuProcess::spawn(Path::new("/bin/sh"), &args, &log, console(&dir)).unwrap();
        let exited = wait_timeout(&p, Duration::from_secs(10)).unwrap();
        assert_eq!(exited.status.code(), Some(3));
        assert_eq!(
            exited.to_string(),
            format!(
                "QEMU exited (exit status 3)\nlast lines of QEMU's log ({}):\ncannot bind",
                log.display()
            )
        );
        // Not reaped by asking: asked again, the same answer.
        assert_eq!(p.exited(), Some(exited));
    }

    #[test]
    fn a_killed_qemu_says_which_signal_and_that_its_log_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let args: Vec<OsString> = vec!["-c".into(), "exec sleep 30".into()];
        let p = QemuProcess::spawn(Path::new("/bin/sh"), &args, &log, console(&dir)).unwrap();
        assert_eq!(p.exited(), None);
        // SAFETY: kill(2) of the child this test started, not reaped yet.
        unsafe { libc::kill(p.pid() as i32, libc::SIGKILL) };
        let exited = wait_timeout(&p, Duration::from_secs(10)).unwrap();
        assert_eq!(
            exited.to_string(),
            format!(
                "QEMU exited (signal 9)\n(QEMU's log {} is empty)",
                log.display()
            )
        );
    }

    #[test]
    fn a_passed_descriptor_is_open_in_the_child_under_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::write(&state, "saved\n").unwrap();
        let file = File::open(&state).unwrap();
        let fd = file.as_raw_fd();
        let log = dir.path().join("log");
        // Through /dev/fd: dash's `<&N` takes one digit, and with tests running in parallel
        // the descriptor's number may have two.
        let args: Vec<OsString> = vec!["-c".into(), format!("cat /dev/fd/{fd}").into()];
        let p = QemuProcess::spawn_passing(
            Path::new("/bin/sh"),
            &args,
            &log,
            console(&dir),
            file.as_fd(),
        )
        .unwrap();
        assert_eq!(
            wait_timeout(&p, Duration::from_secs(10))
                .unwrap()
                .status
                .code(),
            Some(0)
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "saved\n");
        // Not passed, the same number is closed in the child.
        let q = QemuProcess::spawn(Path::new("/bin/sh"), &args, &log, console(&dir)).unwrap();
        assert_ne!(
            wait_timeout(&q, Duration::from_secs(10))
                .unwrap()
                .status
                .code(),
            Some(0)
        );
    }

    #[test]
    fn missing_program_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = QemuProcess::spawn(
            Path::new("/no/qemu"),
            &[],
            &dir.path().join("log"),
            console(&dir),
        )
        .err()
        .unwrap();
        assert_eq!(err.to_string(), "cannot start /no/qemu");
    }
}
