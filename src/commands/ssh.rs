//! `vmrun ssh RUN_ID [-- COMMAND...]`: the system ssh into a live run's VM, with the run's
//! ssh_config (pinned host key, vmrun's client key).

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use crate::cli::SshArgs;
use crate::error::Error;
use crate::paths::Home;
use crate::ssh::system_ssh_args;
use crate::tools;

pub(super) fn run(args: SshArgs) -> Result<ExitCode, Error> {
    let runs = Home::from_env()?.runs();
    let Some(config) = crate::run::ssh_config(&runs, &args.run_id) else {
        let live = crate::run::run_ids(&runs);
        let known = if live.is_empty() {
            "none".to_owned()
        } else {
            live.join(", ")
        };
        return Err(Error::Usage(format!(
            "no live run `{}` with a reachable VM (live runs: {known}); \
             runs stay up only while `vmrun test` runs, e.g. with --keep",
            args.run_id
        )));
    };
    let mut command = Command::new(tools::find("ssh")?);
    command.args(system_ssh_args(&config, &args.command));
    let source = command.exec();
    Err(Error::Exec {
        program: "ssh",
        source,
    })
}
