//! Warm start: at bake, the provisioned guest is booted once more, allowed to settle, and its
//! RAM and device state saved with the disk layer as it was at that instant. Each run then
//! resumes a copy-on-write clone of that machine in seconds instead of booting it, and gives
//! it the things clones must not share: the current time and fresh randomness.
//!
//! What clones still share, and a test could notice: `/etc/machine-id` and the kernel's
//! `boot_id`, the uptime (it counts on from the save), process ids, and the MAC and guest IP
//! (each VM has its own user-mode network, so they never meet).

mod cpu;
pub mod machine;

use std::fs;
use std::os::fd::{AsFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use crate::disk::{self, Overlay};
use crate::events::{Event, Sink};
use crate::net::forward::Forward;
use crate::net::{Network, isolate};
use crate::path_error::PathError;
use crate::qemu::args::{Accel, Incoming, Machine, MachineSize, Ram, RamFile, command_line};
use crate::qemu::process::{self, QemuProcess};
use crate::qemu::qga::{self, GuestAgent};
use crate::qemu::qmp::{self, Qmp};
use crate::qemu::serial::Console;
use crate::scratch::Scratch;
use crate::ssh;
use crate::store::BakedImage;
use crate::wait::{Stop, Watch};
use machine::WarmMachine;

/// The warm state's directory inside a store entry.
pub const DIR: &str = "warm";
const DISK: &str = "disk.qcow2";
const RAM: &str = "ram";
const STATE: &str = "state";
const MACHINE: &str = "machine.json";
/// How long saving or loading the state may take.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the guest agent has to answer after a resume.
const AGENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long QEMU has to exit after `quit`.
const QUIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a migration's progress is asked.
const POLL: Duration = Duration::from_millis(50);
/// How often a resume looks whether the state is in: it takes a fraction of a second.
const RESUME_POLL: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Disk(#[from] disk::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Qemu(#[from] process::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Isolate(#[from] isolate::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Ssh(#[from] ssh::Error),
    #[error("saving or resuming the warm state: QEMU's monitor")]
    Qmp(#[from] qmp::Error),
    #[error("the guest agent did not answer after the resume")]
    Agent(#[from] qga::Error),
    #[error("migration {status}: {detail}")]
    Migration { status: String, detail: String },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Stopped(#[from] Stop),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Io(#[from] PathError),
    #[error("setting the guest's clock: `date --set` exited with {code}")]
    Clock { code: i64 },
    #[error("reseeding the guest's random number generator: perl exited with {code}")]
    Reseed { code: i64 },
    #[error("cannot tell QEMU's version from `{0}`")]
    Version(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Disk(e) => e.exit_code(),
            Error::Isolate(e) => e.exit_code(),
            Error::Stopped(stop) => stop.exit_code(),
            Error::Ssh(e) => e.exit_code(),
            Error::Io(_) | Error::Version(_) => crate::exit_code::INTERNAL,
            _ => crate::exit_code::VM_FAILED,
        }
    }
}

/// A store entry's saved machine.
#[derive(Debug, Clone, PartialEq)]
pub struct WarmState {
    /// The disk layer as it was when the state was saved (runs put overlays on it).
    pub disk: PathBuf,
    /// The guest's RAM as it was, which runs map copy-on-write.
    pub ram: PathBuf,
    /// The device state, without the RAM.
    pub state: PathBuf,
    pub machine: WarmMachine,
}

impl WarmState {
    /// The entry's warm state; `Ok(None)` when it has none.
    pub fn load(entry: &Path) -> Result<Option<WarmState>, Error> {
        let dir = entry.join(DIR);
        let path = dir.join(MACHINE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(PathError::at("read", &path)(e).into()),
        };
        let machine = serde_json::from_str(&text)
            .map_err(|e| PathError::at("read", &path)(std::io::Error::other(e)))?;
        Ok(Some(WarmState {
            disk: dir.join(DISK),
            ram: dir.join(RAM),
            state: dir.join(STATE),
            machine,
        }))
    }

    /// The machine a resumed clone runs: `machine` with the monitor, agent and generation of
    /// a warm machine in `dir`, and this state's RAM mapped copy-on-write, waiting for the
    /// state ([`resume`]). `machine.disk` is the clone's overlay on [`WarmState::disk`].
    pub fn clone_machine(&self, machine: &Machine, dir: &Path) -> Result<Machine, Error> {
        let incoming = Incoming {
            layers: disk::backing_chain(&machine.disk)?.len(),
        };
        let ram = Ram::File(RamFile {
            path: self.ram.clone(),
            shared: false,
        });
        Ok(Machine {
            control: Some(machine::control(dir, ram, Some(incoming))),
            ..machine.clone()
        })
    }

    /// Whether the RAM file is there whole: a regular file of the machine's memory size.
    fn ram_fits(&self) -> Result<(), String> {
        let want = self.machine.memory_mib << 20;
        match fs::symlink_metadata(&self.ram) {
            Ok(meta) if meta.is_file() && meta.len() == want => Ok(()),
            Ok(meta) if meta.is_file() => Err(format!(
                "its RAM file {} has {} bytes, not {want}",
                self.ram.display(),
                meta.len()
            )),
            Ok(_) => Err(format!("its RAM file {} is not a file", self.ram.display())),
            Err(e) => Err(format!("its RAM file {}: {e}", self.ram.display())),
        }
    }
}

/// The entry's warm state if a run with `accel` and `size` on `qemu` can resume it;
/// otherwise why it cannot, in words that follow "booting cold: ".
pub fn fitting(
    entry: &Path,
    qemu: &Path,
    accel: Accel,
    size: MachineSize,
) -> Result<Result<WarmState, String>, Error> {
    let Some(warm) = WarmState::load(entry)? else {
        return Ok(Err(
            "the image has no warm state (bake it again with this vmrun to add one)".into(),
        ));
    };
    if let Err(mismatch) = warm.machine.check(&qemu_version(qemu)?, accel, size) {
        return Ok(Err(format!("the warm state does not fit: {mismatch}")));
    }
    if let Err(why) = warm.ram_fits() {
        return Ok(Err(format!(
            "the warm state is damaged: {why} (bake it again)"
        )));
    }
    if accel == Accel::Kvm
        && let Err(why) = cpu::host_runs_portable_cpu(qemu)?
    {
        return Ok(Err(format!(
            "this host's KVM does not run CPU model {}, which the warm state was saved with: {why}",
            crate::qemu::args::PORTABLE_CPU
        )));
    }
    Ok(Ok(warm))
}

/// The first line of `qemu --version`, which a saved state must match.
pub fn qemu_version(qemu: &Path) -> Result<String, Error> {
    let out = Command::new(qemu)
        .arg("--version")
        .output()
        .map_err(PathError::at("run", qemu))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .next()
        .filter(|l| l.contains("version"))
        .map(str::to_owned)
        .ok_or(Error::Version(text))
}

/// How to reach the provisioned guest and what machine to save.
pub struct Capture<'a> {
    /// The stored image; its `disk.qcow2` is the provisioned layer.
    pub image: &'a BakedImage,
    pub accel: Accel,
    pub size: MachineSize,
    pub qemu: &'a Path,
    pub boot_timeout: Duration,
    /// Where runs' directories are: the capture's sockets and logs go there too, for the
    /// same short paths and the same reaping after a kill.
    pub runs: &'a Path,
}

/// The machine that boots the provisioned image to save its state: the warm machine's
/// devices with `disk`, its console into descriptor `console`, SSH on `ssh_port`, its sockets
/// in `dir` and its RAM written into the warm state's file in `warm_dir`.
pub fn saving_machine(
    accel: Accel,
    size: MachineSize,
    disk: PathBuf,
    console: RawFd,
    ssh_port: u16,
    dir: &Path,
    warm_dir: &Path,
) -> Machine {
    Machine {
        accel,
        size,
        disk,
        seed: None,
        console,
        // The guest's network as every run finds it is configured here, by DHCP: `none`
        // (`restrict=on`) would hand out no default route, and every resumed clone would
        // lack one. So the same isolated network as the runs' default.
        network: Network::Outbound,
        forwards: vec![Forward::ssh(ssh_port)],
        control: Some(machine::control(
            dir,
            Ram::File(RamFile {
                path: warm_dir.join(RAM),
                shared: true,
            }),
            None,
        )),
        persistent: None,
    }
}

/// What the saved guest does before it is saved: waits for its boot to finish, and reads
/// the programs every run starts into its page cache (rsync for the sync, perl for the
/// reseed, env and sh for the command line, cat for its watchdog, date for the clock). The
/// cache is saved with the RAM, which clones share through the host's page cache: each
/// clone would otherwise read them from disk into RAM of its own. Measured by hand against
/// dropping the cache before the save (4 rounds each, taking turns, on a busy machine):
/// `vmrun test -- true` 2.14-2.63 s against 2.83-3.38 s, three clones' summed PSS 403-406
/// MiB against 417-470 MiB, for 219 MiB on disk against 215 MiB.
const SETTLE: &str = "sudo systemctl is-system-running --wait >/dev/null; \
                      rsync --version >/dev/null; perl -e 1; env true; sh -c true; \
                      cat /dev/null; date >/dev/null; sync";

/// Boots the provisioned image, lets it settle, and saves its state into `entry/warm`.
pub fn capture(c: &Capture, sink: Sink) -> Result<WarmMachine, Error> {
    let dir = c.image.dir.join(DIR);
    fs::create_dir(&dir).map_err(PathError::at("create", &dir))?;
    let disk = dir.join(DISK);
    Overlay::create(&disk, &c.image.disk())?;
    // Sockets need short paths (108 bytes), as runs' do; the entry's may be long.
    let scratch = Scratch::new_in(c.runs, ".warm-")?;
    let port = crate::qemu::port::free_loopback_port()
        .map_err(PathError::at("bind", Path::new("127.0.0.1")))?;
    let serial_log = scratch.path().join("serial.log");
    let console = Console::to_log(&serial_log).map_err(PathError::at("create", &serial_log))?;
    let machine = saving_machine(
        c.accel,
        c.size,
        disk,
        console.fd(),
        port,
        scratch.path(),
        &dir,
    );
    let qmp_path = scratch.path().join(machine::QMP_SOCKET);
    let agent_path = scratch.path().join(machine::AGENT_SOCKET);
    let line = command_line(&machine);
    let qemu_log = scratch.path().join("qemu.log");
    let (program, args) = isolate::command(&machine, scratch.path(), c.qemu)?;
    let vm = QemuProcess::spawn(&program, &args, &qemu_log, console)?;
    let watch = Watch::qemu(&vm);

    sink(Event::Detail("booting the baked image".into()));
    let target = c.image.ssh_target(port)?;
    let session = ssh::wait_ready(&target, Instant::now() + c.boot_timeout, &watch)?;
    sink(Event::Detail(
        "settling (systemctl is-system-running --wait), reading what runs use".into(),
    ));
    session.exec(
        SETTLE,
        &mut std::io::sink(),
        &mut std::io::sink(),
        Some(Instant::now() + c.boot_timeout),
        &watch,
        &|| true,
    )?;
    drop(session);
    // Runs set the clock through the agent: it must be up in the saved machine.
    GuestAgent::connect(&agent_path, AGENT_TIMEOUT)?;

    sink(Event::Detail("saving RAM and device state".into()));
    let state = dir.join(STATE);
    let mut qmp = Qmp::connect(&qmp_path)?;
    qmp.execute("stop", None)?;
    ignore_shared_ram(&mut qmp)?;
    let uri = format!(
        "exec:cat > {}",
        crate::ssh::sh_quote(&state.to_string_lossy())
    );
    qmp.execute("migrate", Some(json!({ "uri": uri })))?;
    wait_for_migration(&mut qmp, &watch)?;
    qmp.execute("quit", None)?;
    Watch::signals().until(Instant::now() + QUIT_TIMEOUT, POLL, || {
        Ok::<_, Stop>(vm.exited())
    })?;
    // Pages the guest touched and left zero need no disk blocks (about a seventh of them in
    // vmrun's Debian image); runs read holes as zeros all the same.
    let ram = dir.join(RAM);
    let written = fs::File::options()
        .read(true)
        .write(true)
        .open(&ram)
        .and_then(|file| {
            crate::sparse::punch_zero_pages(&file)?;
            file.sync_all()?;
            Ok(file.metadata()?.blocks() * 512)
        });
    let ram_on_disk = written.map_err(PathError::at("write", &ram))?;
    let state_bytes = fs::metadata(&state)
        .map_err(PathError::at("read", &state))?
        .len();
    sink(Event::Detail(format!(
        "warm state: {} MiB on disk ({} MiB of RAM that is not zero, {} KiB of device state)",
        (ram_on_disk + state_bytes) >> 20,
        ram_on_disk >> 20,
        state_bytes >> 10
    )));

    let saved = WarmMachine {
        format: machine::FORMAT,
        qemu_version: qemu_version(c.qemu)?,
        accel: c.accel,
        cpu: machine::cpu_model(c.accel),
        cpus: c.size.cpus,
        memory_mib: c.size.memory_mib,
        args: line
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        state_bytes,
    };
    // Its presence says the state is complete: written whole or not at all.
    let path = dir.join(MACHINE);
    let json = serde_json::to_string_pretty(&saved).expect("serializes") + "\n";
    crate::atomic_file::write(&path, json.as_bytes())?;
    Ok(saved)
}

/// Leaves the file-backed RAM out of the migration stream: the file is the RAM. Set on both
/// sides: the stream then names where each left-out block is instead of carrying it.
fn ignore_shared_ram(qmp: &mut Qmp) -> Result<(), Error> {
    set_ignore_shared(qmp, true)
}

fn set_ignore_shared(qmp: &mut Qmp, state: bool) -> Result<(), Error> {
    let capability = json!({ "capability": "x-ignore-shared", "state": state });
    qmp.execute(
        "migrate-set-capabilities",
        Some(json!({ "capabilities": [capability] })),
    )?;
    Ok(())
}

/// Waits until the migration `qmp` started (a save) completed.
pub fn wait_for_migration(qmp: &mut Qmp, watch: &Watch) -> Result<(), Error> {
    let mut status = String::new();
    let done = watch.until(Instant::now() + MIGRATION_TIMEOUT, POLL, || {
        let info = qmp.execute("query-migrate", None)?;
        status = info
            .get("status")
            .and_then(|s| s.as_str())
            .unwrap_or("unknown")
            .to_owned();
        match status.as_str() {
            "completed" => Ok(Some(())),
            "failed" | "cancelled" => Err(Error::Migration {
                status: status.clone(),
                detail: info
                    .get("error-desc")
                    .and_then(|d| d.as_str())
                    .unwrap_or("no detail")
                    .to_owned(),
            }),
            _ => Ok(None),
        }
    })?;
    done.ok_or_else(|| Error::Migration {
        status,
        detail: format!("not done after {}s", MIGRATION_TIMEOUT.as_secs()),
    })
}

/// Where a resuming QEMU reads the saved state from: a descriptor of the open file either
/// way (QEMU reads a file itself in about half the time a `cat` through a pipe takes).
#[derive(Debug, Clone, Copy)]
pub enum StateFile<'a> {
    /// Inherited by a QEMU vmrun started (a run's), under this number.
    Inherited(RawFd),
    /// Handed over the monitor (`getfd`) to a QEMU that systemd started (a persistent VM's).
    Handed(&'a fs::File),
}

/// The name a handed state's descriptor has in QEMU.
const HANDED_STATE: &str = "warm-state";

/// After QEMU was started with `-incoming defer` (see [`WarmState::clone_machine`]): loads
/// the state from `state` and lets the guest run. The guest then still has the saved clock
/// and random state: see [`refresh_clone`]. `watch` watches the resuming QEMU.
/// `ram_left_out`: the state was saved with its RAM left out (a warm state, whose RAM is its
/// file), rather than carrying it (a captured run's).
pub fn resume(
    qmp_path: &Path,
    state: StateFile,
    ram_left_out: bool,
    watch: &Watch,
) -> Result<(), Error> {
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    let mut last = None;
    let qmp = watch.until(deadline, RESUME_POLL, || match Qmp::connect(qmp_path) {
        Ok(qmp) => Ok(Some(qmp)),
        Err(e) => {
            last = Some(e);
            Ok::<_, Error>(None)
        }
    })?;
    let Some(mut qmp) = qmp else {
        return Err(last.map_or(
            Error::Migration {
                status: "not started".into(),
                detail: "QEMU's monitor did not answer".into(),
            },
            Error::from,
        ));
    };
    set_ignore_shared(&mut qmp, ram_left_out)?;
    let uri = match state {
        StateFile::Inherited(fd) => format!("fd:{fd}"),
        StateFile::Handed(file) => {
            qmp.hand_fd(HANDED_STATE, file.as_fd())?;
            format!("fd:{HANDED_STATE}")
        }
    };
    qmp.execute("migrate-incoming", Some(json!({ "uri": uri })))?;
    // The state was saved from a stopped guest, so it loads paused: `cont` once it is in.
    let mut status = serde_json::Value::Null;
    let loaded = watch.until(deadline, RESUME_POLL, || {
        status = qmp.execute("query-status", None)?;
        Ok::<_, Error>(match status.get("status").and_then(|s| s.as_str()) {
            Some("running") => Some(false),
            Some("paused") | Some("postmigrate") => Some(true),
            _ => None,
        })
    })?;
    // The capability was for this load: a snapshot saved later (a persistent VM's) records
    // it, and would not load in a start that did not resume.
    set_ignore_shared(&mut qmp, false)?;
    match loaded {
        Some(true) => {
            qmp.execute("cont", None)?;
            Ok(())
        }
        Some(false) => Ok(()),
        None => Err(Error::Migration {
            status: status.to_string(),
            detail: "the guest did not start after loading".into(),
        }),
    }
}

/// Gives a resumed clone what it must not share with the saved machine, through the guest
/// agent: the host's time on its clock, and fresh host randomness in its pool (besides the
/// reseed vmgenid made). It needs nothing else of the run, so a run does it while SSH
/// connects.
pub fn refresh_clone(agent_path: &Path) -> Result<(), Error> {
    let mut agent = GuestAgent::connect(agent_path, AGENT_TIMEOUT)?;
    set_clock(&mut agent)?;
    feed_entropy(&mut agent)
}

/// Sets the guest's clock to the host's with `date` run by the agent. The agent's own
/// guest-set-time also writes the hardware clock with hwclock, which waits for that clock's
/// next second (up to a second, measured here); it is used only where the agent refuses to
/// run programs.
fn set_clock(agent: &mut GuestAgent) -> Result<(), Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let epoch = format!("@{}.{:09}", now.as_secs(), now.subsec_nanos());
    match agent.run("/bin/date", &["--utc", "--set", &epoch]) {
        Ok(0) => Ok(()),
        Ok(code) => Err(Error::Clock { code }),
        Err(qga::Error::Refused { .. }) => {
            agent.execute(
                "guest-set-time",
                Some(json!({ "time": now.as_nanos() as u64 })),
            )?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Mixes fresh host randomness into the guest's pool and reseeds its random number generator
/// at once, with perl (part of every Debian system) run by the agent: bytes written to
/// `/dev/urandom` only enter the pool, which the kernel draws from at its next scheduled
/// reseed (a minute), and the reseed vmgenid asks for arrives by an ACPI event the guest
/// handles when it gets to it. Two clones that ran their command first drew the same bytes.
/// `RNDRESEEDCRNG` (`_IO('R', 7)`) reseeds from the pool now.
const RESEED: &str = "open(my $u, '>', '/dev/urandom') or die \"open: $!\"; \
                      binmode $u; print $u pack('H*', $ARGV[0]) or die \"write: $!\"; \
                      ioctl($u, 0x5207, 0) or die \"RNDRESEEDCRNG: $!\"; close($u) or die;";

/// Gives the guest fresh host randomness and reseeds it (see [`RESEED`]). Where the agent
/// runs no programs, the bytes are written into `/dev/urandom` through it instead, and the
/// reseed is left to vmgenid's event.
fn feed_entropy(agent: &mut GuestAgent) -> Result<(), Error> {
    let seed = crate::random::hex(64);
    match agent.run("/usr/bin/perl", &["-e", RESEED, &seed]) {
        Ok(0) => return Ok(()),
        Ok(code) => return Err(Error::Reseed { code }),
        Err(qga::Error::Refused { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let handle = agent.execute(
        "guest-file-open",
        Some(json!({ "path": "/dev/urandom", "mode": "w" })),
    )?;
    let bytes = crate::random::bytes(64);
    agent.execute(
        "guest-file-write",
        Some(json!({ "handle": handle, "buf-b64": STANDARD.encode(bytes) })),
    )?;
    agent.execute("guest-file-close", Some(json!({ "handle": handle })))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::qga::fake::{commands, fake_agent, returning};

    fn agent(replies: Vec<String>) -> (GuestAgent, std::thread::JoinHandle<Vec<u8>>) {
        let (client, server) = fake_agent(replies);
        (
            GuestAgent::sync(client, Duration::from_secs(5)).unwrap(),
            server,
        )
    }

    fn seconds_since_epoch() -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    }

    #[test]
    fn the_clock_is_set_with_date_run_by_the_agent() {
        let (mut ga, server) = agent(returning(&[
            json!({"pid": 5}),
            json!({"exited": true, "exitcode": 0}),
        ]));
        set_clock(&mut ga).unwrap();
        drop(ga);
        let sent = commands(&server.join().unwrap());
        assert_eq!(sent[0]["execute"], "guest-exec");
        assert_eq!(sent[0]["arguments"]["path"], "/bin/date");
        let args = sent[0]["arguments"]["arg"].as_array().unwrap();
        assert_eq!(args[..2], [json!("--utc"), json!("--set")]);
        let set: f64 = args[2]
            .as_str()
            .unwrap()
            .strip_prefix('@')
            .unwrap()
            .parse()
            .unwrap();
        assert!((seconds_since_epoch() - set).abs() < 5.0, "set to {set}");
    }

    #[test]
    fn an_agent_that_runs_no_programs_sets_the_clock_itself() {
        let refused = "{\"error\": {\"class\": \"GenericError\", \
                       \"desc\": \"command guest-exec has been disabled\"}}\n";
        let mut replies = vec![refused.to_owned()];
        replies.extend(returning(&[json!({})]));
        let (mut ga, server) = agent(replies);
        set_clock(&mut ga).unwrap();
        drop(ga);
        let sent = commands(&server.join().unwrap());
        assert_eq!(sent[1]["execute"], "guest-set-time");
        let set = sent[1]["arguments"]["time"].as_u64().unwrap() as f64 / 1e9;
        assert!((seconds_since_epoch() - set).abs() < 5.0, "set to {set}");
    }

    #[test]
    fn fresh_randomness_goes_in_and_the_generator_is_reseeded_at_once() {
        let (mut ga, server) = agent(returning(&[
            json!({"pid": 6}),
            json!({"exited": true, "exitcode": 0}),
        ]));
        feed_entropy(&mut ga).unwrap();
        drop(ga);
        let sent = commands(&server.join().unwrap());
        assert_eq!(sent[0]["arguments"]["path"], "/usr/bin/perl");
        let args = sent[0]["arguments"]["arg"].as_array().unwrap();
        assert_eq!(args[1], RESEED);
        assert!(RESEED.contains("0x5207"));
        let seed = args[2].as_str().unwrap();
        assert_eq!(seed.len(), 128);
        assert!(seed.bytes().all(|b| b.is_ascii_hexdigit()), "{seed}");
    }

    #[test]
    fn an_agent_that_runs_no_programs_gets_the_bytes_written_through_it() {
        let refused = "{\"error\": {\"class\": \"GenericError\", \
                       \"desc\": \"command guest-exec has been disabled\"}}\n";
        let mut replies = vec![refused.to_owned()];
        replies.extend(returning(&[json!(7), json!({"count": 64}), json!({})]));
        let (mut ga, server) = agent(replies);
        feed_entropy(&mut ga).unwrap();
        drop(ga);
        let sent = commands(&server.join().unwrap());
        let names: Vec<&str> = sent
            .iter()
            .map(|c| c["execute"].as_str().unwrap())
            .collect();
        assert_eq!(
            names[1..],
            ["guest-file-open", "guest-file-write", "guest-file-close"]
        );
    }

    #[test]
    fn a_failing_date_is_an_error() {
        let (mut ga, _server) = agent(returning(&[
            json!({"pid": 5}),
            json!({"exited": true, "exitcode": 1}),
        ]));
        let err = set_clock(&mut ga).unwrap_err();
        assert!(matches!(err, Error::Clock { code: 1 }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "setting the guest's clock: `date --set` exited with 1"
        );
    }
}
