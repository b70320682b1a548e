//! Connections to a guest (pinned host key first, then vmrun's client key), polling for one
//! while the guest boots, and commands whose output is passed on as it arrives.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use ssh2::{BlockDirections, Channel, ErrorCode};

use super::command_line::killed_on_close;
use super::{Error, HostKey, Target, USER};
use crate::wait::Watch;

/// Upper bound on how long one wait on the socket lasts, so stop requests and deadlines are
/// noticed promptly; also the pause between connection attempts.
const POLL: Duration = Duration::from_millis(100);
/// How long a connection may stay silent before it is given up, while the guest has not yet
/// answered any. With QEMU's user networking the port accepts before anything listens in
/// the guest: until the guest's network is up, such a connection stays silent; then the
/// guest resets connections (seen at once) until sshd listens. Once the guest has reset one,
/// silence means sshd accepted and is slow to send its version line (seconds, in an
/// emulated guest that is still booting), and the wait is [`HANDSHAKE_TIMEOUT`].
const BANNER_WAIT: Duration = Duration::from_secs(3);
/// Key exchange and login; generous because an emulated (TCG) guest is slow.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// A single blocking request after login (opening a channel, starting a command).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Closing the channel of a command that is being abandoned: best effort, never long.
const ABANDON_TIMEOUT: Duration = Duration::from_secs(2);
/// The shortest timeout libssh2 takes, in milliseconds (0 would be none at all): for a guest
/// that cannot answer.
const NO_WAIT: u32 = 1;
/// libssh2's code for "would block" in non-blocking mode.
const LIBSSH2_ERROR_EAGAIN: i32 = -37;

/// An authenticated SSH session to a guest.
pub struct Session {
    inner: ssh2::Session,
    port: u16,
}

/// What happens when a command is given up (its deadline passed, or a stop request came).
pub(super) struct Abandon<'a> {
    /// Called first, before anything reaches the guest: a run whose failing VM is captured
    /// pauses it here, with the command as it was. Returns whether the guest still answers
    /// (not once paused: then nothing waits for it).
    pub before: &'a dyn Fn() -> bool,
    /// Run on a channel of its own before the command's channel is closed, for a command
    /// that closing its channel does not end.
    pub kill_line: Option<&'a str>,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    /// Killed by a signal, named without `SIG` (`KILL`, `TERM`, ...).
    Signalled(String),
    /// The deadline passed; the command was signalled and its channel closed.
    TimedOut,
}

