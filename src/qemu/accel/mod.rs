//! Which accelerator QEMU uses: `VMRUN_ACCEL` = `auto` (the default) | `kvm` | `tcg`.
//!
//! `auto` uses KVM only where it runs guests. /dev/kvm opening is not enough: with broken
//! nested virtualisation it opens, and a guest runs real-mode code and then spins, or crawls
//! through instruction emulation, or dies with "KVM internal error". So where /dev/kvm opens,
//! `auto` boots a tiny [probe guest](probe_guest) once, remembers the [verdict] for this host
//! (/dev/kvm's identity, the kernel, the QEMU binary), and falls back to TCG with one notice.
//!
//! ```no_run
//! # use vmrun::qemu::accel::{AccelChoice, resolve};
//! # fn f(
//! #     qemu: &std::path::Path,
//! #     facts: &std::path::Path,
//! # ) -> Result<(), vmrun::qemu::accel::Error> {
//! let accel = resolve(AccelChoice::from_env()?, qemu, facts, &|event| eprintln!("{event:?}"))?;
//! # Ok(()) }
//! ```

pub mod probe;
pub mod probe_guest;
pub mod verdict;

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::events::{self, Event, Sink};
use crate::exit_code;
pub use crate::qemu::args::Accel;
pub use verdict::{Verdict, VerdictKey};

/// The environment variable that chooses.
pub const VAR: &str = "VMRUN_ACCEL";

/// Where KVM lives.
pub const KVM_DEVICE: &str = "/dev/kvm";

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    /// KVM where it runs guests, else TCG.
    #[default]
    Auto,
    /// KVM, or an error.
    Kvm,
    /// TCG; /dev/kvm is not looked at.
    Tcg,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error("{VAR} is `{value}`, which is not one of auto, kvm, tcg")]
    #[diagnostic(
        code(vmrun::accel::bad_value),
        help(
            "unset {VAR} or set it to `auto` (KVM where it runs guests, else TCG), `kvm` or `tcg`"
        )
    )]
    BadValue { value: String },

    #[error("{VAR}=kvm, but KVM cannot be used: {reason}")]
    #[diagnostic(code(vmrun::accel::kvm_unusable))]
    KvmUnusable {
        reason: Unavailable,
        #[help]
        help: Option<String>,
    },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::BadValue { .. } => exit_code::BAD_INPUT,
            Error::KvmUnusable { .. } => exit_code::VM_FAILED,
        }
    }
}

/// Why /dev/kvm cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("{} does not exist", .path.display())]
    Missing { path: PathBuf },
    #[error("no permission to open {} read-write: add yourself to the kvm group", .path.display())]
    Permission { path: PathBuf },
    #[error("cannot open {}: {source}", .path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("{} is not KVM (KVM_GET_API_VERSION gave {version}, not 12)", .path.display())]
    NotKvm { path: PathBuf, version: i32 },
}

impl Unavailable {
    /// What to do about it.
    pub fn help(&self) -> Option<String> {
        match self {
            Unavailable::Missing { .. } => Some(
                "load the kvm_intel or kvm_amd module, turn on virtualisation in the firmware, \
                 or pass /dev/kvm into the container; or set VMRUN_ACCEL=tcg"
                    .into(),
            ),
            Unavailable::Permission { .. } => Some(
                "sudo usermod -aG kvm \"$USER\", then log in again; or set VMRUN_ACCEL=tcg".into(),
            ),
            _ => Some("set VMRUN_ACCEL=tcg".into()),
        }
    }
}

impl AccelChoice {
    /// From `VMRUN_ACCEL`: unset or empty is `auto`.
    pub fn from_env() -> Result<AccelChoice, Error> {
        AccelChoice::parse(std::env::var_os(VAR).as_deref())
    }

    /// From a value of `VMRUN_ACCEL` (`None`: unset). Case does not matter.
    pub fn parse(value: Option<&OsStr>) -> Result<AccelChoice, Error> {
        let Some(value) = value.filter(|v| !v.is_empty()) else {
            return Ok(AccelChoice::Auto);
        };
        let text = value.to_string_lossy();
        [
            ("auto", AccelChoice::Auto),
            ("kvm", AccelChoice::Kvm),
            ("tcg", AccelChoice::Tcg),
        ]
        .into_iter()
        .find(|(name, _)| text.eq_ignore_ascii_case(name))
        .map(|(_, choice)| choice)
        .ok_or_else(|| Error::BadValue {
            value: text.into_owned(),
        })
    }
}

