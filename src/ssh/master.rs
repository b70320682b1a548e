//! A master connection of the system ssh: opened beside vmrun's own session, so rsync's
//! connections (sync in, artifacts out) reuse it instead of each paying for a handshake,
//! which an emulated guest makes take seconds.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{ClientFiles, GUEST_HOST};
use crate::wait::{Stop, Watch};

/// How often the wait for the master looks for its socket.
const POLL: Duration = Duration::from_millis(20);

/// The master ssh process; ended (by its pid) when dropped. It also ends by itself when the
/// guest goes away, since its connection closes.
pub struct Master {
    child: Child,
}

impl Master {
    /// Starts connecting in the background; `None` if ssh cannot be started (then every
    /// connection is made on its own, which only costs time).
    pub fn start(ssh: &Path, files: &ClientFiles) -> Option<Master> {
        let child = Command::new(ssh)
            .arg("-F")
            .arg(&files.ssh_config)
            .args(["-o", "ControlMaster=yes", "-N", GUEST_HOST])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Master { child })
    }

    /// Waits until the master accepts clients, it gave up, `timeout` passed or `watch`
    /// ended the wait; whether it is ready.
    pub fn wait_ready(&self, files: &ClientFiles, timeout: Duration, watch: &Watch) -> bool {
        let ready = watch.until(Instant::now() + timeout, POLL, || {
            if files.control_path.exists() {
                return Ok(Some(true));
            }
            let gave_up = crate::child::peek_exit(self.child.id()).is_some();
            Ok::<_, Stop>(gave_up.then_some(false))
        });
        ready == Ok(Some(true))
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
