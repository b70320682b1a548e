//! The end of a run's stdout and stderr, kept for the reports (a JUnit failure shows it). The
//! output passes on unchanged; only its last bytes stay in memory, whatever the guest prints.

use std::io::{self, Write};

/// The bytes kept of each stream: a test runner's failure summary fits, and a report of a
/// thousand repeated runs stays a few MiB.
pub const TAIL_BYTES: usize = 4096;

/// The last bytes of a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tail {
    /// At most [`TAIL_BYTES`], starting on a character boundary when earlier bytes were
    /// dropped (as far as the bytes are UTF-8).
    pub bytes: Vec<u8>,
    /// How many bytes came before them.
    pub dropped: u64,
}

/// Writes through to `out` and keeps the tail of what was written.
pub struct KeepTail<'a> {
    out: &'a mut dyn Write,
    tail: Tail,
    cap: usize,
}

impl<'a> KeepTail<'a> {
    pub fn new(out: &'a mut dyn Write) -> KeepTail<'a> {
        KeepTail::with_cap(out, TAIL_BYTES)
    }

    fn with_cap(out: &'a mut dyn Write, cap: usize) -> KeepTail<'a> {
        KeepTail {
            out,
            tail: Tail::default(),
            cap,
        }
    }

    /// The last bytes written (`cap` at most).
    pub fn tail(&self) -> Tail {
        let mut tail = self.tail.clone();
        let excess = tail.bytes.len().saturating_sub(self.cap);
        drop_front(&mut tail, excess);
        if tail.dropped > 0 {
            // A character cut in two by the cap: its continuation bytes go too.
            let torn = tail
                .bytes
                .iter()
                .take(3)
                .take_while(|&&b| b & 0xc0 == 0x80)
                .count();
            drop_front(&mut tail, torn);
        }
        tail
    }
}

fn drop_front(tail: &mut Tail, n: usize) {
    tail.bytes.drain(..n);
    tail.dropped += n as u64;
}

impl Write for KeepTail<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.out.write(buf)?;
        self.tail.bytes.extend_from_slice(&buf[..written]);
        // Trimmed in batches, so each byte is moved about once.
        if self.tail.bytes.len() > 2 * self.cap {
            let excess = self.tail.bytes.len() - self.cap;
            drop_front(&mut self.tail, excess);
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_everything_on_and_keeps_the_end() {
        let mut out = Vec::new();
        let mut keep = KeepTail::with_cap(&mut out, 8);
        keep.write_all(b"first\n").unwrap();
        assert_eq!(
            keep.tail(),
            Tail {
                bytes: b"first\n".to_vec(),
                dropped: 0
            }
        );
        for _ in 0..100 {
            keep.write_all(b"0123456789").unwrap();
        }
        keep.write_all(b"last\n").unwrap();
        assert!(keep.tail.bytes.len() <= 16);
        let tail = keep.tail();
        assert_eq!(tail.bytes, b"789last\n");
        assert_eq!(tail.dropped, 6 + 1000 + 5 - 8);
        assert_eq!(out.len(), 6 + 1000 + 5);
    }

    #[test]
    fn a_character_cut_by_the_cap_is_dropped_whole() {
        let mut out = Vec::new();
        let mut keep = KeepTail::with_cap(&mut out, 4);
        keep.write_all("xé✓".as_bytes()).unwrap();
        // The last 4 bytes begin inside é (2 bytes): its second byte goes too.
        let tail = keep.tail();
        assert_eq!(tail.bytes, "✓".as_bytes());
        assert_eq!(tail.dropped, 3);
        // Bytes that are not UTF-8 at all lose at most 3 more.
        let mut keep = KeepTail::with_cap(&mut out, 5);
        keep.write_all(&[0x80; 9]).unwrap();
        assert_eq!(keep.tail().bytes, [0x80; 2]);
    }
}