/// The accelerator for this host: see the module's documentation. `qemu` is the QEMU binary
/// the VMs will run (the probe uses it, and the verdict is kept per binary); `facts_dir`
/// holds the verdict (`Home::host_facts()`).
pub fn resolve(
    choice: AccelChoice,
    qemu: &Path,
    facts_dir: &Path,
    sink: Sink,
) -> Result<Accel, Error> {
    resolve_with(choice, Path::new(KVM_DEVICE), qemu, facts_dir, sink)
}

/// [`resolve`] with another KVM device (for tests).
pub fn resolve_with(
    choice: AccelChoice,
    kvm_device: &Path,
    qemu: &Path,
    facts_dir: &Path,
    sink: Sink,
) -> Result<Accel, Error> {
    match choice {
        AccelChoice::Tcg => Ok(Accel::Tcg),
        AccelChoice::Kvm => match open_kvm(kvm_device) {
            Ok(()) => Ok(Accel::Kvm),
            Err(reason) => {
                let help = reason.help();
                Err(Error::KvmUnusable { reason, help })
            }
        },
        AccelChoice::Auto => Ok(auto(kvm_device, qemu, facts_dir, sink)),
    }
}

fn auto(kvm_device: &Path, qemu: &Path, facts_dir: &Path, sink: Sink) -> Accel {
    match kvm_state(kvm_device, qemu, facts_dir, sink) {
        KvmState::Unavailable(reason) => {
            sink(Event::Notice(format!(
                "KVM not available ({reason}); using TCG"
            )));
            Accel::Tcg
        }
        KvmState::Unknown(why) => {
            sink(Event::Notice(format!(
                "cannot check whether KVM runs guests here ({why}); using TCG"
            )));
            Accel::Tcg
        }
        KvmState::Runs { .. } => Accel::Kvm,
        KvmState::DoesNotRun { reason, remembered } => {
            let reason = if remembered {
                format!("remembered: {reason}")
            } else {
                reason
            };
            sink(Event::Notice(format!(
                "KVM does not run guests here ({reason}); using TCG"
            )));
            Accel::Tcg
        }
    }
}

/// Whether KVM runs guests on this host, and how vmrun knows.
#[derive(Debug)]
pub enum KvmState {
    /// The device cannot be used at all.
    Unavailable(Unavailable),
    /// The probe could not be run (not a verdict on KVM; nothing is remembered): why.
    Unknown(String),
    /// The probe guest ran (now, or as remembered for this host).
    Runs { remembered: bool, probe_ms: u64 },
    /// The device opens, but the probe guest did not run on it: why not.
    DoesNotRun { reason: String, remembered: bool },
}

