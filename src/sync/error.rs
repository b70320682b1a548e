//! What can go wrong copying the project in or artifacts out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::ByteSize;
use crate::human_size::human_size;
use crate::tools::MissingTool;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error(transparent)]
    #[diagnostic(transparent)]
    MissingTool(#[from] MissingTool),
    #[error("the guest has no rsync: add it to bake.packages")]
    #[diagnostic(help("in vmrun.yaml: `bake: {{packages: [rsync]}}`, then bake the image again"))]
    NoRsyncInGuest,
    #[error("rsync could not {action} ({status})\n{stderr}")]
    Rsync {
        action: &'static str,
        status: String,
        stderr: String,
    },
    #[error("rsync could not {action}: the guest sent nothing for {}s", idle.as_secs())]
    #[diagnostic(help("the guest's rsync or its network stopped answering"))]
    Stalled {
        action: &'static str,
        idle: Duration,
    },
    #[error("rsync did not {action} within {}s, and was stopped", limit.as_secs())]
    #[diagnostic(help("a guest that sends very slowly, or far too much; look at what it copies"))]
    TimedOut {
        action: &'static str,
        limit: Duration,
    },
    /// vmrun was asked to stop (SIGINT, SIGTERM), or the guest's QEMU exited, while rsync ran.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Stopped(#[from] crate::wait::Stop),
    #[error(transparent)]
    #[diagnostic(transparent)]
    OverCap(#[from] OverCap),
    #[error("{}", symlink_message(link, destination))]
    #[diagnostic(help(
        "vmrun copies artifacts only into real directories, so that a link committed in the \
         project cannot send them elsewhere: remove the link, or give --artifacts-dir a path \
         without one"
    ))]
    DestinationSymlink { link: PathBuf, destination: PathBuf },
    #[error(
        "the artifacts destination {} cannot be made: {} is not a directory",
        destination.display(), path.display()
    )]
    DestinationNotADirectory { path: PathBuf, destination: PathBuf },
    #[error("cannot run {}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn symlink_message(link: &Path, destination: &Path) -> String {
    if link == destination {
        format!(
            "the artifacts destination {} is a symlink",
            destination.display()
        )
    } else {
        format!(
            "the artifacts destination {} goes through the symlink {}",
            destination.display(),
            link.display()
        )
    }
}

/// The artifacts of one run add up to more than `test.artifacts-max-size`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
#[error(
    "the artifacts reach {} with {artifact}, past test.artifacts-max-size ({cap}): \
     it and the artifacts after it were not copied",
    human_size(*total)
)]
#[diagnostic(help(
    "raise the limit in vmrun.yaml (`test: {{artifacts-max-size: 4G}}`), \
     or match fewer files with test.artifacts"
))]
pub struct OverCap {
    /// The artifact that took the total past the cap, its name made visible.
    pub artifact: String,
    /// The bytes counted with it.
    pub total: u64,
    pub cap: ByteSize,
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        use crate::exit_code::{BAD_INPUT, INTERNAL, MISSING_TOOL, VM_FAILED};
        match self {
            Error::MissingTool(_) | Error::NoRsyncInGuest => MISSING_TOOL,
            Error::Stalled { .. } | Error::TimedOut { .. } => VM_FAILED,
            Error::OverCap(_)
            | Error::DestinationSymlink { .. }
            | Error::DestinationNotADirectory { .. } => BAD_INPUT,
            Error::Stopped(stop) => stop.exit_code(),
            Error::Rsync { .. } | Error::Spawn { .. } | Error::CreateDir { .. } => INTERNAL,
        }
    }
}
