//! The summary table as GitHub-flavoured Markdown, for the job's step summary
//! (`GITHUB_STEP_SUMMARY`). Every cell is escaped: guest text (a signal name, a message that
//! quotes the guest) must not end a cell, start HTML or a link, or carry control characters.

use std::fmt::Write;

use super::{Suite, Verdict, seconds};
use crate::human_size::human_size;
use crate::run::Phase;

pub fn render(suite: &Suite) -> String {
    let passed = suite.count(Verdict::Passed);
    let mut out = format!(
        "\n### vmrun test: {passed} passed, {} failed\n\n",
        suite.runs.len() - passed
    );
    let mut about = format!("Image {}", cell(suite.image));
    if let Some(shard) = suite.shard {
        write!(about, ", shard {shard}").expect("writing to a String");
    }
    write!(about, ", {:.1} s", seconds(suite.elapsed)).expect("writing to a String");
    if suite.interrupted {
        about += ", interrupted";
    }
    writeln!(out, "{about}; exit code {}.\n", suite.exit_code).expect("writing to a String");

    out += "| run |";
    for phase in Phase::ALL {
        write!(out, " {} |", phase.name()).expect("writing to a String");
    }
    out += " copied | result |\n|---|";
    out += &"--:|".repeat(Phase::ALL.len() + 1);
    out += "---|\n";
    for run in suite.runs {
        write!(out, "| {} ({}) |", run.index, cell(&run.id)).expect("writing to a String");
        for phase in Phase::ALL {
            match run.took(phase) {
                Some(took) => write!(out, " {:.2} s |", took.as_secs_f64()),
                None => write!(out, " - |"),
            }
            .expect("writing to a String");
        }
        let copied = run
            .artifact_bytes
            .map_or_else(|| "-".to_owned(), human_size);
        let result = cell(&run.outcome().describe());
        writeln!(out, " {copied} | {result} |").expect("writing to a String");
    }
    out
}

/// Text as one table cell that shows as written: Markdown's and HTML's special characters
/// escaped with a backslash. Guest text in vmrun's words is already visible (see
/// [`crate::guest_text`]); any control character or line break left is made visible too.
fn cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '&' | '~' | '$' | '#' | '!' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                write!(out, "\\u{{{:x}}}", c as u32).expect("writing to a String")
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::{suite, suite_runs};
    use super::*;
    use crate::run::{Outcome, RunReport};

    #[test]
    fn the_summary_table() {
        let runs = suite_runs();
        assert_eq!(
            render(&suite(&runs)),
            concat!(
                "\n### vmrun test: 1 passed, 2 failed\n\n",
                "Image test-base, shard 2/4, 12.3 s; exit code 3.\n\n",
                "| run | boot | sync | command | artifacts | teardown | copied | result |\n",
                "|---|--:|--:|--:|--:|--:|--:|---|\n",
                "| 1 (aaaa0001) | 1.50 s | - | 0.25 s | - | - | 2.0 KiB | passed |\n",
                "| 2 (aaaa0002) | 1.00 s | - | - | - | - | - | failed (exit 3) |\n",
                "| 3 (aaaa0003) | - | - | - | - | - | - | timed out after 2s |\n",
            )
        );
    }

    #[test]
    fn guest_text_stays_in_its_cell() {
        let mut killed = RunReport::new(1, "dddd0001");
        killed.outcome = Some(Outcome::Signalled("X|<img src=x>\n| forged | row |".into()));
        let runs = [killed];
        let table = render(&suite(&runs));
        let row = table.lines().last().unwrap();
        assert_eq!(
            row,
            "| 1 (dddd0001) | - | - | - | - | - | - | \
             killed by SIGX\\|\\<img src=x\\>\\\\x0a\\| forged \\| row \\| |"
        );
        // Every `|` that is not a cell border is escaped.
        assert_eq!(row.matches('|').count() - row.matches("\\|").count(), 9);
    }

    #[test]
    fn cells_escape_markdown() {
        assert_eq!(cell("a_b*c`d`"), "a\\_b\\*c\\`d\\`");
        assert_eq!(cell("[x](javascript:y)"), "\\[x\\](javascript:y)");
        assert_eq!(cell("$x$ &amp; ~~s~~"), "\\$x\\$ \\&amp; \\~\\~s\\~\\~");
        assert_eq!(cell("\x1b[2J\n"), "\\u{1b}\\[2J\\u{a}");
        assert_eq!(cell(r"C:\x"), r"C:\\x");
    }
}
