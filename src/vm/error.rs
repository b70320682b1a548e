//! What can go wrong with a persistent VM, each with its exit code.

use std::path::PathBuf;

use crate::exit_code::{BAD_INPUT, INTERNAL, MISSING_TOOL, VM_FAILED};
use crate::qemu::{qga, qmp};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Stopped(#[from] crate::wait::Stop),

    #[error("no VM named `{name}`")]
    #[diagnostic(help("{}", if known.is_empty() {
        "create one: vmrun vm create NAME --image IMAGE".to_owned()
    } else {
        format!("VMs: {}", known.join(", "))
    }))]
    NotFound { name: String, known: Vec<String> },

    #[error("a VM named `{name}` already exists")]
    #[diagnostic(help("pick another name, or delete it first: vmrun vm delete {name}"))]
    Exists { name: String },

    #[error("the unit {} already exists, but not for a VM of this vmrun home", path.display())]
    #[diagnostic(help("another VMRUN_HOME has a VM of that name; pick another name"))]
    UnitTaken { path: PathBuf },

    #[error("the socket path {} is too long for a unix socket (at most 107 bytes)", path.display())]
    #[diagnostic(help("use a shorter VM name, or a shorter VMRUN_HOME / XDG_RUNTIME_DIR"))]
    SocketPathTooLong { path: PathBuf },

    #[error(
        "cannot find the user's systemd unit directory: neither XDG_CONFIG_HOME nor HOME is set"
    )]
    NoUnitDir,

    #[error("the systemd user manager does not load {unit} from {}", dir.display())]
    #[diagnostic(help(
        "the manager reads units from its own XDG_CONFIG_HOME (or ~/.config); \
         run vmrun with the same one"
    ))]
    UnitNotLoaded {
        unit: String,
        dir: PathBuf,
        load_state: String,
    },

    #[error("forward {forward} clashes with {existing}, which the VM already has")]
    ForwardClash { forward: String, existing: String },

    #[error("VM `{name}` has no forward {forward}")]
    #[diagnostic(help("{}", if existing.is_empty() {
        "it has no forwards besides SSH".to_owned()
    } else {
        format!("its forwards: {}", existing.join(", "))
    }))]
    NoSuchForward {
        name: String,
        forward: String,
        existing: Vec<String>,
    },

    #[error("the SSH forward {forward} is how vmrun reaches the VM; it cannot be removed")]
    SshForward { forward: String },

    #[error("QEMU could not set up forward {forward}: {qemu_says}")]
    #[diagnostic(help("is the host port in use? (ss -ltnup)"))]
    ForwardRefused { forward: String, qemu_says: String },

    #[error("VM `{name}` is not running")]
    #[diagnostic(help("start it: vmrun vm start {name}"))]
    NotRunning { name: String },

    #[error("VM `{name}` has no snapshot `{tag}`")]
    #[diagnostic(help("{}", if existing.is_empty() {
        "it has no snapshots".to_owned()
    } else {
        format!("its snapshots: {}", existing.join(", "))
    }))]
    NoSuchSnapshot {
        name: String,
        tag: String,
        existing: Vec<String>,
    },

    #[error("`{command}` failed: {qemu_says}")]
    Snapshot { command: String, qemu_says: String },

    /// `reason` ends with QEMU's last messages.
    #[error("VM `{name}` did not start: {reason}")]
    #[diagnostic(help("{}", match kept {
        true => format!(
            "QEMU's log: {}; its unit: systemctl --user status vmrun-{name}.service",
            log.display()
        ),
        false => "the failed create was undone: nothing of the VM is left".to_owned(),
    }))]
    StartFailed {
        name: String,
        reason: String,
        log: PathBuf,
        kept: bool,
    },

    /// `console` is the serial console's last lines.
    #[error(
        "VM `{name}` did not answer SSH within {waited_secs}s (last attempt: {last})\n\
         last lines of its serial console:\n{console}"
    )]
    #[diagnostic(help(
        "it keeps running: `vmrun vm ssh {name}` waits for it again, \
         `vmrun vm logs {name}` shows its console"
    ))]
    NotReady {
        name: String,
        waited_secs: u64,
        last: String,
        console: String,
    },

    #[error(transparent)]
    #[diagnostic(transparent)]
    Systemd(#[from] super::systemd::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Qmp(#[from] qmp::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Agent(#[from] qga::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Unit(#[from] super::unit::Unquotable),

    /// Writing the files `vm ssh` uses.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Ssh(#[from] crate::ssh::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Record(#[from] super::record::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Store(#[from] crate::store::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Disk(#[from] crate::disk::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    MissingTool(#[from] crate::tools::MissingTool),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Isolate(#[from] crate::net::isolate::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Slirp(#[from] crate::net::slirp4netns::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    External(#[from] crate::external::ExternalError),

    /// Loading the image's warm state or building the machine that resumes it.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Warm(#[from] crate::warm::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Io(#[from] crate::path_error::PathError),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Stopped(stop) => stop.exit_code(),
            Error::NotFound { .. }
            | Error::Exists { .. }
            | Error::UnitTaken { .. }
            | Error::SocketPathTooLong { .. }
            | Error::ForwardClash { .. }
            | Error::NoSuchForward { .. }
            | Error::SshForward { .. }
            | Error::NotRunning { .. }
            | Error::NoSuchSnapshot { .. }
            | Error::Unit(_) => BAD_INPUT,
            Error::MissingTool(_) => MISSING_TOOL,
            Error::Store(e) => e.exit_code(),
            Error::Disk(e) => e.exit_code(),
            Error::Ssh(e) => e.exit_code(),
            Error::Isolate(e) => e.exit_code(),
            Error::Warm(e) => e.exit_code(),
            Error::Slirp(_) => VM_FAILED,
            Error::Systemd(super::systemd::Error::MissingTool(_)) => MISSING_TOOL,
            Error::UnitNotLoaded { .. }
            | Error::ForwardRefused { .. }
            | Error::Snapshot { .. }
            | Error::StartFailed { .. }
            | Error::NotReady { .. }
            | Error::Systemd(_)
            | Error::Qmp(_)
            | Error::Agent(_)
            | Error::External(_) => VM_FAILED,
            Error::NoUnitDir | Error::Record(_) | Error::Io(_) => INTERNAL,
        }
    }
}
