//! The machine a warm state belongs to: QEMU's arguments for it (pure), and what a run must
//! match to resume it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::qemu::args::{Accel, Control, Incoming, MachineSize, PORTABLE_CPU, Ram};

/// Bumped whenever the warm machine's arguments change shape: older states then fall back.
/// 2: the guest's RAM is a file of its own, left out of the saved state.
pub const FORMAT: u32 = 2;

/// What a saved state needs of the QEMU that resumes it. Stored beside the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmMachine {
    pub format: u32,
    /// `qemu-system-x86_64 --version`'s first line.
    pub qemu_version: String,
    pub accel: Accel,
    /// The named CPU model the state was saved with (under KVM, [`PORTABLE_CPU`]); none:
    /// QEMU's default for the accelerator (TCG), or, in states saved before vmrun named one,
    /// the host's CPU under KVM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    pub cpus: u32,
    pub memory_mib: u64,
    /// The exact command line the state was saved from, for the record.
    pub args: Vec<String>,
    /// Bytes of the saved device state (the RAM is in its own file, of `memory_mib`).
    pub state_bytes: u64,
}

/// Why a run boots cold instead of resuming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    Format {
        saved: u32,
    },
    Qemu {
        saved: String,
        now: String,
    },
    Accel {
        saved: Accel,
        now: Accel,
    },
    Size {
        saved: MachineSize,
        now: MachineSize,
    },
    Cpu {
        saved: Option<String>,
        now: Option<String>,
    },
}

/// The CPU model a warm machine under `accel` is saved and resumed with (see
/// [`PORTABLE_CPU`]); `None`: QEMU's own for the accelerator.
pub fn cpu_model(accel: Accel) -> Option<String> {
    match accel {
        Accel::Kvm => Some(PORTABLE_CPU.to_owned()),
        Accel::Tcg => None,
    }
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Mismatch::Format { saved } => write!(
                f,
                "it was saved by an older vmrun (format {saved}, now {FORMAT})"
            ),
            Mismatch::Qemu { saved, now } => write!(f, "it was saved by {saved}; this is {now}"),
            Mismatch::Accel { saved, now } => {
                write!(f, "it was saved under {saved}; this run uses {now}")
            }
            Mismatch::Cpu { saved, now } => {
                let name = |cpu: &Option<String>| match cpu {
                    Some(model) => format!("CPU model {model}"),
                    None => "the host's CPU".to_owned(),
                };
                write!(
                    f,
                    "it was saved with {}; this vmrun resumes {} (bake it again)",
                    name(saved),
                    name(now)
                )
            }
            Mismatch::Size { saved, now } => {
                write!(f, "it was saved with {saved}; this run asks for {now}")
            }
        }
    }
}

impl WarmMachine {
    /// Whether a run with these settings can resume the state.
    pub fn check(
        &self,
        qemu_version: &str,
        accel: Accel,
        size: MachineSize,
    ) -> Result<(), Mismatch> {
        if self.format != FORMAT {
            return Err(Mismatch::Format { saved: self.format });
        }
        if self.qemu_version != qemu_version {
            return Err(Mismatch::Qemu {
                saved: self.qemu_version.clone(),
                now: qemu_version.to_owned(),
            });
        }
        if self.accel != accel {
            return Err(Mismatch::Accel {
                saved: self.accel,
                now: accel,
            });
        }
        if self.cpu != cpu_model(accel) {
            return Err(Mismatch::Cpu {
                saved: self.cpu.clone(),
                now: cpu_model(accel),
            });
        }
        if self.size() != size {
            return Err(Mismatch::Size {
                saved: self.size(),
                now: size,
            });
        }
        Ok(())
    }

    pub fn size(&self) -> MachineSize {
        MachineSize {
            cpus: self.cpus,
            memory_mib: self.memory_mib,
        }
    }
}

/// The monitor's and the guest agent's sockets, in the directory of the QEMU that saves or
/// resumes a warm state.
pub const QMP_SOCKET: &str = "qmp.sock";
pub const AGENT_SOCKET: &str = "qga.sock";

