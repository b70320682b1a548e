//! The guest's serial console as QEMU writes it to a file: read as it grows, line by line,
//! and its last lines for error messages.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Reads the complete lines added to a growing log since the last call.
pub struct SerialTail {
    file: Option<File>,
    path: std::path::PathBuf,
    partial: Vec<u8>,
}

impl SerialTail {
    /// The file need not exist yet: QEMU creates it when it starts.
    pub fn new(path: &Path) -> SerialTail {
        SerialTail {
            file: None,
            path: path.to_owned(),
            partial: Vec::new(),
        }
    }

    /// Lines completed since the last call, without line endings (`\r\n` or `\n`).
    pub fn new_lines(&mut self) -> io::Result<Vec<String>> {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        }
        let file = self.file.as_mut().expect("opened above");
        file.read_to_end(&mut self.partial)?;
        let Some(last_newline) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(Vec::new());
        };
        let rest = self.partial.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        Ok(String::from_utf8_lossy(&complete)
            .lines()
            .map(|l| l.trim_end_matches('\r').to_owned())
            .collect())
    }
}

/// The last `n` lines of the log at `path`, for an error message; empty if it cannot be read.
pub fn last_lines(path: &Path, n: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn yields_only_complete_lines_as_the_file_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let mut tail = SerialTail::new(&path);
        assert!(
            tail.new_lines().unwrap().is_empty(),
            "missing file is no lines yet"
        );
        let mut f = File::create(&path).unwrap();
        f.write_all(b"one\r\ntw").unwrap();
        assert_eq!(tail.new_lines().unwrap(), ["one"]);
        f.write_all(b"o\nthree\nfo").unwrap();
        assert_eq!(tail.new_lines().unwrap(), ["two", "three"]);
        assert!(tail.new_lines().unwrap().is_empty());
        f.write_all(b"ur\n").unwrap();
        assert_eq!(tail.new_lines().unwrap(), ["four"]);
    }

    #[test]
    fn last_lines_of_a_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        std::fs::write(&path, "a\r\nb\nc\nd\n").unwrap();
        assert_eq!(last_lines(&path, 2), "c\nd");
        assert_eq!(last_lines(&path, 10), "a\nb\nc\nd");
        assert_eq!(last_lines(&dir.path().join("none"), 3), "");
    }
}
