//! One file per command: each turns raw arguments into validated values and calls the engine.

mod bake;
mod images;
mod seed;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::error::Error;

/// Runs the parsed command line; `Ok` carries the exit code to return (a guest command's own).
pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Seed(args) => seed::run(args),
        Command::Bake(args) => bake::run(args),
        Command::Images(args) => images::run(args),
        other => Err(Error::NotBuilt(other.name())),
    }
}
