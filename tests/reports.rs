//! The reports CI systems read, from `vmrun test` against real VMs: the JUnit XML of a
//! passing, a failing and a timed-out run parsed by a JUnit-reading library (Python's
//! junitparser, as CI tooling reads it), the JSON report and GitHub's step summary of a
//! repeated run, and `--shard auto` from a CI system's variables.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Variables of the CI this test may itself run in, which would change what vmrun reports.
const CI_VARIABLES: [&str; 8] = [
    "GITHUB_STEP_SUMMARY",
    "VMRUN_SHARD",
    "CI_NODE_INDEX",
    "CI_NODE_TOTAL",
    "BUILDKITE_PARALLEL_JOB",
    "BUILDKITE_PARALLEL_JOB_COUNT",
    "CIRCLE_NODE_INDEX",
    "CIRCLE_NODE_TOTAL",
];

fn vmrun_test(project: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(common::VMRUN);
    cmd.arg("test")
        .arg("--image")
        .arg(common::baked_image())
        .args(args)
        .current_dir(project)
        .env("VMRUN_HOME", common::test_home());
    for name in CI_VARIABLES {
        cmd.env_remove(name);
    }
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether an error report says `words`, however miette wrapped and framed it.
fn says(report: &str, words: &str) -> bool {
    let squeezed = |text: &str| -> String {
        text.chars()
            .filter(|c| !c.is_whitespace() && *c != '│')
            .collect()
    };
    squeezed(report).contains(&squeezed(words))
}

/// The report as junitparser reads it: the suites' counts, and each case's name, time,
/// properties and results (failure/error: message, type, text), as JSON.
const JUNITPARSER: &str = r#"
import json, sys
from junitparser import JUnitXml, Properties
xml = JUnitXml.fromfile(sys.argv[1])
suites = []
for suite in xml:
    cases = []
    for case in suite:
        props = case.child(Properties)
        cases.append({
            "name": case.name,
            "classname": case.classname,
            "time": case.time,
            "passed": case.is_passed,
            "properties": {p.name: p.value for p in props} if props is not None else {},
            "results": [
                {"tag": r._tag, "message": r.message, "type": r.type, "text": r.text}
                for r in case.result
            ],
        })
    suites.append({
        "name": suite.name, "tests": suite.tests, "failures": suite.failures,
        "errors": suite.errors, "time": suite.time, "cases": cases,
    })
print(json.dumps({
    "tests": xml.tests, "failures": xml.failures, "errors": xml.errors, "suites": suites,
}))
"#;

fn junitparser(report: &Path) -> Value {
    let out = Command::new("python3")
        .args(["-c", JUNITPARSER])
        .arg(report)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "junitparser could not read {} (pip install junitparser): {}\n{}",
        report.display(),
        text(&out.stderr),
        std::fs::read_to_string(report).unwrap_or_default()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `vmrun test --junit` with `args`, checks its exit code, and returns the one test
/// case of the parsed report, after checking the counts.
fn junit_case(project: &Path, args: &[&str], exit: i32, failures: u64) -> (Value, Output) {
    let report = project.join(format!("junit-{exit}.xml"));
    let out = vmrun_test(
        project,
        &[&["--junit", report.to_str().unwrap()], args].concat(),
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(exit), "{}", text(&out.stderr));
    let parsed = junitparser(&report);
    assert_eq!(parsed["tests"], 1, "{parsed}");
    assert_eq!(parsed["failures"], failures, "{parsed}");
    assert_eq!(parsed["errors"], 0, "{parsed}");
    let suite = &parsed["suites"][0];
    assert_eq!(suite["tests"], 1, "{parsed}");
    assert_eq!(suite["name"], "vmrun test (test-base)", "{parsed}");
    let case = suite["cases"][0].clone();
    assert_eq!(case["name"], "run 1", "{case}");
    assert_eq!(case["classname"], "vmrun.test-base", "{case}");
    let properties = &case["properties"];
    assert_eq!(properties["repeat_index"], "1", "{case}");
    assert_eq!(properties["image"], "test-base", "{case}");
    assert_eq!(properties["exit_code"], exit.to_string(), "{case}");
    let run_id = common::run_id(&text(&out.stderr)).unwrap();
    assert_eq!(properties["run_id"], run_id.as_str(), "{case}");
    for phase in ["boot", "sync", "command", "teardown"] {
        let seconds: f64 = properties[format!("phase.{phase}")]
            .as_str()
            .unwrap_or_else(|| panic!("no phase.{phase}: {case}"))
            .parse()
            .unwrap();
        assert!(seconds >= 0.0, "{case}");
    }
    assert!(case["time"].as_f64().unwrap() > 0.0, "{case}");
    (case, out)
}

#[test]
fn junit_reports_of_a_passing_a_failing_and_a_timed_out_run() {
    let project = tempfile::tempdir().unwrap();

    let (passed, out) = junit_case(project.path(), &["--", "echo", "all-good"], 0, 0);
    assert_eq!(passed["passed"], true, "{passed}");
    assert_eq!(passed["results"], Value::Array(vec![]), "{passed}");
    assert!(text(&out.stdout).contains("all-good"));

    // A failure shows the end of both streams, guest control characters made visible.
    let failing = "echo 'ok 1 - setup'; printf 'not ok 2 - <parse> & \\033[31mred\\n' >&2; exit 3";
    let (failed, out) = junit_case(project.path(), &["--", "sh", "-c", failing], 3, 1);
    assert_eq!(
        text(&out.stdout),
        "ok 1 - setup\n",
        "output passes through unchanged"
    );
    let result = &failed["results"][0];
    assert_eq!(result["tag"], "failure", "{failed}");
    assert_eq!(result["message"], "failed (exit 3)", "{failed}");
    assert_eq!(result["type"], "exit", "{failed}");
    let details = result["text"].as_str().unwrap();
    assert!(details.contains("stdout:\nok 1 - setup\n"), "{details}");
    assert!(
        details.contains("stderr:\nnot ok 2 - <parse> & \\x1b[31mred\n"),
        "{details}"
    );

    let (timed_out, _) = junit_case(
        project.path(),
        &[
            "--timeout",
            "2s",
            "--",
            "sh",
            "-c",
            "echo before-the-wait; sleep 60",
        ],
        124,
        1,
    );
    let result = &timed_out["results"][0];
    assert_eq!(result["message"], "timed out after 2s", "{timed_out}");
    assert_eq!(result["type"], "timeout", "{timed_out}");
    assert!(
        result["text"]
            .as_str()
            .unwrap()
            .contains("stdout:\nbefore-the-wait\n"),
        "{timed_out}"
    );
}

#[test]
fn json_report_and_step_summary_of_repeated_runs_with_a_shard_from_the_ci() {
    let project = tempfile::tempdir().unwrap();
    let summary = project.path().join("step-summary.md");
    std::fs::write(&summary, "## earlier step\n").unwrap();
    let out = vmrun_test(
        project.path(),
        &[
            "--repeat",
            "2",
            "--shard",
            "auto",
            "--json-report",
            "report.json",
            "--junit",
            "junit.xml",
            "--",
            "sh",
            "-c",
            "echo shard=$VMRUN_SHARD_INDEX/$VMRUN_SHARD_COUNT; echo 'a|b' >&2",
        ],
    )
    // GitLab's parallel job 2 of 3.
    .env("CI_NODE_INDEX", "2")
    .env("CI_NODE_TOTAL", "3")
    .env("GITHUB_STEP_SUMMARY", &summary)
    .output()
    .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&out.stdout), "shard=2/3\nshard=2/3\n", "{stderr}");
    assert!(
        stderr.contains("--shard auto: shard 2/3, from GitLab (CI_NODE_INDEX=2, CI_NODE_TOTAL=3)"),
        "{stderr}"
    );

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(project.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["version"], 1, "{report}");
    assert_eq!(report["image"], "test-base", "{report}");
    assert_eq!(report["shard"], serde_json::json!({"index": 2, "count": 3}));
    assert_eq!(report["exit_code"], 0, "{report}");
    assert_eq!(report["interrupted"], false, "{report}");
    assert_eq!(
        (&report["runs_total"], &report["passed"], &report["failed"]),
        (&2.into(), &2.into(), &0.into()),
        "{report}"
    );
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for (n, run) in runs.iter().enumerate() {
        assert_eq!(run["index"], n + 1, "{report}");
        assert_eq!(run["result"], "passed", "{report}");
        assert_eq!(run["exit_code"], 0, "{report}");
        assert!(stderr.contains(run["id"].as_str().unwrap()), "{report}");
        for phase in ["boot", "sync", "command", "teardown"] {
            assert!(run["phases"][phase].as_f64().unwrap() >= 0.0, "{report}");
        }
        assert_eq!(run["artifact_bytes"], Value::Null, "{report}");
    }

    let parsed = junitparser(&project.path().join("junit.xml"));
    assert_eq!(parsed["tests"], 2, "{parsed}");
    let names: Vec<&Value> = parsed["suites"][0]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["name"])
        .collect();
    assert_eq!(names, ["shard 2/3 run 1", "shard 2/3 run 2"], "{parsed}");
    assert_eq!(
        parsed["suites"][0]["cases"][1]["properties"]["shard"],
        "2/3"
    );

    // Appended after what the job's earlier steps wrote: a heading and one row per run.
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(
        md.starts_with("## earlier step\n\n### vmrun test: 2 passed, 0 failed\n\n"),
        "{md}"
    );
    assert!(md.contains("Image test-base, shard 2/3, "), "{md}");
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 3, "{md}");
    assert!(rows[0].starts_with("| run | boot |"), "{md}");
    for (n, row) in rows[1..].iter().enumerate() {
        assert!(row.starts_with(&format!("| {} (", n + 1)), "{md}");
        assert!(row.ends_with(" | passed |"), "{md}");
    }
}

