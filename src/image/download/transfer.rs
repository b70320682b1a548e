//! One GET into `image.part`: fresh, or resumed with `Range` (and `If-Range` when the first
//! response carried a validator), streamed to disk through the hash.

use crate::path_error::PathError;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::time::Instant;

use sha2::Digest;
use ureq::Agent;
use ureq::http::{HeaderMap, Response, StatusCode, header};

use super::Error;
use super::content_range::ContentRange;
use super::entry::Entry;
use super::progress::Progress;
use crate::events::{Event, Sink};
use crate::sha256::Sha256;

pub(super) enum Outcome {
    /// The whole file is in the part and matched the expected digest (if any); its sha256.
    Complete(Sha256),
    /// The part cannot be continued (the file changed, or the server answered another range):
    /// discard it and ask again from the start.
    StartOver,
}

/// Where the response body goes in the file.
struct Placement {
    /// Offset of the body's first byte: 0, or the part's length when resuming.
    start: u64,
    /// Length of the whole file, when the server said.
    total: Option<u64>,
}

/// Fetches `url` into the part, continuing from `offset` bytes already there. A request from
/// offset 0 carries no `Range`, so it never ends in `StartOver`.
pub(super) fn get(
    agent: &Agent,
    url: &str,
    expected: Option<Sha256>,
    entry: &Entry,
    offset: u64,
    sink: Sink,
) -> Result<Outcome, Error> {
    let validator = if offset > 0 { entry.validator() } else { None };
    let mut request = agent.get(url);
    if offset > 0 {
        request = request.header(header::RANGE, format!("bytes={offset}-"));
        if let Some(validator) = &validator {
            request = request.header(header::IF_RANGE, validator);
        }
    }
    let response = request.call().map_err(|source| Error::Request {
        url: url.to_owned(),
        source,
    })?;
    let headers = response.headers();
    let placement = match response.status() {
        StatusCode::OK => {
            if offset > 0 {
                sink(Event::Detail(format!(
                    "{url} is sent whole, not from byte {offset}: starting over"
                )));
            }
            // The old part goes first, so no error from here on leaves it beside the new
            // file's validator, to be resumed as if it were the new file's beginning.
            entry.discard_part()?;
            entry.set_validator(validator_of(headers).as_deref())?;
            Placement {
                start: 0,
                total: response.body().content_length(),
            }
        }
        StatusCode::PARTIAL_CONTENT if offset > 0 => {
            let range = headers
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok());
            match range.and_then(ContentRange::parse) {
                Some(range)
                    if range.is_rest_from(offset)
                        && !etag_changed(validator.as_deref(), headers) =>
                {
                    sink(Event::Detail(format!("resuming {url} at byte {offset}")));
                    Placement {
                        start: offset,
                        total: range.complete,
                    }
                }
                _ => return Ok(Outcome::StartOver),
            }
        }
        StatusCode::RANGE_NOT_SATISFIABLE if offset > 0 => return Ok(Outcome::StartOver),
        status => {
            return Err(Error::Status {
                url: url.to_owned(),
                status,
            });
        }
    };
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        let encoding = String::from_utf8_lossy(encoding.as_bytes()).into_owned();
        if !encoding.eq_ignore_ascii_case("identity") {
            return Err(Error::Encoded {
                url: url.to_owned(),
                encoding,
            });
        }
    }
    receive(response, url, expected, entry, placement, sink).map(Outcome::Complete)
}

/// Streams the body into the part after its first `start` bytes, then checks length and digest.
fn receive(
    response: Response<ureq::Body>,
    url: &str,
    expected: Option<Sha256>,
    entry: &Entry,
    Placement { start, total }: Placement,
    sink: Sink,
) -> Result<Sha256, Error> {
    let path = entry.part();
    let mut hasher = sha2::Sha256::new();
    let file = if start == 0 {
        File::create(&path).map_err(PathError::at("create", &path))?
    } else {
        let mut existing = File::open(&path).map_err(PathError::at("read", &path))?;
        io::copy(&mut (&mut existing).take(start), &mut hasher)
            .map_err(PathError::at("read", &path))?;
        File::options()
            .append(true)
            .open(&path)
            .map_err(PathError::at("open", &path))?
    };
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut body = response.into_body().into_reader();
    let mut buf = vec![0; 256 * 1024];
    let mut done = start;
    let mut progress = Progress::start(sink, done, total, Instant::now());
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                // Keep every byte that arrived: the next call resumes after them.
                out.flush().map_err(PathError::at("write", &path))?;
                return Err(Error::Interrupted {
                    url: url.to_owned(),
                    done,
                    source,
                });
            }
        };
        out.write_all(&buf[..n])
            .map_err(PathError::at("write", &path))?;
        hasher.update(&buf[..n]);
        done += n as u64;
        progress.advance(done, Instant::now());
    }
    let file = out
        .into_inner()
        .map_err(|e| e.into_error())
        .map_err(PathError::at("write", &path))?;
    file.sync_all().map_err(PathError::at("write", &path))?;
    progress.finish(done, Instant::now());

    if let Some(total) = total.filter(|&total| total != done) {
        entry.discard_part()?;
        return Err(Error::Length {
            url: url.to_owned(),
            done,
            total,
        });
    }
    let actual = Sha256::finish(hasher);
    if let Some(expected) = expected.filter(|&expected| expected != actual) {
        entry.discard_part()?;
        return Err(Error::DigestMismatch {
            url: url.to_owned(),
            expected,
            actual,
        });
    }
    Ok(actual)
}

/// What `If-Range` can carry: a strong ETag, else Last-Modified (a weak ETag is not allowed).
fn validator_of(headers: &HeaderMap) -> Option<String> {
    let value = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    value(header::ETAG)
        .filter(|etag| !etag.starts_with("W/"))
        .or_else(|| value(header::LAST_MODIFIED))
}

/// A 206 whose ETag differs from the one the part began with: a server that honours `Range`
/// but not `If-Range` would otherwise splice two versions of the file.
fn etag_changed(validator: Option<&str>, headers: &HeaderMap) -> bool {
    let etag = headers.get(header::ETAG).and_then(|v| v.to_str().ok());
    match (validator, etag) {
        (Some(ours), Some(theirs)) if ours.starts_with('"') => ours != theirs,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (name.clone(), HeaderValue::from_static(value)))
            .collect()
    }

    #[test]
    fn validator_prefers_a_strong_etag_then_last_modified() {
        let date = "Wed, 21 Oct 2015 07:28:00 GMT";
        let both = headers(&[(header::ETAG, "\"abc\""), (header::LAST_MODIFIED, date)]);
        assert_eq!(validator_of(&both).as_deref(), Some("\"abc\""));
        let weak = headers(&[(header::ETAG, "W/\"abc\""), (header::LAST_MODIFIED, date)]);
        assert_eq!(validator_of(&weak).as_deref(), Some(date));
        assert_eq!(validator_of(&headers(&[(header::ETAG, "W/\"abc\"")])), None);
        assert_eq!(validator_of(&HeaderMap::new()), None);
    }

    #[test]
    fn etag_changed_only_when_both_are_etags_and_differ() {
        let v2 = headers(&[(header::ETAG, "\"v2\"")]);
        assert!(etag_changed(Some("\"v1\""), &v2));
        assert!(!etag_changed(Some("\"v2\""), &v2));
        assert!(!etag_changed(Some("Wed, 21 Oct 2015 07:28:00 GMT"), &v2));
        assert!(!etag_changed(None, &v2));
        assert!(!etag_changed(Some("\"v1\""), &HeaderMap::new()));
    }
}
