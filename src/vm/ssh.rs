//! `vmrun vm ssh`: the system's ssh with the files `crate::ssh::ClientFiles` writes for the
//! VM at create: an ssh_config (StrictHostKeyChecking yes, IdentitiesOnly yes, vmrun's client
//! key, the forwarded port) and a known_hosts of one line, the key the image was baked with.
//! A VM that is still booting is waited for first (see `super::readiness`), so `vm ssh`
//! right after `vm start --no-wait` logs in instead of failing.

use std::process::Command;

use super::{BOOT_TIMEOUT, Error, VmName, Vms, readiness};
use crate::events::{Event, Sink};
use crate::ssh::{ClientFiles, system_ssh_args};
use crate::tools;

impl Vms {
    /// The `ssh` command into the running VM, pinned to its image's host key, once the guest
    /// answers SSH.
    pub fn ssh_command(
        &self,
        name: &VmName,
        command: &[String],
        sink: Sink,
    ) -> Result<Command, Error> {
        let (layout, record) = self.existing(name)?;
        self.require_running(&layout)?;
        if !readiness::ssh_answers(record.ssh_port) {
            sink(Event::Notice(format!(
                "VM `{name}` is still booting: waiting up to {}s for its SSH",
                BOOT_TIMEOUT.as_secs()
            )));
            self.wait_for_ssh(&layout, &record, sink)?;
        }
        let mut ssh = Command::new(tools::find("ssh")?);
        ssh.args(system_ssh_args(
            &layout.ssh_dir().join(ClientFiles::SSH_CONFIG),
            command,
        ));
        Ok(ssh)
    }
}
