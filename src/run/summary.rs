//! What each run did and how long each phase took, and the summary table printed at the end.

use std::time::{Duration, Instant};

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
    /// vmrun could not run the command: its rendered error report and vmrun's exit code.
    Failed(String, u8),
}

impl Outcome {
    pub fn passed(&self) -> bool {
        *self == Outcome::Exited(0)
    }

    /// vmrun's exit code for this outcome: the command's own code, 128 + signal for a signal
    /// death (as shells report it), 124 for a timeout.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Exited(code) => (*code & 0xff) as u8,
            Outcome::Signalled(name) => 128 + signal_number(name).unwrap_or(0) as u8,
            Outcome::TimedOut(_) => crate::exit_code::TIMEOUT,
            Outcome::Stopped(signal) => super::signals::exit_code(*signal),
            Outcome::Failed(_, code) => *code,
        }
    }

    fn describe(&self) -> String {
        match self {
            Outcome::Exited(0) => "passed".to_owned(),
            Outcome::Exited(code) => format!("failed (exit {code})"),
            Outcome::Signalled(name) => format!("killed by SIG{name}"),
            Outcome::TimedOut(after) => format!("timed out after {}s", after.as_secs()),
            Outcome::Stopped(_) => "interrupted".to_owned(),
            Outcome::Failed(report, _) => format!("error: {}", headline(report)),
        }
    }
}

/// The message of a rendered error report: its `×` line, else its first line.
fn headline(report: &str) -> &str {
    let marked = report
        .lines()
        .find_map(|l| l.trim_start().strip_prefix('×'));
    marked
        .or_else(|| report.lines().find(|l| !l.trim().is_empty()))
        .unwrap_or_default()
        .trim()
}

/// Signal numbers by the names SSH reports (RFC 4254 uses names without "SIG").
fn signal_number(name: &str) -> Option<i32> {
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "ABRT" => libc::SIGABRT,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "SEGV" => libc::SIGSEGV,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    pub id: String,
    pub phases: Vec<(Phase, Duration)>,
    pub outcome: Option<Outcome>,
}

impl RunReport {
    pub fn new(id: &str) -> RunReport {
        RunReport {
            id: id.to_owned(),
            phases: Vec::new(),
            outcome: None,
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

/// The table printed after all runs: one row per run, phase times in seconds.
pub fn summary_table(reports: &[RunReport]) -> String {
    let mut out = format!("{:<10}", "run");
    for phase in Phase::ALL {
        out += &format!(" {:>9}", phase.name());
    }
    out += "  result\n";
    for r in reports {
        out += &format!("{:<10}", r.id);
        for phase in Phase::ALL {
            match r.took(phase) {
                Some(d) => out += &format!(" {:>8.2}s", d.as_secs_f64()),
                None => out += &format!(" {:>9}", "-"),
            }
        }
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
        assert_eq!(Outcome::Failed("x".into(), 243).exit_code(), 243);
        assert_eq!(
            headline("  × the guest did not answer\n  ╰─▶ timed out"),
            "the guest did not answer"
        );
        assert_eq!(headline("plain message\nmore"), "plain message");
    }

    #[test]
    fn table_shows_phases_results_and_totals() {
        let mut a = RunReport::new("r1");
        a.record(Phase::Boot, Duration::from_millis(41_500));
        a.record(Phase::Command, Duration::from_millis(250));
        a.outcome = Some(Outcome::Exited(0));
        let mut b = RunReport::new("r2");
        b.outcome = Some(Outcome::Exited(3));
        let table = summary_table(&[a, b]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("run") && lines[0].ends_with("result"));
        assert!(
            lines[1].contains("41.50s")
                && lines[1].contains("0.25s")
                && lines[1].ends_with("passed")
        );
        assert!(lines[2].ends_with("failed (exit 3)"));
        assert_eq!(lines[3], "1 passed, 1 failed");
    }
}
