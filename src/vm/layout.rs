//! Where one persistent VM's files live: its state (record, disk, logs, pinned host key) in
//! `state/vms/NAME`, its sockets in `run/vms/NAME`, its unit beside the user's other units.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::name::VmName;
use crate::paths::Home;

/// The longest path a unix socket address holds (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// The record's file name in the state directory: a directory holding one is a VM.
pub const RECORD: &str = "vm.json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmLayout {
    pub name: VmName,
    /// `state/vms/NAME` (0700).
    pub state: PathBuf,
    /// `run/vms/NAME` (0700): made by the unit before QEMU starts, gone after a reboot.
    pub runtime: PathBuf,
    /// `vmrun-NAME.service` in the user's unit directory.
    pub unit_file: PathBuf,
}

impl VmLayout {
    pub fn new(home: &Home, unit_dir: &Path, name: &VmName) -> VmLayout {
        VmLayout {
            name: name.clone(),
            state: home.vms().join(name.as_str()),
            runtime: home.runtime.join("vms").join(name.as_str()),
            unit_file: unit_dir.join(unit_name(name)),
        }
    }

    pub fn unit(&self) -> String {
        unit_name(&self.name)
    }
    pub fn record(&self) -> PathBuf {
        self.state.join(RECORD)
    }
    /// Taken by every command that changes the VM, so they do not interleave.
    pub fn lock(&self) -> PathBuf {
        self.state.join(".lock")
    }
    pub fn disk(&self) -> PathBuf {
        self.state.join("disk.qcow2")
    }
    /// The guest's serial console, written anew (and capped) at each start.
    pub fn serial_log(&self) -> PathBuf {
        self.state.join("serial.log")
    }
    /// QEMU's own messages, appended across starts.
    pub fn qemu_log(&self) -> PathBuf {
        self.state.join("qemu.log")
    }
    /// ssh_config and known_hosts (the pinned host key) for `vmrun vm ssh`.
    pub fn ssh_dir(&self) -> PathBuf {
        self.state.join("ssh")
    }
    /// Named as a warm machine's are, in the runtime directory: a VM made from a warm state
    /// runs the warm machine's control with its sockets there.
    pub fn qmp_socket(&self) -> PathBuf {
        self.runtime.join(crate::warm::machine::QMP_SOCKET)
    }
    pub fn agent_socket(&self) -> PathBuf {
        self.runtime.join(crate::warm::machine::AGENT_SOCKET)
    }

    /// The first socket path too long for a unix socket address, if any.
    pub fn overlong_socket(&self) -> Option<PathBuf> {
        [
            self.qmp_socket(),
            self.agent_socket(),
            crate::net::isolate::api_socket(&self.runtime),
        ]
        .into_iter()
        .find(|p| p.as_os_str().as_bytes().len() > MAX_SOCKET_PATH)
    }
}

pub fn unit_name(vm: &VmName) -> String {
    format!("vmrun-{vm}.service")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places() {
        let home = Home::under(Path::new("/v"));
        let db = VmName::new("db").unwrap();
        let l = VmLayout::new(&home, Path::new("/h/.config/systemd/user"), &db);
        assert_eq!(l.record(), Path::new("/v/state/vms/db/vm.json"));
        assert_eq!(l.qmp_socket(), Path::new("/v/run/vms/db/qmp.sock"));
        assert_eq!(
            l.unit_file,
            Path::new("/h/.config/systemd/user/vmrun-db.service")
        );
        assert_eq!(l.unit(), "vmrun-db.service");
        assert_eq!(l.overlong_socket(), None);
        let deep = Home::under(&Path::new("/v").join("d".repeat(90)));
        let l = VmLayout::new(&deep, Path::new("/u"), &db);
        assert_eq!(l.overlong_socket(), Some(l.qmp_socket()));
    }
}
