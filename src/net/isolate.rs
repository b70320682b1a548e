//! `vmrun isolate`: starts QEMU in a network namespace of its own (and a user namespace, so
//! no privilege is needed) whose only way out is slirp4netns, then becomes QEMU.
//!
//! The process vmrun (or systemd) starts *is* QEMU in the end: the same pid, the same
//! descriptors (`-incoming fd:N`), the same parent-death signal. Before it turns into QEMU:
//!
//! 1. it forks a child that will run slirp4netns in the host's namespace (it must make the
//!    real sockets there), and enters new user, network and mount namespaces itself;
//! 2. the child starts slirp4netns for this process's namespace; it brings up `tap0` with a
//!    default route through the host, and refuses connections to the host's loopback;
//! 3. the host's own addresses and 169.254.0.0/16 become unreachable routes ([`blocked`]);
//! 4. the namespace's `/etc/resolv.conf` names slirp4netns's DNS forwarder (the host's may
//!    name a resolver on its loopback, like systemd-resolved's 127.0.0.53, unreachable here);
//! 5. the host side of each forward is bound by slirp4netns and leads to the same port in the
//!    namespace, where QEMU's own forward listens;
//! 6. it executes QEMU, which inherits the write end of slirp4netns's exit pipe: when QEMU is
//!    gone, however it ends, slirp4netns sees end of file and exits.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::forward::Forward;
use super::{Network, blocked, slirp4netns};
use crate::pipe::pipe;
use crate::qemu::args::{Machine, command_line};
use crate::tools::{self, MissingTool};

/// How long slirp4netns may take to configure the namespace (it takes milliseconds).
const READY_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error(transparent)]
    #[diagnostic(transparent)]
    MissingTool(#[from] MissingTool),
    #[error("cannot create a user and network namespace for the guest")]
    #[diagnostic(help(
        "the `outbound` network needs unprivileged user namespaces \
         (sysctl kernel.unprivileged_userns_clone=1, or on Ubuntu \
         kernel.apparmor_restrict_unprivileged_userns=0), or vmrun run as root; \
         `test.network: host` (or `--network host`) opts out of the isolation"
    ))]
    Unshare(#[source] io::Error),
    #[error("cannot {action}")]
    Namespace {
        action: String,
        #[source]
        source: io::Error,
    },
    #[error("slirp4netns did not bring up the guest's network: {reason}")]
    NotReady { reason: String },
    #[error("cannot make the host's addresses unreachable ({status}): {stderr}")]
    Routes { status: String, stderr: String },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Slirp(#[from] slirp4netns::Error),
    #[error("cannot start {}", program.display())]
    Exec {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::MissingTool(_) => crate::exit_code::MISSING_TOOL,
            _ => crate::exit_code::VM_FAILED,
        }
    }
}

/// What `vmrun isolate` is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// A 0700 directory of the VM's: slirp4netns's API socket and the namespace's resolv.conf.
    pub dir: PathBuf,
    /// Forwards from the host; QEMU's own forwards listen on their host ports in the namespace.
    pub forwards: Vec<Forward>,
    pub qemu: PathBuf,
    pub qemu_args: Vec<OsString>,
}

impl Launch {
    pub fn api_socket(&self) -> PathBuf {
        api_socket(&self.dir)
    }

    /// `vmrun isolate`'s command line for this launch (after the program, `vmrun` itself).
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> =
            vec!["isolate".into(), "--dir".into(), self.dir.clone().into()];
        for forward in &self.forwards {
            args.extend(["--forward".into(), forward.to_string().into()]);
        }
        args.push("--".into());
        args.push(self.qemu.clone().into());
        args.extend(self.qemu_args.iter().cloned());
        args
    }
}

/// The program and arguments that start `machine` with `qemu` on its network: QEMU itself,
/// or, for [`Network::Outbound`], this vmrun's `isolate` around it, with slirp4netns's socket
/// and the namespace's files in `dir` and the machine's forwards bound on the host.
pub fn command(
    machine: &Machine,
    dir: &Path,
    qemu: &Path,
) -> Result<(PathBuf, Vec<OsString>), Error> {
    let args = command_line(machine);
    let forwards = &machine.forwards;
    if machine.network != Network::Outbound {
        return Ok((qemu.to_owned(), args));
    }
    // Said here, by vmrun, rather than in QEMU's log by the launcher.
    for program in ["slirp4netns", "ip"] {
        tools::find(program)?;
    }
    let vmrun = std::env::current_exe().map_err(|source| Error::Exec {
        program: "vmrun".into(),
        source,
    })?;
    let launch = Launch {
        dir: dir.to_owned(),
        forwards: forwards.to_vec(),
        qemu: qemu.to_owned(),
        qemu_args: args,
    };
    Ok((vmrun, launch.args()))
}

