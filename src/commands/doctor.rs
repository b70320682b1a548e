//! `vmrun doctor [--json]`: one line per check (or a JSON array), exit 1 when a check failed.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cli::DoctorArgs;
use crate::doctor::{self, Host};
use crate::error::Error;
use crate::paths::Home;
use crate::qemu::accel::{AccelChoice, KVM_DEVICE};
use crate::ui::Ui;

pub(super) fn run(args: DoctorArgs) -> Result<ExitCode, Error> {
    let ui = Ui::for_stderr();
    let sink = |event| ui.render(event);
    let host = Host {
        home: Home::from_env()?,
        accel: AccelChoice::from_env().map_err(|e| e.to_string()),
        kvm_device: PathBuf::from(KVM_DEVICE),
        runtime_dir: std::env::var_os("XDG_RUNTIME_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from),
        sink: &sink,
    };
    let findings = doctor::examine(&host);
    if args.json {
        let json = serde_json::Value::Array(findings.iter().map(|f| f.to_json()).collect());
        println!("{json:#}");
    } else {
        for finding in &findings {
            println!("{}", finding.line());
        }
    }
    Ok(ExitCode::from(doctor::exit_code(&findings)))
}