#[test]
fn shard_auto_without_a_ci_or_with_a_bad_value_is_a_usage_error() {
    let project = tempfile::tempdir().unwrap();
    let none = vmrun_test(project.path(), &["--shard", "auto", "--", "true"])
        .env_remove("GITHUB_ACTIONS")
        .output()
        .unwrap();
    let stderr = text(&none.stderr);
    assert_eq!(none.status.code(), Some(2), "{stderr}");
    assert!(says(&stderr, "--shard auto: found no CI shard"), "{stderr}");
    assert!(
        says(&stderr, "CIRCLE_NODE_INDEX/CIRCLE_NODE_TOTAL (CircleCI)"),
        "{stderr}"
    );

    let bad = vmrun_test(project.path(), &["--shard", "auto", "--", "true"])
        .env("BUILDKITE_PARALLEL_JOB", "4")
        .env("BUILDKITE_PARALLEL_JOB_COUNT", "4")
        .output()
        .unwrap();
    let stderr = text(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(says(&stderr, "BUILDKITE_PARALLEL_JOB=\"4\""), "{stderr}");

    // A report that could not be written is found out before any VM starts.
    let nowhere = vmrun_test(
        project.path(),
        &["--junit", "no/such/dir/junit.xml", "--", "true"],
    )
    .output()
    .unwrap();
    let stderr = text(&nowhere.stderr);
    assert_eq!(nowhere.status.code(), Some(2), "{stderr}");
    assert!(
        says(&stderr, "--junit: no directory no/such/dir"),
        "{stderr}"
    );
    assert!(!stderr.contains("boot"), "{stderr}");
}

#[test]
fn reports_of_an_interrupted_run_show_what_ran() {
    use std::io::BufRead;
    let project = tempfile::tempdir().unwrap();
    let mut child = vmrun_test(
        project.path(),
        &[
            "--junit",
            "junit.xml",
            "--json-report",
            "report.json",
            "--",
            "sh",
            "-c",
            "echo waiting-for-the-signal; sleep 600",
        ],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    // The command runs once its first line arrives.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "waiting-for-the-signal\n");
    // SAFETY: kill(2) of the child this test spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));

    let parsed = junitparser(&project.path().join("junit.xml"));
    assert_eq!(
        (&parsed["tests"], &parsed["failures"], &parsed["errors"]),
        (&1.into(), &0.into(), &1.into()),
        "{parsed}"
    );
    let result = &parsed["suites"][0]["cases"][0]["results"][0];
    assert_eq!(result["tag"], "error", "{parsed}");
    assert_eq!(result["type"], "interrupted", "{parsed}");
    assert!(
        result["text"]
            .as_str()
            .unwrap()
            .contains("stdout:\nwaiting-for-the-signal\n"),
        "{parsed}"
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(project.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["interrupted"], true, "{report}");
    assert_eq!(report["exit_code"], 130, "{report}");
    assert_eq!(report["runs"][0]["result"], "interrupted", "{report}");
}
