//! A master connection of the system ssh: opened beside vmrun's own session, so rsync's
//! connections (sync in, artifacts out) reuse it instead of each paying for a handshake,
//! which an emulated guest makes take seconds.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{ClientFiles, GUEST_HOST};

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

    /// Waits until the master accepts clients, it gave up, or `timeout` passed; whether it
    /// is ready.
    pub fn wait_ready(&mut self, files: &ClientFiles, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if files.control_path.exists() {
                return true;
            }
            if !matches!(self.child.try_wait(), Ok(None)) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
