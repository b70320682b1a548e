//! Image sources fetched over http(s): a streamed, resumable, verified download into a cache.
//!
//! [`fetch`] keeps each URL in its own cache entry (see `entry.rs` for the layout). The bytes go
//! to `image.part` and become `image` only once the whole length arrived and the sha256, when
//! one is expected, matched: a half file is never taken for a whole one. A download that breaks
//! off is continued by the next call with `Range` (and `If-Range`, so a file that changed on the
//! server starts over instead of being spliced from two versions).

mod content_range;
mod entry;
mod error;
mod progress;
mod transfer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use ureq::Agent;
use ureq::http::Uri;

pub use error::Error;

use crate::events::{Event, Sink, phase};
use crate::sha256::Sha256;
use entry::Entry;
use transfer::Outcome;

/// A downloaded image in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The finished file, `<cache_dir>/url-<key>/image`.
    pub path: PathBuf,
    /// Its sha256: verified when one was expected, computed while it arrived.
    pub sha256: Sha256,
}

/// Downloads `url` (http or https) into `cache_dir`, or finds it there from an earlier call.
///
/// `expected` is checked before the file is kept; a mismatch deletes
/// it. The cache entry is keyed by the URL and the expected digest, so a finished entry is
/// returned with no network access at all (and an `Event::Notice`). A download runs as the
/// phase "download URL" and reports `Event::Bytes` as data arrives. Concurrent calls for the
/// same entry, in this process or others, download once: the others wait and find it cached.
pub fn fetch(
    url: &str,
    expected: Option<Sha256>,
    cache_dir: &Path,
    sink: Sink,
) -> Result<Fetched, Error> {
    check_url(url)?;
    let entry = Entry::new(cache_dir, url, expected);
    if let Some(found) = cached(&entry, url, sink) {
        return Ok(found);
    }
    let _lock = entry.lock(url, sink)?;
    if let Some(found) = cached(&entry, url, sink) {
        return Ok(found); // another process finished it while this one waited for the lock
    }
    phase(sink, &format!("download {url}"), || {
        let agent = agent();
        let mut offset = entry.part_len()?;
        let sha256 = loop {
            match transfer::get(&agent, url, expected, &entry, offset, sink)? {
                Outcome::Complete(sha256) => break sha256,
                Outcome::StartOver => {
                    sink(Event::Detail(format!(
                        "the partial download of {url} cannot be continued: starting over"
                    )));
                    entry.discard_part()?;
                    offset = 0;
                }
            }
        };
        entry.commit(sha256)
    })
}

fn cached(entry: &Entry, url: &str, sink: Sink) -> Option<Fetched> {
    let found = entry.complete()?;
    sink(Event::Notice(format!("cached: {url}")));
    Some(found)
}

fn check_url(url: &str) -> Result<(), Error> {
    let bad = |reason| {
        Err(Error::BadUrl {
            url: url.to_owned(),
            reason,
        })
    };
    let Ok(uri) = url.parse::<Uri>() else {
        return bad("not a valid URL");
    };
    let scheme = uri.scheme_str().unwrap_or("");
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return bad("only http:// and https:// URLs can be downloaded");
    }
    if uri.host().is_none_or(str::is_empty) {
        return bad("the URL names no host");
    }
    Ok(())
}

fn agent() -> Agent {
    Agent::config_builder()
        .user_agent(concat!("vmrun/", env!("CARGO_PKG_VERSION")))
        // Statuses are handled here: 206 and 416 are part of resuming, the rest name the URL.
        .http_status_as_error(false)
        // The digest is of the bytes as published; a transparently decoded body would not match.
        .accept_encoding("identity")
        .timeout_connect(Some(Duration::from_secs(30)))
        // A stalled transfer fails (and can be resumed) instead of hanging forever.
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build()
        .new_agent()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit_code;

    #[test]
    fn only_http_and_https_urls_with_a_host_are_accepted() {
        for url in [
            "http://example.org/a.img",
            "https://example.org:8443/a.img?x=1",
            "HTTPS://example.org/a",
        ] {
            assert!(check_url(url).is_ok(), "{url}");
        }
        for url in [
            "ftp://example.org/a.img",
            "file:///tmp/a.img",
            "/tmp/a.img",
            "example.org/a.img",
            "http://",
            "not a url",
        ] {
            let err = check_url(url).unwrap_err();
            assert!(err.to_string().contains(url), "{err}");
            assert_eq!(err.exit_code(), exit_code::BAD_INPUT);
        }
    }

    #[test]
    fn a_bad_url_is_rejected_before_touching_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("sources");
        let err = fetch("ftp://example.org/a.img", None, &cache, &|_| {}).unwrap_err();
        assert!(matches!(err, Error::BadUrl { .. }));
        assert!(!cache.exists());
    }
}
