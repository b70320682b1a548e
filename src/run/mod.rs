//! `vmrun test`'s engine: one run is a fresh overlay on a baked image, QEMU with an SSH
//! forward on loopback, the pinned-key SSH session, the project synced in, the command with
//! its output streamed, artifacts copied back, and teardown whatever happened.

mod artifacts;
mod output;
mod run_dir;
pub mod signals;
mod summary;

pub use output::PrefixedLines;
pub use run_dir::{reap_orphans, run_ids, ssh_config};
pub use summary::{Outcome, Phase, RunReport, summary_table};

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{ByteSize, Command, SyncConfig};
use crate::disk::{self, Overlay};
use crate::events::{Event, Sink};
use crate::net::forward::Forward;
use crate::net::{Network, isolate};
use crate::path_error::PathError;
use crate::qemu::args::{Accel, Machine, command_line};
use crate::qemu::process::{self, QemuProcess};
use crate::qemu::serial::{Console, last_lines};
use crate::ssh::{self, Target};
use crate::store::BakedImage;
use crate::sync;
use crate::warm::{self, WarmState, machine::Instance};

/// Where the project lands in the guest.
pub const GUEST_PROJECT_DIR: &str = "/home/vmrun/project";
/// How long sync waits for the master connection before connecting on its own.
const MASTER_WAIT: Duration = Duration::from_secs(5);
/// Console lines shown when a boot fails.
const TAIL_LINES: usize = 25;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error(transparent)]
    #[diagnostic(transparent)]
    RunDir(#[from] run_dir::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Disk(#[from] disk::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Qemu(#[from] process::Error),
    #[error("QEMU exited during boot ({status})\n{qemu_log}")]
    QemuExited { status: String, qemu_log: String },
    #[error("no free loopback port for the SSH forward after {attempts} attempts")]
    NoPort { attempts: usize },
    #[error(
        "the guest did not become reachable over SSH\nlast lines of the serial console:\n{console}"
    )]
    #[diagnostic(help("{hint}"))]
    NotReady {
        #[source]
        source: ssh::Error,
        console: String,
        hint: &'static str,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Ssh(#[from] ssh::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Sync(#[from] sync::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Isolate(#[from] isolate::Error),
    #[error("cannot find a free port: {0}")]
    Port(#[source] std::io::Error),
    #[error("cannot set up the guest's serial console: {0}")]
    Console(#[source] std::io::Error),
    #[error("resuming the warm state failed")]
    #[diagnostic(help("`vmrun test --cold` boots instead"))]
    Resume(#[source] warm::Error),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        use crate::exit_code::{INTERNAL, VM_FAILED};
        match self {
            Error::Disk(e) => e.exit_code(),
            Error::Ssh(e) => e.exit_code(),
            Error::Sync(e) => e.exit_code(),
            Error::Qemu(_)
            | Error::QemuExited { .. }
            | Error::NoPort { .. }
            | Error::NotReady { .. } => VM_FAILED,
            Error::RunDir(_) | Error::Port(_) | Error::Console(_) => INTERNAL,
            Error::Resume(e) => e.exit_code(),
            Error::Isolate(e) => e.exit_code(),
        }
    }
}

/// One run, fully decided: nothing here is checked again.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub image: BakedImage,
    pub accel: Accel,
    pub network: Network,
    pub cpus: u32,
    pub memory_mib: u64,
    pub project: PathBuf,
    pub command: Command,
    pub env: BTreeMap<String, String>,
    pub sync: SyncConfig,
    pub artifacts: Vec<String>,
    /// Where this run's artifacts go on the host.
    pub artifacts_dir: sync::Destination,
    /// The most bytes of artifacts this run copies back.
    pub artifacts_max_size: ByteSize,
    pub timeout: Option<Duration>,
    pub boot_timeout: Duration,
    /// On failure, keep the VM up until vmrun is interrupted.
    pub keep: bool,
    /// Resume this saved machine instead of booting (`None`: cold boot).
    pub warm: Option<WarmState>,
}

/// Runs `plan` once in a new VM. Never returns before the VM is gone (or, with `keep` and a
/// failure, before the user interrupts).
pub fn run_once(
    plan: &RunPlan,
    id: &str,
    runs: &Path,
    qemu: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
    sink: Sink,
) -> RunReport {
    let mut report = RunReport::new(id);
    // Its image stays in the store while the run lives: `images rm` is refused meanwhile.
    let dir = run_dir::RunDir::create(runs, id).and_then(|d| Ok((plan.image.hold(id)?, d)));
    let outcome = match dir {
        Ok((_reference, dir)) => {
            let mut vm = None;
            let outcome = drive(plan, &dir, qemu, &mut vm, out, err, &mut report, sink)
                .unwrap_or_else(|e| {
                    let code = e.exit_code();
                    Outcome::Failed(format!("{:?}", miette::Report::new(e)), code)
                });
            if plan.keep && !outcome.passed() && vm.is_some() {
                keep_until_interrupted(&dir, sink);
            }
            report.time(Phase::Teardown, || drop(vm));
            drop(dir);
            outcome
        }
        Err(e) => Outcome::Failed(
            format!("{:?}", miette::Report::new(e)),
            crate::exit_code::INTERNAL,
        ),
    };
    report.outcome = Some(outcome);
    report
}

#[allow(clippy::too_many_arguments)]
fn drive(
    plan: &RunPlan,
    dir: &run_dir::RunDir,
    qemu: &Path,
    vm: &mut Option<QemuProcess>,
    out: &mut dyn Write,
    err: &mut dyn Write,
    report: &mut RunReport,
    sink: Sink,
) -> Result<Outcome, Error> {
    let host_key_path = plan.image.host_key();
    let host_key = std::fs::read_to_string(&host_key_path).map_err(|source| ssh::Error::Io {
        action: "read",
        path: host_key_path,
        source,
    })?;
    let disk = dir.file("disk.qcow2");
    let base = plan
        .warm
        .as_ref()
        .map_or_else(|| plan.image.disk(), |w| w.disk.clone());
    Overlay::create(&disk, &base)?;

    let started = Instant::now();
    sink(Event::PhaseStarted(format!("run {}: boot", dir.id())));
    let (process, port) = start_qemu(plan, dir, qemu, &disk)?;
    *vm = Some(process);
    let target = Target {
        port,
        host_key: host_key.trim().to_owned(),
        client_key: plan.image.client_key(),
    };
    let files = ssh::ClientFiles::write(&dir.file("ssh"), &target)?;
    // A resumed guest answers at once: its clock and randomness are refreshed, and the
    // system ssh's master connection for rsync is made, while vmrun's own session is.
    let (refresh, mut master) = match &plan.warm {
        Some(_) => {
            let agent = dir.file("qga.sock");
            let refresh = std::thread::spawn(move || warm::refresh_clone(&agent));
            (
                Some(refresh),
                crate::tools::find("ssh")
                    .ok()
                    .and_then(|ssh| ssh::Master::start(&ssh, &files)),
            )
        }
        None => (None, None),
    };
    let deadline = started + plan.boot_timeout;
    let session =
        ssh::wait_ready(&target, deadline, &|| signals::received().is_some()).map_err(|source| {
            if matches!(source, ssh::Error::Cancelled { .. }) {
                return Error::Ssh(source);
            }
            Error::NotReady {
                source,
                console: last_lines(&dir.file("serial.log"), TAIL_LINES),
                hint: match plan.accel {
                    Accel::Kvm => "KVM was used: if guests hang here, try VMRUN_ACCEL=tcg",
                    Accel::Tcg => {
                        "under TCG a cold boot takes about a minute; a longer boot timeout may help"
                    }
                },
            }
        });
    let session = match session {
        Err(Error::Ssh(ssh::Error::Cancelled { .. })) => {
            return Ok(stopped());
        }
        other => other?,
    };
    if let Some(refresh) = refresh {
        refresh
            .join()
            .expect("refreshing the clone does not panic")
            .map_err(Error::Resume)?;
    }
    report.record(Phase::Boot, started.elapsed());
    sink(Event::PhaseFinished {
        phase: format!("run {}: boot", dir.id()),
        elapsed: started.elapsed(),
    });

    if let Some(master) = master.as_mut() {
        master.wait_ready(&files, MASTER_WAIT);
    }
    let ssh_config = files.ssh_config.clone();
    let stop = || signals::received().is_some();
    let bounds = sync::Bounds::new(sync::TRANSFER_TIMEOUT, &stop);
    match report.time(Phase::Sync, || {
        sync::push(
            &ssh_config,
            &plan.project,
            GUEST_PROJECT_DIR,
            &plan.sync,
            &bounds,
        )
    }) {
        Err(sync::Error::Cancelled { .. }) => return Ok(stopped()),
        pushed => pushed?,
    }

    let command_line = ssh::remote_command_line(GUEST_PROJECT_DIR, &plan.env, &plan.command);
    let deadline = plan.timeout.map(|t| Instant::now() + t);
    let result = report.time(Phase::Command, || {
        session.exec(&command_line, out, err, deadline, &|| {
            signals::received().is_some()
        })
    })?;
    let outcome = match result {
        ssh::Outcome::Exited(code) => Outcome::Exited(code),
        ssh::Outcome::Signalled(name) => Outcome::Signalled(name),
        ssh::Outcome::TimedOut => Outcome::TimedOut(plan.timeout.unwrap_or_default()),
        ssh::Outcome::Stopped => return Ok(stopped()),
    };
    if plan.artifacts.is_empty() {
        return Ok(outcome);
    }
    Ok(artifacts::collect(
        plan,
        dir.id(),
        &ssh_config,
        outcome,
        report,
        sink,
    ))
}

/// The outcome of a run that vmrun was asked to stop.
fn stopped() -> Outcome {
    Outcome::Stopped(signals::received().unwrap_or(libc::SIGTERM))
}

/// Starts QEMU with a forward on a free loopback port, booting or resuming, and chooses
/// another port when the chosen one was taken before QEMU could bind it.
fn start_qemu(
    plan: &RunPlan,
    dir: &run_dir::RunDir,
    qemu: &Path,
    disk: &Path,
) -> Result<(QemuProcess, u16), Error> {
    let qemu_log = dir.file("qemu.log");
    for _ in 0..crate::qemu::port::ATTEMPTS {
        let port = crate::qemu::port::free_loopback_port().map_err(Error::Port)?;
        let console = Console::to_log(&dir.file("serial.log")).map_err(Error::Console)?;
        let machine = Machine {
            accel: plan.accel,
            cpus: plan.cpus,
            memory_mib: plan.memory_mib,
            disk: disk.to_owned(),
            seed: None,
            console: console.fd(),
            network: plan.network,
            forwards: vec![Forward::ssh(port)],
        };
        let launch =
            |args| isolate::command(plan.network, dir.path(), &machine.forwards, qemu, args);
        let (qmp, agent) = (dir.file("qmp.sock"), dir.file("qga.sock"));
        let mut process = match &plan.warm {
            None => {
                let (program, args) = launch(command_line(&machine))?;
                QemuProcess::spawn(&program, &args, &qemu_log, console)?
            }
            Some(warm) => {
                let state = std::fs::File::open(&warm.state)
                    .map_err(|e| Error::Resume(PathError::at("open", &warm.state)(e).into()))?;
                let generation = warm::machine::new_generation();
                let instance = Instance {
                    qmp: &qmp,
                    guest_agent: &agent,
                    generation: &generation,
                    incoming: Some(state.as_raw_fd()),
                };
                let (program, args) = launch(warm::machine::command_line(&machine, &instance))?;
                QemuProcess::spawn_passing(&program, &args, &qemu_log, console, state.as_fd())?
            }
        };
        dir.record_qemu_pid(process.pid())?;
        let started = match &plan.warm {
            Some(_) => warm::resume(&mut process, &qmp, &qemu_log).map_err(Error::Resume),
            // A forward that cannot bind makes QEMU exit at once; give it that moment.
            None => match process.wait_timeout(Duration::from_millis(300))? {
                None => Ok(()),
                Some(status) => Err(Error::QemuExited {
                    status: status.to_string(),
                    qemu_log: String::new(),
                }),
            },
        };
        match started {
            Ok(()) => return Ok((process, port)),
            Err(e) => {
                let exited = process.try_wait()?.is_some();
                let log = std::fs::read_to_string(&qemu_log).unwrap_or_default();
                if !(exited && crate::qemu::port::is_forward_conflict(&log)) {
                    return Err(match e {
                        Error::QemuExited { status, .. } => Error::QemuExited {
                            status,
                            qemu_log: log.trim().to_owned(),
                        },
                        other => other,
                    });
                }
            }
        }
    }
    Err(Error::NoPort {
        attempts: crate::qemu::port::ATTEMPTS,
    })
}

/// `--keep`: the failed run's VM stays up; vmrun waits for Ctrl-C, then tears it down.
fn keep_until_interrupted(dir: &run_dir::RunDir, sink: Sink) {
    sink(Event::Notice(format!(
        "run {} failed; its VM is kept. Get in with: vmrun ssh {}   (Ctrl-C here tears it down)",
        dir.id(),
        dir.id()
    )));
    while signals::received().is_none() {
        std::thread::sleep(Duration::from_millis(100));
    }
}
