//! A clean guest shutdown, as the unit's ExecStop runs it (`vmrun vm powerdown`): the ACPI
//! power button over QMP, and the same request through the guest agent, for guests with no
//! power-button handler (a minimal Debian without logind ignores ACPI). Then wait for QEMU to
//! exit; systemd kills it when TimeoutStopSec runs out first.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::Error;
use crate::qemu::json_stream;
use crate::qemu::qga::{self, GuestAgent};
use crate::qemu::qmp::{self, Qmp};
use crate::wait::Watch;

/// How long the guest agent may take to take the request.
const AGENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the agent is asked again while QEMU runs: a guest still booting starts its
/// agent late.
const ASK_AGAIN: Duration = Duration::from_secs(5);

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerDown {
    /// QEMU exited after the guest powered off.
    Exited,
    /// There was no QEMU to ask.
    NotRunning,
}

pub fn power_down(
    qmp_socket: &Path,
    agent_socket: &Path,
    timeout: Duration,
) -> Result<PowerDown, Error> {
    let Ok(mut qmp) = Qmp::connect(qmp_socket) else {
        return Ok(PowerDown::NotRunning);
    };
    qmp.execute("system_powerdown", None)?;
    let deadline = Instant::now() + timeout;
    // Each look asks the guest again and then waits on the monitor, which closes when QEMU
    // exits, so the wait itself needs no sleep between looks.
    let mut timed_out = None;
    let exited = Watch::signals().until(deadline, Duration::ZERO, || {
        ask_agent(agent_socket);
        let wait = ASK_AGAIN.min(deadline.saturating_duration_since(Instant::now()));
        match qmp.wait_closed(wait) {
            Ok(()) => Ok(Some(PowerDown::Exited)),
            Err(
                e @ qmp::Error::Stream {
                    source: json_stream::Error::TimedOut,
                    ..
                },
            ) => {
                timed_out = Some(e);
                Ok(None)
            }
            Err(e) => Err(Error::from(e)),
        }
    })?;
    // Asked at least once: a wait that ran out has its last time-out.
    exited.ok_or_else(|| {
        timed_out
            .unwrap_or(qmp::Error::Stream {
                context: "waiting for QEMU to exit".into(),
                source: json_stream::Error::TimedOut,
            })
            .into()
    })
}

/// Best effort: an agent that does not answer (not started yet, or already shutting down)
/// leaves the job to ACPI and the timeout.
fn ask_agent(socket: &Path) {
    let Ok(mut agent) = GuestAgent::connect(socket, AGENT_TIMEOUT) else {
        return;
    };
    // On success guest-shutdown sends no answer: the guest is going down.
    // qemu-ga runs `shutdown -P +0`, which without logind fails at once; poweroff does not
    // need logind.
    if let Err(qga::Error::Refused { .. }) =
        agent.execute("guest-shutdown", Some(json!({"mode": "powerdown"})))
    {
        let _ = agent.execute("guest-exec", Some(json!({"path": "/sbin/poweroff"})));
    }
}
