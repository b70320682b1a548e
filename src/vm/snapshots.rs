//! Snapshots of a whole VM (RAM, devices, disk): QEMU's internal snapshots, stored in the
//! VM's own disk. A running VM's are taken, loaded and listed over QMP; a stopped VM's are
//! listed and deleted with qemu-img.

use std::process::Command;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::{Error, SnapshotTag, VmLayout, VmName, Vms};
use crate::events::{self, Sink};
use crate::qemu::qmp::Qmp;
use crate::tools;

/// savevm/loadvm write or read all of the guest's RAM.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);

/// One snapshot in the VM's disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub tag: String,
    /// Bytes of RAM and device state saved with it (0 for a disk-only snapshot).
    pub vm_state_size: u64,
    /// When it was taken, seconds since the Unix epoch.
    pub date: u64,
    /// The guest's running time when it was taken, in seconds.
    pub vm_clock_seconds: u64,
}

impl Vms {
    /// Saves the running VM's RAM, devices and disk as snapshot `tag` (replacing one of that
    /// name).
    pub fn save_snapshot(&self, name: &VmName, tag: &SnapshotTag, sink: Sink) -> Result<(), Error> {
        let (layout, _record, _lock) = self.locked(name)?;
        self.require_running(&layout)?;
        let mut qmp = snapshot_monitor(&layout)?;
        events::phase(sink, &format!("save snapshot {tag}"), || {
            hmp_checked(&mut qmp, &format!("savevm {tag}"))
        })
    }

    /// Returns the running VM to snapshot `tag`.
    pub fn load_snapshot(&self, name: &VmName, tag: &SnapshotTag, sink: Sink) -> Result<(), Error> {
        let (layout, _record, _lock) = self.locked(name)?;
        self.require_running(&layout)?;
        let mut qmp = snapshot_monitor(&layout)?;
        // A failed loadvm leaves the guest paused: make sure the tag exists first.
        let existing = snapshots_of_running(&mut qmp)?;
        if !existing.iter().any(|s| s.tag == tag.as_str()) {
            return Err(no_such_snapshot(name, tag, &existing));
        }
        events::phase(sink, &format!("load snapshot {tag}"), || {
            let loaded = hmp_checked(&mut qmp, &format!("loadvm {tag}"));
            if loaded.is_err() {
                let _ = qmp.execute("cont", None);
            }
            loaded
        })
    }

    pub fn delete_snapshot(&self, name: &VmName, tag: &SnapshotTag) -> Result<(), Error> {
        let (layout, _record, _lock) = self.locked(name)?;
        let existing = self.snapshots_at(&layout)?;
        if !existing.iter().any(|s| s.tag == tag.as_str()) {
            return Err(no_such_snapshot(name, tag, &existing));
        }
        if self.systemctl.show(&layout.unit())?.is_running() {
            hmp_checked(&mut snapshot_monitor(&layout)?, &format!("delvm {tag}"))
        } else {
            let mut qemu_img = Command::new(tools::find("qemu-img")?);
            qemu_img
                .args(["snapshot", "-d", tag.as_str()])
                .arg(layout.disk());
            crate::external::run(&mut qemu_img)?;
            Ok(())
        }
    }

    pub fn snapshots(&self, name: &VmName) -> Result<Vec<Snapshot>, Error> {
        let (layout, _record) = self.existing(name)?;
        self.snapshots_at(&layout)
    }

    fn snapshots_at(&self, layout: &VmLayout) -> Result<Vec<Snapshot>, Error> {
        if self.systemctl.show(&layout.unit())?.is_running() {
            return snapshots_of_running(&mut Qmp::connect(&layout.qmp_socket())?);
        }
        // Stopped: the disk says. -U: a VM started meanwhile holds its lock; reading is safe.
        let mut qemu_img = Command::new(tools::find("qemu-img")?);
        qemu_img
            .args(["info", "-U", "--output=json"])
            .arg(layout.disk());
        let out = crate::external::run(&mut qemu_img)?;
        let info: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        Ok(parse_snapshots(info.get("snapshots")))
    }
}

fn snapshot_monitor(layout: &VmLayout) -> Result<Qmp, Error> {
    let mut qmp = Qmp::connect(&layout.qmp_socket())?;
    qmp.set_timeout(SNAPSHOT_TIMEOUT);
    Ok(qmp)
}

/// A human monitor command whose only output is an error message.
fn hmp_checked(qmp: &mut Qmp, command: &str) -> Result<(), Error> {
    let said = qmp.human_monitor(command)?;
    match said.is_empty() {
        true => Ok(()),
        false => Err(Error::Snapshot {
            command: command.to_owned(),
            qemu_says: said,
        }),
    }
}

fn snapshots_of_running(qmp: &mut Qmp) -> Result<Vec<Snapshot>, Error> {
    let blocks = qmp.execute("query-block", None)?;
    let disk = blocks
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|b| b.pointer("/inserted/image"));
    Ok(parse_snapshots(
        disk.and_then(|image| image.get("snapshots")),
    ))
}

/// QEMU's SnapshotInfo list (QMP `query-block` and `qemu-img info` use the same fields).
fn parse_snapshots(list: Option<&Value>) -> Vec<Snapshot> {
    let number = |s: &Value, key: &str| s.get(key).and_then(Value::as_u64).unwrap_or(0);
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| Snapshot {
            tag: s
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            vm_state_size: number(s, "vm-state-size"),
            date: number(s, "date-sec"),
            vm_clock_seconds: number(s, "vm-clock-sec"),
        })
        .collect()
}

fn no_such_snapshot(name: &VmName, tag: &SnapshotTag, existing: &[Snapshot]) -> Error {
    Error::NoSuchSnapshot {
        name: name.to_string(),
        tag: tag.to_string(),
        existing: existing.iter().map(|s| s.tag.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn snapshot_info() {
        let info = json!([{
            "id": "1", "name": "before", "vm-state-size": 300000,
            "date-sec": 1700000000, "date-nsec": 5, "vm-clock-sec": 42, "vm-clock-nsec": 1
        }]);
        assert_eq!(
            parse_snapshots(Some(&info)),
            [Snapshot {
                tag: "before".into(),
                vm_state_size: 300000,
                date: 1700000000,
                vm_clock_seconds: 42
            }]
        );
        assert!(parse_snapshots(None).is_empty());
    }
}
