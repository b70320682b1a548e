//! The top-level error: each module's typed error, wrapped, with its exit code.

use miette::Diagnostic;

use crate::exit_code;
use crate::tools::MissingTool;

#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum Error {
    /// Arguments that parse but do not make sense together.
    #[error("{0}")]
    Usage(String),

    #[error("cannot read the current directory")]
    CurrentDir(#[source] std::io::Error),

    #[error("cannot run {program}")]
    Exec {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    #[diagnostic(transparent)]
    NoHome(#[from] crate::paths::NoHome),

    #[error(transparent)]
    #[diagnostic(transparent)]
    InvalidName(#[from] crate::name::InvalidName),

    #[error(transparent)]
    #[diagnostic(transparent)]
    MissingTool(#[from] MissingTool),

    /// `vmrun seed`: unreadable inputs are BAD_INPUT, write failures INTERNAL.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Seed(#[from] crate::seed::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Disk(#[from] crate::disk::Error),

    /// VMRUN_ACCEL: a bad value is BAD_INPUT, `kvm` where KVM cannot be used VM_FAILED.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Accel(#[from] crate::qemu::accel::Error),

    /// vmrun.yaml: unreadable, broken or invalid; always BAD_INPUT.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Config(#[from] crate::config::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Bake(#[from] crate::bake::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Store(#[from] crate::store::Error),

    /// `images export` and `images import`: a refused import is BAD_INPUT.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Transfer(#[from] crate::store::transfer::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Run(#[from] crate::run::Error),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Warm(#[from] crate::warm::Error),

    /// Reaching a guest over SSH: not ready in time or a wrong host key are VM_FAILED.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Ssh(#[from] crate::ssh::Error),

    /// Copying the project in or artifacts out with rsync.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Sync(#[from] crate::sync::Error),

    /// Persistent VMs (`vmrun vm ...`).
    #[error(transparent)]
    #[diagnostic(transparent)]
    Vm(#[from] crate::vm::Error),

    /// `vmrun open`: a refused bundle is BAD_INPUT.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Open(#[from] crate::open::Error),

    /// Starting QEMU in an isolated network namespace (`vmrun isolate`).
    #[error(transparent)]
    #[diagnostic(transparent)]
    Isolate(#[from] crate::net::isolate::Error),
}

impl Error {
    /// The documented exit code for this failure (see `exit_code`).
    pub fn exit_code(&self) -> u8 {
        // Whatever failed after vmrun was asked to stop failed because of it (a program
        // it ran was ended, a wait was cut short): the exit code says the stop.
        if let Some(signal) = crate::signals::received() {
            return crate::signals::exit_code(signal);
        }
        match self {
            Error::Usage(_) => exit_code::USAGE,
            Error::InvalidName(_) => exit_code::BAD_INPUT,
            Error::CurrentDir(_) | Error::NoHome(_) | Error::Exec { .. } => exit_code::INTERNAL,
            Error::MissingTool(_) => exit_code::MISSING_TOOL,
            Error::Seed(e) => e.exit_code(),
            Error::Disk(e) => e.exit_code(),
            Error::Accel(e) => e.exit_code(),
            Error::Config(e) => e.exit_code(),
            Error::Bake(e) => e.exit_code(),
            Error::Store(e) => e.exit_code(),
            Error::Transfer(e) => e.exit_code(),
            Error::Run(e) => e.exit_code(),
            Error::Warm(e) => e.exit_code(),
            Error::Ssh(e) => e.exit_code(),
            Error::Sync(e) => e.exit_code(),
            Error::Vm(e) => e.exit_code(),
            Error::Isolate(e) => e.exit_code(),
            Error::Open(e) => e.exit_code(),
        }
    }
}
