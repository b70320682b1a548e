//! rsync as a child process that ends when vmrun says so: at a deadline, when vmrun is asked
//! to stop (SIGINT, SIGTERM), or when what it prints shows it must (too many bytes). Waiting
//! with `Command::output()` would wait forever for a guest that stopped answering.

use std::io::{self, Read, Write};
use std::ops::ControlFlow;
use std::os::unix::process::CommandExt;
use std::process::{ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::wait::{Stop, Watch};

/// How often the deadline and the stop request are looked at while rsync prints nothing.
const POLL: Duration = Duration::from_millis(50);
/// How long stderr may stay open after rsync exited: a remote shell that outlives rsync may
/// hold it, and vmrun does not wait for that.
const STDERR_LINGER: Duration = Duration::from_millis(500);
/// How much of rsync's stderr is kept for an error message: the guest's rsync can make ours
/// print without end.
const STDERR_KEPT: usize = 64 * 1024;

/// When a transfer must end, whatever is left of it.
pub struct Bounds<'a> {
    pub timeout: Duration,
    pub deadline: Instant,
    /// Looked at every poll: a stop request or the guest's QEMU gone ends the transfer.
    pub watch: Watch<'a>,
}

impl<'a> Bounds<'a> {
    /// `timeout` from now.
    pub fn new(timeout: Duration, watch: Watch<'a>) -> Bounds<'a> {
        Bounds {
            timeout,
            deadline: Instant::now() + timeout,
            watch,
        }
    }
}

#[derive(Debug)]
pub enum Ending {
    /// rsync exited by itself; the start of its stderr.
    Exited {
        status: ExitStatus,
        stderr: String,
    },
    /// The line callback asked for the end.
    Cut,
    TimedOut,
    Stopped(Stop),
}

/// Runs `command` in a process group of its own, with `input` (if any) on its stdin, and
/// passes each line of its stdout (split at `\n` and at the `\r` of progress lines) to
/// `on_line`. When `on_line` breaks, the deadline passes or `stop` says so, the whole group
/// (rsync, its remote shell, its forked receiver) gets SIGTERM, then SIGKILL, and rsync is reaped.
pub fn run(
    command: &mut Command,
    input: Option<Vec<u8>>,
    bounds: &Bounds,
    on_line: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
) -> io::Result<Ending> {
    let mut child = command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // A thread: rsync reads its file list while it works, and may never read it all.
        std::thread::spawn(move || stdin.write_all(&input));
    }
    let lines = read_lines(child.stdout.take().expect("stdout is piped"));
    let stderr = read_stderr(child.stderr.take().expect("stderr is piped"));
    let ending = loop {
        match lines.recv_timeout(POLL) {
            Ok(line) => {
                if on_line(&line).is_break() {
                    break Ending::Cut;
                }
            }
            Err(RecvTimeoutError::Disconnected) => match child.try_wait()? {
                Some(status) => {
                    let stderr = stderr.collect();
                    return Ok(Ending::Exited { status, stderr });
                }
                None => std::thread::sleep(POLL),
            },
            Err(RecvTimeoutError::Timeout) => {}
        }
        if let Err(stop) = bounds.watch.check() {
            break Ending::Stopped(stop);
        }
        if Instant::now() >= bounds.deadline {
            break Ending::TimedOut;
        }
    };
    crate::child::end_group(&mut child)?;
    Ok(ending)
}

/// Sends each line of `stdout`, without its terminator, until it closes.
fn read_lines(mut stdout: ChildStdout) -> Receiver<Vec<u8>> {
    let (lines, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut pending = Vec::new();
        let mut buffer = [0u8; 64 * 1024];
        while let Ok(n @ 1..) = stdout.read(&mut buffer) {
            pending.extend_from_slice(&buffer[..n]);
            while let Some(end) = pending.iter().position(|&b| b == b'\n' || b == b'\r') {
                let mut line: Vec<u8> = pending.drain(..=end).collect();
                line.pop();
                if lines.send(line).is_err() {
                    return;
                }
            }
        }
        if !pending.is_empty() {
            let _ = lines.send(pending);
        }
    });
    receiver
}

