//! One file per command: each turns raw arguments into validated values and calls the engine.

use std::process::ExitCode;

use crate::cli::Cli;
use crate::error::Error;

/// Runs the parsed command line; `Ok` carries the exit code to return (a guest command's own).
pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        other => Err(Error::NotBuilt(other.name())),
    }
}
