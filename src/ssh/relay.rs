//! rsync's remote shell over vmrun's own SSH session, so a run makes one SSH handshake (each
//! costs an emulated guest a fraction of a second of CPU) instead of a second one for a
//! system ssh.
//!
//! rsync runs `vmrun __rsync-relay SOCKET -- HOST rsync --server ...` as its remote shell
//! ([`Relay::remote_shell`]). That relay process connects to the run's [`Relay`] (a unix
//! socket in the run's 0700 ssh directory), sends the command's words and its own stdin,
//! stdout and stderr (SCM_RIGHTS: the data never passes through it), and exits with the
//! 4-byte exit code it gets back, or 255 if the connection breaks, as ssh does. The relay
//! server in vmrun runs each command on a channel of the session, with the descriptors as its
//! streams.
//!
//! Only `rsync --server ...` is run. The words are joined with spaces for the guest's shell,
//! as ssh joins them: rsync escapes them for that shell itself (a remote `work dir/` comes as
//! `work\ dir/`). The command is not wrapped in the watchdog of `killed_on_close`, which
//! takes the channel's stdin away from the command: rsync speaks its protocol on stdin. A
//! working rsync ends when its stdin does; one that does not (stuck, or a stand-in that
//! never reads) would keep its channel open, and libssh2 waits for the guest to close a
//! channel when it is freed, and again when the session is. So when a relay goes away (its
//! rsync was ended at a deadline or a stop) the server kills the command's process group on
//! a channel of its own, from the process id the command line left in the guest, before it
//! closes the command's channel.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::Scope;
use std::time::Duration;

use super::session::{Abandon, Streams, wait_fd};
use super::{Ended, Error, Session, signal_number};
use crate::fd_passing;
use crate::path_error::PathError;

/// The hidden subcommand rsync runs as its remote shell.
pub const SUBCOMMAND: &str = "__rsync-relay";
/// The socket's name in the run's ssh directory.
const SOCKET: &str = "relay";
/// The longest path a unix socket's address holds (`sun_path`, less its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// The exit code for a command that could not be run or whose end is unknown (ssh's own).
pub const LOST: u8 = 255;
/// How often the server looks whether the run is over while no relay connects, and whether a
/// relay went away while its command runs.
const POLL: Duration = Duration::from_millis(100);
/// How long a relay that connected may take to send its request (it sends it at once).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest request taken: rsync's words for the guest are a few hundred bytes.
const MAX_REQUEST: usize = 64 * 1024;
/// Where the guest's rsync records its process id (which is its process group's: sshd makes
/// each command a session of its own), in the guest user's home; one relay command runs at a
/// time.
const PID_FILE: &str = ".vmrun-relay.pid";
/// Ends an abandoned relay command and all its processes.
const KILL_LINE: &str =
    "kill -KILL -- -\"$(cat .vmrun-relay.pid)\" 2>/dev/null; rm -f .vmrun-relay.pid";

/// A run's relay socket; the server runs while [`Relay::serve_in`]'s guard lives. The
/// socket file is removed when dropped.
pub struct Relay {
    listener: UnixListener,
    path: PathBuf,
    finished: AtomicBool,
    /// The socket's directory when `dir` was too deep for a socket address.
    _short_dir: Option<tempfile::TempDir>,
}

/// Ends the server when dropped (the scope then joins its thread).
pub struct Serving<'a> {
    finished: &'a AtomicBool,
}

impl Drop for Serving<'_> {
    fn drop(&mut self) {
        self.finished.store(true, Ordering::SeqCst);
    }
}