/// The first [`STDERR_KEPT`] bytes of rsync's stderr, read to its end by a thread.
struct Stderr {
    kept: Arc<Mutex<Vec<u8>>>,
    closed: Receiver<()>,
}

fn read_stderr(mut stderr: ChildStderr) -> Stderr {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let (closed_tx, closed) = mpsc::channel();
    let shared = kept.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        while let Ok(n @ 1..) = stderr.read(&mut buffer) {
            let mut kept = shared.lock().unwrap_or_else(|p| p.into_inner());
            let room = STDERR_KEPT.saturating_sub(kept.len());
            kept.extend_from_slice(&buffer[..n.min(room)]);
        }
        let _ = closed_tx.send(());
    });
    Stderr { kept, closed }
}

impl Stderr {
    /// What was read once stderr closed or [`STDERR_LINGER`] passed.
    fn collect(self) -> String {
        let _ = self.closed.recv_timeout(STDERR_LINGER);
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&kept).trim_end().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    fn alive(pid: &str) -> bool {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
        !stat.is_empty() && !stat.contains(") Z ")
    }

    #[test]
    fn lines_input_exit_status_and_stderr() {
        let mut seen = Vec::new();
        let bounds = Bounds::new(Duration::from_secs(30), Watch::signals());
        let ending = run(
            &mut sh("cat; printf 'a\\rb\\nc'; echo oops >&2; exit 3"),
            Some(b"in\n".to_vec()),
            &bounds,
            &mut |line| {
                seen.push(String::from_utf8_lossy(line).into_owned());
                ControlFlow::Continue(())
            },
        )
        .unwrap();
        assert_eq!(seen, ["in", "a", "b", "c"]);
        let Ending::Exited { status, stderr } = ending else {
            panic!("{ending:?}")
        };
        assert_eq!((status.code(), stderr.as_str()), (Some(3), "oops"));
    }

    /// A child that ignores SIGTERM, and a grandchild: both end, within a second.
    #[test]
    fn the_deadline_ends_the_whole_group() {
        let started = Instant::now();
        let mut pids = Vec::new();
        let bounds = Bounds::new(Duration::from_millis(300), Watch::signals());
        let script = "trap '' TERM; sleep 300 & echo $!; echo $$; wait";
        let ending = run(&mut sh(script), None, &bounds, &mut |line| {
            pids.push(String::from_utf8_lossy(line).into_owned());
            ControlFlow::Continue(())
        })
        .unwrap();
        assert!(matches!(ending, Ending::TimedOut), "{ending:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(pids.len(), 2);
        for pid in &pids {
            assert!(!alive(pid), "{pid} outlived the deadline");
        }
    }

    #[test]
    fn stop_and_cut_end_it_early() {
        let asked = Instant::now();
        let (_dir, qemu) = crate::qemu::process::fake("sleep 0.2");
        let bounds = Bounds::new(Duration::from_secs(60), Watch::qemu(&qemu));
        let ending = run(&mut sh("sleep 300"), None, &bounds, &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
        assert!(
            matches!(ending, Ending::Stopped(Stop::QemuExited(_))),
            "{ending:?}"
        );
        assert!(asked.elapsed() < Duration::from_secs(2));

        let bounds = Bounds::new(Duration::from_secs(60), Watch::signals());
        let mut lines = 0;
        let ending = run(&mut sh("yes"), None, &bounds, &mut |_| {
            lines += 1;
            if lines == 1000 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
        assert!(matches!(ending, Ending::Cut), "{ending:?}");
    }

    #[test]
    fn stderr_is_kept_up_to_a_limit() {
        let bounds = Bounds::new(Duration::from_secs(60), Watch::signals());
        let script = "head -c 1000000 /dev/zero | tr '\\0' x >&2";
        let ending = run(&mut sh(script), None, &bounds, &mut |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
        let Ending::Exited { stderr, .. } = ending else {
            panic!("{ending:?}")
        };
        assert_eq!(stderr.len(), STDERR_KEPT);
    }
}
