//! Unprivileged user and network namespaces: the default `outbound` network runs QEMU in a
//! namespace of its own (`vmrun isolate`), as the user who runs vmrun. Some hosts turn them
//! off (`kernel.unprivileged_userns_clone=0`, `user.max_user_namespaces=0`) or restrict them
//! with AppArmor (Ubuntu 24.04's `kernel.apparmor_restrict_unprivileged_userns=1`, where
//! `unshare` succeeds and writing the uid map fails).

use std::io;

use super::Finding;

const CHECK: &str = "namespaces";

pub(super) fn check() -> Finding {
    judge(try_namespaces())
}

fn judge(result: Result<(), Failure>) -> Finding {
    match result {
        Ok(()) => Finding::ok(
            CHECK,
            "unprivileged user and network namespaces work (the default `outbound` network)",
        ),
        Err(failure) => Finding::fail(
            CHECK,
            format!(
                "cannot make a user and network namespace ({}: {}); the default `outbound` \
                 network needs one",
                failure.step, failure.error
            ),
            "allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, \
             user.max_user_namespaces=15000, or on Ubuntu 24.04 \
             kernel.apparmor_restrict_unprivileged_userns=0), or run tests with \
             `--network host` or `--network none`",
        ),
    }
}

/// Which step failed, and how.
#[derive(Debug)]
struct Failure {
    step: &'static str,
    error: io::Error,
}

/// The steps `vmrun isolate` takes, in a child that exits at once: unshare, then map the
/// user. A step that fails sends its index and errno back through a pipe.
fn try_namespaces() -> Result<(), Failure> {
    const STEPS: [&str; 4] = [
        "unshare",
        "write /proc/self/setgroups",
        "write /proc/self/uid_map",
        "write /proc/self/gid_map",
    ];
    let os_failure = |step: &'static str| Failure {
        step,
        error: io::Error::last_os_error(),
    };
    // SAFETY: getuid and getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    // Everything the child needs is made before the fork: after it, only system calls.
    let writes = [
        (c"/proc/self/setgroups", "deny".to_owned()),
        (c"/proc/self/uid_map", format!("0 {uid} 1")),
        (c"/proc/self/gid_map", format!("0 {gid} 1")),
    ];
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_failure("pipe"));
    }
    let [read_end, write_end] = fds;

    // SAFETY: the child makes only async-signal-safe system calls and ends with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: system calls on memory prepared before the fork; _exit never returns.
        unsafe {
            let fail = |step: i32| -> ! {
                let report = [step, *libc::__errno_location()];
                libc::write(write_end, report.as_ptr().cast(), size_of_val(&report));
                libc::_exit(1)
            };
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0 {
                fail(0);
            }
            for (step, (path, text)) in (1..).zip(&writes) {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, text.as_ptr().cast(), text.len()) < 0 {
                    fail(step);
                }
                libc::close(fd);
            }
            libc::_exit(0);
        }
    }
    // SAFETY: the parent's copy of the write end is closed so the read sees the child's end.
    unsafe { libc::close(write_end) };
    let forked = if pid < 0 {
        Err(os_failure("fork"))
    } else {
        Ok(())
    };
    let mut report = [0i32; 2];
    // SAFETY: reads at most `report`'s size into it; the read end is closed after.
    let got = unsafe {
        let got = libc::read(read_end, report.as_mut_ptr().cast(), size_of_val(&report));
        libc::close(read_end);
        got
    };
    forked?;
    let mut status = 0;
    // SAFETY: waits for the child just forked.
    if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        return Err(os_failure("wait"));
    }
    if got == size_of_val(&report) as isize {
        let [step, errno] = report;
        return Err(Failure {
            step: STEPS
                .get(step as usize)
                .copied()
                .unwrap_or("namespace setup"),
            error: io::Error::from_raw_os_error(errno),
        });
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        return Ok(());
    }
    Err(Failure {
        step: "namespace setup",
        error: io::Error::other(format!("the check's child ended with wait status {status}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn a_refused_step_is_named_with_its_error() {
        let f = judge(Err(Failure {
            step: "write /proc/self/uid_map",
            error: io::Error::from_raw_os_error(libc::EPERM),
        }));
        assert_eq!(f.status, Status::Fail);
        assert!(
            f.detail
                .contains("write /proc/self/uid_map: Operation not permitted"),
            "{}",
            f.detail
        );
        assert!(f.fix.unwrap().contains("--network host"));
    }

    #[test]
    fn this_host_answers_without_hanging() {
        // Works here (ENVIRONMENT.md: `unshare -Urn` works); either way the answer is a step.
        let _ = try_namespaces();
    }
}
