//! `vmrun test`'s engine: one run is a fresh overlay on a baked image, QEMU with an SSH
//! forward on loopback, the pinned-key SSH session, the project synced in, the command with
//! its output streamed, artifacts copied back, and teardown whatever happened. Every wait
//! in a run also ends when its QEMU exits or vmrun is asked to stop ([`crate::wait`]).

mod artifacts;
pub mod boot;
pub mod capture;
mod output;
mod run_dir;
pub mod schedule;
mod summary;
mod tail;

pub use boot::Boot;
pub use output::PrefixedLines;
pub use run_dir::{RunDir, reap_orphans, run_ids, ssh_config};
pub use summary::{Failure, Outcome, Phase, RunReport, summary_table};
pub use tail::{TAIL_BYTES, Tail};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{ByteSize, Command, SyncConfig};
use crate::disk::{self, Overlay};
use crate::events::{Event, Sink};
use crate::net::forward::Forward;
use crate::net::{Network, isolate};
use crate::qemu::args::{Accel, Machine, MachineSize, Ram};
use crate::qemu::process::{self, QemuProcess};
use crate::qemu::serial::{Console, last_lines};
use crate::ssh;
use crate::store::BakedImage;
use crate::sync;
use crate::wait::{Stop, Watch};
use crate::warm;

/// Where the project lands in the guest.
pub const GUEST_PROJECT_DIR: &str = "/home/vmrun/project";
/// How long after a broken connection QEMU's exit may take to be seen.
const EXIT_SEEN: Duration = Duration::from_secs(1);
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
    /// QEMU exited, or vmrun was asked to stop, while the run waited.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Stopped(#[from] Stop),
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
    /// The run's VM came up, but the series ended before its turn (a stop request, or an
    /// earlier run failed under `--until-fail`).
    #[error("the run was not needed after all")]
    NotNeeded,
    #[error("resuming the warm state failed")]
    #[diagnostic(help("`vmrun test --cold` boots instead"))]
    Resume(#[source] warm::Error),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        use crate::exit_code::{INTERNAL, VM_FAILED};
        if let Some(stop) = self.stop() {
            return stop.exit_code();
        }
        match self {
            Error::Disk(e) => e.exit_code(),
            Error::Ssh(e) => e.exit_code(),
            Error::Sync(e) => e.exit_code(),
            Error::Qemu(_) | Error::Stopped(_) | Error::NoPort { .. } | Error::NotReady { .. } => {
                VM_FAILED
            }
            Error::RunDir(_) | Error::Port(_) | Error::Console(_) | Error::NotNeeded => INTERNAL,
            Error::Resume(e) => e.exit_code(),
            Error::Isolate(e) => e.exit_code(),
        }
    }

    /// Why the run's wait ended early, if that is what this error is: a stop request or
    /// QEMU's exit, wherever in the run it was seen.
    pub fn stop(&self) -> Option<&Stop> {
        match self {
            Error::Stopped(stop)
            | Error::Ssh(ssh::Error::Stopped(stop))
            | Error::Sync(sync::Error::Stopped(stop))
            | Error::Resume(warm::Error::Stopped(stop)) => Some(stop),
            _ => None,
        }
    }
}

/// One run, fully decided: nothing here is checked again.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub image: BakedImage,
    pub accel: Accel,
    pub network: Network,
    pub size: MachineSize,
    /// Boot the image, or resume its warm state.
    pub boot: Boot,
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
    /// On failure, save the VM into a bundle (`--capture-failures`).
    pub capture: Option<capture::Capture>,
}

/// Runs `plan` once in a new VM, as run `index` of its schedule. Never returns before the VM
/// is gone (or, with `keep` and a failure, before the user interrupts).
/// Where a run happens: its number in the series, its id, the runs' directory and QEMU.
pub struct Place<'a> {
    pub index: u32,
    pub id: &'a str,
    pub runs: &'a Path,
    pub qemu: &'a Path,
}