/// What makes a machine a warm one: a QMP monitor, the guest agent's channel and a vmgenid
/// device with a new generation, the sockets in `dir`; the guest's RAM as `ram` (the saving
/// QEMU writes the warm state's file, resuming ones map it copy-on-write); `incoming`, the
/// saved state to resume.
pub fn control(dir: &Path, ram: Ram, incoming: Option<Incoming>) -> Control {
    Control {
        qmp: dir.join(QMP_SOCKET),
        guest_agent: dir.join(AGENT_SOCKET),
        generation: Some(new_generation()),
        ram: Some(ram),
        incoming,
        portable_cpu: true,
    }
}

/// A random RFC 4122 version-4 UUID, for vmgenid.
pub fn new_generation() -> String {
    let mut hex: Vec<char> = crate::random::hex(16).chars().collect();
    hex[12] = '4';
    hex[16] = ['8', '9', 'a', 'b'][hex[16].to_digit(16).unwrap_or(0) as usize % 4];
    let s: String = hex.into_iter().collect();
    format!(
        "{}-{}-{}-{}-{}",
        &s[..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..]
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A TCG machine of 2 cpus and 1024 MiB as saved on QEMU 7.2.22 (also for other modules'
    /// tests).
    pub(crate) fn saved() -> WarmMachine {
        WarmMachine {
            format: FORMAT,
            qemu_version: "QEMU emulator version 7.2.22".into(),
            accel: Accel::Tcg,
            cpu: None,
            cpus: 2,
            memory_mib: 1024,
            args: vec![],
            state_bytes: 1,
        }
    }

    fn size(cpus: u32) -> MachineSize {
        MachineSize {
            cpus,
            memory_mib: 1024,
        }
    }

    #[test]
    fn resumes_only_the_same_machine_on_the_same_qemu() {
        let w = saved();
        assert_eq!(
            w.check("QEMU emulator version 7.2.22", Accel::Tcg, size(2)),
            Ok(())
        );
        let err = w
            .check("QEMU emulator version 8.0.0", Accel::Tcg, size(2))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("saved by QEMU emulator version 7.2.22"),
            "{err}"
        );
        let err = w
            .check("QEMU emulator version 7.2.22", Accel::Kvm, size(2))
            .unwrap_err();
        assert_eq!(err.to_string(), "it was saved under tcg; this run uses kvm");
        let err = w
            .check("QEMU emulator version 7.2.22", Accel::Tcg, size(4))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "it was saved with 2 cpus and 1024 MiB; this run asks for 4 cpus and 1024 MiB"
        );
        let old = WarmMachine {
            format: FORMAT - 1,
            ..saved()
        };
        assert!(matches!(
            old.check("QEMU emulator version 7.2.22", Accel::Tcg, size(2)),
            Err(Mismatch::Format { .. })
        ));
    }

    #[test]
    fn under_kvm_only_a_state_saved_with_the_portable_cpu_resumes() {
        let qemu = "QEMU emulator version 7.2.22";
        let kvm = |cpu: Option<&str>| WarmMachine {
            accel: Accel::Kvm,
            cpu: cpu.map(str::to_owned),
            ..saved()
        };
        assert_eq!(
            kvm(Some(PORTABLE_CPU)).check(qemu, Accel::Kvm, size(2)),
            Ok(())
        );
        // Saved before vmrun named a model: with the saving host's own CPU.
        let err = kvm(None).check(qemu, Accel::Kvm, size(2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "it was saved with the host's CPU; this vmrun resumes CPU model {PORTABLE_CPU} \
                 (bake it again)"
            )
        );
        // An old state without the field still loads.
        let mut old = serde_json::to_value(saved()).unwrap();
        old.as_object_mut().unwrap().remove("cpu");
        let old: WarmMachine = serde_json::from_value(old).unwrap();
        assert_eq!(old.cpu, None);
    }

    #[test]
    fn generations_are_version_4_uuids() {
        let g = new_generation();
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "4");
        assert!("89ab".contains(&g[19..20]), "{g}");
        assert_ne!(g, new_generation());
    }
}