impl Relay {
    /// Listens on `dir`/relay; `dir` must be private to this user (a run's ssh directory is
    /// 0700): whoever can connect gets rsync run in the guest. A socket's address holds
    /// only [`MAX_SOCKET_PATH`] bytes: below a deeper `dir` (a deep `VMRUN_HOME`), the
    /// socket goes into a new 0700 directory in the temporary directory instead.
    pub fn listen(dir: &Path) -> Result<Relay, Error> {
        let mut path = dir.join(SOCKET);
        let mut short_dir = None;
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            let temp = std::env::temp_dir();
            let made = tempfile::Builder::new()
                .prefix("vmrun-relay-")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .tempdir_in(&temp)
                .map_err(PathError::at("create a directory in", &temp))?;
            path = made.path().join(SOCKET);
            short_dir = Some(made);
        }
        let listener = UnixListener::bind(&path)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(PathError::at("listen on", &path))?;
        Ok(Relay {
            listener,
            path,
            finished: AtomicBool::new(false),
            _short_dir: short_dir,
        })
    }

    /// The remote shell for rsync: the `vmrun` program in relay mode, with this socket.
    /// rsync appends the host and the remote command.
    pub fn remote_shell(&self, vmrun: &Path) -> Vec<OsString> {
        vec![
            vmrun.into(),
            SUBCOMMAND.into(),
            self.path.clone().into(),
            "--".into(),
        ]
    }

    /// Serves relays on a thread of `scope` with `session`, one at a time, until the guard
    /// is dropped.
    pub fn serve_in<'scope, 'env>(
        &'env self,
        scope: &'scope Scope<'scope, 'env>,
        session: &'env Session,
    ) -> Serving<'env> {
        scope.spawn(move || self.serve(session));
        Serving {
            finished: &self.finished,
        }
    }

    fn serve(&self, session: &Session) {
        while !self.finished.load(Ordering::SeqCst) {
            match wait_fd(self.listener.as_raw_fd(), libc::POLLIN, POLL) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => std::thread::sleep(POLL),
            }
            if let Ok((connection, _)) = self.listener.accept() {
                let run = |line: &str, streams: Streams, stop: &mut Stop| {
                    let abandon = Abandon {
                        before: &|| true,
                        kill_line: Some(KILL_LINE),
                    };
                    session.run(line, abandon, streams, None, stop)
                };
                answer(&connection, &self.finished, Box::new(run));
            }
        }
    }
}

/// What ends a relay's command early (see [`Session::run`]).
type Stop<'a> = dyn FnMut() -> Result<(), Error> + 'a;
/// How a relay's command is run: its line for the guest's shell, its streams, and what ends
/// it early.
type Runner<'a> = dyn FnOnce(&str, Streams, &mut Stop) -> Result<Ended, Error> + 'a;

/// Runs one relay's command with `run` and sends its exit code back.
fn answer(connection: &UnixStream, finished: &AtomicBool, run: Box<Runner>) {
    let code = match Request::receive(connection) {
        Ok(request) => request.run(run, connection, finished),
        // Nowhere to say why: the relay says that the connection broke.
        Err(_) => return,
    };
    let _ = (&*connection).write_all(&u32::from(code).to_be_bytes());
}