/// One run, start to teardown. Once its VM is up, `turn` says whether it goes on to its
/// command (waiting first, when runs are pipelined); `None` when it does not: the run is
/// torn down and leaves no report.
pub fn run_once(
    plan: &RunPlan,
    place: &Place,
    turn: &dyn Fn() -> bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
    sink: Sink,
) -> Option<RunReport> {
    let Place {
        index,
        id,
        runs,
        qemu,
    } = *place;
    let mut report = RunReport::new(index, id);
    let mut out = tail::KeepTail::new(out);
    let mut err = tail::KeepTail::new(err);
    // Its image stays in the store while the run lives: `images rm` is refused meanwhile.
    let dir = run_dir::RunDir::create(runs, id).and_then(|d| Ok((plan.image.hold(id)?, d)));
    let outcome = match dir {
        Ok((_reference, dir)) => {
            let mut vm = None;
            let driven = drive(
                plan,
                &dir,
                qemu,
                turn,
                &mut vm,
                &mut out,
                &mut err,
                &mut report,
                sink,
            );
            if matches!(driven, Err(Error::NotNeeded)) {
                return None;
            }
            let outcome = driven
                .map_err(|e| explained(e, vm.as_ref()))
                .unwrap_or_else(|e| match e.stop() {
                    Some(Stop::Signal(signal)) => Outcome::Stopped(*signal),
                    _ => {
                        let code = e.exit_code();
                        Outcome::Failed(Failure::new(e, code))
                    }
                });
            if let (Some(capture), false, Some(vm)) = (&plan.capture, outcome.passed(), &vm) {
                let failed = capture::Failed {
                    dir: &dir,
                    vm,
                    qemu,
                    report: &report,
                    outcome: &outcome,
                };
                capture::save(plan, capture, &failed, sink);
            }
            if let (true, false, Some(vm)) = (plan.keep, outcome.passed(), &vm) {
                keep_until_interrupted(&dir, vm, sink);
            }
            report.time(Phase::Teardown, || drop(vm));
            drop(dir);
            outcome
        }
        Err(e) => Outcome::Failed(Failure::new(e, crate::exit_code::INTERNAL)),
    };
    report.outcome = Some(outcome);
    report.stdout = out.tail();
    report.stderr = err.tail();
    Some(report)
}

/// `error`, or QEMU's exit when that is what caused it: a connection to the guest breaks
/// when QEMU dies, a moment before QEMU can be seen gone.
fn explained(error: Error, vm: Option<&QemuProcess>) -> Error {
    let Some(vm) = vm.filter(|_| error.stop().is_none()) else {
        return error;
    };
    let exited = Watch::signals().until(Instant::now() + EXIT_SEEN, EXIT_SEEN / 10, || {
        Ok::<_, Stop>(vm.exited())
    });
    match exited {
        Ok(Some(exited)) => Error::Stopped(Stop::QemuExited(exited)),
        _ => error,
    }
}

