//! Output of parallel runs: each line prefixed with its run's id, written whole, so lines
//! of different runs never mix.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use crate::bounded_lines::{BoundedLines, Piece};

/// The longest line held back waiting for its newline. A guest that prints gigabytes without
/// one must not make vmrun hold them: the line goes out in pieces of this size instead.
const LINE_CAP: usize = 64 * 1024;

/// Buffers until a newline, then writes `[id] line` to the shared destination. A line longer
/// than [`LINE_CAP`] is cut: each piece but the last ends with a newline vmrun adds, and
/// the piece after a cut is prefixed `[id]+ `, so the original line can be put back.
pub struct PrefixedLines<W: Write> {
    id: String,
    lines: BoundedLines,
    /// The last piece written was cut: the next one continues its line.
    continues: bool,
    out: Arc<Mutex<W>>,
}

impl<W: Write> PrefixedLines<W> {
    pub fn new(id: &str, out: Arc<Mutex<W>>) -> PrefixedLines<W> {
        PrefixedLines::with_cap(id, out, LINE_CAP)
    }

    fn with_cap(id: &str, out: Arc<Mutex<W>>, cap: usize) -> PrefixedLines<W> {
        PrefixedLines {
            id: id.to_owned(),
            lines: BoundedLines::new(cap),
            continues: false,
            out,
        }
    }
}

/// Writes one piece under the lock, so pieces of different runs never interleave.
fn write_piece<W: Write>(
    out: &Mutex<W>,
    id: &str,
    continues: bool,
    piece: &[u8],
    newline: bool,
) -> io::Result<()> {
    let mut out = out.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mark = if continues { "+" } else { "" };
    write!(out, "[{id}]{mark} ")?;
    out.write_all(piece)?;
    if newline {
        out.write_all(b"\n")?;
    }
    out.flush()
}

impl<W: Write> Write for PrefixedLines<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let PrefixedLines {
            id,
            lines,
            continues,
            out,
        } = self;
        lines.push(buf, |piece| {
            let cut = matches!(piece, Piece::Cut(_));
            let (Piece::End(bytes) | Piece::Cut(bytes)) = piece;
            write_piece(out, id, *continues, bytes, cut)?;
            *continues = cut;
            Ok::<(), io::Error>(())
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for PrefixedLines<W> {
    fn drop(&mut self) {
        let rest = self.lines.rest();
        if !rest.is_empty() {
            let _ = write_piece(&self.out, &self.id, self.continues, &rest, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(shared: &Arc<Mutex<Vec<u8>>>) -> String {
        String::from_utf8(shared.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn whole_prefixed_lines_and_the_unterminated_rest() {
        let shared = Arc::new(Mutex::new(Vec::new()));
        {
            let mut a = PrefixedLines::new("a1", shared.clone());
            let mut b = PrefixedLines::new("b2", shared.clone());
            a.write_all(b"one\ntw").unwrap();
            b.write_all(b"x\n").unwrap();
            a.write_all(b"o\nend").unwrap();
        }
        assert_eq!(text(&shared), "[a1] one\n[b2] x\n[a1] two\n[a1] end\n");
    }

    #[test]
    fn long_lines_go_out_in_marked_pieces() {
        let shared = Arc::new(Mutex::new(Vec::new()));
        {
            let mut a = PrefixedLines::with_cap("a1", shared.clone(), 4);
            a.write_all(b"abcdefghij\nok\nxyzzy").unwrap();
        }
        assert_eq!(
            text(&shared),
            "[a1] abcd\n[a1]+ efgh\n[a1]+ ij\n[a1] ok\n[a1] xyzz\n[a1]+ y\n"
        );
    }

    #[test]
    fn a_line_without_end_is_written_as_it_comes() {
        let shared = Arc::new(Mutex::new(Vec::new()));
        let mut a = PrefixedLines::new("a1", shared.clone());
        let flood = vec![b'x'; 10 * LINE_CAP + 5];
        a.write_all(&flood).unwrap();
        assert_eq!(
            shared.lock().unwrap().len(),
            "[a1] \n".len() + 9 * "[a1]+ \n".len() + 10 * LINE_CAP,
            "ten pieces out, five bytes held back"
        );
        drop(a);
        let all = text(&shared);
        let joined: String = all.lines().map(|l| l.split_once(' ').unwrap().1).collect();
        assert_eq!(joined.len(), flood.len());
    }
}