/// Connects, checks the host key against the pinned one before anything is sent, and logs
/// in as [`USER`] with the client key; retried (at most every 100 ms) while the guest is
/// still booting, until `deadline`. A wrong host key or a refused login ends the wait at
/// once, and so does what `watch` watches.
pub fn wait_ready(target: &Target, deadline: Instant, watch: &Watch) -> Result<Session, Error> {
    let pinned = pinned_key(target)?;
    let started = Instant::now();
    let mut last = None;
    let mut banner_wait = BANNER_WAIT;
    let session = watch.until(deadline, POLL, || {
        match attempt(target, &pinned, deadline, banner_wait, watch) {
            Ok(session) => Ok(Some(session)),
            Err(e) if e.is_retryable() => {
                if !matches!(e, Error::Connect { .. } | Error::Silent { .. }) {
                    banner_wait = HANDSHAKE_TIMEOUT;
                }
                last = Some(crate::error_line::one_line(&e));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    })?;
    session.ok_or_else(|| Error::NotReady {
        port: target.port,
        waited: started.elapsed(),
        last: last.unwrap_or_else(|| "no attempt was made".to_owned()),
    })
}

fn pinned_key(target: &Target) -> Result<HostKey, Error> {
    HostKey::parse_line(&target.host_key).map_err(|reason| Error::PinnedKey { reason })
}

fn attempt(
    target: &Target,
    pinned: &HostKey,
    deadline: Instant,
    banner_wait: Duration,
    watch: &Watch,
) -> Result<Session, Error> {
    let port = target.port;
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&address, budget(deadline, BANNER_WAIT))
        .map_err(|source| Error::Connect { port, source })?;
    wait_for_banner(&stream, port, budget(deadline, banner_wait), watch)?;

    let mut session = ssh2::Session::new().map_err(|source| Error::Handshake { port, source })?;
    session.set_tcp_stream(stream);
    session.set_timeout(millis(budget(deadline, HANDSHAKE_TIMEOUT)));
    // The cheapest exchange for an emulated guest's CPU (as in the ssh_config vmrun writes).
    session
        .method_pref(
            ssh2::MethodType::Kex,
            "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256",
        )
        .map_err(|source| Error::Handshake { port, source })?;
    session
        .handshake()
        .map_err(|source| Error::Handshake { port, source })?;

    let found = match session.host_key() {
        Some((blob, _)) => HostKey::from_blob(blob.to_vec()),
        None => {
            return Err(Error::HostKeyMismatch {
                port,
                expected: pinned.fingerprint(),
                found: "none".into(),
            });
        }
    };
    if &found != pinned {
        return Err(Error::HostKeyMismatch {
            port,
            expected: pinned.fingerprint(),
            found: found.fingerprint(),
        });
    }
    session
        .userauth_pubkey_file(USER, None, &target.client_key, None)
        .map_err(|source| Error::Auth {
            key: target.client_key.clone(),
            source,
        })?;
    session.set_timeout(millis(REQUEST_TIMEOUT));
    Ok(Session {
        inner: session,
        port,
    })
}

/// Waits until the peer has sent something (sshd's version line) or has closed. What
/// `watch` watches ends the wait early, as if nothing had come (the caller then sees why).
fn wait_for_banner(
    stream: &TcpStream,
    port: u16,
    wait: Duration,
    watch: &Watch,
) -> Result<(), Error> {
    let until = Instant::now() + wait;
    loop {
        let slice = until.saturating_duration_since(Instant::now()).min(POLL);
        if wait_fd(stream.as_raw_fd(), libc::POLLIN, slice)
            .map_err(|source| Error::Connect { port, source })?
        {
            break;
        }
        if Instant::now() >= until || watch.check().is_err() {
            return Err(Error::Silent { port, waited: wait });
        }
    }
    match stream.peek(&mut [0u8; 1]) {
        Ok(0) => Err(Error::Closed { port }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Err(Error::Closed { port }),
        Err(source) => Err(Error::Connect { port, source }),
    }
}

/// The local ends of a command's streams.
pub(super) struct Streams<'a> {
    /// What the command reads, passed on as it comes, then ended with EOF. `None`: nothing is
    /// sent, and the channel's stdin stays open (see [`killed_on_close`]).
    pub stdin: Option<&'a File>,
    pub stdout: &'a mut dyn Write,
    pub stderr: &'a mut dyn Write,
}

/// The command's input on its way into the channel.
struct Input<'a> {
    from: &'a File,
    /// Read but not yet taken by the channel: after a "would block", libssh2 wants the same
    /// bytes offered again.
    pending: Vec<u8>,
    /// `from` reached its end.
    ended: bool,
    /// The channel was told (EOF), or no longer takes input.
    closed: bool,
}

impl Session {
    /// Runs `command_line` (see [`super::remote_command_line`]) and passes its stdout and
    /// stderr on, each to its own writer, flushed as each piece arrives. The command's stdin
    /// is /dev/null.
    ///
    /// When `deadline` passes or `watch` stops the wait, the channel is closed, which kills
    /// the command and everything it started: a watchdog in the guest holds the channel's
    /// stdin and kills the process group when it ends.
    pub fn exec(
        &self,
        command_line: &str,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
        deadline: Option<Instant>,
        watch: &Watch,
        before_abandon: &dyn Fn() -> bool,
    ) -> Result<Ended, Error> {
        let streams = Streams {
            stdin: None,
            stdout,
            stderr,
        };
        let mut stop = || watch.check().map_err(Error::from);
        let line = killed_on_close(command_line);
        let abandon = Abandon {
            before: before_abandon,
            kill_line: None,
        };
        self.run(&line, abandon, streams, deadline, &mut stop)
    }

