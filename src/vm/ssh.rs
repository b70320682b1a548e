//! `vmrun vm ssh`: the system's ssh with the files `crate::ssh::ClientFiles` writes for the
//! VM at create: an ssh_config (StrictHostKeyChecking yes, IdentitiesOnly yes, vmrun's client
//! key, the forwarded port) and a known_hosts of one line, the key the image was baked with.
//! A VM that is still booting is waited for first (see `super::readiness`), so `vm ssh`
//! right after `vm start --no-wait` logs in instead of failing.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use super::{BOOT_TIMEOUT, Error, VmName, Vms, readiness};
use crate::events::{Event, Sink};
use crate::ssh::{ClientFiles, GUEST_HOST, sh_quote};
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
        ssh.args(args(
            &layout.ssh_dir().join(ClientFiles::SSH_CONFIG),
            command,
        ));
        Ok(ssh)
    }
}

/// ssh's arguments. `command` is one remote command, each word quoted for the guest's shell
/// so it arrives as the same argv.
pub fn args(ssh_config: &Path, command: &[String]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["-F".into(), ssh_config.as_os_str().to_owned()];
    // `--`: nothing after it is taken as an option of ssh's.
    args.extend(["--".into(), GUEST_HOST.into()]);
    args.extend(command.iter().map(|word| sh_quote(word).into()));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_quoted_words() {
        let command = ["uname".to_owned(), "-a".to_owned(), "it's $HOME".to_owned()];
        let text: Vec<String> = args(Path::new("/s/db/ssh/ssh_config"), &command)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            text.join(" "),
            "-F /s/db/ssh/ssh_config -- guest 'uname' '-a' 'it'\\''s $HOME'"
        );
    }
}
