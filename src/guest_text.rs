//! Text that came from a guest (its console, cloud-init's errors, the guest agent's answers,
//! rsync's complaints) shown inside vmrun's own messages. A guest can print anything, and a
//! terminal acts on escape sequences: it could retitle the window (OSC), move the cursor and
//! overwrite what vmrun said (CSI), or forge lines that look like vmrun's. So every control
//! character is made visible before such text reaches a message, an event or a log line of
//! vmrun's. The guest command's own stdout and stderr are not vmrun's messages: they pass
//! through unchanged.
//!
//! A backslash is doubled, so a guest that prints `\x1b` literally cannot pass for one that
//! printed ESC (a file named `a\nb` reads `a\\nb`, one with a newline in it `a\x0ab`).

use std::fmt::Write;

/// One line of guest text: every control character visible, line breaks too, so the text
/// cannot start a line of its own in vmrun's output.
pub fn line(text: impl AsRef<[u8]>) -> String {
    visible(text.as_ref(), false)
}

/// Several lines of guest text (the console's last lines): as [`line`], but `\n` stays a
/// line break.
pub fn block(text: impl AsRef<[u8]>) -> String {
    visible(text.as_ref(), true)
}

/// Tabs stay; other C0 controls, DEL and bytes that are not UTF-8 become `\xNN`; C1 controls
/// (U+0080..U+009F: U+009B is a CSI on its own to many terminals) and the characters that
/// reorder text on screen (bidirectional overrides, as in "Trojan Source") become `\u{NN}`.
fn visible(bytes: &[u8], keep_newlines: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\t' => out.push(c),
                '\\' => out.push_str("\\\\"),
                '\n' if keep_newlines => out.push(c),
                '\0'..='\x1f' | '\x7f' => {
                    write!(out, "\\x{:02x}", c as u32).expect("writing to a String")
                }
                '\u{80}'..='\u{9f}'
                | '\u{61c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}' => {
                    write!(out, "\\u{{{:x}}}", c as u32).expect("writing to a String")
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            write!(out, "\\x{b:02x}").expect("writing to a String");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backslash_cannot_pass_for_an_escape() {
        assert_eq!(line(br"a\nb"), r"a\\nb");
        assert_eq!(line(b"a\nb"), r"a\x0ab");
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(
            line("cloud-init: modules:final, café ✓"),
            "cloud-init: modules:final, café ✓"
        );
        assert_eq!(block("a\tb\nc\n"), "a\tb\nc\n");
    }

    #[test]
    fn escape_sequences_are_shown_not_run() {
        // OSC: set the window title, ended by BEL.
        assert_eq!(line("\x1b]0;pwned\x07ok"), "\\x1b]0;pwned\\x07ok");
        // CSI: clear the screen, move the cursor home.
        assert_eq!(
            line("\x1b[2J\x1b[Herror: forged"),
            "\\x1b[2J\\x1b[Herror: forged"
        );
        // A carriage return that would overwrite the line it is on.
        assert_eq!(line("real\rfake"), "real\\x0dfake");
        assert_eq!(line("\0\x7f"), "\\x00\\x7f");
    }

    #[test]
    fn line_breaks_stay_only_in_blocks() {
        assert_eq!(line("one\nerror: two"), "one\\x0aerror: two");
        assert_eq!(block("one\n\x1b[31mtwo\n"), "one\n\\x1b[31mtwo\n");
    }

    #[test]
    fn c1_controls_and_reordering_characters() {
        // U+009B is a whole CSI in one character; U+009D an OSC.
        assert_eq!(
            line("a\u{9b}2Jb\u{9d}0;x\u{9c}"),
            "a\\u{9b}2Jb\\u{9d}0;x\\u{9c}"
        );
        assert_eq!(line("\u{85}"), "\\u{85}");
        assert_eq!(line("user\u{202e}gnp.exe"), "user\\u{202e}gnp.exe");
        assert_eq!(line("\u{2066}x\u{2069}"), "\\u{2066}x\\u{2069}");
    }

    #[test]
    fn bytes_that_are_not_utf8() {
        // 0x9b alone is the 8-bit CSI: not UTF-8, shown as a byte.
        assert_eq!(line(b"a\x9b2Jb"), "a\\x9b2Jb");
        assert_eq!(line(b"\xff\xfeok\xc3"), "\\xff\\xfeok\\xc3");
        assert_eq!(block(b"caf\xc3\xa9\n\xe2\x82"), "café\n\\xe2\\x82");
    }

    proptest::proptest! {
        /// Whatever the guest sends, what comes out has no control character but tab (and
        /// newline in a block), and nothing that reorders text.
        #[test]
        fn nothing_a_terminal_acts_on_survives(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)
        ) {
            let shown = block(&bytes);
            let bad = |c: char| {
                (c.is_control() && c != '\t' && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c)
            };
            proptest::prop_assert!(!shown.chars().any(bad), "{shown:?}");
            proptest::prop_assert!(!line(&bytes).contains('\n'));
        }
    }
}