    /// Runs `remote_line` as the guest user's shell gets it and connects its streams to
    /// `streams`, until it ends, `deadline` passes or `stop` fails (asked at every turn; its
    /// failure is returned). Then the command is abandoned (see [`Abandon`]).
    pub(super) fn run(
        &self,
        remote_line: &str,
        abandon: Abandon,
        mut streams: Streams,
        deadline: Option<Instant>,
        stop: &mut dyn FnMut() -> Result<(), Error>,
    ) -> Result<Ended, Error> {
        let mut channel = self
            .inner
            .channel_session()
            .map_err(self.failed("open a channel"))?;
        channel
            .exec(remote_line)
            .map_err(self.failed("start the command"))?;
        self.inner.set_blocking(false);
        let outcome = self.follow(&mut channel, &mut streams, deadline, stop, abandon);
        self.inner.set_blocking(true);
        // Freeing a channel that is not closed yet waits for it, as long as the session's
        // timeout allows: after an abandon that is the short one.
        drop(channel);
        self.inner.set_timeout(millis(REQUEST_TIMEOUT));
        outcome
    }

    /// The guest will not answer any more (it was paused, to be saved): what is still sent to
    /// it, closing channels and the session, waits for it at most a moment, not
    /// [`REQUEST_TIMEOUT`].
    pub fn expect_no_answer(&self) {
        self.inner.set_timeout(NO_WAIT);
    }

    /// Passes input and output on until the channel closes, the deadline passes, or `stop`
    /// fails.
    fn follow(
        &self,
        channel: &mut Channel,
        streams: &mut Streams,
        deadline: Option<Instant>,
        stop: &mut dyn FnMut() -> Result<(), Error>,
        abandon: Abandon,
    ) -> Result<Ended, Error> {
        let mut buffer = vec![0u8; 32 * 1024];
        let mut input = streams.stdin.map(|from| Input {
            from,
            pending: Vec::new(),
            ended: false,
            closed: false,
        });
        let mut error_stream = channel.stderr();
        loop {
            // One read per stream per turn, so a flood on one cannot starve the checks below.
            let mut progressed = match &mut input {
                Some(input) => self.feed(channel, input, &mut buffer)?,
                None => false,
            };
            progressed |= self.pass_on(channel, streams.stdout, &mut buffer)?;
            progressed |= self.pass_on(&mut error_stream, streams.stderr, &mut buffer)?;
            if channel.eof() {
                match channel.wait_close() {
                    Ok(()) => break,
                    Err(e) if would_block(&e) => {}
                    Err(e) => return Err(self.lost("wait for the command to end", e.into())),
                }
            }
            if let Err(stopped) = stop() {
                self.abandon(channel, &abandon);
                return Err(stopped);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                self.abandon(channel, &abandon);
                return Ok(Ended::TimedOut);
            }
            // Reading one stream can bring the other's data in from the socket: then there is
            // something to read, and the socket may stay silent.
            if !progressed && channel.read_window().available == 0 {
                let wait = deadline.map_or(POLL, |d| (d - now).min(POLL));
                let wanted = input.as_ref().filter(|i| i.wants_more()).map(|i| i.from);
                self.wait_socket(wait, wanted)
                    .map_err(|e| self.lost("wait for the guest", e))?;
            }
        }
        let signal = channel
            .exit_signal()
            .map_err(self.failed("read the exit signal"))?;
        Ok(match signal.exit_signal {
            Some(name) => Ended::Signalled(name),
            None => Ended::Exited(
                channel
                    .exit_status()
                    .map_err(self.failed("read the exit status"))?,
            ),
        })
    }

    /// Reads the input if it has something and the channel took all before, and offers the
    /// channel what is pending, or its end; whether anything moved.
    fn feed(
        &self,
        channel: &mut Channel,
        input: &mut Input,
        buffer: &mut [u8],
    ) -> Result<bool, Error> {
        let mut progressed = false;
        if input.wants_more()
            && wait_fd(input.from.as_raw_fd(), libc::POLLIN, Duration::ZERO)
                .map_err(Error::Input)?
        {
            let mut from = input.from;
            match from.read(buffer) {
                Ok(0) => input.ended = true,
                Ok(n) => input.pending.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Input(e)),
            }
            progressed = true;
        }
        if input.closed {
            return Ok(progressed);
        }
        if input.pending.is_empty() {
            if !input.ended {
                return Ok(progressed);
            }
            match channel.send_eof() {
                Ok(()) => input.closed = true,
                Err(e) if would_block(&e) => return Ok(progressed),
                Err(_) if channel.eof() => input.closed = true,
                Err(e) => return Err(self.lost("end the command's input", e.into())),
            }
        } else {
            match channel.write(&input.pending) {
                // 0: the channel's window is full until the guest takes some.
                Ok(0) => return Ok(progressed),
                Ok(n) => drop(input.pending.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(progressed),
                // The command ended (or closed its side) with input left: that input is
                // dropped, and the command's own ending says what happened.
                Err(_) if channel.eof() => {
                    input.pending.clear();
                    input.closed = true;
                }
                Err(e) => return Err(self.lost("pass on the command's input", e)),
            }
        }
        Ok(true)
    }

