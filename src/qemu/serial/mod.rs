//! The guest's serial console. QEMU writes it into a pipe ([`Console`]); vmrun reads the
//! other end and keeps it on disk capped ([`capped`]), so a guest writing to its console
//! forever fills neither the host's disk nor vmrun's memory. Readers take bounded amounts.

pub mod capped;
mod console;

pub use console::{Console, Lines};

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// At most this much of a log's end is read for its last lines.
const LAST_LINES_WINDOW: u64 = 32 * 1024;

/// The last `n` lines of the log at `path`, for an error message: from its last 32 KiB at
/// most, control characters made visible ([`crate::guest_text`]); empty if it cannot be read.
pub fn last_lines(path: &Path, n: usize) -> String {
    let bytes = read_end(path, LAST_LINES_WINDOW).unwrap_or_default();
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    if body.is_empty() {
        return String::new();
    }
    let lines: Vec<String> = body
        .split(|&b| b == b'\n')
        .map(|line| crate::guest_text::line(line.strip_suffix(b"\r").unwrap_or(line)))
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The file's last `window` bytes, from the start of a line unless the file is shorter.
fn read_end(path: &Path, window: u64) -> std::io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let start = len.saturating_sub(window);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity(window as usize);
    file.take(window).read_to_end(&mut bytes)?;
    if start > 0 {
        // The first line is most likely cut: leave it out.
        let first_end = bytes
            .iter()
            .position(|&b| b == b'\n')
            .map_or(0, |at| at + 1);
        bytes.drain(..first_end);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_of_a_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        std::fs::write(&path, "a\r\nb\nc\nd\n").unwrap();
        assert_eq!(last_lines(&path, 2), "c\nd");
        assert_eq!(last_lines(&path, 10), "a\nb\nc\nd");
        assert_eq!(last_lines(&dir.path().join("none"), 3), "");
    }

    #[test]
    fn only_the_end_of_a_big_log_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let mut log = vec![b'x'; 10 << 20];
        log.extend_from_slice(b"\nsecond to last\nlast\n");
        std::fs::write(&path, &log).unwrap();
        assert_eq!(
            read_end(&path, 100).unwrap(),
            b"second to last\nlast\n",
            "the cut line is left out"
        );
        assert_eq!(
            last_lines(&path, 3),
            "second to last\nlast",
            "the 10 MiB line is not read whole"
        );
    }

    #[test]
    fn last_lines_are_safe_to_print() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        std::fs::write(&path, b"boot\r\n\x1b]0;pwned\x07 \xc2\x9b2J\xff\r\n").unwrap();
        assert_eq!(
            last_lines(&path, 5),
            "boot\n\\x1b]0;pwned\\x07 \\u{9b}2J\\xff"
        );
    }
}
