use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = vmrun::cli::Cli::parse();
    match vmrun::commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            let code = err.exit_code();
            eprintln!("{:?}", miette::Report::new(err));
            ExitCode::from(code)
        }
    }
}