    /// Reads what is there on one stream and writes it on; whether anything came.
    fn pass_on(
        &self,
        from: &mut dyn Read,
        to: &mut dyn Write,
        buffer: &mut [u8],
    ) -> Result<bool, Error> {
        match from.read(buffer) {
            Ok(0) => Ok(false),
            Ok(n) => {
                to.write_all(&buffer[..n])
                    .and_then(|()| to.flush())
                    .map_err(Error::Output)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(self.lost("read the command's output", e)),
        }
    }

    /// Calls `abandon.before`, runs its kill line (if any) to its end, then closes the
    /// channel, waiting only briefly for the guest each time. Closing the channel ends a
    /// command run by [`Self::exec`]; the guest confirms once the command is gone, and until
    /// it does, libssh2 waits for it when the channel and the session are freed.
    fn abandon(&self, channel: &mut Channel, abandon: &Abandon) {
        let answers = (abandon.before)();
        self.inner.set_blocking(true);
        self.inner.set_timeout(match answers {
            true => millis(ABANDON_TIMEOUT),
            false => NO_WAIT,
        });
        if let Some(line) = abandon.kill_line
            && let Ok(mut kill) = self.inner.channel_session()
            && kill.exec(line).is_ok()
        {
            let _ = kill.wait_close();
        }
        let _ = channel.close();
    }

    /// Sleeps until the socket is ready in the direction libssh2 is blocked on, `input` (if
    /// given) has something to read, or `wait` passed.
    fn wait_socket(&self, wait: Duration, input: Option<&File>) -> io::Result<()> {
        let events = match self.inner.block_directions() {
            BlockDirections::Outbound => libc::POLLOUT,
            BlockDirections::Both => libc::POLLIN | libc::POLLOUT,
            BlockDirections::Inbound | BlockDirections::None => libc::POLLIN,
        };
        let mut fds = vec![pollfd(self.inner.as_raw_fd(), events)];
        fds.extend(input.map(|file| pollfd(file.as_raw_fd(), libc::POLLIN)));
        wait_fds(&mut fds, wait).map(drop)
    }

    fn failed(&self, action: &'static str) -> impl Fn(ssh2::Error) -> Error + '_ {
        move |e| self.lost(action, e.into())
    }

    fn lost(&self, action: &'static str, source: io::Error) -> Error {
        Error::Session {
            port: self.port,
            action,
            source,
        }
    }
}

impl Input<'_> {
    /// Whether more should be read: the channel took all that came, and more may come.
    fn wants_more(&self) -> bool {
        self.pending.is_empty() && !self.ended && !self.closed
    }
}

/// poll(2) on one descriptor; true when it is ready (or hung up, or failed: a read or
/// write then says which). An interrupted wait counts as not ready.
pub(super) fn wait_fd(fd: RawFd, events: libc::c_short, wait: Duration) -> io::Result<bool> {
    wait_fds(&mut [pollfd(fd, events)], wait)
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// poll(2) on several descriptors; true when one is ready.
fn wait_fds(fds: &mut [libc::pollfd], wait: Duration) -> io::Result<bool> {
    let timeout = wait.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: a valid slice of pollfds, and the count is its length.
    match unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) } {
        -1 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}

/// Signal numbers by the names SSH reports (RFC 4254 uses names without "SIG").
pub fn signal_number(name: &str) -> Option<i32> {
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "ABRT" => libc::SIGABRT,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "SEGV" => libc::SIGSEGV,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        _ => return None,
    })
}

fn would_block(e: &ssh2::Error) -> bool {
    e.code() == ErrorCode::Session(LIBSSH2_ERROR_EAGAIN)
}

/// What is left of `cap` before `deadline`, at least 1 ms (libssh2 reads 0 as "no timeout").
fn budget(deadline: Instant, cap: Duration) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .min(cap)
        .max(Duration::from_millis(1))
}

