//! A small blocking QMP client: the greeting, `qmp_capabilities`, then commands matched to
//! their answers by id, with asynchronous events (SHUTDOWN, RESUME, ...) skipped.
//!
//! Snapshots and host forwards go through `human-monitor-command` (savevm, loadvm, delvm,
//! hostfwd_add, hostfwd_remove): on QEMU 7.2 these are synchronous and need only the snapshot
//! tag, where the job-based `snapshot-save` needs the block node names and polling the job.

use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::json_stream::{self, JsonStream};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error("cannot connect to QEMU's monitor at {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU's monitor: {context}")]
    Stream {
        context: String,
        #[source]
        source: json_stream::Error,
    },
    #[error("QEMU's monitor did not greet as QMP: {0}")]
    NotQmp(String),
    #[error("QEMU refused `{command}`: {desc} ({class})")]
    Refused {
        command: String,
        class: String,
        desc: String,
    },
}

pub struct Qmp {
    stream: JsonStream,
    next_id: u64,
    timeout: Duration,
}

impl Qmp {
    /// How long a command may take unless [`Qmp::set_timeout`] says otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// Connects to the QMP socket at `path` and negotiates capabilities.
    pub fn connect(path: &Path) -> Result<Qmp, Error> {
        let stream = UnixStream::connect(path).map_err(|source| Error::Connect {
            path: path.to_owned(),
            source,
        })?;
        Qmp::handshake(stream)
    }

