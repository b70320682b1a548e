//! The probe: boots [`probe_guest`](super::probe_guest) once in a throwaway QEMU and says
//! whether it finished its work in time, and if not, how far it got.
//!
//! "Any output" proves nothing: where nested virtualisation is broken, KVM runs real-mode
//! code (SeaBIOS, GRUB, a kernel's setup code) and then spins or emulates the guest
//! instruction by instruction, far slower than TCG. The probe guest's work is some 60 million
//! instructions: a fraction of a second with working KVM, about one second under TCG, over a
//! minute emulated. A guest that has not printed its marker after [`TIMEOUT`] is not running
//! on working KVM.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::probe_guest::{self, MARKER};
use crate::qemu::args::{self, Accel};
use crate::qemu::process::{self, QemuProcess};
use crate::qemu::serial::Console;
use crate::scratch::Scratch;
use crate::wait::{Stop, Watch};

/// How long the probe guest gets, from QEMU's start to its marker. Under working KVM it
/// needs well under a second, under TCG about one.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// How long QEMU gets to exit by itself after the guest's marker.
const EXIT_GRACE: Duration = Duration::from_secs(1);

/// The prefix of a probe's temporary directory.
const SCRATCH_PREFIX: &str = ".kvm-probe-";

/// How often the serial log and QEMU are looked at.
const POLL: Duration = Duration::from_millis(20);

/// The probe could not be run at all (not a verdict on KVM).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error("cannot {what}")]
    Setup {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Qemu(#[from] process::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Stopped(#[from] Stop),
}

#[derive(Debug, Clone)]
pub struct Report {
    /// Passed: the guest printed its marker, so its work ran, fast enough, and was right.
    /// Failed: why not, in a phrase that fits "KVM does not run guests here (...)".
    pub outcome: Result<(), String>,
    /// From QEMU's start to the verdict.
    pub elapsed: Duration,
    /// QEMU's exit code, when it ended by itself (not killed): [`probe_guest::EXIT_OK`] after
    /// the marker.
    pub exit: Option<i32>,
    /// What the guest wrote to COM1.
    pub serial: String,
    /// QEMU's own stdout and stderr.
    pub qemu_log: String,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.outcome.is_ok()
    }
}

/// QEMU's arguments for the probe under `accel`, with vmrun's arguments for it (see
/// [`args::probe_command_line`]).
pub fn command_line(accel: Accel, disk: &Path, console: RawFd) -> Vec<OsString> {
    args::probe_command_line(&args::accel_args(accel), disk, console)
}

/// Names this probe: its guest, its KVM command line and its timeout. A verdict reached by
/// another probe (an older vmrun) is not reused.
pub fn fingerprint() -> String {
    let mut hash = Sha256::new();
    hash.update(probe_guest::GUEST);
    for arg in command_line(Accel::Kvm, Path::new("DISK"), 3) {
        hash.update(arg.as_bytes());
        hash.update([0]);
    }
    hash.update(TIMEOUT.as_millis().to_le_bytes());
    crate::hex::encode(&hash.finalize()[..8])
}

/// Boots the probe guest under `accel` (with vmrun's arguments for it) and waits up to
/// `timeout` for its marker, with its files in a temporary directory in `scratch` (see
/// [`reap`]). QEMU is killed (by its pid) before this returns, whatever the outcome.
pub fn run(qemu: &Path, accel: Accel, timeout: Duration, scratch: &Path) -> Result<Report, Error> {
    run_with(qemu, &args::accel_args(accel), timeout, scratch)
}

/// Removes what probes of killed vmruns left in `scratch`; their names.
pub fn reap(scratch: &Path) -> Vec<String> {
    crate::scratch::reap(scratch, SCRATCH_PREFIX)
}

