//! The QEMU guest agent over its unix socket (a virtio-serial port in the guest).
//!
//! The agent keeps no session: a previous client may have left half a command in its parser
//! or an unread answer in the channel. So every conversation starts with a 0xFF byte (the
//! agent's parser resets on it), then `guest-sync-delimited` with a fresh id: the agent puts
//! 0xFF before its answer, so everything before that byte is stale and skipped.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use super::json_stream::{self, JsonStream};
use crate::guest_text;
use crate::wait::{Stop, Watch};

/// Resets the agent's JSON parser; marks the start of a synced answer.
const DELIMITER: u8 = 0xFF;
/// How often [`GuestAgent::run`] asks whether its process ended.
const EXEC_POLL: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error("cannot connect to the guest agent's socket {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the guest agent did not answer within {}s (is qemu-guest-agent running in the guest?)",
        .0.as_secs()
    )]
    NoAnswer(Duration),
    #[error("the guest agent: {0}")]
    Stream(#[source] json_stream::Error),
    #[error("the guest agent refused `{command}`: {desc}")]
    Refused { command: String, desc: String },
    #[error("the guest agent's answer to `{command}` is not what it documents: {answer}")]
    Unexpected { command: String, answer: String },
    #[error(transparent)]
    Stopped(#[from] Stop),
}

/// One network interface as the agent reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(rename = "ip-addresses", default)]
    pub addresses: Vec<IpAddress>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct IpAddress {
    #[serde(rename = "ip-address")]
    pub address: String,
    pub prefix: u8,
}

pub struct GuestAgent {
    stream: JsonStream,
    deadline: Instant,
    timeout: Duration,
}

impl GuestAgent {
    /// Connects and syncs; the whole conversation must finish within `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<GuestAgent, Error> {
        let stream = UnixStream::connect(path).map_err(|source| Error::Connect {
            path: path.to_owned(),
            source,
        })?;
        GuestAgent::sync(stream, timeout)
    }

    /// Starts a conversation on an open connection.
    pub fn sync(stream: UnixStream, timeout: Duration) -> Result<GuestAgent, Error> {
        let mut agent = GuestAgent {
            stream: JsonStream::new(stream),
            deadline: Instant::now() + timeout,
            timeout,
        };
        let id = sync_id();
        agent
            .stream
            .send_bytes(&[DELIMITER])
            .map_err(|e| agent.stream_error(e))?;
        agent
            .stream
            .send(&json!({"execute": "guest-sync-delimited", "arguments": {"id": id}}))
            .map_err(|e| agent.stream_error(e))?;
        loop {
            agent
                .stream
                .skip_through(DELIMITER, agent.deadline)
                .map_err(|e| agent.stream_error(e))?;
            match agent.stream.receive(agent.deadline) {
                Ok(answer) if answer.get("return").and_then(Value::as_u64) == Some(id) => {
                    return Ok(agent);
                }
                // an older sync's answer
                Ok(_) | Err(json_stream::Error::NotJson { .. }) => continue,
                Err(e) => return Err(agent.stream_error(e)),
            }
        }
    }

    /// Runs `command` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, Error> {
        let mut message = json!({"execute": command});
        if let Some(arguments) = arguments {
            message["arguments"] = arguments;
        }
        self.stream
            .send(&message)
            .map_err(|e| self.stream_error(e))?;
        let mut answer = self
            .stream
            .receive(self.deadline)
            .map_err(|e| self.stream_error(e))?;
        if let Some(error) = answer.get("error") {
            // The agent runs in the guest: what it says is shown, never acted on by a terminal.
            let desc = guest_text::line(
                error
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            );
            return Err(Error::Refused {
                command: command.to_owned(),
                desc,
            });
        }
        match answer.get_mut("return") {
            Some(value) => Ok(value.take()),
            None => Err(Error::Unexpected {
                command: command.to_owned(),
                answer: guest_text::line(answer.to_string()),
            }),
        }
    }

    /// Runs `path` with `args` in the guest (as the agent's user, root) and waits for it to
    /// end; its exit code. Its output is discarded.
    pub fn run(&mut self, path: &str, args: &[&str]) -> Result<i64, Error> {
        let started = self.execute("guest-exec", Some(json!({"path": path, "arg": args})))?;
        let Some(pid) = started.get("pid").and_then(Value::as_i64) else {
            return Err(Error::Unexpected {
                command: "guest-exec".into(),
                answer: guest_text::line(started.to_string()),
            });
        };
        let deadline = self.deadline;
        let code = Watch::signals().until(deadline, EXEC_POLL, || -> Result<_, Error> {
            let status = self.execute("guest-exec-status", Some(json!({"pid": pid})))?;
            if status.get("exited").and_then(Value::as_bool) != Some(true) {
                return Ok(None);
            }
            // A process killed by a signal has `signal` instead of `exitcode`.
            Ok(Some(
                status
                    .get("exitcode")
                    .and_then(Value::as_i64)
                    .unwrap_or_else(|| {
                        128 + status.get("signal").and_then(Value::as_i64).unwrap_or(0)
                    }),
            ))
        })?;
        code.ok_or(Error::NoAnswer(self.timeout))
    }

    /// The guest's network interfaces and their addresses.
    pub fn network_interfaces(&mut self) -> Result<Vec<Interface>, Error> {
        let command = "guest-network-get-interfaces";
        let answer = self.execute(command, None)?;
        serde_json::from_value(answer.clone()).map_err(|_| Error::Unexpected {
            command: command.to_owned(),
            answer: guest_text::line(answer.to_string()),
        })
    }

    fn stream_error(&self, e: json_stream::Error) -> Error {
        match e {
            json_stream::Error::TimedOut => Error::NoAnswer(self.timeout),
            other => Error::Stream(other),
        }
    }
}