    /// Reads the greeting from an open connection and leaves capabilities negotiation mode.
    pub fn handshake(stream: UnixStream) -> Result<Qmp, Error> {
        let mut qmp = Qmp {
            stream: JsonStream::new(stream),
            next_id: 0,
            timeout: Qmp::DEFAULT_TIMEOUT,
        };
        let deadline = Instant::now() + qmp.timeout;
        let greeting = qmp
            .stream
            .receive(deadline)
            .map_err(stream_error("waiting for the greeting"))?;
        if greeting.get("QMP").is_none() {
            return Err(Error::NotQmp(greeting.to_string()));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// How long each later command may take (savevm of a large guest takes a while).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Runs `command` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, Error> {
        self.run(command, arguments, None)
    }

    /// Gives QEMU a copy of `fd` under `name` (`getfd`): commands then name it where they
    /// take a descriptor (`migrate-incoming` with `fd:NAME`). A QEMU that vmrun did not start
    /// (systemd's) inherits nothing from vmrun.
    pub fn hand_fd(&mut self, name: &str, fd: BorrowedFd) -> Result<(), Error> {
        self.run("getfd", Some(json!({"fdname": name})), Some(fd))
            .map(drop)
    }

    fn run(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        fd: Option<BorrowedFd>,
    ) -> Result<Value, Error> {
        self.next_id += 1;
        let id = format!("vmrun-{}", self.next_id);
        let mut message = json!({"execute": command, "id": id});
        if let Some(arguments) = arguments {
            message["arguments"] = arguments;
        }
        let context = || format!("`{command}`");
        match fd {
            None => self.stream.send(&message),
            Some(fd) => self.stream.send_with_fd(&message, fd),
        }
        .map_err(stream_error(&context()))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let mut answer = self
                .stream
                .receive(deadline)
                .map_err(stream_error(&context()))?;
            if answer.get("id").and_then(Value::as_str) != Some(id.as_str()) {
                continue; // an event, or the answer to a command of an earlier client
            }
            if let Some(error) = answer.get("error") {
                let field = |name| {
                    error
                        .get(name)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                return Err(Error::Refused {
                    command: command.to_owned(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            return Ok(answer
                .get_mut("return")
                .map(Value::take)
                .unwrap_or(Value::Null));
        }
    }

    /// Runs a human monitor command; its output is the text it printed (HMP reports most
    /// failures there, not as QMP errors).
    pub fn human_monitor(&mut self, command_line: &str) -> Result<String, Error> {
        let output = self.execute(
            "human-monitor-command",
            Some(json!({"command-line": command_line})),
        )?;
        Ok(output.as_str().unwrap_or_default().trim().to_owned())
    }

    /// Waits until QEMU closes the connection, i.e. exits.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<(), Error> {
        self.stream
            .wait_closed(Instant::now() + timeout)
            .map_err(stream_error("waiting for QEMU to exit"))
    }
}

fn stream_error(context: &str) -> impl FnOnce(json_stream::Error) -> Error {
    let context = context.to_owned();
    move |source| Error::Stream { context, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::thread;

    /// A fake QEMU on the other end of a socket pair: greets, then answers each command with
    /// whatever `answer` says (lines to send back), after an unrelated event.
    fn fake_qemu(
        answer: fn(&Value) -> Vec<String>,
    ) -> (UnixStream, thread::JoinHandle<Vec<Value>>) {
        let (client, server) = UnixStream::pair().unwrap();
        let handle = thread::spawn(move || {
            let mut writer = server.try_clone().unwrap();
            writer
                .write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": [\"oob\"]}}\r\n")
                .unwrap();
            let mut seen = Vec::new();
            for line in BufReader::new(server).lines() {
                let command: Value = serde_json::from_str(&line.unwrap()).unwrap();
                writer
                    .write_all(b"{\"event\": \"RESUME\", \"timestamp\": {}}\r\n")
                    .unwrap();
                for reply in answer(&command) {
                    writer.write_all(reply.as_bytes()).unwrap();
                    writer.write_all(b"\r\n").unwrap();
                }
                seen.push(command);
            }
            seen
        });
        (client, handle)
    }

    fn echo_return(command: &Value) -> Vec<String> {
        let id = &command["id"];
        let ret = match command["execute"].as_str().unwrap() {
            "human-monitor-command" => json!(format!(
                "ran {}\r\n",
                command["arguments"]["command-line"].as_str().unwrap()
            )),
            "query-status" => json!({"status": "running", "running": true}),
            _ => json!({}),
        };
        vec![
            json!({"return": {}, "id": "someone-else"}).to_string(),
            json!({"return": ret, "id": id}).to_string(),
        ]
    }

    #[test]
    fn negotiates_then_matches_answers_by_id_skipping_events() {
        let (client, server) = fake_qemu(echo_return);
        let mut qmp = Qmp::handshake(client).unwrap();
        assert_eq!(
            qmp.execute("query-status", None).unwrap()["status"],
            "running"
        );
        assert_eq!(qmp.human_monitor("savevm a b").unwrap(), "ran savevm a b");
        drop(qmp);
        let seen = server.join().unwrap();
        assert_eq!(
            seen[0],
            json!({"execute": "qmp_capabilities", "id": "vmrun-1"})
        );
        assert_eq!(seen[2]["arguments"], json!({"command-line": "savevm a b"}));
    }

    /// One message read with `recvmsg`, as QEMU's socket chardev reads: its text and the
    /// descriptor that came with it.
    fn receive_with_fd(socket: &UnixStream) -> (String, Option<std::fs::File>) {
        use std::os::fd::{AsRawFd, FromRawFd};
        let mut bytes = [0u8; 4096];
        let mut control = [0u64; 8];
        let mut iov = libc::iovec {
            iov_base: bytes.as_mut_ptr().cast(),
            iov_len: bytes.len(),
        };
        // SAFETY: the buffers outlive the call; the control message is read only when the
        // kernel says it is there.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, 0);
            assert!(n > 0, "{}", std::io::Error::last_os_error());
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            let fd = (!cmsg.is_null() && (*cmsg).cmsg_type == libc::SCM_RIGHTS).then(|| {
                let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>());
                std::fs::File::from_raw_fd(fd)
            });
            let text = String::from_utf8_lossy(&bytes[..n as usize]).into_owned();
            (text, fd)
        }
    }

    #[test]
    fn a_handed_descriptor_goes_with_its_getfd() {
        use std::io::{Read, Seek};
        let (client, server) = UnixStream::pair().unwrap();
        let peer = thread::spawn(move || {
            let mut writer = server.try_clone().unwrap();
            writer.write_all(b"{\"QMP\": {}}\r\n").unwrap();
            let mut seen = Vec::new();
            for _ in 0..2 {
                let (text, fd) = receive_with_fd(&server);
                let command: Value = serde_json::from_str(text.trim()).unwrap();
                let reply = json!({"return": {}, "id": command["id"]}).to_string() + "\r\n";
                writer.write_all(reply.as_bytes()).unwrap();
                seen.push((command, fd));
            }
            seen
        });
        let mut qmp = Qmp::handshake(client).unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"saved state").unwrap();
        qmp.hand_fd("warm-state", std::os::fd::AsFd::as_fd(&file))
            .unwrap();
        let mut seen = peer.join().unwrap();
        assert!(seen[0].1.is_none(), "qmp_capabilities comes alone");
        assert_eq!(
            seen[1].0["arguments"],
            json!({"fdname": "warm-state"}),
            "{:?}",
            seen[1].0
        );
        assert_eq!(seen[1].0["execute"], "getfd");
        let mut handed = seen[1].1.take().expect("the descriptor came with getfd");
        handed.rewind().unwrap();
        let mut text = String::new();
        handed.read_to_string(&mut text).unwrap();
        assert_eq!(text, "saved state");
    }

    #[test]
    fn errors_carry_class_and_description() {
        let (client, _server) = fake_qemu(|command| {
            if command["execute"] == "qmp_capabilities" {
                return vec![json!({"return": {}, "id": command["id"]}).to_string()];
            }
            vec![
                json!({"error": {
                    "class": "CommandNotFound", "desc": "The command nope has not been found"
                }, "id": command["id"]})
                .to_string(),
            ]
        });
        let mut qmp = Qmp::handshake(client).unwrap();
        let err = qmp.execute("nope", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "QEMU refused `nope`: The command nope has not been found (CommandNotFound)"
        );
    }

    #[test]
    fn silence_times_out() {
        let (client, _server) = fake_qemu(|command| {
            if command["execute"] == "qmp_capabilities" {
                vec![json!({"return": {}, "id": command["id"]}).to_string()]
            } else {
                vec![]
            }
        });
        let mut qmp = Qmp::handshake(client).unwrap();
        qmp.set_timeout(Duration::from_millis(100));
        let err = qmp.execute("query-status", None).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Stream {
                    source: json_stream::Error::TimedOut,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn something_else_on_the_socket_is_not_qmp() {
        let (client, mut server) = UnixStream::pair().unwrap();
        server.write_all(b"{\"hello\": 1}\n").unwrap();
        assert!(matches!(Qmp::handshake(client), Err(Error::NotQmp(_))));
    }

    #[test]
    fn wait_closed_returns_when_qemu_goes_away() {
        let (client, server) = UnixStream::pair().unwrap();
        let qemu = thread::spawn(move || {
            let mut writer = server.try_clone().unwrap();
            writer.write_all(b"{\"QMP\": {}}\n").unwrap();
            let mut lines = BufReader::new(server).lines();
            let command: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
            writer
                .write_all(format!("{}\n", json!({"return": {}, "id": command["id"]})).as_bytes())
                .unwrap();
            writer.write_all(b"{\"event\": \"SHUTDOWN\"}\n").unwrap();
            // exits: both ends of its side close
        });
        let mut qmp = Qmp::handshake(client).unwrap();
        qmp.wait_closed(Duration::from_secs(5)).unwrap();
        qemu.join().unwrap();
    }
}
