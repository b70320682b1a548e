//! One file per command: each turns raw arguments into validated values and calls the engine.

mod bake;
mod doctor;
mod images;
mod isolate;
mod open;
mod seed;
mod ssh;
mod test;
mod vm;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::error::Error;
use crate::image::source::ImageSource;

/// Runs the parsed command line; `Ok` carries the exit code to return (a guest command's own).
pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    // The launcher becomes QEMU: no reaping, and no thread may start before it forks.
    if let Command::Isolate(args) = cli.command {
        return isolate::run(args);
    }
    // Started by rsync for each copy in or out of a run: nothing else to do, and quickly.
    if let Command::RsyncRelay(args) = cli.command {
        return Ok(ExitCode::from(crate::ssh::relay::forward(
            &args.socket,
            &args.remote,
        )));
    }
    reap_left_behind();
    match cli.command {
        Command::Seed(args) => seed::run(args),
        Command::Bake(args) => bake::run(args),
        Command::Images(args) => images::run(args),
        Command::Test(args) => test::run(args),
        Command::Ssh(args) => ssh::run(args),
        Command::Open(args) => open::run(args),
        Command::Vm(command) => vm::run(command),
        Command::Doctor(args) => doctor::run(args),
        Command::Isolate(_) | Command::RsyncRelay(_) => unreachable!("handled above"),
    }
}

/// Every vmrun call first removes what a killed vmrun left: its runs (their QEMU died with
/// it), and the temporary directories of its bakes and warm captures.
fn reap_left_behind() {
    let Ok(home) = crate::paths::Home::from_env() else {
        return;
    };
    for id in crate::run::reap_orphans(&home.runs()) {
        eprintln!("note: removed run {id}, left by a vmrun that was killed");
    }
    let store = crate::store::Store::new(&home);
    let leftovers = [store.reap(), ImageSource::reap(&home.sources())].concat();
    for name in leftovers {
        eprintln!("note: removed {name}, left by a bake whose vmrun was killed");
    }
    for name in crate::qemu::accel::probe::reap(&home.host_facts()) {
        eprintln!("note: removed {name}, left by a KVM check whose vmrun was killed");
    }
}
