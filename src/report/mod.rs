//! The reports of `vmrun test` that CI systems read: JUnit XML (`--junit`), the summary table
//! as JSON (`--json-report`), and the table as Markdown appended to GitHub's step summary
//! (`GITHUB_STEP_SUMMARY`). They are written once the runs are over, however they ended: a
//! failure, a timeout, or an interruption (then they show the runs that ran).

mod json;
mod junit;
mod markdown;
mod xml;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::path_error::PathError;
use crate::run::{Outcome, RunReport};
use crate::shard::Shard;
use crate::utc::UtcTime;

/// Everything the reports say: the runs and what they ran in.
#[derive(Debug, Clone)]
pub struct Suite<'a> {
    /// The image the runs ran in, as it was given (a baked name or a source).
    pub image: &'a str,
    pub shard: Option<Shard>,
    /// When the first run began, in Unix seconds.
    pub started: u64,
    /// From the first run's start to the last run's end.
    pub elapsed: Duration,
    /// In schedule order.
    pub runs: &'a [RunReport],
    /// vmrun's exit code.
    pub exit_code: u8,
    /// vmrun was asked to stop (SIGINT, SIGTERM) before the schedule was done.
    pub interrupted: bool,
}

/// How a CI system counts a run: JUnit's failure is the test's, its error vmrun's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Passed,
    Failed,
    Error,
}

fn verdict(outcome: &Outcome) -> Verdict {
    match outcome {
        Outcome::Exited(0) => Verdict::Passed,
        Outcome::Exited(_) | Outcome::Signalled(_) | Outcome::TimedOut(_) => Verdict::Failed,
        Outcome::Stopped(_) | Outcome::Failed(_) => Verdict::Error,
        // A failing command is the test's failure, whatever happened to its artifacts.
        Outcome::ArtifactsFailed { command, .. } => match verdict(command) {
            Verdict::Passed => Verdict::Error,
            command => command,
        },
    }
}

impl Suite<'_> {
    fn count(&self, wanted: Verdict) -> usize {
        self.runs
            .iter()
            .filter(|r| verdict(r.outcome()) == wanted)
            .count()
    }

    fn started_utc(&self) -> UtcTime {
        UtcTime::from_unix(self.started)
    }
}

/// A duration in seconds, as the reports give them.
fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// How long a run took: its phases together.
fn run_time(run: &RunReport) -> Duration {
    run.phases.iter().map(|(_, took)| *took).sum()
}

/// Where the reports go.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportFiles {
    pub junit: Option<PathBuf>,
    pub json: Option<PathBuf>,
    /// Appended to, not replaced: GitHub's `GITHUB_STEP_SUMMARY`.
    pub step_summary: Option<PathBuf>,
}

impl ReportFiles {
    /// Checks, before any run, that the reports named on the command line can be written
    /// where asked: their directories exist. Returns the flag and the reason.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let named = [("--junit", &self.junit), ("--json-report", &self.json)];
        for (flag, path) in named {
            let Some(path) = path else { continue };
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            if path.as_os_str().is_empty() || path.is_dir() {
                return Err((flag, format!("{} is not a file name", path.display())));
            }
            if !dir.is_dir() {
                return Err((flag, format!("no directory {}", dir.display())));
            }
        }
        Ok(())
    }

    /// Writes every report asked for: the files whole or not at all, the step summary
    /// appended. One that cannot be written does not keep the others from being written.
    pub fn write(&self, suite: &Suite) -> Vec<PathError> {
        let mut failed = Vec::new();
        if let Some(path) = &self.junit {
            failed.extend(crate::atomic_file::write(path, junit::render(suite).as_bytes()).err());
        }
        if let Some(path) = &self.json {
            failed.extend(crate::atomic_file::write(path, json::render(suite).as_bytes()).err());
        }
        if let Some(path) = &self.step_summary {
            failed.extend(append(path, markdown::render(suite).as_bytes()).err());
        }
        failed
    }
}

