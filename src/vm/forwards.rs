//! Forwards changed on a VM while it may run: applied at once over QMP (and slirp4netns's
//! API on the `outbound` network), and written to the record and unit so restarts keep them.

use super::{Error, Forward, VmName, Vms};
use crate::net::{Network, isolate, slirp4netns};
use crate::qemu::qmp::Qmp;

impl Vms {
    /// Adds a forward: at once over QMP when the VM runs, and to its record and unit so a
    /// restart keeps it. `Ok(true)` when it was applied to the running VM.
    pub fn add_forward(&self, name: &VmName, forward: Forward) -> Result<bool, Error> {
        let (layout, mut record, _lock) = self.locked(name)?;
        if let Some(existing) = record
            .all_forwards()
            .into_iter()
            .find(|f| f.clashes_with(&forward))
        {
            return Err(Error::ForwardClash {
                forward: forward.to_string(),
                existing: existing.to_string(),
            });
        }
        let running = self.systemctl.show(&layout.unit())?.is_running();
        if running {
            let said = Qmp::connect(&layout.qmp_socket())?.human_monitor(&format!(
                "hostfwd_add net0 {}",
                forward.rule(record.network)
            ))?;
            if !said.is_empty() {
                return Err(Error::ForwardRefused {
                    forward: forward.to_string(),
                    qemu_says: said,
                });
            }
            if record.network == Network::Outbound {
                let api = isolate::api_socket(&layout.runtime);
                slirp4netns::add_forward(&api, &forward)?;
            }
        }
        record.forwards.push(forward);
        self.save_and_reload(&layout, &record)?;
        Ok(running)
    }

    /// Removes a forward from the running VM and from its record and unit.
    pub fn remove_forward(&self, name: &VmName, forward: Forward) -> Result<bool, Error> {
        let (layout, mut record, _lock) = self.locked(name)?;
        if forward == Forward::ssh(record.ssh_port) {
            return Err(Error::SshForward {
                forward: forward.to_string(),
            });
        }
        let Some(index) = record.forwards.iter().position(|f| *f == forward) else {
            return Err(Error::NoSuchForward {
                name: name.to_string(),
                forward: forward.to_string(),
                existing: record.forwards.iter().map(Forward::to_string).collect(),
            });
        };
        let running = self.systemctl.show(&layout.unit())?.is_running();
        if running {
            if record.network == Network::Outbound {
                let api = isolate::api_socket(&layout.runtime);
                slirp4netns::remove_forward(&api, &forward)?;
            }
            let said = Qmp::connect(&layout.qmp_socket())?.human_monitor(&format!(
                "hostfwd_remove net0 {}",
                forward.removal_rule(record.network)
            ))?;
            // "not found": QEMU no longer has it; the record is what is left to fix.
            if !said.ends_with("removed") && !said.ends_with("not found") {
                return Err(Error::ForwardRefused {
                    forward: forward.to_string(),
                    qemu_says: said,
                });
            }
        }
        record.forwards.remove(index);
        self.save_and_reload(&layout, &record)?;
        Ok(running)
    }
}
