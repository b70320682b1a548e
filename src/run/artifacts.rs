//! The artifacts step of a run: copy back what `test.artifacts` matches, say what was
//! skipped, and fold a failure into the run's outcome without hiding the command's result.

use super::summary::Failure;
use super::summary::{Outcome, RunReport};
use super::{GUEST_PROJECT_DIR, Phase, RunPlan};
use crate::events::{Event, Sink};
use crate::sync::{self, Bounds, describe_skipped};
use crate::wait::{Stop, Watch};

/// Copies the run's artifacts back after the command ended with `outcome`, and returns the
/// run's outcome: the command's, unless copying failed (see [`Outcome::ArtifactsFailed`])
/// or vmrun was asked to stop meanwhile. `watch` watches the run's QEMU.
pub fn collect(
    plan: &RunPlan,
    id: &str,
    shell: &sync::RemoteShell,
    outcome: Outcome,
    watch: Watch,
    report: &mut RunReport,
    sink: Sink,
) -> Outcome {
    let bounds = Bounds::new(sync::TRANSFER_TIMEOUT, watch);
    let pulled = report.time(Phase::Artifacts, || {
        sync::pull(
            shell,
            GUEST_PROJECT_DIR,
            &plan.artifacts,
            &plan.artifacts_dir,
            plan.artifacts_max_size,
            &bounds,
        )
    });
    let error = match pulled {
        Ok(pulled) => {
            report.artifact_bytes = Some(pulled.bytes);
            if !pulled.skipped.is_empty() {
                sink(Event::Notice(format!(
                    "run {id}: {}",
                    describe_skipped(&pulled.skipped)
                )));
            }
            match pulled.over_cap {
                None => return outcome,
                Some(over) => sync::Error::from(over),
            }
        }
        Err(sync::Error::Stopped(Stop::Signal(signal))) => return Outcome::Stopped(signal),
        Err(e) => e,
    };
    let code = error.exit_code();
    Outcome::ArtifactsFailed {
        command: Box::new(outcome),
        failure: Failure::new(error, code),
    }
}
