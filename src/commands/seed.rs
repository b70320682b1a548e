//! `vmrun seed`: a drop-in for `cloud-localds`.

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use crate::cli::SeedArgs;
use crate::error::Error;
use crate::seed::{self, SeedIso};

pub(super) fn run(args: SeedArgs) -> Result<ExitCode, Error> {
    let mut seed = SeedIso::new(read(&args.user_data)?);
    if let Some(path) = &args.meta_data {
        seed = seed.meta_data(read(path)?);
    }
    if let Some(path) = &args.network_config {
        seed = seed.network_config(read(path)?);
    }
    if let Some(path) = &args.vendor_data {
        seed = seed.vendor_data(read(path)?);
    }
    seed.write_to(&args.output)?;
    Ok(ExitCode::SUCCESS)
}

fn read(path: &Path) -> Result<Vec<u8>, seed::Error> {
    fs::read(path).map_err(|source| seed::Error::ReadInput {
        path: path.to_owned(),
        source,
    })
}
