//! Just enough of an XML 1.0 writer for the JUnit report: elements, attributes and text,
//! escaped so that any string makes a well-formed document. Characters XML 1.0 does not allow
//! at all (C0 controls other than tab and line breaks, U+FFFE, U+FFFF) cannot be escaped with
//! a character reference either: they are written visibly instead, as `\xNN` / `\u{NNNN}`.

use std::fmt::Write;

pub struct XmlWriter {
    out: String,
    open: Vec<&'static str>,
}

impl XmlWriter {
    pub fn new() -> XmlWriter {
        XmlWriter {
            out: "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n".to_owned(),
            open: Vec::new(),
        }
    }

    /// `<name attrs...>`, on a line of its own; closed by [`end`](Self::end).
    pub fn start(&mut self, name: &'static str, attrs: &[(&str, &str)]) {
        self.tag(name, attrs);
        self.out.push_str(">\n");
        self.open.push(name);
    }

    /// `<name attrs.../>`.
    pub fn empty(&mut self, name: &'static str, attrs: &[(&str, &str)]) {
        self.tag(name, attrs);
        self.out.push_str("/>\n");
    }

    /// `<name attrs...>text</name>`, the text as it is (no indentation added inside it).
    pub fn text(&mut self, name: &'static str, attrs: &[(&str, &str)], text: &str) {
        self.tag(name, attrs);
        self.out.push('>');
        escape(&mut self.out, text, false);
        writeln!(self.out, "</{name}>").expect("writing to a String");
    }

    /// Closes the element opened last.
    pub fn end(&mut self) {
        let name = self.open.pop().expect("an element is open");
        self.indent();
        writeln!(self.out, "</{name}>").expect("writing to a String");
    }

    /// The document, every element closed.
    pub fn finish(mut self) -> String {
        while !self.open.is_empty() {
            self.end();
        }
        self.out
    }

    fn tag(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.indent();
        write!(self.out, "<{name}").expect("writing to a String");
        for (key, value) in attrs {
            write!(self.out, " {key}=\"").expect("writing to a String");
            escape(&mut self.out, value, true);
            self.out.push('"');
        }
    }

    fn indent(&mut self) {
        self.out.extend(std::iter::repeat_n("  ", self.open.len()));
    }
}

/// Escapes `text` for content, or for an attribute value in double quotes: there, line
/// breaks and tabs are character references, as a parser would otherwise turn them into spaces.
fn escape(out: &mut String, text: &str, attribute: bool) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\n' | '\r' | '\t' if attribute => {
                write!(out, "&#{};", c as u32).expect("writing to a String")
            }
            // A lone CR in content would be read as a line break.
            '\r' => out.push_str("&#13;"),
            '\n' | '\t' => out.push(c),
            '\0'..='\x1f' => write!(out, "\\x{:02x}", c as u32).expect("writing to a String"),
            '\u{fffe}' | '\u{ffff}' => {
                write!(out, "\\u{{{:x}}}", c as u32).expect("writing to a String")
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str, attribute: bool) -> String {
        let mut out = String::new();
        escape(&mut out, text, attribute);
        out
    }

    #[test]
    fn a_whole_document() {
        let mut xml = XmlWriter::new();
        xml.start("a", &[("n", "1")]);
        xml.empty("b", &[("k", "v"), ("q", "\"<&>\"")]);
        xml.text("c", &[], "x < y\n");
        xml.start("d", &[]);
        let doc = xml.finish();
        assert_eq!(
            doc,
            concat!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
                "<a n=\"1\">\n",
                "  <b k=\"v\" q=\"&quot;&lt;&amp;&gt;&quot;\"/>\n",
                "  <c>x &lt; y\n</c>\n",
                "  <d>\n",
                "  </d>\n",
                "</a>\n",
            )
        );
    }

    #[test]
    fn markup_cannot_be_injected() {
        assert_eq!(
            escaped("</failure><x a='1'>]]>&amp;", false),
            "&lt;/failure&gt;&lt;x a='1'&gt;]]&gt;&amp;amp;"
        );
        assert_eq!(escaped("\" onload=\"x", true), "&quot; onload=&quot;x");
    }

    #[test]
    fn line_breaks_survive_attributes() {
        assert_eq!(escaped("a\nb\tc\rd", true), "a&#10;b&#9;c&#13;d");
        assert_eq!(escaped("a\nb\tc\rd", false), "a\nb\tc&#13;d");
    }

    #[test]
    fn characters_xml_forbids_are_made_visible() {
        assert_eq!(
            escaped("\x1b[31mred\x00\x08", false),
            "\\x1b[31mred\\x00\\x08"
        );
        assert_eq!(
            escaped("\u{fffe}\u{ffff}é✓\u{10000}", true),
            "\\u{fffe}\\u{ffff}é✓\u{10000}"
        );
    }

    /// XML 1.0's Char production.
    fn allowed(c: char) -> bool {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
            || c >= '\u{10000}'
    }

    proptest::proptest! {
        /// Whatever the text, the document has only characters XML allows, and the text
        /// cannot open or close markup.
        #[test]
        fn any_text_makes_well_formed_xml(text in "\\PC*|[\\x00-\\x1f\u{fffe}\u{ffff}<>&\"']*") {
            let mut xml = XmlWriter::new();
            xml.text("t", &[("a", &text)], &text);
            let doc = xml.finish();
            proptest::prop_assert!(doc.chars().all(allowed), "{doc:?}");
            proptest::prop_assert_eq!(doc.matches('<').count(), 3);
            // The declaration's and the attribute's quotes; quotes in content stay plain.
            let quotes = 6 + text.matches('"').count();
            proptest::prop_assert_eq!(doc.matches('"').count(), quotes);
        }
    }
}
