//! `vmrun isolate` (hidden): the launcher that `vmrun test`, bakes and persistent VMs' units
//! start instead of QEMU for the `outbound` network. It becomes QEMU, or fails before.

use std::process::ExitCode;

use crate::cli::IsolateArgs;
use crate::error::Error;
use crate::net::isolate::{self, Launch};

pub(super) fn run(args: IsolateArgs) -> Result<ExitCode, Error> {
    let mut qemu = args.qemu.into_iter();
    let program = qemu.next().expect("clap requires QEMU").into();
    let launch = Launch {
        dir: args.dir,
        forwards: args.forward,
        qemu: program,
        qemu_args: qemu.collect(),
    };
    Err(isolate::exec(&launch).into())
}
