//! Splitting a guest's byte stream into lines without trusting it to ever send a newline:
//! a line that reaches the cap is handed on in pieces, so memory stays bounded whatever the
//! guest prints.

/// One piece of the stream, as it is handed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A whole line, or the last piece of a line that was cut, with its `\n`.
    End(&'a [u8]),
    /// `cap` bytes of a line that goes on: no newline came within the cap.
    Cut(&'a [u8]),
}

/// The part of a line not handed on yet: at most `cap` bytes.
pub struct BoundedLines {
    pending: Vec<u8>,
    cap: usize,
}

impl BoundedLines {
    pub fn new(cap: usize) -> BoundedLines {
        assert!(cap > 0, "a line cap of zero bytes");
        BoundedLines {
            pending: Vec::new(),
            cap,
        }
    }

    /// Takes `bytes` and hands on every line they complete and every cap-sized piece of a line
    /// they make too long, in order. Stops at the first error of `emit`.
    pub fn push<E>(
        &mut self,
        mut bytes: &[u8],
        mut emit: impl FnMut(Piece) -> Result<(), E>,
    ) -> Result<(), E> {
        while !bytes.is_empty() {
            let room = self.cap - self.pending.len();
            let take = bytes.iter().take(room).position(|&b| b == b'\n');
            let (taken, ended) = match take {
                Some(at) => (at + 1, true),
                None => (room.min(bytes.len()), room <= bytes.len()),
            };
            let (now, rest) = bytes.split_at(taken);
            bytes = rest;
            if !ended {
                self.pending.extend_from_slice(now);
                continue;
            }
            // Whole pieces that need no copy go on straight from `bytes`.
            let piece = if self.pending.is_empty() {
                now
            } else {
                self.pending.extend_from_slice(now);
                &self.pending
            };
            let result = match take {
                Some(_) => emit(Piece::End(piece)),
                None => emit(Piece::Cut(piece)),
            };
            self.pending.clear();
            result?;
        }
        Ok(())
    }

    /// What is left of an unterminated last line (empty when the stream ended with `\n`).
    pub fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every piece, `|` after a cut one.
    fn pieces(cap: usize, writes: &[&[u8]]) -> (String, String) {
        let mut lines = BoundedLines::new(cap);
        let mut out = String::new();
        for bytes in writes {
            lines
                .push(bytes, |piece| {
                    match piece {
                        Piece::End(b) => out.push_str(&String::from_utf8_lossy(b)),
                        Piece::Cut(b) => out.push_str(&format!("{}|", String::from_utf8_lossy(b))),
                    }
                    Ok::<(), ()>(())
                })
                .unwrap();
        }
        (out, String::from_utf8(lines.rest()).unwrap())
    }

    #[test]
    fn short_lines_pass_whole() {
        assert_eq!(
            pieces(8, &[b"one\ntw", b"o\n", b"end"]),
            ("one\ntwo\n".into(), "end".into())
        );
    }

    #[test]
    fn a_line_without_newline_goes_on_in_cap_sized_pieces() {
        assert_eq!(
            pieces(4, &[b"abcdefghij"]),
            ("abcd|efgh|".into(), "ij".into())
        );
        assert_eq!(
            pieces(4, &[b"ab", b"cd", b"ef\n"]),
            ("abcd|ef\n".into(), String::new())
        );
        // A newline right after a full cap ends the next piece, an empty-bodied line.
        assert_eq!(
            pieces(4, &[b"abcd\nx\n"]),
            ("abcd|\nx\n".into(), String::new())
        );
        assert_eq!(pieces(4, &[b"abc\n"]), ("abc\n".into(), String::new()));
    }

    #[test]
    fn memory_stays_within_the_cap() {
        let mut lines = BoundedLines::new(64);
        let mut handed_on = 0;
        for _ in 0..1000 {
            lines
                .push(&[b'x'; 1000], |p| {
                    let (Piece::End(b) | Piece::Cut(b)) = p;
                    handed_on += b.len();
                    Ok::<(), ()>(())
                })
                .unwrap();
            assert!(
                lines.pending.capacity() <= 2 * 64,
                "{}",
                lines.pending.capacity()
            );
        }
        assert_eq!(handed_on + lines.rest().len(), 1_000_000);
    }

    #[test]
    fn an_error_stops_and_is_returned() {
        let mut lines = BoundedLines::new(8);
        assert_eq!(lines.push(b"a\nb\n", |_| Err("full")), Err("full"));
    }

    proptest::proptest! {
        /// However the stream is cut into writes, the pieces put back together are the
        /// stream, and no piece is longer than the cap.
        #[test]
        fn pieces_are_the_stream(
            bytes in proptest::collection::vec(proptest::sample::select(vec![b'a', b'\n']), 0..200),
            cut in 1usize..20,
            cap in 1usize..10
        ) {
            let mut lines = BoundedLines::new(cap);
            let mut joined = Vec::new();
            for write in bytes.chunks(cut) {
                lines.push(write, |p| {
                    let (Piece::End(b) | Piece::Cut(b)) = p;
                    proptest::prop_assert!(b.len() <= cap, "{} bytes", b.len());
                    joined.extend_from_slice(b);
                    Ok(())
                })?;
            }
            joined.extend(lines.rest());
            proptest::prop_assert_eq!(joined, bytes);
        }
    }
}
