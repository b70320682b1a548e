//! Which runs happen and how many at once: `--repeat`, `--until-fail` and `--jobs`, and
//! vmrun's exit code from their outcomes.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{Place, PrefixedLines, RunPlan, RunReport, run_once};
use crate::events::Sink;
use crate::signals;

/// How often a run waiting for its turn looks for a stop request.
const TURN_POLL: Duration = Duration::from_millis(100);

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
    // With one job and more than one run, a second worker brings the next run's VM up while
    // the current run's command runs; commands still run one at a time, in order.
    let pipelined = schedule.jobs == 1 && schedule.runs != Some(1);
    let turns = pipelined.then(Turns::default);
    let workers = if pipelined { 2 } else { schedule.jobs };
    // Each worker spawns its runs' QEMUs itself, so they die with it (PR_SET_PDEATHSIG).
    std::thread::scope(|scope| {
        for _ in 0..workers {
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
                    let turn = || {
                        turns
                            .as_ref()
                            .is_none_or(|t| t.wait(index, || should_continue(&reports)))
                    };
                    // Parallel runs' lines are prefixed with their id, so they never mix.
                    let (mut out, mut err): (Box<dyn Write>, Box<dyn Write>) = if parallel {
                        (
                            Box::new(PrefixedLines::new(&id, stdout.clone())),
                            Box::new(PrefixedLines::new(&id, stderr.clone())),
                        )
                    } else {
                        (Box::new(std::io::stdout()), Box::new(std::io::stderr()))
                    };
                    let place = Place {
                        index,
                        id: &id,
                        runs: runs_dir,
                        qemu,
                    };
                    let report = run_once(&run_plan, &place, &turn, &mut out, &mut err, sink);
                    drop((out, err));
                    if let Some(report) = report {
                        if let Some(report_text) = report.outcome().error_report() {
                            let _ = writeln!(std::io::stderr(), "run {id} failed:\n{report_text}");
                        }
                        reports.lock().expect("not poisoned").push(report);
                    }
                    if let Some(turns) = &turns {
                        turns.done(index);
                    }
                }
            });
        }
    });
    reports.into_inner().expect("not poisoned")
}

/// Whose turn it is to run its command, when runs are pipelined: run N+1's VM may come up
/// while run N's command runs, and then waits here until every run before it has ended.
#[derive(Default)]
struct Turns {
    ended: Mutex<Ended>,
    changed: Condvar,
}

#[derive(Default)]
struct Ended {
    /// Every run up to this index has ended (runs count from 1).
    all_up_to: u32,
    /// Runs past that which ended early: a run whose VM failed to come up may end before
    /// the one ahead of it.
    early: BTreeSet<u32>,
}

impl Turns {
    /// Waits until every run before `index` has ended; then whether this one should go on
    /// (`go_on`). A stop request ends the wait with `false`.
    fn wait(&self, index: u32, go_on: impl Fn() -> bool) -> bool {
        let mut ended = self.ended.lock().expect("not poisoned");
        while ended.all_up_to + 1 < index {
            if signals::received().is_some() {
                return false;
            }
            ended = self
                .changed
                .wait_timeout(ended, TURN_POLL)
                .expect("not poisoned")
                .0;
        }
        drop(ended);
        go_on()
    }

    /// Run `index` has ended, whether it got to its command or not.
    fn done(&self, index: u32) {
        let mut ended = self.ended.lock().expect("not poisoned");
        let Ended { all_up_to, early } = &mut *ended;
        early.insert(index);
        while early.remove(&(*all_up_to + 1)) {
            *all_up_to += 1;
        }
        self.changed.notify_all();
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_run_waits_for_every_run_before_it_even_when_they_end_out_of_order() {
        let turns = Turns::default();
        // Run 1 needs no wait.
        assert!(turns.wait(1, || true));
        // Run 3 ended early (its VM failed to come up); run 2 still runs.
        turns.done(3);
        let started = Instant::now();
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                let go = turns.wait(4, || true);
                (go, started.elapsed())
            });
            std::thread::sleep(Duration::from_millis(300));
            turns.done(1);
            std::thread::sleep(Duration::from_millis(300));
            turns.done(2);
            let (go, waited) = waiter.join().unwrap();
            assert!(go);
            assert!(waited >= Duration::from_millis(600), "{waited:?}");
        });
        // Every run up to 4's predecessors ended: no wait, and the run's own answer counts.
        assert!(!turns.wait(4, || false));
    }
}
