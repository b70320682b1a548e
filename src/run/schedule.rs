//! Which runs happen and how many at once: `--repeat`, `--until-fail` and `--jobs`, and
//! vmrun's exit code from their outcomes.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{PrefixedLines, RunPlan, RunReport, run_once};
use crate::events::Sink;
use crate::signals;

/// How many runs, and when to stop scheduling more.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// `None`: without end (only with `until_fail`).
    pub runs: Option<u32>,
    pub until_fail: bool,
    pub jobs: u32,
}

/// Runs the schedule, `jobs` at a time; with `until_fail`, no new run starts after a failure,
/// and none starts once vmrun is asked to stop.
pub fn run_all(
    plan: &RunPlan,
    schedule: Schedule,
    runs_dir: &Path,
    qemu: &Path,
    sink: Sink,
) -> Vec<RunReport> {
    let reports = Mutex::new(Vec::new());
    let next = Mutex::new(0u32);
    let repeating = schedule.runs != Some(1);
    let parallel = schedule.jobs > 1;
    let stdout = Arc::new(Mutex::new(std::io::stdout()));
    let stderr = Arc::new(Mutex::new(std::io::stderr()));
    let should_continue = |reports: &Mutex<Vec<RunReport>>| {
        signals::received().is_none()
            && !(schedule.until_fail
                && reports
                    .lock()
                    .expect("not poisoned")
                    .iter()
                    .any(|r: &RunReport| !r.outcome().passed()))
    };
    // Each worker spawns its runs' QEMUs itself, so they die with it (PR_SET_PDEATHSIG).
    std::thread::scope(|scope| {
        for _ in 0..schedule.jobs {
            scope.spawn(|| {
                loop {
                    let index = {
                        let mut next = next.lock().expect("not poisoned");
                        if schedule.runs.is_some_and(|n| *next >= n) || !should_continue(&reports) {
                            return;
                        }
                        *next += 1;
                        *next
                    };
                    let id = run_id();
                    let mut run_plan = plan.clone();
                    if repeating {
                        run_plan.artifacts_dir =
                            plan.artifacts_dir.join(&format!("run-{index}-{id}"));
                    }
                    let report = if parallel {
                        let mut out = PrefixedLines::new(&id, stdout.clone());
                        let mut err = PrefixedLines::new(&id, stderr.clone());
                        run_once(
                            &run_plan, index, &id, runs_dir, qemu, &mut out, &mut err, sink,
                        )
                    } else {
                        let mut out = std::io::stdout();
                        let mut err = std::io::stderr();
                        run_once(
                            &run_plan, index, &id, runs_dir, qemu, &mut out, &mut err, sink,
                        )
                    };
                    if let Some(report_text) = report.outcome().error_report() {
                        let _ = writeln!(std::io::stderr(), "run {id} failed:\n{report_text}");
                    }
                    reports.lock().expect("not poisoned").push(report);
                }
            });
        }
    });
    reports.into_inner().expect("not poisoned")
}

/// vmrun's exit code: an interruption's, else the first failed run's, else 0.
pub fn exit_code(reports: &[RunReport]) -> u8 {
    if let Some(signal) = signals::received() {
        return signals::exit_code(signal);
    }
    reports
        .iter()
        .map(|r| r.outcome().exit_code())
        .find(|&c| c != 0)
        .unwrap_or(0)
}

/// A short id for a run, unique among live runs: 8 random hex digits.
fn run_id() -> String {
    crate::random::hex(4)
}