/// Opens `kvm_device`, then takes the remembered [`Verdict`] for this host, or runs the probe
/// once and remembers its verdict. `auto` and `vmrun doctor` both ask this.
pub fn kvm_state(kvm_device: &Path, qemu: &Path, facts_dir: &Path, sink: Sink) -> KvmState {
    if let Err(reason) = open_kvm(kvm_device) {
        return KvmState::Unavailable(reason);
    }
    let key = match VerdictKey::current(kvm_device, qemu, &probe::fingerprint()) {
        Ok(key) => key,
        Err(e) => return KvmState::Unknown(e.to_string()),
    };
    let stored = Verdict::load(facts_dir).unwrap_or_else(|e| {
        sink(Event::Detail(format!("{e}; checking again")));
        None
    });
    if let Some(known) = stored.filter(|v| v.key == key) {
        return if known.usable {
            KvmState::Runs {
                remembered: true,
                probe_ms: known.probe_ms,
            }
        } else {
            KvmState::DoesNotRun {
                reason: known.reason,
                remembered: true,
            }
        };
    }

    let report = events::phase(sink, "check that KVM runs guests", || {
        probe::run(qemu, Accel::Kvm, probe::TIMEOUT, facts_dir)
    });
    let report = match report {
        Ok(report) => report,
        Err(e) => return KvmState::Unknown(crate::error_line::one_line(&e)),
    };
    let reason = match &report.outcome {
        Ok(()) => String::new(),
        Err(reason) => reason.clone(),
    };
    let verdict = Verdict {
        key,
        usable: report.passed(),
        reason,
        probe_ms: report.elapsed.as_millis() as u64,
        checked_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    if let Err(e) = verdict.store(facts_dir) {
        sink(Event::Detail(format!(
            "cannot remember the KVM verdict: {e}"
        )));
    }
    if verdict.usable {
        sink(Event::Detail(format!(
            "KVM runs guests here (probe: {} ms)",
            verdict.probe_ms
        )));
        KvmState::Runs {
            remembered: false,
            probe_ms: verdict.probe_ms,
        }
    } else {
        KvmState::DoesNotRun {
            reason: verdict.reason,
            remembered: false,
        }
    }
}

/// Opens `device` read-write and asks for KVM's API version, as QEMU will.
pub fn open_kvm(device: &Path) -> Result<(), Unavailable> {
    let path = device.to_owned();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => Unavailable::Missing { path: path.clone() },
            io::ErrorKind::PermissionDenied => Unavailable::Permission { path: path.clone() },
            _ => Unavailable::Open {
                path: path.clone(),
                source,
            },
        })?;
    /// _IO(KVMIO, 0x00)
    const KVM_GET_API_VERSION: u64 = 0xae00;
    // SAFETY: the fd is open for the call; this ioctl takes no argument and writes nothing.
    let version = unsafe { libc::ioctl(file.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    if version != 12 {
        return Err(Unavailable::NotKvm { path, version });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn parse_values() {
        assert_eq!(AccelChoice::parse(None).unwrap(), AccelChoice::Auto);
        assert_eq!(
            AccelChoice::parse(Some(OsStr::new(""))).unwrap(),
            AccelChoice::Auto
        );
        assert_eq!(
            AccelChoice::parse(Some(OsStr::new("auto"))).unwrap(),
            AccelChoice::Auto
        );
        assert_eq!(
            AccelChoice::parse(Some(OsStr::new("kvm"))).unwrap(),
            AccelChoice::Kvm
        );
        assert_eq!(
            AccelChoice::parse(Some(OsStr::new("TCG"))).unwrap(),
            AccelChoice::Tcg
        );
    }

    #[test]
    fn bad_value_names_the_variable_and_the_value() {
        let err = AccelChoice::parse(Some(OsStr::new("hvf"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "VMRUN_ACCEL is `hvf`, which is not one of auto, kvm, tcg"
        );
        assert_eq!(err.exit_code(), exit_code::BAD_INPUT);
        let err = AccelChoice::parse(Some(OsStr::new(" kvm"))).unwrap_err();
        assert!(err.to_string().contains("` kvm`"));
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(b"k\xffm".to_vec());
        assert!(
            AccelChoice::parse(Some(&odd))
                .unwrap_err()
                .to_string()
                .contains("`k\u{fffd}m`")
        );
    }

    #[test]
    fn forced_kvm_without_a_device_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("kvm");
        let err = resolve_with(
            AccelChoice::Kvm,
            &device,
            Path::new("/no/qemu"),
            dir.path(),
            &|_| (),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "VMRUN_ACCEL=kvm, but KVM cannot be used: {} does not exist",
                device.display()
            )
        );
        assert_eq!(err.exit_code(), exit_code::VM_FAILED);
    }

    #[test]
    fn a_file_that_is_not_kvm_is_not_kvm() {
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("kvm");
        std::fs::write(&device, "").unwrap();
        assert!(matches!(open_kvm(&device), Err(Unavailable::NotKvm { .. })));
    }

    #[test]
    fn permission_reason_says_what_to_do() {
        let reason = Unavailable::Permission {
            path: "/dev/kvm".into(),
        };
        assert_eq!(
            reason.to_string(),
            "no permission to open /dev/kvm read-write: add yourself to the kvm group"
        );
        assert!(reason.help().unwrap().contains("usermod -aG kvm"));
    }
}
