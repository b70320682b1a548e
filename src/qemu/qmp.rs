//! A small blocking QMP client: the greeting, `qmp_capabilities`, then commands matched to
//! their answers by id, with asynchronous events (SHUTDOWN, RESUME, ...) skipped.
//!
//! Snapshots and host forwards go through `human-monitor-command` (savevm, loadvm, delvm,
//! hostfwd_add, hostfwd_remove): on QEMU 7.2 these are synchronous and need only the snapshot
//! tag, where the job-based `snapshot-save` needs the block node names and polling the job.

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
        self.next_id += 1;
        let id = format!("vmrun-{}", self.next_id);
        let mut message = json!({"execute": command, "id": id});
        if let Some(arguments) = arguments {
            message["arguments"] = arguments;
        }
        let context = || format!("`{command}`");
        self.stream
            .send(&message)
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