#[allow(clippy::too_many_arguments)]
fn drive(
    plan: &RunPlan,
    dir: &run_dir::RunDir,
    qemu: &Path,
    turn: &dyn Fn() -> bool,
    vm: &mut Option<QemuProcess>,
    out: &mut dyn Write,
    err: &mut dyn Write,
    report: &mut RunReport,
    sink: Sink,
) -> Result<Outcome, Error> {
    let disk = dir.file("disk.qcow2");
    Overlay::create(&disk, &plan.boot.base_disk(&plan.image))?;

    let started = Instant::now();
    sink(Event::PhaseStarted(format!("run {}: boot", dir.id())));
    let (process, port) = start_qemu(plan, dir, qemu, &disk)?;
    let watch = Watch::qemu(vm.insert(process));
    let target = plan.image.ssh_target(port)?;
    // For `vmrun ssh` into this run (e.g. one kept with --keep).
    ssh::ClientFiles::write(&dir.ssh_dir(), &target)?;
    // A resumed guest answers at once: its clock and randomness are refreshed while vmrun's
    // session is made.
    let refresh = plan.boot.refresh(dir);
    let session = ssh::wait_ready(&target, started + plan.boot_timeout, &watch).map_err(
        |source| match source {
            ssh::Error::NotReady { .. } => Error::NotReady {
                source,
                console: last_lines(&dir.file("serial.log"), TAIL_LINES),
                hint: match plan.accel {
                    Accel::Kvm => "KVM was used: if guests hang here, try VMRUN_ACCEL=tcg",
                    Accel::Tcg => {
                        "under TCG a cold boot takes about a minute; a longer boot timeout may help"
                    }
                },
            },
            other => other.into(),
        },
    )?;
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

    if !turn() {
        return Err(Error::NotNeeded);
    }
    // rsync reaches the guest through the relay, over this session: one handshake a run.
    let relay = ssh::Relay::listen(&dir.ssh_dir())?;
    let shell = sync::RemoteShell {
        argv: relay.remote_shell(&ssh::relay::this_vmrun()?),
    };
    std::thread::scope(|scope| -> Result<Outcome, Error> {
        let _serving = relay.serve_in(scope, &session);
        let bounds = sync::Bounds::new(sync::TRANSFER_TIMEOUT, watch);
        report.time(Phase::Sync, || {
            sync::push(
                &shell,
                &plan.project,
                GUEST_PROJECT_DIR,
                &plan.sync,
                &bounds,
            )
        })?;

        let command_line = ssh::remote_command_line(GUEST_PROJECT_DIR, &plan.env, &plan.command);
        let deadline = plan.timeout.map(|t| Instant::now() + t);
        let pause = capture::Pause::new(plan, dir);
        let result = report.time(Phase::Command, || {
            session.exec(&command_line, out, err, deadline, &watch, &|| pause.now())
        });
        if pause.done() {
            session.expect_no_answer();
        }
        let result = result?;
        let outcome = match result {
            ssh::Ended::Exited(code) => Outcome::Exited(code),
            ssh::Ended::Signalled(name) => Outcome::Signalled(name),
            ssh::Ended::TimedOut => Outcome::TimedOut(plan.timeout.unwrap_or_default()),
        };
        if plan.artifacts.is_empty() {
            return Ok(outcome);
        }
        Ok(artifacts::collect(
            plan,
            dir.id(),
            &shell,
            outcome,
            watch,
            report,
            sink,
        ))
    })
}

/// Starts QEMU with a forward on a free loopback port, booting or resuming, and chooses
/// another port when the chosen one was taken before QEMU could bind it.
fn start_qemu(
    plan: &RunPlan,
    dir: &run_dir::RunDir,
    qemu: &Path,
    disk: &Path,
) -> Result<(QemuProcess, u16), Error> {
    for _ in 0..crate::qemu::port::ATTEMPTS {
        let port = crate::qemu::port::free_loopback_port().map_err(Error::Port)?;
        let console = Console::to_log(&dir.file("serial.log")).map_err(Error::Console)?;
        let machine = Machine {
            accel: plan.accel,
            size: plan.size,
            disk: disk.to_owned(),
            seed: None,
            console: console.fd(),
            network: plan.network,
            forwards: vec![Forward::ssh(port)],
            // A run that may be captured has the monitor that saves it, and the RAM and
            // generation device its bundle is resumed with (a resume brings its own).
            control: plan
                .capture
                .as_ref()
                .map(|_| crate::warm::machine::control(dir.path(), Ram::Anonymous, None)),
            persistent: None,
        };
        let (process, incoming) = plan.boot.spawn(&machine, dir, qemu, console)?;
        dir.record_qemu_pid(process.pid())?;
        match plan.boot.started(&process, incoming, dir) {
            Ok(()) => return Ok((process, port)),
            Err(e) => match explained(e, Some(&process)) {
                Error::Stopped(Stop::QemuExited(exited))
                    if crate::qemu::port::is_forward_conflict(&exited.log) => {}
                e => return Err(e),
            },
        }
    }
    Err(Error::NoPort {
        attempts: crate::qemu::port::ATTEMPTS,
    })
}

