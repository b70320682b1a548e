//! What each run did and how long each phase took, and the summary table printed at the end.

use std::time::{Duration, Instant};

use super::tail::Tail;
use crate::human_size::human_size;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// QEMU start until an authenticated SSH session with the pinned key.
    Boot,
    Sync,
    Command,
    Artifacts,
    Teardown,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Boot,
        Phase::Sync,
        Phase::Command,
        Phase::Artifacts,
        Phase::Teardown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Boot => "boot",
            Phase::Sync => "sync",
            Phase::Command => "command",
            Phase::Artifacts => "artifacts",
            Phase::Teardown => "teardown",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Exited(i32),
    /// The command died of a signal (its name, e.g. "KILL").
    Signalled(String),
    TimedOut(Duration),
    /// vmrun itself was asked to stop (SIGINT/SIGTERM).
    Stopped(i32),
    /// vmrun could not run the command.
    Failed(Failure),
    /// The command ended (`command`) but its artifacts did not all come back.
    ArtifactsFailed {
        command: Box<Outcome>,
        failure: Failure,
    },
}

/// An error that ended a run, taken apart where it happened: its message (the summary's
/// words for it), its full report, and vmrun's exit code for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub message: String,
    pub report: String,
    pub code: u8,
}

impl Failure {
    pub fn new(error: impl miette::Diagnostic + Send + Sync + 'static, code: u8) -> Failure {
        Failure {
            message: error
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            report: format!("{:?}", miette::Report::new(error)),
            code,
        }
    }
}

impl Outcome {
    pub fn passed(&self) -> bool {
        *self == Outcome::Exited(0)
    }

    /// vmrun's exit code for this outcome: the command's own code, 128 + signal for a signal
    /// death (as shells report it), 124 for a timeout. When the artifacts failed, the
    /// command's code still wins if it is not 0, so a failing test suite is reported as such.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Exited(code) => (*code & 0xff) as u8,
            Outcome::Signalled(name) => 128 + crate::ssh::signal_number(name).unwrap_or(0) as u8,
            Outcome::TimedOut(_) => crate::exit_code::TIMEOUT,
            Outcome::Stopped(signal) => crate::signals::exit_code(*signal),
            Outcome::Failed(failure) => failure.code,
            Outcome::ArtifactsFailed { command, failure } => match command.exit_code() {
                0 => failure.code,
                own => own,
            },
        }
    }

    /// The rendered error report of a run vmrun could not complete, if this is one.
    pub fn error_report(&self) -> Option<&str> {
        match self {
            Outcome::Failed(failure) | Outcome::ArtifactsFailed { failure, .. } => {
                Some(&failure.report)
            }
            _ => None,
        }
    }

    /// The summary's words for it, e.g. `failed (exit 3)`.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Exited(0) => "passed".to_owned(),
            Outcome::Exited(code) => format!("failed (exit {code})"),
            // The guest's SSH server names the signal: guest text.
            Outcome::Signalled(name) => format!("killed by SIG{}", crate::guest_text::line(name)),
            Outcome::TimedOut(after) => format!("timed out after {}s", after.as_secs()),
            Outcome::Stopped(_) => "interrupted".to_owned(),
            Outcome::Failed(failure) => format!("error: {}", failure.message),
            Outcome::ArtifactsFailed { command, failure } => {
                format!("{}; artifacts: {}", command.describe(), failure.message)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// Its number in the schedule (`--repeat`), from 1.
    pub index: u32,
    pub id: String,
    pub phases: Vec<(Phase, Duration)>,
    pub outcome: Option<Outcome>,
    /// Bytes of artifacts copied back, when the artifacts step ran.
    pub artifact_bytes: Option<u64>,
    /// The end of the command's output.
    pub stdout: Tail,
    pub stderr: Tail,
}

impl RunReport {
    pub fn new(index: u32, id: &str) -> RunReport {
        RunReport {
            index,
            id: id.to_owned(),
            phases: Vec::new(),
            outcome: None,
            artifact_bytes: None,
            stdout: Tail::default(),
            stderr: Tail::default(),
        }
    }

    pub fn record(&mut self, phase: Phase, took: Duration) {
        self.phases.push((phase, took));
    }

    pub fn time<T>(&mut self, phase: Phase, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let value = work();
        self.record(phase, started.elapsed());
        value
    }

    pub fn took(&self, phase: Phase) -> Option<Duration> {
        self.phases
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, d)| *d)
    }

    pub fn outcome(&self) -> &Outcome {
        self.outcome
            .as_ref()
            .expect("a finished run has an outcome")
    }
}