/// [`run`] with other accelerator arguments.
pub fn run_with(
    qemu: &Path,
    accel_args: &[OsString],
    timeout: Duration,
    scratch: &Path,
) -> Result<Report, Error> {
    let dir = Scratch::new_in(scratch, SCRATCH_PREFIX).map_err(|e| Error::Setup {
        what: format!(
            "create a directory for the KVM probe in {}",
            scratch.display()
        ),
        source: e.source,
    })?;
    let disk = dir.path().join("probe.img");
    write_disk(&disk).map_err(|source| Error::Setup {
        what: format!("write {}", disk.display()),
        source,
    })?;
    let serial_log = dir.path().join("serial.log");
    let qemu_log = dir.path().join("qemu.log");
    let console = Console::to_log(&serial_log).map_err(|source| Error::Setup {
        what: format!("create {}", serial_log.display()),
        source,
    })?;
    let args = args::probe_command_line(accel_args, &disk, console.fd());

    let started = Instant::now();
    let mut vm = QemuProcess::spawn(qemu, &args, &qemu_log, console)?;
    // QEMU's exit is part of the verdict here, so the wait watches only for a stop request.
    let verdict = Watch::signals().until(started + timeout, POLL, || {
        let exited = vm.exited();
        let serial = read_lossy(&serial_log);
        if serial.lines().any(|line| line == MARKER) {
            return Ok(Some(Ok(())));
        }
        if serial.lines().any(|line| line == probe_guest::WRONG_RESULT) {
            return Ok(Some(Err(
                "the probe guest's 64-bit work gave a wrong result".into(),
            )));
        }
        if let Some(exited) = exited {
            let why = exited_early(exited.status, &serial, &read_lossy(&qemu_log));
            return Ok(Some(Err(why)));
        }
        let log = read_lossy(&qemu_log);
        Ok::<_, Error>(
            log.lines()
                .find(|line| line.contains("KVM internal error"))
                .map(|line| {
                    Err(format!(
                        "QEMU reported \"{}\" after the probe guest {}",
                        line.trim(),
                        progress(&serial)
                    ))
                }),
        )
    })?;
    let outcome = verdict.unwrap_or_else(|| Err(timed_out(&read_lossy(&serial_log), timeout)));
    let elapsed = started.elapsed();
    // After its marker the guest ends QEMU itself at once (isa-debug-exit).
    let exit = match outcome {
        Ok(()) => Watch::signals()
            .until(Instant::now() + EXIT_GRACE, POLL, || {
                Ok::<_, Error>(vm.exited())
            })?
            .and_then(|exited| exited.status.code()),
        Err(_) => vm.exited().and_then(|exited| exited.status.code()),
    };
    // Gone before its directory is, and its console complete.
    vm.kill()?;
    Ok(Report {
        outcome,
        elapsed,
        exit,
        serial: read_lossy(&serial_log),
        qemu_log: read_lossy(&qemu_log),
    })
}

/// The guest, then a hole up to the disk size SeaBIOS wants.
fn write_disk(path: &Path) -> io::Result<()> {
    use std::io::Write;
    let mut file = File::create(path)?;
    file.write_all(&probe_guest::GUEST)?;
    file.set_len(probe_guest::DISK_SIZE)
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// The last mode the guest said it reached.
fn last_stage(serial: &str) -> Option<&'static str> {
    let words: Vec<&str> = serial
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    probe_guest::STAGES
        .iter()
        .rev()
        .find(|(word, _)| words.contains(word))
        .map(|(_, name)| *name)
}

/// "printed nothing", "reached protected mode", ...
fn progress(serial: &str) -> String {
    match last_stage(serial) {
        None => "printed nothing".into(),
        Some(stage) => format!("reached {stage}"),
    }
}

fn timed_out(serial: &str, timeout: Duration) -> String {
    let secs = seconds(timeout);
    match last_stage(serial) {
        Some("long mode") => {
            format!(
                "the probe guest reached long mode but did not finish its work in {secs} \
                 (TCG does it in about a second)"
            )
        }
        Some(stage) => format!("the probe guest reached {stage}, then made no progress in {secs}"),
        None => format!("the probe guest printed nothing in {secs}"),
    }
}

