//! Names chosen by the guest, made safe to print: a file name can hold any byte but `/` and
//! NUL, and a hostile one could move the cursor, recolour the terminal, reorder text or
//! forge extra lines in a CI log.

use std::fmt::Write;

/// Bidirectional-text controls (Unicode's Bidi_Control): they reorder what follows them on
/// screen, which can make one name read as another.
const BIDI_CONTROLS: [char; 12] = [
    '\u{061c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}',
    '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
];

/// `name` with control characters (C0, DEL, C1) and bidi controls written as Rust escapes
/// (`\n`, `\u{1b}`, `\u{202e}`), backslashes doubled so an escape cannot be faked, and bytes
/// that are not UTF-8 as `\xNN`.
pub fn visible(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' || c.is_control() || BIDI_CONTROLS.contains(&c) {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_unchanged() {
        assert_eq!(visible(b"reports/junit 1.xml"), "reports/junit 1.xml");
        assert_eq!(visible("résumé-日本.txt".as_bytes()), "résumé-日本.txt");
    }

    #[test]
    fn controls_and_broken_utf8_are_escaped() {
        assert_eq!(visible(b"a\nb\rc\td"), r"a\nb\rc\td");
        assert_eq!(visible(b"\x1b[2Jclear"), r"\u{1b}[2Jclear");
        assert_eq!(visible(b"del\x7f"), r"del\u{7f}");
        assert_eq!(visible("c1\u{9b}".as_bytes()), r"c1\u{9b}");
        assert_eq!(
            visible("evil\u{202e}lmx.exe".as_bytes()),
            r"evil\u{202e}lmx.exe"
        );
        assert_eq!(visible(b"bad\xff\xfeutf8"), r"bad\xff\xfeutf8");
        // A real backslash cannot pass for an escape.
        assert_eq!(visible(br"a\nb"), r"a\\nb");
    }
}
