//! What `vm list` and `vm status` show: the state from systemd and, while QEMU runs, from the
//! guest's SSH (`booting` until it answers); the guest's addresses from its agent; the
//! record's image, size and forwards.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::systemd::UnitState;
use super::{Error, Forward, VmName, Vms, names, readiness};
use crate::qemu::qga::GuestAgent;

/// How long `list` and `status` wait for each guest agent.
const AGENT_TIMEOUT: Duration = Duration::from_secs(3);

/// A VM's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmState {
    /// QEMU runs and the guest answers SSH: the VM can be used.
    Running,
    /// QEMU runs, but the guest's SSH does not answer yet.
    Booting,
    Starting,
    Stopping,
    Stopped,
    /// QEMU exited with an error, or a stop timed out and systemd killed it.
    Failed,
    /// The record exists but systemd has no unit for it (its file was removed by hand).
    NoUnit,
}

impl VmState {
    /// The state systemd knows: `Running` while QEMU runs, whether or not the guest is up.
    pub(super) fn of(unit: &UnitState) -> VmState {
        if unit.load_state == "not-found" {
            return VmState::NoUnit;
        }
        match unit.active_state.as_str() {
            "active" | "reloading" => VmState::Running,
            "activating" => VmState::Starting,
            "deactivating" => VmState::Stopping,
            "failed" => VmState::Failed,
            _ => VmState::Stopped,
        }
    }

    /// `Running` only if the guest answers SSH (asked only then), else `Booting`.
    fn unless_booting(self, ssh_answers: impl FnOnce() -> bool) -> VmState {
        match self {
            VmState::Running if !ssh_answers() => VmState::Booting,
            other => other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Running => "running",
            VmState::Booting => "booting",
            VmState::Starting => "starting",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
            VmState::Failed => "failed",
            VmState::NoUnit => "no-unit",
        }
    }
}

/// One VM as `vm list` and `vm status` show it (also their `--json` form).
#[derive(Debug, Clone, Serialize)]
pub struct VmStatus {
    pub name: String,
    pub state: VmState,
    /// The guest's addresses (not loopback), from the guest agent.
    pub addresses: Vec<String>,
    /// Why `addresses` is empty although the VM runs: the agent did not answer.
    pub agent_error: Option<String>,
    pub forwards: Vec<Forward>,
    pub ssh_port: u16,
    pub image: String,
    pub cpus: u32,
    /// As `--memory` takes it, e.g. `1GiB`.
    pub memory: String,
    pub memory_mib: u64,
    /// Whether the user manager starts it when it starts.
    pub enabled: bool,
    pub unit: String,
}

impl Vms {
    /// Every VM of this home, by name.
    pub fn list(&self) -> Result<Vec<VmStatus>, Error> {
        names(&self.home)?
            .iter()
            .map(|name| self.status(name))
            .collect()
    }

    pub fn status(&self, name: &VmName) -> Result<VmStatus, Error> {
        let (layout, record) = self.existing(name)?;
        let unit = self.systemctl.show(&layout.unit())?;
        let state = VmState::of(&unit).unless_booting(|| readiness::ssh_answers(record.ssh_port));
        let (addresses, agent_error) = match state {
            VmState::Running | VmState::Booting => match guest_addresses(&layout.agent_socket()) {
                Ok(addresses) => (addresses, None),
                Err(e) => (Vec::new(), Some(e.to_string())),
            },
            _ => (Vec::new(), None),
        };
        Ok(VmStatus {
            name: record.name,
            state,
            addresses,
            agent_error,
            forwards: record.forwards,
            ssh_port: record.ssh_port,
            image: record.image,
            cpus: record.cpus,
            memory: memory_text(record.memory_mib),
            memory_mib: record.memory_mib,
            enabled: unit.unit_file_state == "enabled",
            unit: layout.unit(),
        })
    }
}

/// The guest's addresses, loopback left out.
fn guest_addresses(agent_socket: &Path) -> Result<Vec<String>, Error> {
    let interfaces = GuestAgent::connect(agent_socket, AGENT_TIMEOUT)?.network_interfaces()?;
    Ok(interfaces
        .into_iter()
        .filter(|i| i.name != "lo")
        .flat_map(|i| i.addresses)
        .map(|a| a.address)
        .filter(|a| {
            a.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .collect())
}

fn memory_text(mib: u64) -> String {
    if mib.is_multiple_of(1024) {
        format!("{}GiB", mib / 1024)
    } else {
        format!("{mib}MiB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_from_systemd() {
        let unit = |load: &str, active: &str| UnitState {
            load_state: load.into(),
            active_state: active.into(),
            ..Default::default()
        };
        assert_eq!(VmState::of(&unit("loaded", "active")), VmState::Running);
        assert_eq!(
            VmState::of(&unit("loaded", "activating")),
            VmState::Starting
        );
        assert_eq!(
            VmState::of(&unit("loaded", "deactivating")),
            VmState::Stopping
        );
        assert_eq!(VmState::of(&unit("loaded", "inactive")), VmState::Stopped);
        assert_eq!(VmState::of(&unit("loaded", "failed")), VmState::Failed);
        assert_eq!(VmState::of(&unit("not-found", "inactive")), VmState::NoUnit);
        assert_eq!(serde_json::to_value(VmState::NoUnit).unwrap(), "no-unit");
    }

    #[test]
    fn running_means_ssh_answers_and_only_a_running_vm_is_asked() {
        assert_eq!(VmState::Running.unless_booting(|| true), VmState::Running);
        assert_eq!(VmState::Running.unless_booting(|| false), VmState::Booting);
        for other in [VmState::Starting, VmState::Stopped, VmState::Failed] {
            assert_eq!(other.unless_booting(|| panic!("asked")), other);
        }
        assert_eq!(serde_json::to_value(VmState::Booting).unwrap(), "booting");
    }

    #[test]
    fn memory_for_people() {
        assert_eq!(memory_text(1024), "1GiB");
        assert_eq!(memory_text(1536), "1536MiB");
    }
}
