//! Starting, stopping and removing a VM, through its unit: systemd runs QEMU, and a start is
//! done when QEMU's monitor answers (waiting for the guest is `readiness`'s).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Error, VmLayout, VmName, VmRecord, VmState, Vms, image_reference, systemd};
use crate::events::{self, Sink};
use crate::path_error::PathError;
use crate::qemu::qmp::Qmp;
use crate::qemu::serial::last_lines;
use crate::wait::Watch;

/// How long QEMU may take to answer on its monitor after systemd started it.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a clean shutdown may take before systemd kills QEMU (TimeoutStopSec). A Debian
/// guest under TCG powers off in ~30 s.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// Lines of QEMU's log shown when a VM does not start.
const LOG_TAIL: usize = 20;

/// How a stop went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// The guest powered off within the stop timeout.
    Clean,
    /// systemd had to kill QEMU; `result` is systemd's word for why (e.g. `timeout`).
    Killed { result: String },
    /// It was not running (`state`: stopped, failed, ...).
    AlreadyStopped { state: VmState },
}

/// What `vm enable` found about lingering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enabled {
    pub user: String,
    /// `Some(false)`: the user manager, and so the VM, starts only when the user logs in.
    pub lingering: Option<bool>,
}

impl Vms {
    /// Starts the VM; `Ok(false)` when it was already running.
    pub fn start(&self, name: &VmName, sink: Sink) -> Result<bool, Error> {
        let (layout, record, _lock) = self.locked(name)?;
        let state = self.systemctl.show(&layout.unit())?;
        if state.is_running() {
            if record.warm.is_some_and(|w| w.resume) {
                // systemd started it (at login), or a vmrun that was to resume it was killed:
                // its QEMU still waits for the state.
                self.resume_first_start(&layout, &record, sink)?;
            }
            return Ok(false);
        }
        self.start_unit(&layout, &record, state.active_state == "failed", sink)?;
        Ok(true)
    }

    /// Stops the VM: a clean guest shutdown (see [`super::power_down`]) or, after
    /// [`STOP_TIMEOUT`], a kill, both by systemd through the unit.
    pub fn stop(&self, name: &VmName, sink: Sink) -> Result<Stopped, Error> {
        let (layout, _record, _lock) = self.locked(name)?;
        let unit = layout.unit();
        let state = self.systemctl.show(&unit)?;
        if !state.is_running() {
            return Ok(Stopped::AlreadyStopped {
                state: VmState::of(&state),
            });
        }
        events::phase(sink, &format!("shut down VM {name}"), || {
            self.systemctl.stop(&unit)
        })?;
        let after = self.systemctl.show(&unit)?;
        if after.active_state == "failed" {
            // The VM is stopped; the stop's result is reported here, not left as a failed unit.
            self.systemctl.reset_failed(&unit)?;
        }
        Ok(if after.result == "success" {
            Stopped::Clean
        } else {
            Stopped::Killed {
                result: after.result,
            }
        })
    }

    /// Stops (cleanly, as [`Vms::stop`]) and starts the VM, or starts it if it was stopped.
    pub fn restart(&self, name: &VmName, sink: Sink) -> Result<(), Error> {
        let (layout, record, _lock) = self.locked(name)?;
        let unit = layout.unit();
        let state = self.systemctl.show(&unit)?;
        if !state.is_running() {
            return self.start_unit(&layout, &record, state.active_state == "failed", sink);
        }
        events::phase(sink, &format!("restart VM {name}"), || {
            self.systemctl
                .restart(&unit)
                .map_err(|e| self.start_failed(&layout, e.to_string()))?;
            self.wait_for_monitor(&layout)
        })
    }

