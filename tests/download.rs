//! `image::download::fetch` against a real HTTP server on 127.0.0.1.

#[path = "support/http_server.rs"]
mod http_server;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vmrun::events::Event;
use vmrun::exit_code;
use vmrun::image::download::{Error, Fetched, fetch};
use vmrun::sha256::Sha256;

use http_server::{Server, generated_body};

/// A few MiB, not a multiple of any buffer size.
const LEN: usize = 3 * 1024 * 1024 + 12_345;

/// Calls `fetch`, keeping the events it emitted.
fn fetch_recorded(
    url: &str,
    expected: Option<Sha256>,
    cache: &Path,
) -> (Result<Fetched, Error>, Vec<Event>) {
    let events = Mutex::new(Vec::new());
    let result = fetch(url, expected, cache, &|e| events.lock().unwrap().push(e));
    (result, events.into_inner().unwrap())
}

fn fetch_ok(url: &str, expected: Option<Sha256>, cache: &Path) -> Fetched {
    match fetch(url, expected, cache, &|_| {}) {
        Ok(fetched) => fetched,
        Err(err) => panic!("fetch {url}: {:?}", miette::Report::new(err)),
    }
}

/// Every file under the cache, relative to it.
fn files_in(cache: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![cache.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path.strip_prefix(cache).unwrap().to_owned());
            }
        }
    }
    files.sort();
    files
}

/// The unfinished download in the cache's only entry.
fn part_file(cache: &Path) -> PathBuf {
    let parts: Vec<_> = files_in(cache)
        .into_iter()
        .filter(|f| f.ends_with("image.part"))
        .collect();
    assert_eq!(parts.len(), 1, "{:?}", files_in(cache));
    cache.join(&parts[0])
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text += &format!(": {cause}");
        source = cause.source();
    }
    text
}

#[test]
fn full_download_is_verified_and_kept() {
    let body = generated_body(LEN, 1);
    let digest = Sha256::of(&body);
    let server = Server::start(body.clone());
    let cache = tempfile::tempdir().unwrap();

    // Any case of the expected digest will do; the result is lowercase.
    let upper = digest.to_string().to_uppercase().parse().unwrap();
    let fetched = fetch_ok(&server.url("/disk.img"), Some(upper), cache.path());

    assert_eq!(fetched.sha256, digest);
    assert!(fetched.path.starts_with(cache.path()));
    assert!(fetched.path.ends_with("image"));
    assert!(
        fs::read(&fetched.path).unwrap() == body,
        "downloaded bytes differ"
    );
    let kept = fs::read_to_string(fetched.path.with_file_name("image.sha256")).unwrap();
    assert_eq!(kept.trim(), digest.to_string());
    let names: Vec<_> = files_in(cache.path())
        .iter()
        .map(|f| f.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["image", "image.sha256", "lock"],
        "no part or validator is left behind"
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("Range"), None);
    assert_eq!(requests[0].header("Accept-Encoding"), Some("identity"));
}