fn append(path: &Path, bytes: &[u8]) -> Result<(), PathError> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(PathError::at("append to", path))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::run::{Failure, Phase, Tail};

    /// Three runs: passed (artifacts copied), failed with output, timed out.
    pub fn suite_runs() -> Vec<RunReport> {
        let mut passed = RunReport::new(1, "aaaa0001");
        passed.record(Phase::Boot, Duration::from_millis(1500));
        passed.record(Phase::Command, Duration::from_millis(250));
        passed.artifact_bytes = Some(2048);
        passed.outcome = Some(Outcome::Exited(0));
        let mut failed = RunReport::new(2, "aaaa0002");
        failed.record(Phase::Boot, Duration::from_millis(1000));
        failed.outcome = Some(Outcome::Exited(3));
        failed.stdout = Tail {
            bytes: b"ok 1\nnot ok 2 - <b>&\x1b[31m</b>\n".to_vec(),
            dropped: 10,
        };
        failed.stderr = Tail {
            bytes: b"assertion | failed\n".to_vec(),
            dropped: 0,
        };
        let mut timed_out = RunReport::new(3, "aaaa0003");
        timed_out.outcome = Some(Outcome::TimedOut(Duration::from_secs(2)));
        vec![passed, failed, timed_out]
    }

    pub fn suite(runs: &[RunReport]) -> Suite<'_> {
        Suite {
            image: "test-base",
            shard: Some(Shard::new(2, 4).unwrap()),
            started: 1_764_590_400,
            elapsed: Duration::from_millis(12_345),
            runs,
            exit_code: 3,
            interrupted: false,
        }
    }

    pub fn vmrun_failure() -> Outcome {
        Outcome::Failed(Failure {
            message: "QEMU exited (signal 9)".into(),
            report: "  × QEMU exited (signal 9)\n  │ qemu: terminating".into(),
            code: 243,
        })
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(&Outcome::Exited(0)), Verdict::Passed);
        assert_eq!(verdict(&Outcome::Exited(1)), Verdict::Failed);
        assert_eq!(verdict(&Outcome::Signalled("KILL".into())), Verdict::Failed);
        assert_eq!(verdict(&Outcome::Stopped(2)), Verdict::Error);
        assert_eq!(verdict(&vmrun_failure()), Verdict::Error);
        let Outcome::Failed(failure) = vmrun_failure() else {
            unreachable!()
        };
        let artifacts = |command| Outcome::ArtifactsFailed {
            command: Box::new(command),
            failure: failure.clone(),
        };
        assert_eq!(verdict(&artifacts(Outcome::Exited(0))), Verdict::Error);
        assert_eq!(verdict(&artifacts(Outcome::Exited(4))), Verdict::Failed);
    }

    #[test]
    fn reports_are_written_and_the_summary_appended() {
        let dir = tempfile::tempdir().unwrap();
        let runs = suite_runs();
        let files = ReportFiles {
            junit: Some(dir.path().join("junit.xml")),
            json: Some(dir.path().join("report.json")),
            step_summary: Some(dir.path().join("summary.md")),
        };
        std::fs::write(dir.path().join("summary.md"), "earlier step\n").unwrap();
        assert!(files.write(&suite(&runs)).is_empty());
        let xml = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
        assert!(xml.starts_with("<?xml"), "{xml}");
        let json = std::fs::read_to_string(dir.path().join("report.json")).unwrap();
        assert!(json.starts_with('{'), "{json}");
        let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
        assert!(md.starts_with("earlier step\n\n### vmrun test"), "{md}");
    }

    #[test]
    fn one_failed_report_does_not_stop_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let runs = suite_runs();
        let files = ReportFiles {
            junit: Some(dir.path().join("gone/junit.xml")),
            json: Some(dir.path().join("report.json")),
            step_summary: None,
        };
        let failed = files.write(&suite(&runs));
        assert_eq!(failed.len(), 1);
        assert!(
            failed[0].path.starts_with(dir.path().join("gone")),
            "{failed:?}"
        );
        assert!(dir.path().join("report.json").is_file());
    }

    #[test]
    fn report_paths_are_checked_before_the_runs() {
        let dir = tempfile::tempdir().unwrap();
        let ok = ReportFiles {
            junit: Some(dir.path().join("junit.xml")),
            json: Some("report.json".into()),
            step_summary: Some(dir.path().join("no/such/dir/summary.md")),
        };
        assert_eq!(ok.check(), Ok(()));
        let missing = ReportFiles {
            json: Some(dir.path().join("no/report.json")),
            ..ReportFiles::default()
        };
        let (flag, why) = missing.check().unwrap_err();
        assert_eq!(flag, "--json-report");
        assert!(why.starts_with("no directory"), "{why}");
        let a_dir = ReportFiles {
            junit: Some(dir.path().to_owned()),
            ..ReportFiles::default()
        };
        assert_eq!(a_dir.check().unwrap_err().0, "--junit");
    }
}
