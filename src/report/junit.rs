//! `--junit FILE`: the runs as a JUnit XML report, the format CI systems read test results
//! from (GitLab, Jenkins, Buildkite, CircleCI, GitHub actions that publish test results). One
//! `<testsuite>` for the `vmrun test`, one `<testcase>` per run: a failing, killed or timed-out
//! command is a `<failure>`, a run vmrun could not complete (or was interrupted) an `<error>`;
//! both hold the end of the command's stdout and stderr.

use super::xml::XmlWriter;
use super::{Suite, Verdict, run_time, seconds, verdict};
use crate::guest_text;
use crate::run::{Outcome, Phase, RunReport, Tail};

pub fn render(suite: &Suite) -> String {
    let tests = suite.runs.len().to_string();
    let failures = suite.count(Verdict::Failed).to_string();
    let errors = suite.count(Verdict::Error).to_string();
    let time = format!("{:.3}", seconds(suite.elapsed));
    // The timestamp pattern of the JUnit schema has no zone: it is UTC.
    let timestamp = suite.started_utc().to_string().replace('Z', "");
    let name = match suite.shard {
        Some(shard) => format!("vmrun test ({}, shard {shard})", suite.image),
        None => format!("vmrun test ({})", suite.image),
    };
    let counts = [
        ("tests", tests.as_str()),
        ("failures", &failures),
        ("errors", &errors),
        ("skipped", "0"),
        ("time", &time),
    ];
    let mut xml = XmlWriter::new();
    xml.start(
        "testsuites",
        &[&[("name", "vmrun test")], &counts[..]].concat(),
    );
    xml.start(
        "testsuite",
        &[
            &[("name", name.as_str())],
            &counts[..],
            &[("timestamp", &timestamp)],
        ]
        .concat(),
    );
    let exit_code = suite.exit_code.to_string();
    let shard = suite.shard.map(|s| s.to_string());
    xml.start("properties", &[]);
    xml.empty("property", &[("name", "image"), ("value", suite.image)]);
    if let Some(shard) = &shard {
        xml.empty("property", &[("name", "shard"), ("value", shard)]);
    }
    xml.empty("property", &[("name", "exit_code"), ("value", &exit_code)]);
    if suite.interrupted {
        xml.empty("property", &[("name", "interrupted"), ("value", "true")]);
    }
    xml.end();
    for run in suite.runs {
        testcase(&mut xml, suite, shard.as_deref(), run);
    }
    xml.finish()
}

fn testcase(xml: &mut XmlWriter, suite: &Suite, shard: Option<&str>, run: &RunReport) {
    // Stable from one CI run to the next, so CI systems can follow each test's history.
    let name = match shard {
        Some(shard) => format!("shard {shard} run {}", run.index),
        None => format!("run {}", run.index),
    };
    let classname = format!("vmrun.{}", suite.image);
    let time = format!("{:.3}", seconds(run_time(run)));
    xml.start(
        "testcase",
        &[("name", &name), ("classname", &classname), ("time", &time)],
    );
    let outcome = run.outcome();
    let index = run.index.to_string();
    let exit_code = outcome.exit_code().to_string();
    let mut properties = vec![
        ("run_id".to_owned(), run.id.clone()),
        ("repeat_index".to_owned(), index),
        ("image".to_owned(), suite.image.to_owned()),
    ];
    if let Some(shard) = shard {
        properties.push(("shard".to_owned(), shard.to_owned()));
    }
    properties.push(("exit_code".to_owned(), exit_code));
    for phase in Phase::ALL {
        if let Some(took) = run.took(phase) {
            let seconds = format!("{:.3}", seconds(took));
            properties.push((format!("phase.{}", phase.name()), seconds));
        }
    }
    if let Some(bytes) = run.artifact_bytes {
        properties.push(("artifact_bytes".to_owned(), bytes.to_string()));
    }
    xml.start("properties", &[]);
    for (name, value) in &properties {
        xml.empty("property", &[("name", name), ("value", value)]);
    }
    xml.end();
    let element = match verdict(outcome) {
        Verdict::Passed => None,
        Verdict::Failed => Some("failure"),
        Verdict::Error => Some("error"),
    };
    if let Some(element) = element {
        let message = outcome.describe();
        let text = details(outcome, run);
        xml.text(
            element,
            &[("message", &message), ("type", kind(outcome))],
            &text,
        );
    }
    xml.end();
}

/// The `type` of a failure or error: what ended the run.
fn kind(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Exited(_) => "exit",
        Outcome::Signalled(_) => "signal",
        Outcome::TimedOut(_) => "timeout",
        Outcome::Stopped(_) => "interrupted",
        Outcome::Failed(_) => "vmrun",
        Outcome::ArtifactsFailed { command, .. } if !command.passed() => kind(command),
        Outcome::ArtifactsFailed { .. } => "artifacts",
    }
}

/// The summary's words, vmrun's error report when it has one, and the end of each stream.
fn details(outcome: &Outcome, run: &RunReport) -> String {
    let mut text = outcome.describe() + "\n";
    if let Some(report) = outcome.error_report() {
        text += &format!("\n{report}\n");
    }
    text += &stream("stdout", &run.stdout);
    text += &stream("stderr", &run.stderr);
    text
}

fn stream(name: &str, tail: &Tail) -> String {
    if tail.bytes.is_empty() && tail.dropped == 0 {
        return format!("\n{name}: (empty)\n");
    }
    let heading = match tail.dropped {
        0 => format!("{name}:"),
        dropped => format!(
            "{name}, its last {} of {} bytes:",
            tail.bytes.len(),
            tail.bytes.len() as u64 + dropped
        ),
    };
    let mut body = guest_text::block(&tail.bytes);
    if !body.ends_with('\n') {
        body.push('\n');
    }
    format!("\n{heading}\n{body}")
}