/// The namespace's resolv.conf, in the VM's directory.
pub const RESOLV_CONF: &str = "resolv.conf";

/// slirp4netns's API socket in a VM's directory.
pub fn api_socket(dir: &Path) -> PathBuf {
    dir.join("slirp4netns.sock")
}

/// Sets up the namespace and executes QEMU; returns only if that failed.
pub fn exec(launch: &Launch) -> Error {
    match prepare(launch) {
        Ok(ExitPipe(exit_write)) => {
            let mut qemu = Command::new(&launch.qemu);
            qemu.args(&launch.qemu_args);
            // SAFETY: fcntl on a descriptor this process owns.
            if unsafe { libc::fcntl(exit_write.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
                return Error::Exec {
                    program: launch.qemu.clone(),
                    source: io::Error::last_os_error(),
                };
            }
            // Kept open (and no longer owned here) into QEMU.
            let _ = exit_write.into_raw_fd();
            let source = qemu.exec();
            Error::Exec {
                program: launch.qemu.clone(),
                source,
            }
        }
        Err(e) => e,
    }
}

/// The write end of slirp4netns's exit pipe, to be inherited by QEMU.
struct ExitPipe(OwnedFd);

fn prepare(launch: &Launch) -> Result<ExitPipe, Error> {
    let slirp = tools::find("slirp4netns")?;
    let ip = tools::find("ip")?;
    let host_addresses =
        blocked::host_addresses().map_err(namespace("list the host's addresses"))?;
    let pipe = || pipe().map_err(namespace("create a pipe"));
    let (ready_read, ready_write) = pipe()?;
    let (exit_read, exit_write) = pipe()?;
    let (go_read, go_write) = pipe()?;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    let api = launch.api_socket();
    let _ = std::fs::remove_file(&api);
    let slirp_args = slirp4netns::args(pid, ready_write.as_raw_fd(), exit_read.as_raw_fd(), &api);

    // SAFETY: this process is single-threaded (vmrun isolate starts no thread before this),
    // so the child may run any code; it only waits and executes slirp4netns.
    match unsafe { libc::fork() } {
        -1 => return Err(namespace("fork")(io::Error::last_os_error())),
        0 => start_slirp4netns(
            go_read.as_raw_fd(),
            &[&ready_read, &exit_write, &go_write].map(AsRawFd::as_raw_fd),
            &[&ready_write, &exit_read].map(AsRawFd::as_raw_fd),
            &slirp,
            &slirp_args,
        ),
        _ => {}
    }
    // This process's copies of the child's ends; the child keeps its own.
    drop((ready_write, exit_read, go_read));

    // SAFETY: prctl with PR_GET_PDEATHSIG writes one int.
    let mut death_signal: libc::c_int = 0;
    unsafe {
        libc::prctl(
            libc::PR_GET_PDEATHSIG,
            &mut death_signal as *mut libc::c_int,
        )
    };
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    enter_namespaces()?;
    private_resolv_conf(&launch.dir)?;

    File::from(go_write)
        .write_all(&[1])
        .map_err(namespace("start slirp4netns"))?;
    wait_ready(ready_read)?;

    add_routes(&ip, &blocked::route_batch(&host_addresses))?;
    for forward in &launch.forwards {
        slirp4netns::add_forward(&api, forward)?;
    }
    // Entering a user namespace may have cleared the parent-death signal: set it again, and
    // go no further if the parent died meanwhile.
    if death_signal != 0 {
        // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, death_signal as libc::c_ulong) };
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } != parent {
            std::process::exit(1);
        }
    }
    Ok(ExitPipe(exit_write))
}

