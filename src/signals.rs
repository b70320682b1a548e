//! SIGINT and SIGTERM end vmrun cleanly: the handler only records the signal; every wait
//! (see [`crate::wait`]) checks [`received`], the work tears down what it made, and vmrun
//! exits with 128 + the signal.

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// How many stop requests came: a wait that goes on after one (a capture) ends at the next.
static COUNT: AtomicU32 = AtomicU32::new(0);

extern "C" fn record(signal: libc::c_int) {
    // Only atomic operations: async-signal-safe.
    RECEIVED.store(signal, Ordering::SeqCst);
    COUNT.fetch_add(1, Ordering::SeqCst);
}

/// Installs the handlers (once, at the start of a command that runs VMs).
pub fn install() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a handler that only stores to an atomic is valid.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = record as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// The signal that asked vmrun to stop, if one did.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// How many stop requests came so far.
pub fn count() -> u32 {
    COUNT.load(Ordering::SeqCst)
}

/// The signal's name, as `kill -l` spells it with `SIG`.
pub fn name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT".to_owned(),
        libc::SIGTERM => "SIGTERM".to_owned(),
        other => format!("signal {other}"),
    }
}

/// The exit code for having been stopped by `signal` (130 for SIGINT, 143 for SIGTERM).
pub fn exit_code(signal: i32) -> u8 {
    (128 + signal) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(libc::SIGINT), 130);
        assert_eq!(exit_code(libc::SIGTERM), 143);
    }
}