#[cfg(test)]
mod tests {
    use super::super::tests::{suite, suite_runs, vmrun_failure};
    use super::*;

    #[test]
    fn a_suite_of_a_passed_a_failed_and_a_timed_out_run() {
        let runs = suite_runs();
        let xml = render(&suite(&runs));
        let expected = concat!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
            "<testsuites name=\"vmrun test\" tests=\"3\" failures=\"2\" errors=\"0\" ",
            "skipped=\"0\" time=\"12.345\">\n",
            "  <testsuite name=\"vmrun test (test-base, shard 2/4)\" tests=\"3\" failures=\"2\" ",
            "errors=\"0\" skipped=\"0\" time=\"12.345\" timestamp=\"2025-12-01T12:00:00\">\n",
            "    <properties>\n",
            "      <property name=\"image\" value=\"test-base\"/>\n",
            "      <property name=\"shard\" value=\"2/4\"/>\n",
            "      <property name=\"exit_code\" value=\"3\"/>\n",
            "    </properties>\n",
            "    <testcase name=\"shard 2/4 run 1\" classname=\"vmrun.test-base\" ",
            "time=\"1.750\">\n",
            "      <properties>\n",
            "        <property name=\"run_id\" value=\"aaaa0001\"/>\n",
            "        <property name=\"repeat_index\" value=\"1\"/>\n",
            "        <property name=\"image\" value=\"test-base\"/>\n",
            "        <property name=\"shard\" value=\"2/4\"/>\n",
            "        <property name=\"exit_code\" value=\"0\"/>\n",
            "        <property name=\"phase.boot\" value=\"1.500\"/>\n",
            "        <property name=\"phase.command\" value=\"0.250\"/>\n",
            "        <property name=\"artifact_bytes\" value=\"2048\"/>\n",
            "      </properties>\n",
            "    </testcase>\n",
            "    <testcase name=\"shard 2/4 run 2\" classname=\"vmrun.test-base\" ",
            "time=\"1.000\">\n",
            "      <properties>\n",
            "        <property name=\"run_id\" value=\"aaaa0002\"/>\n",
            "        <property name=\"repeat_index\" value=\"2\"/>\n",
            "        <property name=\"image\" value=\"test-base\"/>\n",
            "        <property name=\"shard\" value=\"2/4\"/>\n",
            "        <property name=\"exit_code\" value=\"3\"/>\n",
            "        <property name=\"phase.boot\" value=\"1.000\"/>\n",
            "      </properties>\n",
            "      <failure message=\"failed (exit 3)\" type=\"exit\">failed (exit 3)\n",
            "\n",
            "stdout, its last 30 of 40 bytes:\n",
            "ok 1\n",
            "not ok 2 - &lt;b&gt;&amp;\\x1b[31m&lt;/b&gt;\n",
            "\n",
            "stderr:\n",
            "assertion | failed\n",
            "</failure>\n",
            "    </testcase>\n",
            "    <testcase name=\"shard 2/4 run 3\" classname=\"vmrun.test-base\" ",
            "time=\"0.000\">\n",
            "      <properties>\n",
            "        <property name=\"run_id\" value=\"aaaa0003\"/>\n",
            "        <property name=\"repeat_index\" value=\"3\"/>\n",
            "        <property name=\"image\" value=\"test-base\"/>\n",
            "        <property name=\"shard\" value=\"2/4\"/>\n",
            "        <property name=\"exit_code\" value=\"124\"/>\n",
            "      </properties>\n",
            "      <failure message=\"timed out after 2s\" type=\"timeout\">timed out after 2s\n",
            "\n",
            "stdout: (empty)\n",
            "\n",
            "stderr: (empty)\n",
            "</failure>\n",
            "    </testcase>\n",
            "  </testsuite>\n",
            "</testsuites>\n",
        );
        assert_eq!(xml, expected);
    }

    #[test]
    fn vmrun_failures_and_interruptions_are_errors_with_vmruns_report() {
        let mut failed = RunReport::new(1, "bbbb0001");
        failed.outcome = Some(vmrun_failure());
        let mut stopped = RunReport::new(2, "bbbb0002");
        stopped.outcome = Some(Outcome::Stopped(libc::SIGTERM));
        let runs = [failed, stopped];
        let mut suite = suite(&runs);
        suite.shard = None;
        suite.interrupted = true;
        let xml = render(&suite);
        assert!(
            xml.contains(" tests=\"2\" failures=\"0\" errors=\"2\" "),
            "{xml}"
        );
        assert!(
            xml.contains("<property name=\"interrupted\" value=\"true\"/>"),
            "{xml}"
        );
        assert!(xml.contains("<testcase name=\"run 1\" "), "{xml}");
        assert!(
            xml.contains(
                "<error message=\"error: QEMU exited (signal 9)\" type=\"vmrun\">\
                 error: QEMU exited (signal 9)\n\n  × QEMU exited (signal 9)\n  \
                 │ qemu: terminating\n"
            ),
            "{xml}"
        );
        assert!(
            xml.contains("<error message=\"interrupted\" type=\"interrupted\">"),
            "{xml}"
        );
        assert!(!xml.contains("shard"), "{xml}");
    }

    #[test]
    fn guest_text_in_attributes_cannot_break_out() {
        let mut killed = RunReport::new(1, "cccc0001");
        killed.outcome = Some(Outcome::Signalled("KILL\" x=\"<".into()));
        let runs = [killed];
        let xml = render(&suite(&runs));
        assert!(
            xml.contains(
                "<failure message=\"killed by SIGKILL&quot; x=&quot;&lt;\" type=\"signal\">"
            ),
            "{xml}"
        );
    }
}
