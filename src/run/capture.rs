//! `--capture-failures DIR`: the VM of a run that failed, timed out or was interrupted is
//! paused at that instant (the command that hung still hangs in it), its RAM and device
//! state saved with QEMU's migration and its disk overlay beside it, into one bundle
//! `DIR/RUN_ID.vmrun` that `vmrun open` resumes later, anywhere the same image is stored.
//! A passing run costs nothing: the monitor it would need is only there when capturing.

use std::cell::Cell;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::run_dir::RunDir;
use super::{Outcome, RunPlan, RunReport};
use crate::bundle::{self, BootKind, Header, ImageRef, MachineRecord, PhaseTime, SealKey};
use crate::events::{Event, Sink};
use crate::path_error::PathError;
use crate::qemu::process::QemuProcess;
use crate::qemu::qmp::{self, Qmp};
use crate::wait::Watch;
use crate::warm::{self, machine};

/// Where failing runs' VMs are saved, and the image name a bundle tells its opener to import.
#[derive(Debug, Clone)]
pub struct Capture {
    pub dir: PathBuf,
    pub image_name: String,
}

/// The state's name in the run's directory while the bundle is written.
const STATE: &str = "capture.state";
/// The descriptor's name in QEMU's monitor.
const STATE_FD: &str = "capture";

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error("talking to QEMU's monitor")]
    Qmp(#[from] qmp::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Save(#[from] warm::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Bundle(#[from] bundle::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Io(#[from] PathError),
}

/// Pauses the run's guest once, at the first call, when the run captures failures: the
/// instant a command is given up, before vmrun's abandoning it reaches the guest.
pub struct Pause {
    qmp: Option<PathBuf>,
    paused: Cell<bool>,
}

impl Pause {
    pub fn new(plan: &RunPlan, dir: &RunDir) -> Pause {
        Pause {
            qmp: plan.capture.as_ref().map(|_| dir.file(machine::QMP_SOCKET)),
            paused: Cell::new(false),
        }
    }

    /// Whether the guest was paused.
    pub fn done(&self) -> bool {
        self.paused.get()
    }

    /// Stops the guest's CPUs; a failure is left to the capture, which stops them again.
    /// Returns whether the guest still answers.
    pub fn now(&self) -> bool {
        if let (Some(qmp), false) = (&self.qmp, self.paused.get())
            && let Ok(mut qmp) = Qmp::connect(qmp)
            && qmp.execute("stop", None).is_ok()
        {
            self.paused.set(true);
        }
        !self.paused.get()
    }
}

/// A run that did not pass, with its VM still there.
pub struct Failed<'a> {
    pub dir: &'a RunDir,
    pub vm: &'a QemuProcess,
    pub qemu: &'a Path,
    pub report: &'a RunReport,
    pub outcome: &'a Outcome,
}

/// Saves the failed run's VM into `capture.dir` and says where, or says why it could not:
/// the run's outcome stays what it was either way.
pub fn save(plan: &RunPlan, capture: &Capture, failed: &Failed, sink: Sink) {
    let started = Instant::now();
    let dir = failed.dir;
    let path = capture
        .dir
        .join(format!("{}.{}", dir.id(), bundle::EXTENSION));
    match write(plan, capture, failed, &path, sink) {
        Ok(bytes) => sink(Event::Notice(format!(
            "run {} captured: {} ({} MiB, {:.1}s); open it with: vmrun open {}",
            dir.id(),
            path.display(),
            bytes >> 20,
            started.elapsed().as_secs_f64(),
            path.display()
        ))),
        Err(e) => sink(Event::Notice(format!(
            "run {}: capturing its VM failed: {}",
            dir.id(),
            crate::error_line::one_line(&e)
        ))),
    }
    let _ = fs::remove_file(dir.file(STATE));
    // A kept VM (`--keep`) is let run again for whoever gets in.
    if plan.keep
        && let Ok(mut qmp) = Qmp::connect(&dir.file(machine::QMP_SOCKET))
    {
        let _ = qmp.execute("cont", None);
    }
}

