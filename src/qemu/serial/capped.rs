//! The guest's serial console on the host's disk, capped: a guest that writes to its console
//! forever must not fill the host's disk. The file keeps the first bytes (the boot) and the
//! last ones (what happened lately), with a line between them saying how many bytes were
//! left out.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// How much of a console a log keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The first bytes, kept for good.
    pub head: u64,
    /// At least the last this many bytes are kept...
    pub tail: u64,
    /// ...and at most this many more: the tail is moved down only after it has grown by
    /// this much, so a flood costs about `tail / slack` times its size in writes, not a copy
    /// of the tail for every write.
    pub slack: u64,
}

/// The file never exceeds head + tail + slack and a marker line: 6 MiB and change.
pub const LIMITS: Limits = Limits {
    head: 1 << 20,
    tail: 4 << 20,
    slack: 1 << 20,
};

/// A log file being written with [`Limits`].
pub struct CappedLog {
    file: File,
    limits: Limits,
    /// Bytes of the head written so far (up to `limits.head`).
    head: u64,
    /// Whether the head ends a line, so the marker starts on a line of its own.
    head_ends_line: bool,
    /// Where the tail starts in the file: after the head, and the marker once there is one.
    tail_start: u64,
    /// Bytes of console output left out so far.
    dropped: u64,
    /// The file's length.
    len: u64,
}

impl CappedLog {
    /// A new, empty log at `path` (an old one is replaced).
    pub fn create(path: &Path, limits: Limits) -> io::Result<CappedLog> {
        // The slack has room for the marker: moving the tail down then never overwrites
        // bytes still to be moved.
        assert!(limits.tail > 0 && limits.slack >= 256, "{limits:?}");
        // Read too: the tail is moved down by reading it back.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(CappedLog {
            file,
            limits,
            head: 0,
            head_ends_line: true,
            tail_start: 0,
            dropped: 0,
            len: 0,
        })
    }

    /// Appends `bytes`; the file stays within the limits.
    pub fn append(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        if self.head < self.limits.head {
            let n = bytes.len().min((self.limits.head - self.head) as usize);
            let (head, rest) = bytes.split_at(n);
            self.write_end(head)?;
            self.head += n as u64;
            self.tail_start = self.head;
            if let Some(&last) = head.last() {
                self.head_ends_line = last == b'\n';
            }
            bytes = rest;
        }
        self.write_end(bytes)?;
        if self.len - self.tail_start > self.limits.tail + self.limits.slack {
            self.compact()?;
        }
        Ok(())
    }

    /// Bytes of console output left out so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn write_end(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, self.len)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Leaves out all of the tail but its last `limits.tail` bytes: a new marker after the
    /// head, the kept bytes moved down behind it, the file cut after them.
    fn compact(&mut self) -> io::Result<()> {
        let keep_from = self.len - self.limits.tail;
        self.dropped += keep_from - self.tail_start;
        let marker = marker(self.dropped, self.head_ends_line);
        self.file.write_all_at(marker.as_bytes(), self.head)?;
        self.tail_start = self.head + marker.len() as u64;
        // The kept bytes move towards the start (the marker is far shorter than the slack),
        // so copying from the front never overwrites bytes still to be copied.
        debug_assert!(self.tail_start <= keep_from);
        let mut chunk = vec![0u8; 64 * 1024];
        let mut moved = 0;
        while moved < self.limits.tail {
            let n = chunk.len().min((self.limits.tail - moved) as usize);
            self.file
                .read_exact_at(&mut chunk[..n], keep_from + moved)?;
            self.file
                .write_all_at(&chunk[..n], self.tail_start + moved)?;
            moved += n as u64;
        }
        self.len = self.tail_start + self.limits.tail;
        self.file.set_len(self.len)
    }
}

/// The line that stands where console output was left out.
fn marker(dropped: u64, after_line_end: bool) -> String {
    let start = if after_line_end { "" } else { "\n" };
    format!(
        "{start}[vmrun: {dropped} bytes of the console left out here; \
         the log keeps its first and last bytes]\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limits = Limits {
        head: 10,
        tail: 300,
        slack: 256,
    };

    fn log(limits: Limits) -> (tempfile::TempDir, std::path::PathBuf, CappedLog) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let log = CappedLog::create(&path, limits).unwrap();
        (dir, path, log)
    }

    fn read(path: &std::path::Path) -> String {
        String::from_utf8(std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn a_short_console_is_kept_whole() {
        let (_dir, path, mut log) = log(SMALL);
        log.append(b"boot\n").unwrap();
        log.append(b"login: \nmore").unwrap();
        assert_eq!(read(&path), "boot\nlogin: \nmore");
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn head_marker_and_tail() {
        let (_dir, path, mut log) = log(SMALL);
        let tail: String = (0..600)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        log.append(format!("0123456789{tail}").as_bytes()).unwrap();
        // Head: 10 bytes. Tail: 600 bytes > 300 + 256, so all but the last 300 are left out.
        assert_eq!(log.dropped(), 300);
        assert_eq!(
            read(&path),
            format!(
                "0123456789\n[vmrun: 300 bytes of the console left out here; \
                 the log keeps its first and last bytes]\n{}",
                &tail[300..]
            )
        );
    }

    #[test]
    fn the_tail_follows_the_end_in_small_writes() {
        let (_dir, path, mut log) = log(SMALL);
        log.append(b"head line\n").unwrap();
        for i in 0..1000 {
            log.append(format!("{i:03}\n").as_bytes()).unwrap();
        }
        let text = read(&path);
        let marker = format!(
            "[vmrun: {} bytes of the console left out here; \
             the log keeps its first and last bytes]\n",
            log.dropped()
        );
        assert!(
            text.starts_with(&format!("head line\n{marker}")),
            "{text:?}"
        );
        assert!(text.ends_with("998\n999\n"), "{text:?}");
        let tail = &text["head line\n".len() + marker.len()..];
        assert!((300..=556).contains(&tail.len()), "{tail:?}");
        assert_eq!(
            log.dropped() + tail.len() as u64,
            4000,
            "every byte is kept or counted"
        );
    }

    #[test]
    fn the_file_stays_within_the_limits() {
        let limits = Limits {
            head: 1000,
            tail: 4000,
            slack: 1000,
        };
        let (_dir, path, mut log) = log(limits);
        let mut written = 0u64;
        for i in 0..5000u64 {
            let chunk = vec![b'a' + (i % 26) as u8; (i % 700) as usize];
            log.append(&chunk).unwrap();
            written += chunk.len() as u64;
            let len = std::fs::metadata(&path).unwrap().len();
            assert!(
                len <= 1000 + 4000 + 1000 + 700 + 120,
                "{len} bytes after {written}"
            );
        }
        let text = std::fs::read(&path).unwrap();
        let marker = marker(log.dropped(), false);
        assert_eq!(
            text.len() as u64 - marker.len() as u64 + log.dropped(),
            written
        );
    }
}
