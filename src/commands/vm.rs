//! `vmrun vm ...`: persistent VMs. Names, forwards, sizes and tags are checked here, before
//! anything is written; the engine (`crate::vm`) does the work.

use std::os::unix::process::CommandExt;
use std::process::ExitCode;

use crate::cli::{VmCommand, VmCreateArgs};
use crate::config::{CPUS, MemorySize, VmConfig};
use crate::error::Error;
use crate::name::ImageName;
use crate::paths::Home;
use crate::qemu::accel::{self, AccelChoice};
use crate::tools;
use crate::ui::Ui;
use crate::vm::{
    self, CreateRequest, Forward, SnapshotTag, Stopped, VmName, VmState, VmStatus, Vms,
};

pub(super) fn run(command: VmCommand) -> Result<ExitCode, Error> {
    if let VmCommand::Powerdown { qmp, agent } = &command {
        // Run by systemd as the unit's ExecStop; systemd bounds the wait.
        vm::power_down(qmp, agent, vm::STOP_TIMEOUT * 2)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let VmCommand::Qemu { console, argv } = &command {
        // Run by systemd as the unit's ExecStart: the unit ends as QEMU did.
        let status = vm::run_qemu(console, argv)?;
        return Ok(exit_like(status));
    }
    // Checked once, here: `crate::vm` takes only checked names.
    let name = vm_name(&command).map(VmName::new).transpose()?;
    let ui = Ui::for_stderr();
    let sink = |event| ui.render(event);
    match (command, name) {
        (VmCommand::Create(args), Some(name)) => create(args, name, &sink),
        (VmCommand::Start { no_wait, .. }, Some(name)) => {
            let vms = open()?;
            let started = vms.start(&name, &sink)?;
            if !no_wait {
                vms.wait_until_ready(&name, &sink)?;
            }
            match (started, no_wait) {
                (true, false) => eprintln!("started VM `{name}`"),
                (true, true) => eprintln!("started VM `{name}`; it is booting"),
                (false, _) => eprintln!("VM `{name}` is already running"),
            }
            Ok(ExitCode::SUCCESS)
        }
        (VmCommand::Stop { .. }, Some(name)) => {
            match open()?.stop(&name, &sink)? {
                Stopped::Clean => eprintln!("stopped VM `{name}` (the guest powered off)"),
                Stopped::Killed { result } => eprintln!(
                    "stopped VM `{name}`: the guest did not power off within {}s, \
                     so QEMU was killed ({result})",
                    vm::STOP_TIMEOUT.as_secs()
                ),
                Stopped::AlreadyStopped {
                    state: VmState::Stopped,
                } => eprintln!("VM `{name}` is already stopped"),
                Stopped::AlreadyStopped { state } => {
                    eprintln!("VM `{name}` is already stopped ({})", state.as_str())
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        (VmCommand::Restart { no_wait, .. }, Some(name)) => {
            let vms = open()?;
            vms.restart(&name, &sink)?;
            if no_wait {
                eprintln!("restarted VM `{name}`; it is booting");
            } else {
                vms.wait_until_ready(&name, &sink)?;
                eprintln!("restarted VM `{name}`");
            }
            Ok(ExitCode::SUCCESS)
        }
        (VmCommand::Delete { .. }, Some(name)) => {
            open()?.delete(&name, &sink)?;
            eprintln!("deleted VM `{name}`");
            Ok(ExitCode::SUCCESS)
        }
        (VmCommand::Status { .. }, Some(name)) => {
            print!("{}", status_text(&open()?.status(&name)?));
            Ok(ExitCode::SUCCESS)
        }
        (VmCommand::List { json }, _) => {
            let vms = open()?.list()?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&vms).expect("statuses serialize")
                );
            } else {
                print!("{}", table(&vms));
            }
            Ok(ExitCode::SUCCESS)
        }
        (VmCommand::Logs { .. }, Some(name)) => {
            let log = open()?.serial_log(&name)?;
            match std::fs::File::open(&log) {
                Ok(mut file) => {
                    print_console(&mut file)
                        .map_err(crate::path_error::PathError::at("print", &log))
                        .map_err(vm::Error::from)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    eprintln!("VM `{name}` has not written to its console yet")
                }
                Err(e) => {
                    return Err(
                        vm::Error::from(crate::path_error::PathError::at("read", &log)(e)).into(),
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        (VmCommand::Ssh { command, .. }, Some(name)) => {
            let mut ssh = open()?.ssh_command(&name, &command, &sink)?;
            let source = ssh.exec();
            Err(Error::Exec {
                program: "ssh",
                source,
            })
        }
        (VmCommand::Forward { action, spec, .. }, Some(name)) => {
            let forward: Forward = spec.parse().map_err(Error::Usage)?;
            let vms = open()?;
            let live = if action == "add" {
                vms.add_forward(&name, forward)?
            } else {
                vms.remove_forward(&name, forward)?
            };
            let done = if action == "add" { "added" } else { "removed" };
            let when = if live {
                "now and after restarts"
            } else {
                "from its next start"
            };
            eprintln!("{done} forward {forward} for VM `{name}` ({when})");
            Ok(ExitCode::SUCCESS)
        }
        (VmCommand::Snapshot { action, tag, .. }, Some(name)) => {
            snapshot(&name, &action, tag.as_deref(), &sink)
        }
        (VmCommand::Enable { .. }, Some(name)) => {
            let enabled = open()?.enable(&name)?;
            eprintln!(
                "VM `{name}` now starts with the systemd user manager of `{}`",
                enabled.user
            );
            match enabled.lingering {
                Some(true) => {}
                Some(false) => eprintln!(
                    "note: lingering is off for `{0}`: the manager (and the VM) starts when `{0}` \
                     logs in, not at boot; to start at boot: loginctl enable-linger {0}",
                    enabled.user
                ),
                None => eprintln!(
                    "note: cannot tell whether lingering is on (no /var/lib/systemd here); \
                     without it the VM starts at login, not at boot"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        (VmCommand::Disable { .. }, Some(name)) => {
            open()?.disable(&name)?;
            eprintln!("VM `{name}` no longer starts with the systemd user manager");
            Ok(ExitCode::SUCCESS)
        }
        (command, _) => unreachable!("{command:?}: handled above, or has a name"),
    }
}

fn vm_name(command: &VmCommand) -> Option<&str> {
    match command {
        VmCommand::Create(args) => Some(&args.name),
        VmCommand::Start { name, .. }
        | VmCommand::Stop { name }
        | VmCommand::Restart { name, .. }
        | VmCommand::Delete { name }
        | VmCommand::Status { name }
        | VmCommand::Logs { name }
        | VmCommand::Ssh { name, .. }
        | VmCommand::Forward { name, .. }
        | VmCommand::Snapshot { name, .. }
        | VmCommand::Enable { name }
        | VmCommand::Disable { name } => Some(name),
        VmCommand::List { .. } | VmCommand::Powerdown { .. } | VmCommand::Qemu { .. } => None,
    }
}

fn open() -> Result<Vms, Error> {
    Ok(Vms::open(Home::from_env()?)?)
}

fn create(args: VmCreateArgs, name: VmName, sink: crate::events::Sink) -> Result<ExitCode, Error> {
    let forwards = args
        .forward
        .iter()
        .map(|spec| spec.parse::<Forward>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::Usage)?;
    if let Some(cpus) = args.cpus.filter(|n| !CPUS.contains(n)) {
        return Err(Error::Usage(format!(
            "--cpus {cpus}: must be {} to {}",
            CPUS.start(),
            CPUS.end()
        )));
    }
    let memory = args
        .memory
        .as_deref()
        .map(str::parse::<MemorySize>)
        .transpose()
        .map_err(|e| Error::Usage(format!("--memory: {e}")))?;
    let image_name = ImageName::new(&args.image)?;
    let accel_choice = AccelChoice::from_env()?;
    let home = Home::from_env()?;
    let image = vm::image_for_create(&home, &image_name)?;
    let vms = Vms::open(home.clone())?;
    let qemu = tools::find("qemu-system-x86_64")?;
    let accel = accel::resolve(accel_choice, &qemu, &home.host_facts(), sink)?;
    // What is not given is what the image was baked with.
    let size = VmConfig {
        cpus: args.cpus,
        memory,
    }
    .size_or(image.image.manifest.size());
    let request = CreateRequest {
        name,
        image,
        size,
        forwards,
        network: args.network,
        accel,
        qemu,
    };
    let record = vms.create(&request, sink)?;
    if args.no_wait {
        eprintln!(
            "created VM `{}` from image `{}`: booting; \
             `vmrun vm ssh {0}` waits for it (SSH on 127.0.0.1:{})",
            record.name, record.image, record.ssh_port
        );
    } else {
        vms.wait_until_ready(&request.name, sink)?;
        eprintln!(
            "created VM `{}` from image `{}`: running, SSH on 127.0.0.1:{} (vmrun vm ssh {0})",
            record.name, record.image, record.ssh_port
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn snapshot(
    name: &VmName,
    action: &str,
    tag: Option<&str>,
    sink: crate::events::Sink,
) -> Result<ExitCode, Error> {
    let vms = open()?;
    if action == "list" {
        for s in vms.snapshots(name)? {
            println!(
                "{:<24} {:>10} MiB  {}  (guest ran {}s)",
                s.tag,
                s.vm_state_size >> 20,
                crate::utc::UtcTime::from_unix(s.date),
                s.vm_clock_seconds
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let tag = tag
        .ok_or_else(|| Error::Usage(format!("`vmrun vm snapshot {name} {action}` needs a TAG")))?;
    let tag = SnapshotTag::new(tag)?;
    match action {
        "save" => vms.save_snapshot(name, &tag, sink)?,
        "load" => vms.load_snapshot(name, &tag, sink)?,
        _ => vms.delete_snapshot(name, &tag)?,
    }
    let done = match action {
        "save" => "saved",
        "load" => "loaded",
        _ => "deleted",
    };
    eprintln!("{done} snapshot `{tag}` of VM `{name}`");
    Ok(ExitCode::SUCCESS)
}

/// The console log (capped, so a few MiB at most) as it is into a pipe or a file; on a
/// terminal with its control characters made visible, so the guest cannot drive the terminal.
fn print_console(log: &mut std::fs::File) -> std::io::Result<()> {
    use std::io::{IsTerminal, Read, Write};
    let mut out = std::io::stdout().lock();
    if !out.is_terminal() {
        return std::io::copy(log, &mut out).map(drop);
    }
    let mut bytes = Vec::new();
    log.read_to_end(&mut bytes)?;
    out.write_all(crate::guest_text::block(&bytes).as_bytes())
}

/// Ends like `status`: with its code, or killed by the same signal, which systemd then reports
/// for the unit as it would for QEMU itself.
fn exit_like(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    if let Some(signal) = status.signal() {
        // SAFETY: restoring the default action and raising a signal touch no memory.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
    ExitCode::from(status.code().map_or(1, |code| code as u8))
}

fn addresses_text(vm: &VmStatus) -> String {
    match (&vm.agent_error, vm.addresses.is_empty()) {
        (Some(_), _) => "(agent not answering)".into(),
        (None, true) => "-".into(),
        (None, false) => vm.addresses.join(","),
    }
}

fn forwards_text(vm: &VmStatus) -> String {
    let mut all = vec![format!("ssh:{}", vm.ssh_port)];
    all.extend(vm.forwards.iter().map(Forward::to_string));
    all.join(",")
}

fn table(vms: &[VmStatus]) -> String {
    let mut out = format!(
        "{:<20} {:<9} {:<16} {:>4} {:>8}  {:<32} {}\n",
        "NAME", "STATE", "IMAGE", "CPUS", "MEMORY", "ADDRESSES", "FORWARDS"
    );
    for vm in vms {
        out += &format!(
            "{:<20} {:<9} {:<16} {:>4} {:>8}  {:<32} {}\n",
            vm.name,
            vm.state.as_str(),
            vm.image,
            vm.cpus,
            vm.memory,
            addresses_text(vm),
            forwards_text(vm)
        );
    }
    out
}

fn status_text(vm: &VmStatus) -> String {
    let mut out = format!("{}: {}\n", vm.name, vm.state.as_str());
    out += &format!("  image:      {}\n", vm.image);
    out += &format!("  cpus:       {}\n  memory:     {}\n", vm.cpus, vm.memory);
    out += &format!("  addresses:  {}\n", addresses_text(vm));
    if let Some(error) = &vm.agent_error {
        out += &format!("  agent:      {error}\n");
    }
    out += &format!(
        "  ssh:        127.0.0.1:{} (vmrun vm ssh {})\n",
        vm.ssh_port, vm.name
    );
    for f in &vm.forwards {
        out += &format!("  forward:    {f}\n");
    }
    out += &format!(
        "  unit:       {} ({})\n",
        vm.unit,
        if vm.enabled { "enabled" } else { "not enabled" }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> VmStatus {
        VmStatus {
            name: "db".into(),
            state: VmState::Running,
            addresses: vec!["10.0.2.15".into(), "fec0::1".into()],
            agent_error: None,
            forwards: vec!["8080:80".parse().unwrap()],
            ssh_port: 40022,
            image: "base".into(),
            cpus: 2,
            memory: "1GiB".into(),
            memory_mib: 1024,
            enabled: false,
            unit: "vmrun-db.service".into(),
        }
    }

    #[test]
    fn table_rows() {
        let t = table(&[status()]);
        let row = t.lines().nth(1).unwrap();
        assert!(row.starts_with("db "), "{row}");
        assert!(row.contains(" running "), "{row}");
        assert!(row.contains("10.0.2.15,fec0::1"), "{row}");
        assert!(row.ends_with("ssh:40022,tcp:127.0.0.1:8080:80"), "{row}");
    }

    #[test]
    fn a_silent_agent_is_said() {
        let vm = VmStatus {
            addresses: vec![],
            agent_error: Some("no answer".into()),
            ..status()
        };
        assert!(status_text(&vm).contains("agent:      no answer"));
        assert!(table(&[vm]).contains("(agent not answering)"));
    }
}
