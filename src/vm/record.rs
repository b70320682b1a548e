//! `vm.json`: what a persistent VM is made of. The unit is rendered from it, so it is the one
//! place a forward added at run time is remembered.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::net::Network;
use crate::net::forward::Forward;
use crate::path_error::PathError;
use crate::qemu::args::{Accel, MachineSize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRecord {
    pub name: String,
    /// The baked image's name, as given at create (a later bake may move the name).
    pub image: String,
    /// The store entry the disk's backing file is in, which the VM holds (see
    /// `super::image_reference`).
    pub image_key: String,
    pub cpus: u32,
    pub memory_mib: u64,
    /// The accelerator chosen at create, kept so the VM runs the same way every time.
    pub accel: Accel,
    /// Host port on 127.0.0.1 forwarded to the guest's SSH, chosen free at create.
    pub ssh_port: u16,
    /// The user's forwards, beside the SSH one.
    pub forwards: Vec<Forward>,
    /// What the guest may reach. VMs created before vmrun isolated guests have none
    /// recorded and keep the network they were made with.
    #[serde(default = "network_before_isolation")]
    pub network: Network,
    pub qemu: PathBuf,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// Made from the image's warm state: the disk is an overlay on the warm layer, and the
    /// machine has the warm machine's devices at every start. None: made from the baked disk
    /// (also every VM made before vmrun resumed warm states).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<WarmStart>,
}

/// A VM made from a warm state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmStart {
    /// The next start resumes the warm state instead of booting: from create until a start
    /// has resumed it (or failed to, and booted).
    pub resume: bool,
}

impl VmRecord {
    pub fn size(&self) -> MachineSize {
        MachineSize {
            cpus: self.cpus,
            memory_mib: self.memory_mib,
        }
    }
}

fn network_before_isolation() -> Network {
    Network::Host
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Io(#[from] PathError),
    #[error("{} is damaged: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
}

impl VmRecord {
    pub fn load(path: &Path) -> Result<VmRecord, Error> {
        let text = fs::read_to_string(path).map_err(PathError::at("read", path))?;
        serde_json::from_str(&text).map_err(|e| Error::Damaged {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Writes the record whole or not at all.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let json = serde_json::to_string_pretty(self).expect("a record serializes") + "\n";
        Ok(crate::atomic_file::write(path, json.as_bytes())?)
    }

    /// Every forward QEMU sets up, SSH's first.
    pub fn all_forwards(&self) -> Vec<Forward> {
        std::iter::once(Forward::ssh(self.ssh_port))
            .chain(self.forwards.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> VmRecord {
        VmRecord {
            name: "db".into(),
            image: "base".into(),
            image_key: "k".into(),
            cpus: 2,
            memory_mib: 1024,
            accel: Accel::Tcg,
            ssh_port: 40022,
            forwards: vec!["8080:80".parse().unwrap()],
            network: Network::Outbound,
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            created: 1,
            warm: None,
        }
    }

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.json");
        record().save(&path).unwrap();
        assert_eq!(VmRecord::load(&path).unwrap(), record());
        let value: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(value["image"], "base");
        assert_eq!(value["accel"], "tcg");
        assert_eq!(
            value["forwards"][0],
            serde_json::json!({
                "protocol": "tcp", "address": "127.0.0.1", "host": 8080, "guest": 80
            })
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["vm.json"], "only the record, no temporary file");
    }

    #[test]
    fn ssh_comes_first() {
        let rules: Vec<String> = record()
            .all_forwards()
            .iter()
            .map(|f| f.rule(Network::Host))
            .collect();
        assert_eq!(rules, ["tcp:127.0.0.1:40022-:22", "tcp:127.0.0.1:8080-:80"]);
    }

    #[test]
    fn a_record_from_before_isolation_keeps_the_hosts_network() {
        let mut value = serde_json::to_value(record()).unwrap();
        value.as_object_mut().unwrap().remove("network");
        let old: VmRecord = serde_json::from_value(value).unwrap();
        assert_eq!(old.network, Network::Host);
    }

    #[test]
    fn a_record_from_before_warm_starts_boots_cold() {
        let value = serde_json::to_value(record()).unwrap();
        assert!(value.get("warm").is_none(), "{value}");
        let old: VmRecord = serde_json::from_value(value).unwrap();
        assert_eq!(old.warm, None);
        let warm = VmRecord {
            warm: Some(WarmStart { resume: true }),
            ..record()
        };
        let value = serde_json::to_value(&warm).unwrap();
        assert_eq!(value["warm"], serde_json::json!({"resume": true}));
        assert_eq!(serde_json::from_value::<VmRecord>(value).unwrap(), warm);
    }

    #[test]
    fn damage_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.json");
        fs::write(&path, "{\"name\": 1}").unwrap();
        assert!(matches!(VmRecord::load(&path), Err(Error::Damaged { .. })));
    }
}