/// A sync id no earlier conversation used (the agent takes an int; keep it in JSON's safe range).
fn sync_id() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    ((nanos as u64) ^ (u64::from(std::process::id()) << 32)) & ((1 << 53) - 1)
}

/// A stand-in for the guest agent, for unit tests of what talks to it.
#[cfg(test)]
pub(crate) mod fake {
    use super::DELIMITER;
    use serde_json::{Value, json};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::thread;

    /// A fake agent: expects the 0xFF flush, answers the sync after stale output, then answers
    /// each following command with the next of `replies`.
    pub(crate) fn fake_agent(replies: Vec<String>) -> (UnixStream, thread::JoinHandle<Vec<u8>>) {
        let (client, mut server) = UnixStream::pair().unwrap();
        let handle = thread::spawn(move || {
            let mut received = Vec::new();
            let mut byte = [0u8; 1];
            let mut lines = 0;
            while lines <= replies.len() {
                if server.read(&mut byte).unwrap() == 0 {
                    break;
                }
                received.push(byte[0]);
                if byte[0] == b'\n' {
                    lines += 1;
                    if lines == 1 {
                        let sync: Value = serde_json::from_slice(&received[1..]).unwrap();
                        let id = &sync["arguments"]["id"];
                        // What an earlier client left behind, then the real answer.
                        server
                            .write_all(b"{\"return\": 1}\n\xff{\"return\": 2}\n")
                            .unwrap();
                        let mut answer = vec![DELIMITER];
                        answer.extend_from_slice(format!("{}\n", json!({"return": id})).as_bytes());
                        server.write_all(&answer).unwrap();
                    } else {
                        server.write_all(replies[lines - 2].as_bytes()).unwrap();
                    }
                }
            }
            received
        });
        (client, handle)
    }

    /// Each value as the `return` of one answer.
    pub(crate) fn returning(values: &[Value]) -> Vec<String> {
        values
            .iter()
            .map(|v| format!("{}\n", json!({"return": v})))
            .collect()
    }

