//! A child process's exit, seen without reaping it: until it is reaped its pid cannot be
//! reused, so whoever holds the `Child` can still signal and reap it by that pid.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How long a process group has after SIGTERM (rsync removing the file it was writing, say)
/// before SIGKILL.
const GRACE: Duration = Duration::from_millis(500);

/// How the child `pid` exited, if it has; it stays a zombie for its owner to reap.
/// `None` also when `pid` is not a child of this process (or was reaped already).
pub fn peek_exit(pid: u32) -> Option<ExitStatus> {
    // SAFETY: waitid(2) with a zeroed siginfo_t it fills in; WNOWAIT leaves the child as is.
    let info = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        if libc::waitid(libc::P_PID, pid, &mut info, flags) != 0 || info.si_pid() == 0 {
            return None;
        }
        info
    };
    // SAFETY: si_status is valid for the SIGCHLD siginfo waitid filled in.
    let status = unsafe { info.si_status() };
    // Back to the wait(2) encoding ExitStatus is made from.
    Some(ExitStatus::from_raw(match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        _ => status & 0x7f,
    }))
}

/// Ends `child` and everything in its process group, which the child must lead
/// (`process_group(0)`): SIGTERM, SIGKILL once the child exited or after [`GRACE`], then
/// reaps it. The group is signalled by its id, the child's pid: until the child is reaped
/// that id cannot be reused, so no other process is ever signalled.
pub fn end_group(child: &mut Child) -> std::io::Result<ExitStatus> {
    let group = child.id() as libc::pid_t;
    // SAFETY: kill(2) on the process group this function's caller created.
    unsafe { libc::kill(-group, libc::SIGTERM) };
    let give_up = Instant::now() + GRACE;
    while peek_exit(child.id()).is_none() && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: as above; the child is not reaped yet, so the group id is still ours.
    unsafe { libc::kill(-group, libc::SIGKILL) };
    child.wait()
}

/// `exit status 3`, `signal 9`: how a process ended, in the words of vmrun's messages.
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn peek_until_exited(pid: u32) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = peek_exit(pid) {
                return status;
            }
            assert!(Instant::now() < deadline, "{pid} did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn an_exit_code_is_seen_and_the_child_is_still_there_to_reap() {
        let mut child = Command::new("/bin/sh")
            .args(["-c", "exit 3"])
            .spawn()
            .unwrap();
        let status = peek_until_exited(child.id());
        assert_eq!(status.code(), Some(3));
        assert_eq!(describe(status), "exit status 3");
        // Seen twice: nothing was reaped.
        assert_eq!(peek_exit(child.id()), Some(status));
        assert_eq!(child.wait().unwrap().code(), Some(3));
        assert_eq!(peek_exit(child.id()), None, "reaped now");
    }

    #[test]
    fn a_signal_is_seen() {
        let mut child = Command::new("/bin/sleep").arg("30").spawn().unwrap();
        assert_eq!(peek_exit(child.id()), None, "still running");
        child.kill().unwrap();
        let status = peek_until_exited(child.id());
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert_eq!(describe(status), "signal 9");
        child.wait().unwrap();
    }
}