fn exited_early(status: ExitStatus, serial: &str, qemu_log: &str) -> String {
    let mut reason = format!(
        "QEMU exited ({}) after the probe guest {}",
        crate::child::describe(status),
        progress(serial)
    );
    if let Some(line) = qemu_complaint(qemu_log) {
        reason.push_str(": ");
        reason.push_str(line);
    }
    reason
}

/// QEMU's first error line, else its last line that is not a warning.
fn qemu_complaint(log: &str) -> Option<&str> {
    let lines: Vec<&str> = log
        .lines()
        .map(|line| line.trim())
        .map(|line| line.strip_prefix("qemu-system-x86_64: ").unwrap_or(line))
        .filter(|line| !line.is_empty() && !line.starts_with("warning:"))
        .collect();
    lines
        .iter()
        .find(|line| line.contains("error"))
        .or(lines.last())
        .copied()
}

fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// QEMU's escape for a comma inside an option list.
#[cfg(test)]
mod tests {
    use super::*;

    fn joined(line: &[OsString]) -> String {
        line.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn whole_command_line() {
        let kvm: Vec<OsString> = vec!["-accel".into(), "kvm".into()];
        let line = args::probe_command_line(&kvm, Path::new("/t/probe.img"), 5);
        assert_eq!(
            joined(&line),
            "-nodefaults -no-user-config -display none -no-reboot -machine q35 \
             -accel kvm -m 64M \
             -drive file=/t/probe.img,format=raw,if=ide \
             -chardev file,id=serial0,path=/dev/fd/5 -serial chardev:serial0 \
             -device isa-debug-exit,iobase=0xf4,iosize=0x04"
        );
    }

    #[test]
    fn the_accelerator_arguments_are_vmrun_s_own() {
        let (d, s) = (Path::new("/d"), 3);
        for accel in [Accel::Kvm, Accel::Tcg] {
            assert_eq!(
                command_line(accel, d, s),
                args::probe_command_line(&args::accel_args(accel), d, s)
            );
        }
        assert_ne!(
            command_line(Accel::Kvm, d, s),
            command_line(Accel::Tcg, d, s)
        );
    }

    #[test]
    fn commas_in_the_disk_path_are_doubled() {
        let line = command_line(Accel::Tcg, Path::new("/a,b/p.img"), 3);
        let drive = line.iter().position(|a| a == "-drive").unwrap() + 1;
        assert_eq!(line[drive], "file=/a,,b/p.img,format=raw,if=ide");
    }

    #[test]
    fn fingerprint_is_stable_and_short() {
        assert_eq!(fingerprint(), fingerprint());
        assert_eq!(fingerprint().len(), 16);
    }

    #[test]
    fn reasons_say_how_far_the_guest_got() {
        let t = Duration::from_secs(5);
        assert_eq!(timed_out("", t), "the probe guest printed nothing in 5 s");
        assert_eq!(
            timed_out("vmrun-probe: real", t),
            "the probe guest reached real mode, then made no progress in 5 s"
        );
        assert_eq!(
            timed_out("vmrun-probe: real protected", t),
            "the probe guest reached protected mode, then made no progress in 5 s"
        );
        assert!(
            timed_out("vmrun-probe: real protected long\n", t).starts_with(
                "the probe guest reached long mode but did not finish its work in 5 s"
            )
        );
        assert_eq!(seconds(Duration::from_millis(2500)), "2.5 s");
    }

    #[test]
    fn qemu_complaint_prefers_errors_over_warnings() {
        let log = "qemu-system-x86_64: warning: host doesn't support requested feature: \
                       CPUID.01H:ECX.pni [bit 0]\n\
                   qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n\
                   qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: \
                       Assertion failed.\n";
        assert_eq!(
            qemu_complaint(log),
            Some("error: failed to set MSR 0x10a to 0x69")
        );
        assert_eq!(qemu_complaint("qemu-system-x86_64: warning: x\n"), None);
        assert_eq!(qemu_complaint("something odd\n"), Some("something odd"));
    }
}
