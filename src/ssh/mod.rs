//! SSH to a guest over its loopback forward: connections that accept only the image's pinned
//! host key, readiness polling while the guest boots, commands with their output streamed,
//! rsync's remote shell relayed over the same session, and the files the system's ssh needs
//! to connect the same way.
//!
//! Everything here blocks; the run calls it from its own thread.

mod client_files;
mod command_line;
mod host_key;
pub mod relay;
mod session;

use std::path::PathBuf;
use std::time::Duration;

pub use client_files::{ClientFiles, GUEST_HOST, known_hosts_line, system_ssh_args};
pub use command_line::{remote_command_line, sh_quote};
pub use host_key::HostKey;
pub use relay::Relay;
pub use session::{Ended, Session, signal_number, wait_ready};

/// The guest user vmrun's bake creates, with vmrun's client key and passwordless sudo.
pub const USER: &str = "vmrun";

/// Where a guest's sshd is reached and how it is recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host port forwarded to the guest's port 22 on 127.0.0.1.
    pub port: u16,
    /// The guest's pinned host key, as an OpenSSH public key line.
    pub host_key: String,
    /// vmrun's private key for [`USER`].
    pub client_key: PathBuf,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error("cannot connect to 127.0.0.1:{port}")]
    Connect {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("the guest closed the connection on 127.0.0.1:{port} before SSH started")]
    Closed { port: u16 },
    #[error("no SSH server answered on 127.0.0.1:{port} within {:.1}s", waited.as_secs_f64())]
    Silent { port: u16, waited: Duration },
    #[error("SSH handshake with 127.0.0.1:{port} failed")]
    Handshake {
        port: u16,
        #[source]
        source: ssh2::Error,
    },
    #[error("the guest on 127.0.0.1:{port} has host key {found}, not the pinned {expected}")]
    #[diagnostic(help(
        "another machine answered on that port, or the image's disk no longer matches its \
         stored key; vmrun never connects to an unexpected host key"
    ))]
    HostKeyMismatch {
        port: u16,
        expected: String,
        found: String,
    },
    #[error("the pinned host key is unusable: {reason}")]
    PinnedKey { reason: String },
    #[error("the guest refused vmrun's key {} for user `{USER}`", key.display())]
    #[diagnostic(help(
        "the image's client key does not match the guest's authorized key: bake the image again"
    ))]
    Auth {
        key: PathBuf,
        #[source]
        source: ssh2::Error,
    },
    #[error("timed out after {:.0}s waiting for SSH on 127.0.0.1:{port}", waited.as_secs_f64())]
    #[diagnostic(help("the last attempt failed with: {last}"))]
    NotReady {
        port: u16,
        waited: Duration,
        last: String,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Stopped(#[from] crate::wait::Stop),
    /// The connection broke or the server refused a request after login.
    #[error("SSH to the guest on 127.0.0.1:{port} failed: cannot {action}")]
    Session {
        port: u16,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot pass on the command's output")]
    Output(#[source] std::io::Error),
    #[error("cannot read the command's input")]
    Input(#[source] std::io::Error),
    /// The rsync relay (see [`Relay`]) went away, or the run ended, while its command ran.
    #[error("the rsync relay went away before its command ended")]
    RelayGone,
    #[error("the path {} cannot be written into an ssh_config", path.display())]
    #[diagnostic(help("it must be absolute, valid UTF-8 and without line breaks"))]
    UnusablePath { path: PathBuf },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Io(#[from] crate::path_error::PathError),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        use crate::exit_code::{INTERNAL, VM_FAILED};
        match self {
            Error::Connect { .. }
            | Error::Closed { .. }
            | Error::Silent { .. }
            | Error::Handshake { .. }
            | Error::HostKeyMismatch { .. }
            | Error::Auth { .. }
            | Error::NotReady { .. }
            | Error::Session { .. } => VM_FAILED,
            Error::Stopped(stop) => stop.exit_code(),
            Error::PinnedKey { .. }
            | Error::Output(_)
            | Error::Input(_)
            | Error::RelayGone
            | Error::UnusablePath { .. }
            | Error::Io(_) => INTERNAL,
        }
    }

    /// Whether a later attempt may succeed: the guest is still booting (nothing listens yet,
    /// or sshd is starting). A wrong host key or a refused login is final.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. }
                | Error::Closed { .. }
                | Error::Silent { .. }
                | Error::Handshake { .. }
        )
    }
}
