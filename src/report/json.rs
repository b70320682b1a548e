//! `--json-report FILE`: the summary table as data (the fields are documented in the README).

use serde::Serialize;

use super::{Suite, Verdict, seconds, verdict};
use crate::run::{Outcome, Phase, RunReport};

/// The version of this format: raised when a field changes meaning or goes away (new fields
/// may appear without it).
const VERSION: u32 = 1;

#[derive(Serialize)]
struct Report<'a> {
    version: u32,
    image: &'a str,
    shard: Option<Shard>,
    started: String,
    elapsed_seconds: f64,
    exit_code: u8,
    interrupted: bool,
    runs_total: usize,
    passed: usize,
    failed: usize,
    runs: Vec<Run<'a>>,
}

#[derive(Serialize)]
struct Shard {
    index: u32,
    count: u32,
}

#[derive(Serialize)]
struct Run<'a> {
    index: u32,
    id: &'a str,
    result: &'static str,
    description: String,
    exit_code: u8,
    /// Seconds, for the phases that ran.
    phases: serde_json::Map<String, serde_json::Value>,
    artifact_bytes: Option<u64>,
    error: Option<&'a str>,
}

pub fn render(suite: &Suite) -> String {
    let passed = suite.count(Verdict::Passed);
    let report = Report {
        version: VERSION,
        image: suite.image,
        shard: suite.shard.map(|s| Shard {
            index: s.index(),
            count: s.count(),
        }),
        started: suite.started_utc().to_string(),
        elapsed_seconds: seconds(suite.elapsed),
        exit_code: suite.exit_code,
        interrupted: suite.interrupted,
        runs_total: suite.runs.len(),
        passed,
        failed: suite.runs.len() - passed,
        runs: suite.runs.iter().map(run).collect(),
    };
    let mut text = serde_json::to_string_pretty(&report).expect("a report serializes");
    text.push('\n');
    text
}

fn run(run: &RunReport) -> Run<'_> {
    let outcome = run.outcome();
    let phases = Phase::ALL
        .into_iter()
        .filter_map(|phase| Some((phase.name().to_owned(), seconds(run.took(phase)?).into())))
        .collect();
    Run {
        index: run.index,
        id: &run.id,
        result: result(outcome),
        description: outcome.describe(),
        exit_code: outcome.exit_code(),
        phases,
        artifact_bytes: run.artifact_bytes,
        error: match outcome {
            Outcome::Failed(failure) | Outcome::ArtifactsFailed { failure, .. } => {
                Some(&failure.message)
            }
            _ => None,
        },
    }
}

/// One word for how the run ended.
fn result(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Exited(0) => "passed",
        Outcome::Exited(_) => "failed",
        Outcome::Signalled(_) => "killed",
        Outcome::TimedOut(_) => "timed-out",
        Outcome::Stopped(_) => "interrupted",
        Outcome::Failed(_) => "error",
        Outcome::ArtifactsFailed { command, .. } => match verdict(command) {
            Verdict::Passed => "error",
            _ => result(command),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{suite, suite_runs, vmrun_failure};
    use super::*;
    use serde_json::json;

    #[test]
    fn the_summary_as_data() {
        let runs = suite_runs();
        let report: serde_json::Value = serde_json::from_str(&render(&suite(&runs))).unwrap();
        assert_eq!(
            report,
            json!({
                "version": 1,
                "image": "test-base",
                "shard": {"index": 2, "count": 4},
                "started": "2025-12-01T12:00:00Z",
                "elapsed_seconds": 12.345,
                "exit_code": 3,
                "interrupted": false,
                "runs_total": 3,
                "passed": 1,
                "failed": 2,
                "runs": [
                    {
                        "index": 1, "id": "aaaa0001", "result": "passed",
                        "description": "passed", "exit_code": 0,
                        "phases": {"boot": 1.5, "command": 0.25},
                        "artifact_bytes": 2048, "error": null
                    },
                    {
                        "index": 2, "id": "aaaa0002", "result": "failed",
                        "description": "failed (exit 3)", "exit_code": 3,
                        "phases": {"boot": 1.0},
                        "artifact_bytes": null, "error": null
                    },
                    {
                        "index": 3, "id": "aaaa0003", "result": "timed-out",
                        "description": "timed out after 2s", "exit_code": 124,
                        "phases": {},
                        "artifact_bytes": null, "error": null
                    }
                ]
            })
        );
    }

    #[test]
    fn results_of_every_outcome() {
        assert_eq!(result(&Outcome::Signalled("KILL".into())), "killed");
        assert_eq!(result(&Outcome::Stopped(2)), "interrupted");
        assert_eq!(result(&vmrun_failure()), "error");
        let Outcome::Failed(failure) = vmrun_failure() else {
            unreachable!()
        };
        let artifacts = |command| Outcome::ArtifactsFailed {
            command: Box::new(command),
            failure: failure.clone(),
        };
        assert_eq!(result(&artifacts(Outcome::Exited(0))), "error");
        assert_eq!(result(&artifacts(Outcome::Exited(2))), "failed");
        let mut run = RunReport::new(1, "x");
        run.outcome = Some(artifacts(Outcome::Exited(0)));
        assert_eq!(super::run(&run).error, Some("QEMU exited (signal 9)"));
    }
}