#[test]
fn second_call_is_served_from_the_cache_without_a_request() {
    let body = generated_body(LEN, 2);
    let digest = Sha256::of(&body);
    let server = Server::start(body);
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/disk.img");

    let first = fetch_ok(&url, Some(digest), cache.path());
    let (second, events) = fetch_recorded(&url, Some(digest), cache.path());

    assert_eq!(second.unwrap(), first);
    assert_eq!(server.requests().len(), 1, "the second call made a request");
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        matches!(&events[0], Event::Notice(text) if text.contains("cached") && text.contains(&url))
    );

    // Without a digest the entry is a different one (its key includes the expected digest).
    let unverified = fetch_ok(&url, None, cache.path());
    assert_ne!(unverified.path, first.path);
    assert_eq!(unverified.sha256, digest);
    fetch_ok(&url, None, cache.path());
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn cut_download_resumes_with_a_range_request() {
    let body = generated_body(LEN, 3);
    let digest = Sha256::of(&body);
    let server = Server::start(body.clone());
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/disk.img");
    let cut = 1024 * 1024 + 7;
    server.cut_next_after(cut);

    let err = fetch(&url, Some(digest), cache.path(), &|_| {}).unwrap_err();
    assert!(matches!(err, Error::Interrupted { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
    assert_eq!(err.exit_code(), exit_code::IMAGE_FAILED);
    let part = part_file(cache.path());
    assert_eq!(
        fs::metadata(&part).unwrap().len(),
        cut as u64,
        "every byte that arrived is kept"
    );

    let (fetched, events) = fetch_recorded(&url, Some(digest), cache.path());
    let fetched = fetched.unwrap();

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].header("Range"),
        Some(format!("bytes={cut}-").as_str())
    );
    assert_eq!(requests[1].header("If-Range"), Some("\"v1\""));
    assert_eq!(requests[1].status, 206);
    assert!(
        fs::read(&fetched.path).unwrap() == body,
        "resumed file is not byte-exact"
    );
    assert_eq!(fetched.sha256, digest);
    assert!(!part.exists());
    let first_bytes = events.iter().find_map(|e| match e {
        Event::Bytes { done, total } => Some((*done, *total)),
        _ => None,
    });
    assert_eq!(
        first_bytes,
        Some((cut as u64, Some(LEN as u64))),
        "progress starts where the part ends"
    );
}

#[test]
fn server_ignoring_ranges_restarts_from_zero() {
    let body = generated_body(LEN, 4);
    let server = Server::start(body.clone());
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/disk.img");
    server.ignore_ranges();
    server.cut_next_after(500_000);

    fetch(&url, None, cache.path(), &|_| {}).unwrap_err();
    let fetched = fetch_ok(&url, None, cache.path());

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].header("Range"), Some("bytes=500000-"));
    assert_eq!(requests[1].status, 200);
    assert!(
        fs::read(&fetched.path).unwrap() == body,
        "restarted file is not byte-exact"
    );
    assert_eq!(fetched.sha256, Sha256::of(&body));
}

#[test]
fn changed_file_restarts_instead_of_splicing_two_versions() {
    let old = generated_body(LEN, 5);
    let new = generated_body(LEN + 1000, 6);
    let server = Server::start(old);
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/disk.img");
    server.cut_next_after(2 * 1024 * 1024);

    fetch(&url, None, cache.path(), &|_| {}).unwrap_err();
    server.change_body(new.clone(), "\"v2\"");
    let fetched = fetch_ok(&url, None, cache.path());

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].header("If-Range"), Some("\"v1\""));
    assert_eq!(
        requests[1].status, 200,
        "If-Range no longer holds: the whole new file"
    );
    assert!(
        fs::read(&fetched.path).unwrap() == new,
        "not the new file, byte for byte"
    );
    assert_eq!(fetched.sha256, Sha256::of(&new));
}

#[test]
fn range_past_the_end_restarts_cleanly() {
    let long = generated_body(LEN, 7);
    let short = generated_body(1024 * 1024, 8);
    let server = Server::start(long);
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/disk.img");
    server.cut_next_after(2 * 1024 * 1024);

    fetch(&url, None, cache.path(), &|_| {}).unwrap_err();
    // Same ETag, shorter file: the server answers the Range with 416.
    server.change_body(short.clone(), "\"v1\"");
    let fetched = fetch_ok(&url, None, cache.path());

    let statuses: Vec<_> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 416, 200]);
    assert_eq!(server.requests()[2].header("Range"), None);
    assert!(fs::read(&fetched.path).unwrap() == short);
}

