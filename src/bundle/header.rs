//! What a bundle says about the run it captured, and the bounds a header must keep before
//! anything in it is believed or shown.

use serde::{Deserialize, Serialize};

use super::error::Fault;
use super::format::Member;
use crate::framed::{self, check_files, shown};
use crate::net::Network;
use crate::qemu::args::Accel;
use crate::store::transfer::format::is_store_key;

const MAX_TEXT: usize = 200;
const MAX_ARGS: usize = 4096;
const MAX_COMMAND_BYTES: usize = 256 << 10;
const MAX_PHASES: usize = 8;
const CPUS: std::ops::RangeInclusive<u32> = 1..=64;
const MEMORY_MIB: std::ops::RangeInclusive<u64> = 64..=262_144;
/// The phases of a run whose times a bundle records.
const PHASES: [&str; 4] = ["boot", "sync", "command", "artifacts"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// The run's id: 8 lowercase hex digits.
    pub run_id: String,
    pub image: ImageRef,
    /// The first line of `qemu --version` on the machine that captured it.
    pub qemu_version: String,
    pub machine: MachineRecord,
    /// The run's command, one argument an item.
    pub command: Vec<String>,
    /// How the run ended, in vmrun's words ("exit 3", "timed out after 5s").
    pub outcome: String,
    pub exit_code: Option<i32>,
    /// When it was captured: UTC, RFC 3339 to the second.
    pub captured_at: String,
    pub phases: Vec<PhaseTime>,
    pub files: Vec<FileEntry>,
}

/// The image the run used: its store key (which the seal's key is found by) and how the run
/// named it (a name in its store, or the source it was baked from), to say what to import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRef {
    pub key: String,
    pub name: String,
}

/// The machine the state was saved from: a resume needs the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineRecord {
    pub accel: Accel,
    pub cpus: u32,
    pub memory_mib: u64,
    pub boot: BootKind,
    pub network: Network,
    /// The VM generation id (vmgenid) the guest had: the resume keeps it, so the guest sees
    /// no new generation.
    pub generation: String,
}

/// Whether the run booted the image, or resumed its warm state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootKind {
    Cold,
    Warm,
}

impl BootKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BootKind::Cold => "cold",
            BootKind::Warm => "warm",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseTime {
    pub phase: String,
    pub seconds: f64,
}

pub type FileEntry = framed::FileEntry<Member>;

impl Header {
    /// Whether every field is within its bounds: the faults name the field and show the bad
    /// value, escaped and cut short.
    pub fn check(&self) -> Result<(), Fault> {
        let bad = |field: &str, value: &str, what: &str| {
            Err(Fault::Header {
                what: format!("{field} `{}` {what}", shown(value)),
            })
        };
        if !(self.run_id.len() == 8 && is_lower_hex(&self.run_id)) {
            return bad("run_id", &self.run_id, "is not 8 lowercase hex digits");
        }
        if !is_store_key(&self.image.key) {
            return bad(
                "image.key",
                &self.image.key,
                "is not 64 lowercase hex digits",
            );
        }
        for (field, text) in [
            ("image.name", &self.image.name),
            ("qemu_version", &self.qemu_version),
            ("outcome", &self.outcome),
        ] {
            if text.chars().count() > MAX_TEXT || text.chars().any(char::is_control) {
                return bad(
                    field,
                    text,
                    "is longer than 200 characters or has control characters",
                );
            }
        }
        let machine = &self.machine;
        if !CPUS.contains(&machine.cpus) {
            return bad("machine.cpus", &machine.cpus.to_string(), "is not 1 to 64");
        }
        if !MEMORY_MIB.contains(&machine.memory_mib) {
            let value = machine.memory_mib.to_string();
            return bad("machine.memory_mib", &value, "is not 64 to 262144");
        }
        if !is_uuid(&machine.generation) {
            let what = "is not a UUID such as 6f1c2a9e-0b4d-4c3e-9a7f-2d5e8b1c0a34";
            return bad("machine.generation", &machine.generation, what);
        }
        let bytes: usize = self.command.iter().map(String::len).sum();
        if self.command.len() > MAX_ARGS || bytes > MAX_COMMAND_BYTES {
            let value = format!("{} arguments, {bytes} bytes", self.command.len());
            return bad("command", &value, "is more than 4096 arguments or 256 KiB");
        }
        if !is_rfc3339_utc(&self.captured_at) {
            let what = "is not a UTC time such as 2026-12-02T07:10:00Z";
            return bad("captured_at", &self.captured_at, what);
        }
        if self.phases.len() > MAX_PHASES {
            return bad("phases", &self.phases.len().to_string(), "is more than 8");
        }
        for time in &self.phases {
            if !PHASES.contains(&time.phase.as_str()) {
                return bad(
                    "phases",
                    &time.phase,
                    "is not boot, sync, command or artifacts",
                );
            }
            if !(time.seconds.is_finite() && time.seconds >= 0.0) {
                let what = "is not a finite number of seconds, at least 0";
                return bad("phases", &time.seconds.to_string(), what);
            }
        }
        check_files(&self.files).map_err(|what| Fault::Header { what })?;
        let members: Vec<Member> = self.files.iter().map(|f| f.name).collect();
        if members != Member::ALL {
            let listed: Vec<&str> = members.iter().map(|m| m.name()).collect();
            return bad(
                "files",
                &listed.join(", "),
                "is not `disk.qcow2` then `state`",
            );
        }
        Ok(())
    }

    /// The size of the files together.
    pub fn total_size(&self) -> u64 {
        framed::total_size(&self.files)
    }
}

/// 8-4-4-4-12 hex digits, as QEMU takes a vmgenid `guid`.
fn is_uuid(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `YYYY-MM-DDTHH:MM:SSZ` with the fields in their ranges, as [`crate::utc::UtcTime`] writes.
fn is_rfc3339_utc(text: &str) -> bool {
    let b = text.as_bytes();
    let shape = b.len() == 20
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'Z',
            _ => c.is_ascii_digit(),
        });
    let field = |range: std::ops::Range<usize>| text[range].parse::<u32>().unwrap_or(u32::MAX);
    shape
        && (1..=12).contains(&field(5..7))
        && (1..=31).contains(&field(8..10))
        && field(11..13) < 24
        && field(14..16) < 60
        && field(17..19) < 61
}
