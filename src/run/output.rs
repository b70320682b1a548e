//! Output of parallel runs: each line prefixed with its run's id, written whole, so lines
//! of different runs never mix.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

/// Buffers until a newline, then writes `[id] line` to the shared destination.
pub struct PrefixedLines<W: Write> {
    prefix: String,
    pending: Vec<u8>,
    out: Arc<Mutex<W>>,
}

impl<W: Write> PrefixedLines<W> {
    pub fn new(id: &str, out: Arc<Mutex<W>>) -> PrefixedLines<W> {
        PrefixedLines {
            prefix: format!("[{id}] "),
            pending: Vec::new(),
            out,
        }
    }

    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        out.write_all(self.prefix.as_bytes())?;
        out.write_all(line)?;
        out.flush()
    }
}

impl<W: Write> Write for PrefixedLines<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.write_line(&line)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for PrefixedLines<W> {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            let mut rest = std::mem::take(&mut self.pending);
            rest.push(b'\n');
            let _ = self.write_line(&rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let text = String::from_utf8(shared.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "[a1] one\n[b2] x\n[a1] two\n[a1] end\n");
    }
}