/// `--keep`: the failed run's VM stays up; vmrun waits for Ctrl-C (or for the VM to go
/// away), then tears it down.
fn keep_until_interrupted(dir: &run_dir::RunDir, vm: &QemuProcess, sink: Sink) {
    sink(Event::Notice(format!(
        "run {} failed; its VM is kept. Get in with: vmrun ssh {}   (Ctrl-C here tears it down)",
        dir.id(),
        dir.id()
    )));
    let watch = Watch::qemu(vm);
    while watch.sleep(Duration::from_secs(3600)).is_ok() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::process::fake;
    use crate::store::Manifest;

    fn lost_connection() -> Error {
        Error::Ssh(ssh::Error::Session {
            port: 2222,
            action: "read the command's output",
            source: std::io::ErrorKind::ConnectionReset.into(),
        })
    }

    #[test]
    fn a_broken_connection_of_a_dead_qemu_is_reported_as_its_exit() {
        let (_dir, qemu) = fake("echo 'qemu: terminating' >&2; kill -9 $$");
        let explained = explained(lost_connection(), Some(&qemu));
        let Some(Stop::QemuExited(exited)) = explained.stop() else {
            panic!("{explained:?}")
        };
        assert_eq!(
            exited.to_string().lines().next(),
            Some("QEMU exited (signal 9)")
        );
        assert_eq!(explained.exit_code(), crate::exit_code::VM_FAILED);
    }

    #[test]
    fn a_broken_connection_of_a_running_qemu_stays_what_it_is() {
        let (_dir, qemu) = fake("exec sleep 30");
        let explained = explained(lost_connection(), Some(&qemu));
        assert!(
            matches!(explained, Error::Ssh(ssh::Error::Session { .. })),
            "{explained:?}"
        );
    }

    fn plan(project: &Path) -> RunPlan {
        RunPlan {
            image: BakedImage {
                dir: project.join("image"),
                manifest: Manifest {
                    key: "k".into(),
                    source: "s".into(),
                    source_digest: "d".into(),
                    created: 0,
                    cpus: 1,
                    memory_mib: 64,
                    vmrun_version: "0".into(),
                },
            },
            accel: Accel::Tcg,
            network: Network::Host,
            size: MachineSize {
                cpus: 1,
                memory_mib: 64,
            },
            boot: Boot::Cold,
            project: project.to_owned(),
            command: Command::Shell("true".into()),
            env: BTreeMap::new(),
            sync: SyncConfig::default(),
            artifacts: vec![],
            artifacts_dir: sync::Destination::new(project, &[project]),
            artifacts_max_size: ByteSize::from_bytes(1),
            timeout: None,
            boot_timeout: Duration::from_secs(1),
            keep: false,
            capture: None,
        }
    }

    /// A stand-in QEMU whose first start finds its forward's port taken, as QEMU says it;
    /// later starts run. It counts its starts in `starts`.
    fn port_taken_once(dir: &Path) -> PathBuf {
        let script = dir.join("qemu");
        let starts = dir.join("starts");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho >> {starts}\nif [ $(wc -l < {starts}) = 1 ]; then\n  \
                 echo \"qemu: Could not set up host forwarding rule 'tcp:127.0.0.1:1-:22'\" >&2\n  \
                 exit 1\nfi\nexec sleep 30\n",
                starts = starts.display()
            ),
        )
        .unwrap();
        let mut permissions = std::fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&script, permissions).unwrap();
        script
    }

    #[test]
    fn a_taken_port_is_retried_on_another_and_other_exits_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let run = run_dir::RunDir::create(&dir.path().join("runs"), "r1").unwrap();
        let qemu = port_taken_once(dir.path());
        let (process, _port) = start_qemu(&plan(dir.path()), &run, &qemu, Path::new("/d")).unwrap();
        assert_eq!(process.exited(), None, "the second start runs");
        let starts = std::fs::read_to_string(dir.path().join("starts")).unwrap();
        assert_eq!(starts.lines().count(), 2);
        drop(process);

        // Any other early exit ends the run with QEMU's own words.
        let failing = dir.path().join("failing-qemu");
        std::fs::write(
            &failing,
            "#!/bin/sh\necho 'qemu: no such disk' >&2\nexit 1\n",
        )
        .unwrap();
        let mut permissions = std::fs::metadata(&failing).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&failing, permissions).unwrap();
        let run = run_dir::RunDir::create(&dir.path().join("runs"), "r2").unwrap();
        let Err(err) = start_qemu(&plan(dir.path()), &run, &failing, Path::new("/d")) else {
            panic!("a QEMU that exits at once started")
        };
        let text = err.to_string();
        assert!(text.starts_with("QEMU exited (exit status 1)\n"), "{text}");
        assert!(text.ends_with("qemu: no such disk"), "{text}");
    }
}