#[test]
fn wrong_sha256_names_both_digests_and_leaves_no_file() {
    let body = generated_body(LEN, 9);
    let actual = Sha256::of(&body);
    let wrong = Sha256::of(b"something else");
    let server = Server::start(body);
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/disk.img");

    let err = fetch(&url, Some(wrong), cache.path(), &|_| {}).unwrap_err();

    let text = err.to_string();
    assert!(
        text.contains(&url)
            && text.contains(&wrong.to_string())
            && text.contains(&actual.to_string()),
        "{text}"
    );
    assert_eq!(err.exit_code(), exit_code::IMAGE_FAILED);
    let names: Vec<_> = files_in(cache.path())
        .iter()
        .map(|f| f.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["lock"], "the bad file must be gone");

    // Nothing was kept to be found later: the next call downloads (and fails) again.
    fetch(&url, Some(wrong), cache.path(), &|_| {}).unwrap_err();
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn http_errors_name_the_url_and_status() {
    for status in [404, 500] {
        let server = Server::start(generated_body(1000, 10));
        server.fail_with(status);
        let cache = tempfile::tempdir().unwrap();
        let url = server.url("/missing.img");

        let err = fetch(&url, None, cache.path(), &|_| {}).unwrap_err();

        assert!(matches!(err, Error::Status { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(&url) && text.contains(&status.to_string()),
            "{text}"
        );
        assert_eq!(err.exit_code(), exit_code::IMAGE_FAILED);
        assert!(!files_in(cache.path()).iter().any(|f| f.ends_with("image")));
    }
}

#[test]
fn connection_failure_names_the_url_and_the_cause() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }; // closed again: nothing listens there now
    let url = format!("http://127.0.0.1:{port}/disk.img");
    let cache = tempfile::tempdir().unwrap();

    let err = fetch(&url, None, cache.path(), &|_| {}).unwrap_err();

    assert!(matches!(err, Error::Request { .. }), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");
    let chain = error_chain(&err);
    assert!(
        chain.len() > err.to_string().len(),
        "no cause given: {chain}"
    );
    assert_eq!(err.exit_code(), exit_code::IMAGE_FAILED);
}

#[test]
fn progress_reports_increasing_bytes_up_to_the_total() {
    let body = generated_body(LEN, 11);
    let server = Server::start(body);
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/disk.img");

    let started = Instant::now();
    let (fetched, events) = fetch_recorded(&url, None, cache.path());
    let elapsed = started.elapsed();
    fetched.unwrap();

    assert_eq!(
        events.first(),
        Some(&Event::PhaseStarted(format!("download {url}")))
    );
    assert!(matches!(
        events.last(),
        Some(Event::PhaseFinished { phase, .. }) if *phase == format!("download {url}")
    ));
    let bytes: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Bytes { done, total } => Some((*done, *total)),
            _ => None,
        })
        .collect();
    assert!(bytes.len() >= 2, "{bytes:?}");
    assert!(
        bytes.iter().all(|&(_, total)| total == Some(LEN as u64)),
        "{bytes:?}"
    );
    assert!(
        bytes.windows(2).all(|w| w[0].0 < w[1].0),
        "done must increase: {bytes:?}"
    );
    assert_eq!(bytes.last().unwrap().0, LEN as u64);
    // Throttled: one per 64 KiB or per 100 ms, plus the first and the last.
    let most = LEN / (64 * 1024) + 2 + (elapsed.as_millis() / 100) as usize;
    assert!(
        bytes.len() <= most,
        "{} events for {LEN} bytes",
        bytes.len()
    );
}

#[test]
fn non_http_url_is_rejected_without_a_request() {
    let server = Server::start(generated_body(1000, 12));
    let cache = tempfile::tempdir().unwrap();
    let http = server.url("/disk.img");
    for url in [
        http.replacen("http", "ftp", 1),
        "file:///etc/hostname".to_owned(),
        "disk.img".to_owned(),
    ] {
        let err = fetch(&url, None, cache.path(), &|_| {}).unwrap_err();
        assert!(matches!(err, Error::BadUrl { .. }), "{err:?}");
        assert!(err.to_string().contains(&url), "{err}");
        assert_eq!(err.exit_code(), exit_code::BAD_INPUT);
    }
    assert!(server.requests().is_empty());
    assert!(files_in(cache.path()).is_empty());
}

#[test]
fn concurrent_fetches_of_one_url_download_once() {
    let body = generated_body(LEN, 13);
    let digest = Sha256::of(&body);
    let server = Server::start(body.clone());
    // About 200 chunks at 1 ms: long enough that the second fetch finds the lock taken.
    server.chunk_delay(Duration::from_millis(1));
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/disk.img");

    let results: Vec<(Fetched, Vec<Event>)> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    let (fetched, events) = fetch_recorded(&url, Some(digest), cache.path());
                    (fetched.unwrap(), events)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });

    assert_eq!(server.requests().len(), 1, "both fetches downloaded");
    assert_eq!(results[0].0, results[1].0);
    assert!(fs::read(&results[0].0.path).unwrap() == body);
    let notice = |events: &[Event], start: &str| {
        events
            .iter()
            .any(|e| matches!(e, Event::Notice(text) if text.starts_with(start)))
    };
    let cached: Vec<_> = results
        .iter()
        .filter(|(_, events)| notice(events, "cached"))
        .collect();
    assert_eq!(
        cached.len(),
        1,
        "exactly one fetch found the other's download"
    );
    let waited = &cached[0].1;
    assert!(
        notice(waited, "waiting"),
        "it did not wait for the lock: {waited:?}"
    );
}