fn millis(d: Duration) -> u32 {
    d.as_millis().clamp(1, u32::MAX as u128) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f";

    fn target(port: u16) -> Target {
        Target {
            port,
            host_key: KEY.into(),
            client_key: "/nonexistent".into(),
        }
    }

    /// A port that behaves like QEMU's forward before the guest listens: it accepts and the
    /// connection ends at once. Counts the connections.
    fn closing_port() -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = Arc::new(AtomicUsize::new(0));
        let counter = count.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                drop(stream);
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        (port, count)
    }

    #[test]
    fn a_closed_connection_is_retried_every_poll_until_the_deadline() {
        let (port, count) = closing_port();
        let started = Instant::now();
        let err = wait_ready(
            &target(port),
            started + Duration::from_secs(1),
            &Watch::signals(),
        )
        .err()
        .unwrap();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(2),
            "{took:?}"
        );
        let Error::NotReady { last, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(last.contains("closed the connection"), "{last}");
        assert!(
            count.load(Ordering::SeqCst) >= 6,
            "only {} attempts in a second",
            count.load(Ordering::SeqCst)
        );
        assert_eq!(err.exit_code(), crate::exit_code::VM_FAILED);
        assert!(
            err.to_string()
                .starts_with("timed out after 1s waiting for SSH on 127.0.0.1:"),
            "{err}"
        );
    }

    #[test]
    fn once_the_guest_has_answered_a_slow_banner_is_waited_for() {
        use std::io::Read;
        use std::sync::atomic::AtomicBool;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let client_waited = Arc::new(AtomicBool::new(false));
        let flag = client_waited.clone();
        std::thread::spawn(move || {
            let mut incoming = listener.incoming();
            drop(incoming.next()); // a reset: the guest's network is up
            let mut slow = incoming.next().unwrap().unwrap();
            std::thread::sleep(BANNER_WAIT + Duration::from_millis(500));
            let _ = slow.write_all(b"SSH-2.0-slow\r\n");
            // A client still there answers with its own version line.
            let mut reply = [0u8; 7];
            slow.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            if slow.read_exact(&mut reply).is_ok() && &reply == b"SSH-2.0" {
                flag.store(true, Ordering::SeqCst);
            }
            drop(slow);
            for stream in incoming {
                drop(stream);
            }
        });
        let _ = wait_ready(
            &target(port),
            Instant::now() + BANNER_WAIT * 2,
            &Watch::signals(),
        );
        assert!(
            client_waited.load(Ordering::SeqCst),
            "the slow server was given up"
        );
    }

    #[test]
    fn a_refused_connection_is_retried() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = wait_ready(
            &target(port),
            Instant::now() + Duration::from_millis(300),
            &Watch::signals(),
        )
        .err()
        .unwrap();
        let Error::NotReady { last, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(last.contains("cannot connect"), "{last}");
    }

    #[test]
    fn qemus_exit_ends_the_wait_even_while_a_connection_is_silent() {
        // Accepts and holds the connection without a word, like a guest whose network is
        // not up yet.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let held: Vec<_> = listener.incoming().collect();
            drop(held);
        });
        let (_dir, qemu) = crate::qemu::process::fake("sleep 0.5; exit 1");
        let started = Instant::now();
        let err = wait_ready(
            &target(port),
            started + Duration::from_secs(60),
            &Watch::qemu(&qemu),
        )
        .err()
        .unwrap();
        let Error::Stopped(crate::wait::Stop::QemuExited(exited)) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(exited.status.code(), Some(1));
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_server_that_is_not_ssh_fails_the_handshake_and_is_retried() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let _ = (&stream.unwrap()).write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            }
        });
        let err = wait_ready(
            &target(port),
            Instant::now() + Duration::from_millis(500),
            &Watch::signals(),
        )
        .err()
        .unwrap();
        let Error::NotReady { last, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(last.contains("handshake"), "{last}");
    }

    #[test]
    fn an_unusable_pinned_key_fails_before_connecting() {
        let err = wait_ready(
            &Target {
                host_key: "garbage".into(),
                ..target(1)
            },
            Instant::now(),
            &Watch::signals(),
        )
        .err()
        .unwrap();
        assert!(matches!(err, Error::PinnedKey { .. }), "{err:?}");
        assert_eq!(err.exit_code(), crate::exit_code::INTERNAL);
    }
}