/// The table printed after all runs: one row per run, phase times in seconds, the bytes of
/// artifacts copied back.
pub fn summary_table(reports: &[RunReport]) -> String {
    let mut out = format!("{:<10}", "run");
    for phase in Phase::ALL {
        out += &format!(" {:>9}", phase.name());
    }
    out += &format!(" {:>10}", "copied");
    out += "  result\n";
    for r in reports {
        out += &format!("{:<10}", r.id);
        for phase in Phase::ALL {
            match r.took(phase) {
                Some(d) => out += &format!(" {:>8.2}s", d.as_secs_f64()),
                None => out += &format!(" {:>9}", "-"),
            }
        }
        out += &format!(
            " {:>10}",
            r.artifact_bytes.map_or_else(|| "-".to_owned(), human_size)
        );
        out += &format!("  {}\n", r.outcome().describe());
    }
    let passed = reports.iter().filter(|r| r.outcome().passed()).count();
    out += &format!("{passed} passed, {} failed\n", reports.len() - passed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_of_outcomes() {
        assert_eq!(Outcome::Exited(0).exit_code(), 0);
        assert_eq!(Outcome::Exited(7).exit_code(), 7);
        assert_eq!(Outcome::Signalled("KILL".into()).exit_code(), 137);
        assert_eq!(Outcome::Signalled("SEGV".into()).exit_code(), 139);
        assert_eq!(Outcome::TimedOut(Duration::from_secs(3)).exit_code(), 124);
        assert_eq!(Outcome::Stopped(libc::SIGINT).exit_code(), 130);
        let failure = |code| Failure {
            message: "m".into(),
            report: "x".into(),
            code,
        };
        assert_eq!(Outcome::Failed(failure(243)).exit_code(), 243);
        let artifacts_failed = |command| Outcome::ArtifactsFailed {
            command: Box::new(command),
            failure: failure(240),
        };
        assert_eq!(artifacts_failed(Outcome::Exited(7)).exit_code(), 7);
        assert_eq!(
            artifacts_failed(Outcome::TimedOut(Duration::from_secs(1))).exit_code(),
            124
        );
        assert_eq!(artifacts_failed(Outcome::Exited(0)).exit_code(), 240);
        assert!(!artifacts_failed(Outcome::Exited(0)).passed());
        assert_eq!(
            artifacts_failed(Outcome::Exited(0)).error_report(),
            Some("x")
        );
        assert_eq!(Outcome::Exited(1).error_report(), None);
    }

    #[test]
    fn a_signal_name_from_the_guest_is_shown_not_run() {
        let forged = Outcome::Signalled("KILL\x1b]0;x\x07\nerror: forged".into());
        assert_eq!(
            forged.describe(),
            r"killed by SIGKILL\x1b]0;x\x07\x0aerror: forged"
        );
    }

    #[test]
    fn a_failure_keeps_its_errors_first_line_as_its_message() {
        #[derive(Debug, thiserror::Error, miette::Diagnostic)]
        #[error("QEMU exited (signal 9)\nlast lines of QEMU's log")]
        #[diagnostic(help("look at the log"))]
        struct Exited;
        let failure = Failure::new(Exited, 241);
        assert_eq!(failure.message, "QEMU exited (signal 9)");
        assert!(
            failure.report.contains("look at the log"),
            "{}",
            failure.report
        );
        let outcome = Outcome::Failed(failure);
        assert_eq!(outcome.describe(), "error: QEMU exited (signal 9)");
        assert_eq!(outcome.exit_code(), 241);
    }

    #[test]
    fn table_shows_phases_results_and_totals() {
        let mut a = RunReport::new(1, "r1");
        a.record(Phase::Boot, Duration::from_millis(41_500));
        a.record(Phase::Command, Duration::from_millis(250));
        a.outcome = Some(Outcome::Exited(0));
        a.artifact_bytes = Some(1536);
        let mut b = RunReport::new(2, "r2");
        b.outcome = Some(Outcome::ArtifactsFailed {
            command: Box::new(Outcome::Exited(3)),
            failure: Failure {
                message: "the artifacts reach 2.0 GiB with big.xml".into(),
                report: "  × the artifacts reach 2.0 GiB\n  │ with big.xml".into(),
                code: 240,
            },
        });
        let table = summary_table(&[a, b]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("run") && lines[0].ends_with("copied  result"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains("41.50s")
                && lines[1].contains("0.25s")
                && lines[1].ends_with("1.5 KiB  passed"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].ends_with(
                "-  failed (exit 3); artifacts: the artifacts reach 2.0 GiB with big.xml"
            ),
            "{}",
            lines[2]
        );
        assert_eq!(lines[3], "1 passed, 1 failed");
    }
}
