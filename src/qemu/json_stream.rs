//! JSON messages over a unix socket, one per line, as QMP and the guest agent speak them:
//! each read has a deadline, so a QEMU or guest that stops answering cannot hang vmrun.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no answer in time")]
    TimedOut,
    #[error("the other side closed the connection")]
    Closed,
    #[error("not JSON: {line}")]
    NotJson { line: String },
    #[error(transparent)]
    Io(io::Error),
}

/// A peer that does not take a command's few bytes within this long is stuck.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines longer than this are not what QEMU sends; stop before memory runs out.
const MAX_LINE: usize = 16 << 20;
/// Characters of a line that is not JSON shown in the error.
const SHOWN_CHARS: usize = 200;

pub struct JsonStream {
    stream: UnixStream,
    /// Bytes read but not yet returned as a message.
    pending: Vec<u8>,
}

impl JsonStream {
    pub fn new(stream: UnixStream) -> JsonStream {
        JsonStream {
            stream,
            pending: Vec::new(),
        }
    }

    /// Writes `message` and a newline, in one write.
    pub fn send(&mut self, message: &Value) -> Result<(), Error> {
        let mut bytes = serde_json::to_vec(message).expect("a JSON value serializes");
        bytes.push(b'\n');
        self.send_bytes(&bytes)
    }

    /// Writes `message` and a newline with `fd` attached (SCM_RIGHTS): the peer receives a
    /// copy of the descriptor with the message's first bytes.
    pub fn send_with_fd(&mut self, message: &Value, fd: BorrowedFd) -> Result<(), Error> {
        let mut bytes = serde_json::to_vec(message).expect("a JSON value serializes");
        bytes.push(b'\n');
        self.stream
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(Error::Io)?;
        let sent = crate::fd_passing::send(&self.stream, &bytes, &[fd.as_raw_fd()])
            .map_err(timeout_or_io)?;
        self.send_bytes(&bytes[sent..])
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.stream
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(Error::Io)?;
        self.stream.write_all(bytes).map_err(timeout_or_io)
    }

    /// The next message, waiting until `deadline`. Blank lines are skipped.
    pub fn receive(&mut self, deadline: Instant) -> Result<Value, Error> {
        loop {
            while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line);
                let text = text.trim();
                if text.is_empty() {
                    continue;
                }
                return serde_json::from_str(text)
                    .map_err(|_| Error::NotJson { line: shown(text) });
            }
            self.fill(deadline)?;
        }
    }

    /// Discards everything up to and including the first `delimiter` byte (the guest agent
    /// marks the start of a fresh response with 0xFF).
    pub fn skip_through(&mut self, delimiter: u8, deadline: Instant) -> Result<(), Error> {
        loop {
            if let Some(at) = self.pending.iter().position(|&b| b == delimiter) {
                self.pending.drain(..=at);
                return Ok(());
            }
            self.pending.clear();
            self.fill(deadline)?;
        }
    }

    /// Reads until the other side closes the connection (or `deadline`).
    pub fn wait_closed(&mut self, deadline: Instant) -> Result<(), Error> {
        loop {
            match self.fill(deadline) {
                Ok(()) => self.pending.clear(),
                Err(Error::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    fn fill(&mut self, deadline: Instant) -> Result<(), Error> {
        if self.pending.len() > MAX_LINE {
            return Err(Error::NotJson {
                line: format!("a line longer than {MAX_LINE} bytes"),
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::TimedOut);
        }
        self.stream
            .set_read_timeout(Some(left))
            .map_err(Error::Io)?;
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(Error::Closed),
            Ok(n) => {
                self.pending.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(timeout_or_io(e)),
        }
    }
}

/// The start of a line that is not JSON, for the error: the guest agent's peer is the guest,
/// so it is cut short and its control characters made visible.
fn shown(line: &str) -> String {
    let start: String = line.chars().take(SHOWN_CHARS).collect();
    let more = if start.len() < line.len() { "..." } else { "" };
    format!("{}{more}", crate::guest_text::line(start))
}

fn timeout_or_io(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::TimedOut,
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Error::Closed,
        _ => Error::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn messages_split_across_writes_and_crlf_lines() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut s = JsonStream::new(a);
        b.write_all(b"{\"a\":").unwrap();
        b.write_all(b" 1}\r\n\r\n{\"b\": 2}\n").unwrap();
        assert_eq!(s.receive(soon()).unwrap(), json!({"a": 1}));
        assert_eq!(s.receive(soon()).unwrap(), json!({"b": 2}));
    }

    #[test]
    fn silence_times_out_and_close_is_closed() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut s = JsonStream::new(a);
        let started = Instant::now();
        let err = s
            .receive(Instant::now() + Duration::from_millis(100))
            .unwrap_err();
        assert!(matches!(err, Error::TimedOut), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        drop(b);
        assert!(matches!(s.receive(soon()), Err(Error::Closed)));
    }

    #[test]
    fn skip_through_drops_garbage_before_the_delimiter() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut s = JsonStream::new(a);
        b.write_all(b"{\"stale\": tr").unwrap();
        b.write_all(b"ue}\n\xff{\"return\": 5}\n").unwrap();
        s.skip_through(0xff, soon()).unwrap();
        assert_eq!(s.receive(soon()).unwrap(), json!({"return": 5}));
    }

    proptest::proptest! {
        /// However the bytes are cut into writes, the same messages come out.
        #[test]
        fn messages_survive_any_chunking(
            numbers in proptest::collection::vec(proptest::num::i64::ANY, 1..20),
            cut in 1usize..64
        ) {
            let (a, mut b) = UnixStream::pair().unwrap();
            let mut s = JsonStream::new(a);
            let bytes: Vec<u8> = numbers
                .iter()
                .flat_map(|n| format!("{{\"n\": {n}}}\r\n").into_bytes())
                .collect();
            let writer = std::thread::spawn(move || {
                for chunk in bytes.chunks(cut) {
                    b.write_all(chunk).unwrap();
                }
            });
            for n in &numbers {
                proptest::prop_assert_eq!(s.receive(soon()).unwrap(), json!({"n": n}));
            }
            writer.join().unwrap();
        }
    }

    #[test]
    fn junk_is_reported() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut s = JsonStream::new(a);
        b.write_all(b"hello\n").unwrap();
        assert!(matches!(s.receive(soon()), Err(Error::NotJson { line }) if line == "hello"));
    }

    #[test]
    fn junk_is_shown_short_and_harmless() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut s = JsonStream::new(a);
        b.write_all(format!("\x1b]0;pwned\x07{}\n", "x".repeat(1000)).as_bytes())
            .unwrap();
        let Err(Error::NotJson { line }) = s.receive(soon()) else {
            panic!("not JSON")
        };
        assert!(line.starts_with("\\x1b]0;pwned\\x07xxx"), "{line}");
        assert!(line.ends_with("x..."), "{line}");
        assert!(line.len() < 220, "{}", line.len());
    }
}
