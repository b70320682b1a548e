//! The artifacts step of a run: copy back what `test.artifacts` matches, say what was
//! skipped, and fold a failure into the run's outcome without hiding the command's result.

use std::path::Path;

use super::summary::{Outcome, RunReport};
use super::{GUEST_PROJECT_DIR, Phase, RunPlan, signals, stopped};
use crate::events::{Event, Sink};
use crate::sync::{self, Bounds, describe_skipped};

/// Copies the run's artifacts back after the command ended with `outcome`, and returns the
/// run's outcome: the command's, unless copying failed (see [`Outcome::ArtifactsFailed`])
/// or vmrun was asked to stop meanwhile.
pub fn collect(
    plan: &RunPlan,
    id: &str,
    ssh_config: &Path,
    outcome: Outcome,
    report: &mut RunReport,
    sink: Sink,
) -> Outcome {
    let stop = || signals::received().is_some();
    let bounds = Bounds::new(sync::TRANSFER_TIMEOUT, &stop);
    let pulled = report.time(Phase::Artifacts, || {
        sync::pull(
            ssh_config,
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
        Err(sync::Error::Cancelled { .. }) => return stopped(),
        Err(e) => e,
    };
    Outcome::ArtifactsFailed {
        command: Box::new(outcome),
        message: error.to_string(),
        code: error.exit_code(),
        report: format!("{:?}", miette::Report::new(error)),
    }
}
