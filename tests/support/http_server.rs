//! A small HTTP/1.1 server on 127.0.0.1 for download tests: one body, Range requests (206 with
//! Content-Range, 416 past the end), If-Range against its ETag, and misbehaviour on demand.
//! Every response closes its connection. The accept thread stops when the server is dropped.
#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The status the server answered with.
    pub status: u16,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut found = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        found.next().map(|(_, v)| v.as_str())
    }
}

struct State {
    body: Arc<Vec<u8>>,
    etag: Option<String>,
    ignore_ranges: bool,
    /// Close the connection after this many body bytes, on the next request only.
    cut_next_after: Option<usize>,
    /// Answer every request with this status and no body.
    fail_with: Option<u16>,
    /// Sleep between 16 KiB chunks of a body.
    chunk_delay: Duration,
    requests: Vec<Request>,
}

pub struct Server {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Serves `body` under any path, with ETag `"v1"`.
    pub fn start(body: Vec<u8>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            body: Arc::new(body),
            etag: Some("\"v1\"".to_owned()),
            ignore_ranges: false,
            cut_next_after: None,
            fail_with: None,
            chunk_delay: Duration::ZERO,
            requests: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_state, thread_stop) = (state.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if thread_stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let state = thread_state.clone();
                thread::spawn(move || serve(stream, &state));
            }
        });
        Server { addr, state, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn ignore_ranges(&self) {
        self.state.lock().unwrap().ignore_ranges = true;
    }

    pub fn cut_next_after(&self, bytes: usize) {
        self.state.lock().unwrap().cut_next_after = Some(bytes);
    }

    pub fn fail_with(&self, status: u16) {
        self.state.lock().unwrap().fail_with = Some(status);
    }

    pub fn chunk_delay(&self, delay: Duration) {
        self.state.lock().unwrap().chunk_delay = delay;
    }

    /// The file changed on the server: new bytes under a new ETag.
    pub fn change_body(&self, body: Vec<u8>, etag: &str) {
        let mut state = self.state.lock().unwrap();
        state.body = Arc::new(body);
        state.etag = Some(etag.to_owned());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop so it sees `stop`
    }
}

/// Deterministic bytes that no two offsets share a pattern in: a spliced file cannot pass.
pub fn generated_body(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut body = Vec::with_capacity(len + 8);
    while body.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.extend_from_slice(&x.to_le_bytes());
    }
    body.truncate(len);
    body
}

fn serve(mut stream: TcpStream, state: &Mutex<State>) {
    let Some((method, path, headers)) = read_head(&stream) else {
        return;
    };
    let mut request = Request {
        method,
        path,
        headers,
        status: 0,
    };
    let (head, body, delay) = {
        let mut state = state.lock().unwrap();
        let (status, head, range) = respond(&request, &state);
        request.status = status;
        state.requests.push(request);
        let cut = state.cut_next_after.take();
        let body = range.map(|(first, end)| {
            let end = cut.map_or(end, |cut| end.min(first + cut));
            (state.body.clone(), first, end)
        });
        (head, body, state.chunk_delay)
    };
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    let Some((body, first, end)) = body else {
        return;
    };
    for chunk in body[first..end].chunks(16 * 1024) {
        if stream.write_all(chunk).is_err() {
            return;
        }
        thread::sleep(delay);
    }
    let _ = stream.flush();
}

/// The response head, and the slice of the body to send after it (if any).
fn respond(request: &Request, state: &State) -> (u16, String, Option<(usize, usize)>) {
    let len = state.body.len();
    let mut extra = String::new();
    if let Some(etag) = &state.etag {
        extra += &format!("ETag: {etag}\r\n");
    }
    if !state.ignore_ranges {
        extra += "Accept-Ranges: bytes\r\n";
    }
    if let Some(status) = state.fail_with {
        return (status, head(status, "Content-Length: 0\r\n"), None);
    }
    let if_range_holds = request
        .header("If-Range")
        .is_none_or(|v| state.etag.as_deref() == Some(v));
    let range = request
        .header("Range")
        .filter(|_| !state.ignore_ranges && if_range_holds);
    match range.and_then(parse_range) {
        Some((first, _)) if first >= len => (
            416,
            head(
                416,
                &format!("Content-Range: bytes */{len}\r\nContent-Length: 0\r\n"),
            ),
            None,
        ),
        Some((first, last)) => {
            let end = last.map_or(len, |last| (last + 1).min(len));
            let fields = format!(
                "{extra}Content-Range: bytes {first}-{}/{len}\r\nContent-Length: {}\r\n",
                end - 1,
                end - first
            );
            (206, head(206, &fields), Some((first, end)))
        }
        None => (
            200,
            head(200, &format!("{extra}Content-Length: {len}\r\n")),
            Some((0, len)),
        ),
    }
}

fn head(status: u16, fields: &str) -> String {
    let reason = match status {
        200 => "OK",
        206 => "Partial Content",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        _ => "Whatever",
    };
    format!("HTTP/1.1 {status} {reason}\r\n{fields}Connection: close\r\n\r\n")
}

/// `bytes=FIRST-` or `bytes=FIRST-LAST`.
fn parse_range(value: &str) -> Option<(usize, Option<usize>)> {
    let (first, last) = value.strip_prefix("bytes=")?.split_once('-')?;
    let last = if last.is_empty() {
        None
    } else {
        Some(last.parse().ok()?)
    };
    Some((first.parse().ok()?, last))
}

type Head = (String, String, Vec<(String, String)>);

fn read_head(stream: &TcpStream) -> Option<Head> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let (method, path) = (words.next()?.to_owned(), words.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let field = line.trim_end();
        if field.is_empty() {
            return Some((method, path, headers));
        }
        let (name, value) = field.split_once(':')?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
}