/// This program, for [`Relay::remote_shell`].
pub fn this_vmrun() -> Result<PathBuf, Error> {
    let link = Path::new("/proc/self/exe");
    std::env::current_exe().map_err(|e| PathError::at("find this program at", link)(e).into())
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What a relay sends: the remote command's words and its stdin, stdout and stderr.
struct Request {
    words: Vec<Vec<u8>>,
    stdin: File,
    stdout: File,
    stderr: File,
}

impl Request {
    fn receive(connection: &UnixStream) -> io::Result<Request> {
        connection.set_nonblocking(false)?;
        connection.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        let mut message = vec![0u8; 4 + MAX_REQUEST];
        let (mut got, fds) = fd_passing::receive(connection, &mut message)?;
        let [stdin, stdout, stderr]: [OwnedFd; 3] = fds
            .try_into()
            .map_err(|_| invalid("a request must bring 3 descriptors"))?;
        while got < 4 {
            match (&*connection).read(&mut message[got..4])? {
                0 => return Err(invalid("the request ended early")),
                n => got += n,
            }
        }
        let length = u32::from_be_bytes(message[..4].try_into().expect("4 bytes")) as usize;
        if length > MAX_REQUEST || got > 4 + length {
            return Err(invalid("the request is not as long as it says"));
        }
        (&*connection).read_exact(&mut message[got..4 + length])?;
        Ok(Request {
            words: decode_words(&message[4..4 + length]),
            stdin: stdin.into(),
            stdout: stdout.into(),
            stderr: stderr.into(),
        })
    }

    /// Runs the command in the guest (or refuses it, saying why on its stderr); its exit code.
    fn run(mut self, run: Box<Runner>, connection: &UnixStream, finished: &AtomicBool) -> u8 {
        let line = match remote_line(&self.words) {
            Ok(line) => line,
            Err(refusal) => {
                let _ = writeln!(self.stderr, "vmrun: {refusal}");
                return LOST;
            }
        };
        let streams = Streams {
            stdin: Some(&self.stdin),
            stdout: &mut self.stdout,
            stderr: &mut self.stderr,
        };
        let mut stop = || relay_gone(connection, finished);
        let ended = run(&line, streams, &mut stop);
        if let Err(e) = &ended {
            let _ = writeln!(self.stderr, "vmrun: {}", crate::error_line::one_line(e));
        }
        exit_code(&ended)
    }
}

/// The relay has nothing more to send once its request is in: anything readable on the
/// connection is its end (it died, e.g. with the rsync that a stop or deadline ended).
fn relay_gone(connection: &UnixStream, finished: &AtomicBool) -> Result<(), Error> {
    let gone = finished.load(Ordering::SeqCst)
        || wait_fd(connection.as_raw_fd(), libc::POLLIN, Duration::ZERO).unwrap_or(true);
    if gone {
        return Err(Error::RelayGone);
    }
    Ok(())
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// A request's body: each word followed by a NUL (words from argv hold none).
fn encode_words(words: &[OsString]) -> Vec<u8> {
    let mut body = Vec::new();
    for word in words {
        body.extend_from_slice(word.as_bytes());
        body.push(0);
    }
    body
}

fn decode_words(body: &[u8]) -> Vec<Vec<u8>> {
    let mut words: Vec<Vec<u8>> = body.split(|&b| b == 0).map(<[u8]>::to_vec).collect();
    // The last word's NUL leaves an empty piece after it.
    words.pop();
    words
}

/// Why a relay's command is not run.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the rsync relay runs only `rsync --server ...` in the guest, not `{0}`")]
    NotRsyncServer(String),
    #[error("the rsync relay takes only UTF-8 words for the guest")]
    NotUtf8,
}

/// The line for the guest's shell, if the words are a server-side rsync: they are joined with
/// spaces, as ssh joins them, and run by `exec` once the shell's process id is in
/// [`PID_FILE`], for [`KILL_LINE`].
fn remote_line(words: &[Vec<u8>]) -> Result<String, Refusal> {
    let words = words
        .iter()
        .map(|w| std::str::from_utf8(w).map_err(|_| Refusal::NotUtf8))
        .collect::<Result<Vec<&str>, _>>()?;
    let line = words.join(" ");
    match words.as_slice() {
        ["rsync", "--server", ..] => Ok(format!("echo $$ >{PID_FILE} && exec {line}")),
        _ => Err(Refusal::NotRsyncServer(crate::guest_text::line(
            line.as_bytes(),
        ))),
    }
}

/// The relay's exit code for how the command ended: its status (the low 8 bits, as a
/// process exit passes it on), 128 + the signal that killed it, or [`LOST`] when that is
/// unknown (an unnamed signal, a broken session).
fn exit_code(ended: &Result<Ended, Error>) -> u8 {
    match ended {
        Ok(Ended::Exited(status)) => (*status & 0xff) as u8,
        Ok(Ended::Signalled(name)) => signal_number(name).map_or(LOST, |n| 128 + n as u8),
        Ok(Ended::TimedOut) | Err(_) => LOST,
    }
}

/// The relay process: hands `remote` (the host, then the command's words) and this process's
/// stdin, stdout and stderr to the run's relay server at `socket`, and returns the command's
/// exit code, or [`LOST`] if the server cannot be reached or the connection breaks.
pub fn forward(socket: &Path, remote: &[OsString]) -> u8 {
    // The host is always the run's guest: the socket says which.
    let words = remote.get(1..).unwrap_or_default();
    let own = [
        io::stdin().as_raw_fd(),
        io::stdout().as_raw_fd(),
        io::stderr().as_raw_fd(),
    ];
    match send_request(socket, words, own) {
        Ok(code) => code,
        Err(e) => {
            eprintln!(
                "vmrun {SUBCOMMAND}: lost the connection to vmrun at {}: {e}",
                socket.display()
            );
            LOST
        }
    }
}

/// Sends the request with `fds` as the command's stdin, stdout and stderr; the exit code.
fn send_request(socket: &Path, words: &[OsString], fds: [RawFd; 3]) -> io::Result<u8> {
    let connection = UnixStream::connect(socket)?;
    let body = encode_words(words);
    let length = u32::try_from(body.len()).map_err(|_| invalid("too many words"))?;
    let mut message = length.to_be_bytes().to_vec();
    message.extend_from_slice(&body);
    let sent = fd_passing::send(&connection, &message, &fds)?;
    (&connection).write_all(&message[sent..])?;
    let mut code = [0u8; 4];
    (&connection).read_exact(&mut code)?;
    Ok(u32::from_be_bytes(code).min(u32::from(LOST)) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn only_a_server_side_rsync_is_run() {
        assert_eq!(
            remote_line(&words(&[
                "rsync",
                "--server",
                "-logDtpre.iLsfxCIvu",
                ".",
                r"a\ b/"
            ])),
            Ok(
                r"echo $$ >.vmrun-relay.pid && exec rsync --server -logDtpre.iLsfxCIvu . a\ b/"
                    .into()
            )
        );
        assert_eq!(
            remote_line(&words(&["rm", "-rf", "/"])),
            Err(Refusal::NotRsyncServer("rm -rf /".into()))
        );
        assert_eq!(
            remote_line(&words(&["rsync", "--daemon"])),
            Err(Refusal::NotRsyncServer("rsync --daemon".into()))
        );
        assert_eq!(
            remote_line(&words(&[])),
            Err(Refusal::NotRsyncServer(String::new()))
        );
        assert_eq!(
            remote_line(&[b"rsync".to_vec(), b"--server".to_vec(), vec![0xff]]),
            Err(Refusal::NotUtf8)
        );
        assert_eq!(
            Refusal::NotRsyncServer("sh -c x".into()).to_string(),
            "the rsync relay runs only `rsync --server ...` in the guest, not `sh -c x`"
        );
    }

    #[test]
    fn exit_codes_as_ssh_gives_them() {
        assert_eq!(exit_code(&Ok(Ended::Exited(0))), 0);
        assert_eq!(exit_code(&Ok(Ended::Exited(23))), 23);
        assert_eq!(exit_code(&Ok(Ended::Exited(256 + 7))), 7);
        assert_eq!(exit_code(&Ok(Ended::Signalled("KILL".into()))), 137);
        assert_eq!(exit_code(&Ok(Ended::Signalled("XCPU".into()))), LOST);
        assert_eq!(exit_code(&Ok(Ended::TimedOut)), LOST);
        assert_eq!(exit_code(&Err(Error::RelayGone)), LOST);
    }

    /// A relay and a server over a real socket, with pipes for the relay's streams; the
    /// server's command is `run`. The relay's exit code and what its stdout and stderr got.
    fn relay_once(words: &[&str], input: &str, run: Box<Runner>) -> (u8, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let relay = Relay::listen(dir.path()).unwrap();
        let (stdin_r, mut stdin_w) = std::io::pipe().unwrap();
        let (mut stdout_r, stdout_w) = std::io::pipe().unwrap();
        let (mut stderr_r, stderr_w) = std::io::pipe().unwrap();
        stdin_w.write_all(input.as_bytes()).unwrap();
        drop(stdin_w);
        let words: Vec<OsString> = words.iter().map(Into::into).collect();
        let fds = [
            stdin_r.as_raw_fd(),
            stdout_w.as_raw_fd(),
            stderr_w.as_raw_fd(),
        ];
        let code = std::thread::scope(|scope| {
            let client = scope.spawn(|| send_request(&relay.path, &words, fds));
            assert!(wait_fd(relay.listener.as_raw_fd(), libc::POLLIN, REQUEST_TIMEOUT).unwrap());
            let (connection, _) = relay.listener.accept().unwrap();
            answer(&connection, &relay.finished, run);
            client.join().unwrap()
        });
        drop((stdin_r, stdout_w, stderr_w));
        let (mut out, mut err) = (String::new(), String::new());
        stdout_r.read_to_string(&mut out).unwrap();
        stderr_r.read_to_string(&mut err).unwrap();
        (code.unwrap(), out, err)
    }

    #[test]
    fn the_command_gets_the_relays_streams_and_the_relay_its_exit_code() {
        let run = |line: &str, streams: Streams, stop: &mut Stop| {
            stop()?;
            let mut input = String::new();
            let mut stdin = streams.stdin.unwrap();
            stdin.read_to_string(&mut input).unwrap();
            write!(streams.stdout, "{line}|{input}").unwrap();
            write!(streams.stderr, "warning").unwrap();
            Ok(Ended::Exited(23))
        };
        let (code, out, err) = relay_once(
            &["rsync", "--server", ".", r"a\ b/"],
            "protocol bytes",
            Box::new(run),
        );
        assert_eq!(code, 23);
        assert_eq!(
            out,
            r"echo $$ >.vmrun-relay.pid && exec rsync --server . a\ b/|protocol bytes"
        );
        assert_eq!(err, "warning");
    }

    #[test]
    fn another_command_is_refused_on_the_relays_stderr() {
        let run = |_: &str, _: Streams, _: &mut Stop| -> Result<Ended, Error> {
            panic!("a refused command ran")
        };
        let (code, out, err) = relay_once(&["sh", "-c", "id"], "", Box::new(run));
        assert_eq!((code, out.as_str()), (LOST, ""));
        assert_eq!(
            err,
            "vmrun: the rsync relay runs only `rsync --server ...` in the guest, not `sh -c id`\n"
        );
    }

    /// A relay killed while its command runs (rsync's process group ended at a deadline or
    /// a stop) ends the command within a poll or so.
    #[test]
    fn a_relay_that_goes_away_ends_its_command() {
        let dir = tempfile::tempdir().unwrap();
        let relay = Relay::listen(dir.path()).unwrap();
        let client = UnixStream::connect(&relay.path).unwrap();
        let (reader, _writer) = std::io::pipe().unwrap();
        let fd = reader.as_raw_fd();
        let body = encode_words(&["rsync".into(), "--server".into()]);
        let mut message = (body.len() as u32).to_be_bytes().to_vec();
        message.extend_from_slice(&body);
        fd_passing::send(&client, &message, &[fd, fd, fd]).unwrap();
        assert!(wait_fd(relay.listener.as_raw_fd(), libc::POLLIN, REQUEST_TIMEOUT).unwrap());
        let (connection, _) = relay.listener.accept().unwrap();
        let started = std::time::Instant::now();
        let run = |_: &str, _: Streams, stop: &mut Stop| -> Result<Ended, Error> {
            loop {
                stop()?;
                assert!(started.elapsed() < Duration::from_secs(5), "never stopped");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(200));
                drop(client);
            });
            answer(&connection, &relay.finished, Box::new(run));
        });
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_directory_too_deep_for_a_socket_gets_a_private_one() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("d".repeat(120));
        std::fs::create_dir(&deep).unwrap();
        let relay = Relay::listen(&deep).unwrap();
        assert!(relay.path.as_os_str().len() <= MAX_SOCKET_PATH);
        let parent = relay.path.parent().unwrap().to_owned();
        let mode = std::fs::metadata(&parent).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        UnixStream::connect(&relay.path).unwrap();
        drop(relay);
        assert!(!parent.exists());

        let shallow = Relay::listen(root.path()).unwrap();
        assert_eq!(shallow.path, root.path().join(SOCKET));
    }

    #[test]
    fn words_round_trip() {
        let list: Vec<OsString> = ["rsync", "", "a b", "é"].iter().map(Into::into).collect();
        let decoded = decode_words(&encode_words(&list));
        let expected: Vec<Vec<u8>> = list.iter().map(|w| w.as_bytes().to_vec()).collect();
        assert_eq!(decoded, expected);
        assert!(decode_words(&[]).is_empty());
    }
}