    /// Stops the VM if it runs, disables it, removes its unit, disk, sockets and state, then
    /// lets go of its image. `Ok(true)` when it had to be stopped first.
    pub fn delete(&self, name: &VmName, sink: Sink) -> Result<bool, Error> {
        let (layout, record, _lock) = self.locked(name)?;
        let unit = layout.unit();
        let state = self.systemctl.show(&unit)?;
        let was_running = state.is_running();
        if was_running {
            events::phase(sink, &format!("shut down VM {name}"), || {
                self.systemctl.stop(&unit)
            })?;
        }
        if self.systemctl.show(&unit)?.active_state == "failed" {
            self.systemctl.reset_failed(&unit)?;
        }
        if state.unit_file_state == "enabled" {
            self.systemctl.disable(&unit)?;
        }
        match fs::remove_file(&layout.unit_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(PathError::at("remove", &layout.unit_file)(e).into());
            }
            _ => {}
        }
        self.systemctl.daemon_reload()?;
        remove_dir_if_present(&layout.runtime)?;
        remove_dir_if_present(&layout.state)?;
        // Last: the record is gone, so adopting references cannot register this VM again.
        image_reference::release(&self.home, name, &record.image_key)?;
        Ok(was_running)
    }

    /// Starts the VM with the user manager.
    pub fn enable(&self, name: &VmName) -> Result<Enabled, Error> {
        let (layout, _record, _lock) = self.locked(name)?;
        self.systemctl.enable(&layout.unit())?;
        let user = current_user();
        let lingering = systemd::lingering(&user, Path::new("/var/lib/systemd/linger"));
        Ok(Enabled { user, lingering })
    }

    pub fn disable(&self, name: &VmName) -> Result<(), Error> {
        let (layout, _record, _lock) = self.locked(name)?;
        self.systemctl.disable(&layout.unit())?;
        Ok(())
    }

    /// systemd starts QEMU; it is up when its monitor answers. If QEMU exits first (a taken
    /// port, a missing disk), its own messages say why. A first start that resumes the warm
    /// state then loads it (see `warm_start`).
    pub(super) fn start_unit(
        &self,
        layout: &VmLayout,
        record: &VmRecord,
        was_failed: bool,
        sink: Sink,
    ) -> Result<(), Error> {
        let unit = layout.unit();
        events::phase(sink, &format!("start VM {}", layout.name), || {
            if was_failed {
                self.systemctl.reset_failed(&unit)?;
            }
            self.systemctl
                .start(&unit)
                .map_err(|e| self.start_failed(layout, e.to_string()))?;
            self.wait_for_monitor(layout)
        })?;
        if record.warm.is_some_and(|w| w.resume) {
            self.resume_first_start(layout, record, sink)?;
        }
        Ok(())
    }

    fn wait_for_monitor(&self, layout: &VmLayout) -> Result<(), Error> {
        let answered = Watch::signals().until(
            Instant::now() + START_TIMEOUT,
            Duration::from_millis(200),
            || {
                if let Ok(mut qmp) = Qmp::connect(&layout.qmp_socket())
                    && qmp.execute("query-status", None).is_ok()
                {
                    return Ok(Some(()));
                }
                let state = self.systemctl.show(&layout.unit())?;
                if !state.is_running() {
                    let reason = format!("QEMU exited ({})", state.result);
                    return Err(self.start_failed(layout, reason));
                }
                Ok(None)
            },
        )?;
        answered.ok_or_else(|| {
            let reason = format!(
                "QEMU's monitor did not answer within {}s",
                START_TIMEOUT.as_secs()
            );
            self.start_failed(layout, reason)
        })
    }

    /// The VM did not start (or QEMU exited while it booted), with QEMU's last messages.
    pub(super) fn start_failed(&self, layout: &VmLayout, reason: String) -> Error {
        let said = last_lines(&layout.qemu_log(), LOG_TAIL);
        Error::StartFailed {
            name: layout.name.to_string(),
            reason: format!("{reason}\nQEMU's last messages:\n{said}"),
            log: layout.qemu_log(),
            kept: true,
        }
    }
}

fn remove_dir_if_present(dir: &Path) -> Result<(), Error> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(PathError::at("remove", dir)(e).into())
        }
        _ => Ok(()),
    }
}

/// The login name, for the lingering check: the passwd entry of the real uid, else $USER.
fn current_user() -> String {
    // SAFETY: getuid has no preconditions; getpwuid's result is read at once, before any
    // other call in this thread could reuse its static buffer.
    unsafe {
        let entry = libc::getpwuid(libc::getuid());
        if !entry.is_null() && !(*entry).pw_name.is_null() {
            return std::ffi::CStr::from_ptr((*entry).pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    std::env::var("USER").unwrap_or_default()
}
