//! When a persistent VM can be used: when its guest answers SSH. systemd knows only that QEMU
//! runs; a guest then boots for a while (20-40 s under TCG) before sshd listens, and until
//! then QEMU's user networking accepts connections and the guest resets them or says nothing.
//!
//! - `create`, `start` and `restart` wait for a login with the image's pinned host key, as
//!   `vmrun test` does ([`crate::ssh::wait_ready`]), up to [`BOOT_TIMEOUT`], and stop waiting
//!   at once when QEMU exits; `vm ssh` waits the same way while the guest does not answer.
//! - `status` asks with a quick probe instead: sshd's version line within [`PROBE_TIMEOUT`].
//!   Not a marker written when a wait succeeded: a marker would outlive a guest reboot and
//!   would be missing for a VM that systemd started at login or one created with
//!   `--no-wait`. A booted guest answers the probe in milliseconds; only a booting one costs
//!   up to the timeout. Any version line will do: the port is QEMU's forward to this guest.

use std::cell::Cell;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{Error, VmLayout, VmName, VmRecord, Vms};
use crate::events::{self, Sink};
use crate::qemu::serial::last_lines;
use crate::ssh;
use crate::store::{self, Store};
use crate::wait::{Stop, Watch};

/// How long a VM may take from QEMU's start until its guest answers SSH.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `status` waits for sshd's version line.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a wait asks systemd whether QEMU still runs (each asking runs `systemctl`).
const UNIT_CHECK: Duration = Duration::from_secs(1);
/// Lines of the serial console shown when the guest does not answer in time.
const CONSOLE_TAIL: usize = 20;

/// Whether an SSH server answers on 127.0.0.1:`port` (its version line), within
/// [`PROBE_TIMEOUT`].
pub(super) fn ssh_answers(port: u16) -> bool {
    answers_within(port, PROBE_TIMEOUT)
}

fn answers_within(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, timeout) else {
        return false;
    };
    let mut seen = Vec::new();
    let mut buffer = [0u8; 64];
    while seen.len() < 4 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return false,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
    }
    seen.starts_with(b"SSH-")
}

impl Vms {
    /// Waits until VM `name` answers SSH with its image's pinned host key, up to
    /// [`BOOT_TIMEOUT`]; fails at once when QEMU exits meanwhile.
    pub fn wait_until_ready(&self, name: &VmName, sink: Sink) -> Result<(), Error> {
        let (layout, record) = self.existing(name)?;
        self.wait_for_ssh(&layout, &record, sink)
    }

    pub(super) fn wait_for_ssh(
        &self,
        layout: &VmLayout,
        record: &VmRecord,
        sink: Sink,
    ) -> Result<(), Error> {
        let image = Store::new(&self.home)
            .entry(&record.image_key)?
            .ok_or_else(|| store::Error::NoEntry {
                key: record.image_key.clone(),
            })?;
        let target = image.ssh_target(record.ssh_port)?;
        let unit = layout.unit();
        let checked = Cell::new(Instant::now());
        let qemu_exited = || {
            if checked.get().elapsed() < UNIT_CHECK {
                return None;
            }
            checked.set(Instant::now());
            match self.systemctl.show(&unit) {
                Ok(state) if !state.is_running() => Some(Stop::Ended(state.result)),
                _ => None,
            }
        };
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let phase = format!("wait for VM {} to answer SSH", layout.name);
        let waited = events::phase(sink, &phase, || {
            ssh::wait_ready(&target, deadline, &Watch::until_gone(&qemu_exited)).map(drop)
        });
        match waited {
            Ok(()) => Ok(()),
            Err(ssh::Error::Stopped(Stop::Ended(result))) => Err(self.start_failed(
                layout,
                format!("QEMU exited ({result}) before the guest answered SSH"),
            )),
            Err(ssh::Error::NotReady { waited, last, .. }) => Err(Error::NotReady {
                name: layout.name.to_string(),
                waited_secs: waited.as_secs(),
                last,
                console: last_lines(&layout.serial_log(), CONSOLE_TAIL),
            }),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    /// A peer on a free port that does `behave` with the first connection.
    fn peer(behave: impl FnOnce(TcpStream) + Send + 'static) -> u16 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((stream, _)) = listener.accept() {
                behave(stream);
            }
        });
        port
    }

    const WAIT: Duration = Duration::from_millis(300);

    #[test]
    fn an_ssh_server_answers() {
        let port = peer(|mut s| {
            s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
            std::thread::sleep(Duration::from_secs(1));
        });
        assert!(answers_within(port, WAIT));
    }

    #[test]
    fn a_version_line_in_pieces_answers() {
        let port = peer(|mut s| {
            for piece in [&b"SS"[..], b"H-2.0-x\r\n"] {
                s.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_secs(1));
        });
        assert!(answers_within(port, WAIT));
    }

    #[test]
    fn a_booting_guest_does_not() {
        // Nothing listens yet; the guest resets the connection; or it says nothing.
        let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let nobody = closed.local_addr().unwrap().port();
        drop(closed);
        assert!(!answers_within(nobody, WAIT));
        assert!(!answers_within(peer(drop), WAIT));
        let silent = peer(|_s| std::thread::sleep(Duration::from_secs(2)));
        let asked = Instant::now();
        assert!(!answers_within(silent, WAIT));
        assert!(asked.elapsed() < WAIT * 2, "the probe outlived its timeout");
        let not_ssh = peer(|mut s| {
            s.write_all(b"HTTP/1.0 400\r\n").unwrap();
        });
        assert!(!answers_within(not_ssh, WAIT));
    }
}
