//! How a run's VM comes up: booted cold from the image's disk, or resumed from the image's
//! warm state. Each way knows the disk the run's overlay goes on, how QEMU is started for
//! it, and what must happen once QEMU runs.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Error;
use super::run_dir::RunDir;
use crate::net::isolate;
use crate::path_error::PathError;
use crate::qemu::args::Machine;
use crate::qemu::process::QemuProcess;
use crate::qemu::serial::Console;
use crate::store::BakedImage;
use crate::wait::{Stop, Watch};
use crate::warm::{self, StateFile, WarmState, machine};

/// How long a cold QEMU is watched right after its start: a forward that cannot bind makes
/// it exit at once, and the run then tries another port.
const START_CHECK: Duration = Duration::from_millis(300);

#[derive(Debug, Clone)]
pub enum Boot {
    Cold,
    Resume(WarmState),
}

impl Boot {
    /// The disk the run's overlay is made on.
    pub fn base_disk(&self, image: &BakedImage) -> PathBuf {
        match self {
            Boot::Cold => image.disk(),
            Boot::Resume(warm) => warm.disk.clone(),
        }
    }

    /// Starts QEMU for `machine`, in the run's isolated network, with QEMU's log, monitor
    /// and agent sockets in the run's directory. For a resume, also the descriptor number
    /// QEMU has the saved state under, for [`Boot::started`].
    pub(super) fn spawn(
        &self,
        machine: &Machine,
        dir: &RunDir,
        qemu: &Path,
        console: Console,
    ) -> Result<(QemuProcess, Option<RawFd>), Error> {
        let log = dir.file("qemu.log");
        Ok(match self {
            Boot::Cold => {
                let (program, args) = isolate::command(machine, dir.path(), qemu)?;
                (QemuProcess::spawn(&program, &args, &log, console)?, None)
            }
            Boot::Resume(warm) => {
                let state = std::fs::File::open(&warm.state)
                    .map_err(|e| Error::Resume(PathError::at("open", &warm.state)(e).into()))?;
                let clone = warm
                    .clone_machine(machine, dir.path())
                    .map_err(Error::Resume)?;
                let (program, args) = isolate::command(&clone, dir.path(), qemu)?;
                let process =
                    QemuProcess::spawn_passing(&program, &args, &log, console, state.as_fd())?;
                (process, Some(state.as_raw_fd()))
            }
        })
    }

    /// What follows QEMU's start: a cold QEMU is given a moment to fail to bind its
    /// forward; a resumed one loads its state from descriptor `incoming` and is let run.
    pub(super) fn started(
        &self,
        process: &QemuProcess,
        incoming: Option<RawFd>,
        dir: &RunDir,
    ) -> Result<(), Error> {
        match self {
            Boot::Cold => {
                let deadline = Instant::now() + START_CHECK;
                match Watch::signals().until(deadline, START_CHECK / 6, || {
                    Ok::<_, Stop>(process.exited())
                })? {
                    Some(exited) => Err(Stop::QemuExited(exited).into()),
                    None => Ok(()),
                }
            }
            Boot::Resume(_) => {
                let qmp = dir.file(machine::QMP_SOCKET);
                let state = incoming.expect("a resumed QEMU was given its state");
                warm::resume(
                    &qmp,
                    StateFile::Inherited(state),
                    true,
                    &Watch::qemu(process),
                )
                .map_err(Error::Resume)
            }
        }
    }

    /// A resumed clone's refresh (its clock and randomness, through the guest agent), begun
    /// in the background so it overlaps the SSH handshake; `None` for a cold boot.
    pub(super) fn refresh(&self, dir: &RunDir) -> Option<JoinHandle<Result<(), warm::Error>>> {
        match self {
            Boot::Cold => None,
            Boot::Resume(_) => {
                let agent = dir.file(machine::AGENT_SOCKET);
                Some(std::thread::spawn(move || warm::refresh_clone(&agent)))
            }
        }
    }
}