/// The forked child: waits until the namespace exists, then becomes slirp4netns with only
/// `keep` (its ready and exit descriptors) besides the standard ones. It first closes the
/// parent's ends (`parents`): with `go`'s write end still open here, the parent's death would
/// never reach it as end of file.
fn start_slirp4netns(
    go: RawFd,
    parents: &[RawFd],
    keep: &[RawFd],
    slirp: &Path,
    args: &[OsString],
) -> ! {
    // SAFETY: close_range marks this child's descriptors close-on-exec; fcntl clears it for
    // the two slirp4netns is given; read waits for the parent's byte.
    unsafe {
        for &fd in parents {
            libc::close(fd);
        }
        libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int);
        for &fd in keep {
            libc::fcntl(fd, libc::F_SETFD, 0);
        }
        let mut byte = 0u8;
        // The parent failed (or died) before its namespace was ready: end of file.
        if libc::read(go, (&mut byte as *mut u8).cast(), 1) != 1 {
            libc::_exit(1);
        }
    }
    // Its standard output is a banner; its errors (and some chatter) go to QEMU's log.
    let err = Command::new(slirp)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .exec();
    eprintln!("vmrun isolate: cannot start {}: {err}", slirp.display());
    // SAFETY: ends the child without running the parent's exit handlers.
    unsafe { libc::_exit(127) }
}

/// New user, network and mount namespaces, this process root in them as its own user.
fn enter_namespaces() -> Result<(), Error> {
    // SAFETY: getuid and getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    // SAFETY: unshare on a single-threaded process.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET | libc::CLONE_NEWNS) } != 0 {
        return Err(Error::Unshare(io::Error::last_os_error()));
    }
    let write = |path: &str, text: String| {
        std::fs::write(path, text).map_err(namespace(&format!("write {path}")))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("0 {uid} 1"))?;
    write("/proc/self/gid_map", format!("0 {gid} 1"))
}

/// Points this namespace's `/etc/resolv.conf` at slirp4netns's DNS forwarder (QEMU's user
/// networking forwards the guest's DNS to what that file names).
fn private_resolv_conf(dir: &Path) -> Result<(), Error> {
    let target = c"/etc/resolv.conf";
    if !Path::new("/etc/resolv.conf").exists() {
        return Ok(());
    }
    let ours = dir.join(RESOLV_CONF);
    std::fs::write(&ours, format!("nameserver {}\n", slirp4netns::DNS))
        .map_err(namespace("write the namespace's resolv.conf"))?;
    let source = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(ours.as_os_str()))
        .map_err(|_| {
        namespace("name the namespace's resolv.conf")(io::ErrorKind::InvalidInput.into())
    })?;
    // SAFETY: mount with NUL-terminated paths; this mount namespace is this process's own.
    unsafe {
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(namespace("make the mount namespace private")(
                io::Error::last_os_error(),
            ));
        }
        if libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ) != 0
        {
            return Err(namespace("bind the namespace's resolv.conf")(
                io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Waits for slirp4netns's ready byte.
fn wait_ready(ready: OwnedFd) -> Result<(), Error> {
    let mut poll = libc::pollfd {
        fd: ready.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, a bounded timeout.
    let n = unsafe { libc::poll(&mut poll, 1, READY_WAIT.as_millis() as libc::c_int) };
    if n == 0 {
        return Err(Error::NotReady {
            reason: format!("no answer within {} s", READY_WAIT.as_secs()),
        });
    }
    match File::from(ready).read(&mut [0u8]) {
        Ok(1) => Ok(()),
        _ => Err(Error::NotReady {
            reason: "it exited first (its messages are in QEMU's log)".into(),
        }),
    }
}

fn add_routes(ip: &Path, batch: &str) -> Result<(), Error> {
    let mut child = Command::new(ip)
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Exec {
            program: ip.to_owned(),
            source,
        })?;
    let written = child
        .stdin
        .take()
        .expect("piped")
        .write_all(batch.as_bytes());
    let output = child.wait_with_output().map_err(|source| Error::Exec {
        program: ip.to_owned(),
        source,
    })?;
    if written.is_err() || !output.status.success() {
        return Err(Error::Routes {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

fn namespace(action: &str) -> impl Fn(io::Error) -> Error + '_ {
    move |source| Error::Namespace {
        action: action.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_names_the_dir_each_forward_and_qemu_after_the_separator() {
        let launch = Launch {
            dir: "/r/runs/a".into(),
            forwards: vec![Forward::ssh(40022), "udp:0.0.0.0:5353:53".parse().unwrap()],
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            qemu_args: vec!["-m".into(), "1024M".into()],
        };
        let line: Vec<String> = launch
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            line.join(" "),
            "isolate --dir /r/runs/a --forward tcp:127.0.0.1:40022:22 \
             --forward udp:0.0.0.0:5353:53 \
             -- /usr/bin/qemu-system-x86_64 -m 1024M"
        );
        assert_eq!(launch.api_socket(), Path::new("/r/runs/a/slirp4netns.sock"));
    }
}
