//! A free TCP port on the loopback interface for a VM's SSH forward. The port is free when
//! chosen; another process may take it before QEMU binds it, so the caller retries.

use std::net::{Ipv4Addr, TcpListener};

/// How many times a run chooses a new port when QEMU could not bind the one it was given.
pub const ATTEMPTS: usize = 5;

pub fn free_loopback_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Whether QEMU's own output, or slirp4netns's refusal passed on by `vmrun isolate`, says a
/// host forward could not be set up (port taken).
pub fn is_forward_conflict(qemu_log: &str) -> bool {
    qemu_log.contains("Could not set up host forwarding rule")
        || qemu_log.contains("add_hostfwd: slirp_add_hostfwd failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_is_bindable_on_loopback() {
        let port = free_loopback_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }

    #[test]
    fn recognises_qemus_hostfwd_error() {
        assert!(is_forward_conflict(
            "qemu-system-x86_64: -netdev user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22: \
             Could not set up host forwarding rule 'tcp:127.0.0.1:2222-:22'"
        ));
        assert!(is_forward_conflict(
            "slirp4netns refused to forward tcp 127.0.0.1:2222: bad request: \
             add_hostfwd: slirp_add_hostfwd failed"
        ));
        assert!(!is_forward_conflict(
            "qemu-system-x86_64: terminating on signal 15"
        ));
    }
}
