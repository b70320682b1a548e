//! `vmrun open BUNDLE [-- COMMAND...]` and `vmrun open --info [--json] BUNDLE`.

use std::process::ExitCode;

use crate::cli::OpenArgs;
use crate::error::Error;
use crate::paths::Home;
use crate::ui::Ui;
use crate::{bundle, signals, tools};

pub(super) fn run(args: OpenArgs) -> Result<ExitCode, Error> {
    let home = Home::from_env()?;
    if args.info {
        let (sealed, verified) = crate::open::info(&args.bundle, &home)?;
        match args.json {
            true => println!("{:#}", bundle::info_json(&sealed, verified)),
            false => print!("{}", bundle::info_text(&sealed, verified)),
        }
        // A bundle that would be refused says so in its exit code too.
        return Ok(match verified {
            bundle::Verified::Mismatch => ExitCode::from(crate::exit_code::BAD_INPUT),
            _ => ExitCode::SUCCESS,
        });
    }
    signals::install();
    let qemu = tools::find("qemu-system-x86_64")?;
    let ui = Ui::for_stderr();
    let sink = |event| ui.render(event);
    let code = crate::open::open(&args.bundle, &args.command, &home, &qemu, &sink)?;
    Ok(ExitCode::from((code & 0xff) as u8))
}