fn write(
    plan: &RunPlan,
    capture: &Capture,
    failed: &Failed,
    path: &Path,
    sink: Sink,
) -> Result<u64, Error> {
    let Failed {
        dir,
        vm,
        qemu,
        report,
        outcome,
    } = *failed;
    // An interrupted run is saved all the same; another Ctrl-C ends the saving.
    let watch = Watch::qemu(vm).past_stop();
    let mut qmp = Qmp::connect(&dir.file(machine::QMP_SOCKET))?;
    qmp.execute("stop", None)?;
    let generation = qmp.execute("query-vm-generation-id", None)?;
    let generation = generation
        .get("guid")
        .and_then(|g| g.as_str())
        .unwrap_or_default()
        .to_owned();
    let state_path = dir.file(STATE);
    let state = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&state_path)
        .map_err(PathError::at("create", &state_path))?;
    qmp.hand_fd(STATE_FD, state.as_fd())?;
    sink(Event::Detail(format!(
        "run {}: saving its VM's RAM and device state",
        dir.id()
    )));
    qmp.execute("migrate", Some(json!({ "uri": format!("fd:{STATE_FD}") })))?;
    warm::wait_for_migration(&mut qmp, &watch)?;
    drop(state);
    fs::create_dir_all(&capture.dir).map_err(PathError::at("create", &capture.dir))?;
    let header = Header {
        run_id: dir.id().to_owned(),
        image: ImageRef {
            key: plan.image.manifest.key.clone(),
            name: header_text(&capture.image_name),
        },
        qemu_version: warm::qemu_version(qemu)?,
        machine: MachineRecord {
            accel: plan.accel,
            cpus: plan.size.cpus,
            memory_mib: plan.size.memory_mib,
            boot: match plan.boot {
                super::Boot::Cold => BootKind::Cold,
                super::Boot::Resume(_) => BootKind::Warm,
            },
            network: plan.network,
            generation,
        },
        command: plan.command.argv(),
        outcome: header_text(&outcome.describe()),
        exit_code: match outcome {
            Outcome::Exited(code) => Some(*code),
            _ => None,
        },
        captured_at: crate::utc::UtcTime::from_unix(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        )
        .to_string(),
        phases: report
            .phases
            .iter()
            .map(|(phase, took)| PhaseTime {
                phase: phase.name().to_owned(),
                seconds: took.as_secs_f64(),
            })
            .collect(),
        files: Vec::new(),
    };
    let key_path = plan.image.client_key();
    let key = fs::read(&key_path).map_err(PathError::at("read", &key_path))?;
    let disk = dir.file("disk.qcow2");
    let bytes = bundle::write(
        path,
        &header,
        &disk,
        &state_path,
        &SealKey::from_client_key(&key),
        sink,
    )?;
    Ok(bytes)
}

/// Text as a bundle's header holds it: no control characters, at most 200 characters. An
/// image source's URL can be longer, and a guest names the signal that killed a command.
fn header_text(text: &str) -> String {
    crate::guest_text::line(text).chars().take(200).collect()
}

/// Whether `dir` is fit to receive bundles: created if missing, and a directory.
pub fn prepare(dir: &Path) -> Result<(), super::Error> {
    fs::create_dir_all(dir).map_err(PathError::at("create", dir))?;
    File::open(dir)
        .and_then(|f| f.metadata())
        .and_then(|m| match m.is_dir() {
            true => Ok(()),
            false => Err(std::io::ErrorKind::NotADirectory.into()),
        })
        .map_err(|e| PathError::at("open", dir)(e).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_texts_fit_what_a_bundle_header_takes() {
        let signal = format!("killed by SIG\u{1b}[2J{}", "X".repeat(500));
        let text = header_text(&signal);
        assert_eq!(text.chars().count(), 200);
        assert!(!text.chars().any(char::is_control), "{text}");
        assert_eq!(header_text("exit 3"), "exit 3");
    }
}