    /// The commands a fake agent received after the sync, parsed.
    pub(crate) fn commands(received: &[u8]) -> Vec<Value> {
        String::from_utf8_lossy(received)
            .lines()
            .skip(1)
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{commands, fake_agent, returning};
    use super::*;

    #[test]
    fn flushes_syncs_past_stale_answers_and_reads_interfaces() {
        let interfaces = json!([
            {"name": "lo", "ip-addresses": [
                {"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8}
            ]},
            {"name": "eth0", "hardware-address": "52:54:00:12:34:56", "ip-addresses": [
                {"ip-address-type": "ipv4", "ip-address": "10.0.2.15", "prefix": 24},
                {"ip-address-type": "ipv6", "ip-address": "fec0::5054:ff:fe12:3456", "prefix": 64}
            ]},
            {"name": "eth1"}
        ]);
        let (client, agent) = fake_agent(vec![format!("{}\n", json!({"return": interfaces}))]);
        let mut ga = GuestAgent::sync(client, Duration::from_secs(5)).unwrap();
        let interfaces = ga.network_interfaces().unwrap();
        assert_eq!(interfaces.len(), 3);
        assert_eq!(interfaces[1].name, "eth0");
        assert_eq!(
            interfaces[1].addresses[0],
            IpAddress {
                address: "10.0.2.15".into(),
                prefix: 24
            }
        );
        assert!(interfaces[2].addresses.is_empty());
        drop(ga);
        let received = agent.join().unwrap();
        assert_eq!(received[0], 0xff, "the parser reset comes first");
        assert!(String::from_utf8_lossy(&received).contains("\"guest-network-get-interfaces\""));
    }

    #[test]
    fn refusals_are_errors() {
        let (client, _agent) = fake_agent(vec![
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no way\"}}\n".into(),
        ]);
        let mut ga = GuestAgent::sync(client, Duration::from_secs(5)).unwrap();
        let err = ga.execute("guest-info", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the guest agent refused `guest-info`: no way"
        );
    }

    #[test]
    fn what_the_agent_says_cannot_drive_a_terminal() {
        let refusal = json!({"error": {
            "class": "GenericError", "desc": "no\u{1b}[2J\u{9b}H\nerror: forged"
        }});
        let odd = json!({"odd": "\u{1b}]0;pwned\u{7}"});
        let (client, _agent) = fake_agent(vec![format!("{refusal}\n"), format!("{odd}\n")]);
        let mut ga = GuestAgent::sync(client, Duration::from_secs(5)).unwrap();
        let err = ga.execute("guest-info", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the guest agent refused `guest-info`: no\\x1b[2J\\u{9b}H\\x0aerror: forged"
        );
        let err = ga.execute("guest-info", None).unwrap_err();
        assert!(!err.to_string().contains('\u{1b}'), "{err}");
    }

    #[test]
    fn run_starts_the_process_and_polls_until_it_exits() {
        let (client, agent) = fake_agent(returning(&[
            json!({"pid": 42}),
            json!({"exited": false}),
            json!({"exited": true, "exitcode": 3}),
        ]));
        let mut ga = GuestAgent::sync(client, Duration::from_secs(5)).unwrap();
        assert_eq!(ga.run("/bin/date", &["-u", "-s", "@1.5"]).unwrap(), 3);
        drop(ga);
        let sent = commands(&agent.join().unwrap());
        assert_eq!(
            sent[0],
            json!({"execute": "guest-exec", "arguments": {
                "path": "/bin/date", "arg": ["-u", "-s", "@1.5"]
            }})
        );
        assert_eq!(
            sent[1],
            json!({"execute": "guest-exec-status", "arguments": {"pid": 42}})
        );
        assert_eq!(sent.len(), 3, "polled until exited: {sent:?}");
    }

    #[test]
    fn a_process_killed_by_a_signal_reports_128_plus_it() {
        let (client, _agent) = fake_agent(returning(&[
            json!({"pid": 7}),
            json!({"exited": true, "signal": 9}),
        ]));
        let mut ga = GuestAgent::sync(client, Duration::from_secs(5)).unwrap();
        assert_eq!(ga.run("/bin/sleep", &["9"]).unwrap(), 137);
    }

    #[test]
    fn an_agent_that_is_not_running_is_a_timeout() {
        let (client, _server) = UnixStream::pair().unwrap();
        let started = Instant::now();
        let err = GuestAgent::sync(client, Duration::from_millis(200))
            .err()
            .unwrap();
        assert!(matches!(err, Error::NoAnswer(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
