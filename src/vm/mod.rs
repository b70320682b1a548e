//! Persistent VMs: an overlay on a baked image, run by QEMU as a systemd user unit
//! (`vmrun-NAME.service`), so it outlives vmrun and, with lingering, a reboot; vmrun has no
//! daemon of its own. systemd says whether a VM runs; QMP changes a running one (forwards,
//! snapshots); the guest agent reports its addresses.
//!
//! Every command that changes a VM holds its lock (`state/vms/NAME/.lock`) for the change.

mod console;
mod error;

mod layout;
mod machine;
mod power;
pub mod record;
pub mod ssh;
pub mod systemd;
pub mod unit;

use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

pub use crate::net::forward::Forward;
use crate::net::slirp4netns;
use crate::net::{Network, isolate};
pub use console::run_qemu;
pub use error::Error;
pub use layout::{VmLayout, unit_name};
pub use power::{PowerDown, power_down};
pub use record::VmRecord;

use crate::config::MemorySize;
use crate::events::{self, Sink};
use crate::name;
use crate::path_error::PathError;
use crate::paths::Home;
use crate::qemu::args::Accel;
use crate::qemu::port::free_loopback_port;
use crate::qemu::qga::GuestAgent;
use crate::qemu::qmp::Qmp;
use crate::qemu::serial::last_lines;
use crate::ssh::ClientFiles;
use crate::store::{BakedImage, NamedImage, Store};
use crate::tools;
use systemd::{Systemctl, UnitState};
use unit::UnitSpec;

/// How long QEMU may take to answer on its monitor after systemd started it.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a clean shutdown may take before systemd kills QEMU (TimeoutStopSec). A Debian
/// guest under TCG powers off in ~30 s.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `list` and `status` wait for each guest agent.
const AGENT_TIMEOUT: Duration = Duration::from_secs(3);
/// savevm/loadvm write or read all of the guest's RAM.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Lines of QEMU's log shown when a VM does not start.
const LOG_TAIL: usize = 20;

/// What `vm create` needs, validated by the caller.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub name: String,
    /// The baked image, its disk chain already checked ([`image_for_create`]).
    pub image: NamedImage,
    /// Default: what the image was baked with.
    pub cpus: Option<u32>,
    pub memory: Option<MemorySize>,
    pub forwards: Vec<Forward>,
    pub network: Network,
    pub accel: Accel,
    pub qemu: PathBuf,
}

/// The baked image `name`, for a new VM: refused when its disk chain holds a layer the qcow2
/// reader refuses (a store entry changed after its bake). Meant to run before systemd or QEMU
/// are asked anything, so that a refused image leaves nothing behind.
pub fn image_for_create(home: &Home, name: &str) -> Result<NamedImage, Error> {
    let image = Store::new(home).get(name)?;
    crate::disk::backing_chain(&image.disk())?;
    Ok(NamedImage {
        name: name.to_owned(),
        image,
    })
}

/// A VM's state, from systemd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmState {
    Running,
    Starting,
    Stopping,
    Stopped,
    /// QEMU exited with an error, or a stop timed out and systemd killed it.
    Failed,
    /// The record exists but systemd has no unit for it (its file was removed by hand).
    NoUnit,
}

impl VmState {
    fn of(unit: &UnitState) -> VmState {
        if unit.load_state == "not-found" {
            return VmState::NoUnit;
        }
        match unit.active_state.as_str() {
            "active" | "reloading" => VmState::Running,
            "activating" => VmState::Starting,
            "deactivating" => VmState::Stopping,
            "failed" => VmState::Failed,
            _ => VmState::Stopped,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Running => "running",
            VmState::Starting => "starting",
            VmState::Stopping => "stopping",
            VmState::Stopped => "stopped",
            VmState::Failed => "failed",
            VmState::NoUnit => "no-unit",
        }
    }
}

/// One VM as `vm list` and `vm status` show it (also their `--json` form).
#[derive(Debug, Clone, Serialize)]
pub struct VmStatus {
    pub name: String,
    pub state: VmState,
    /// The guest's addresses (not loopback), from the guest agent.
    pub addresses: Vec<String>,
    /// Why `addresses` is empty although the VM runs: the agent did not answer.
    pub agent_error: Option<String>,
    pub forwards: Vec<Forward>,
    pub ssh_port: u16,
    pub image: String,
    pub cpus: u32,
    /// As `--memory` takes it, e.g. `1GiB`.
    pub memory: String,
    pub memory_mib: u64,
    /// Whether the user manager starts it when it starts.
    pub enabled: bool,
    pub unit: String,
}

/// How a stop went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// The guest powered off within the stop timeout.
    Clean,
    /// systemd had to kill QEMU; `result` is systemd's word for why (e.g. `timeout`).
    Killed { result: String },
    /// It was not running (`state`: stopped, failed, ...).
    AlreadyStopped { state: VmState },
}

/// What `vm enable` found about lingering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enabled {
    pub user: String,
    /// `Some(false)`: the user manager, and so the VM, starts only when the user logs in.
    pub lingering: Option<bool>,
}

/// One snapshot in the VM's disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub tag: String,
    /// Bytes of RAM and device state saved with it (0 for a disk-only snapshot).
    pub vm_state_size: u64,
    /// When it was taken, seconds since the Unix epoch.
    pub date: u64,
    /// The guest's running time when it was taken, in seconds.
    pub vm_clock_seconds: u64,
}

/// The persistent VMs of one vmrun home, and the user manager that runs them.
pub struct Vms {
    home: Home,
    unit_dir: PathBuf,
    systemctl: Systemctl,
}

/// A change to a VM is under way: other changes wait until this is dropped (and the file,
/// with its lock, closed).
struct VmLock {
    _file: File,
}

impl Vms {
    /// Finds the user's unit directory and checks that the user manager answers.
    pub fn open(home: Home) -> Result<Vms, Error> {
        let unit_dir = systemd::user_unit_dir(|name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .ok_or(Error::NoUnitDir)?;
        Ok(Vms {
            home,
            unit_dir,
            systemctl: Systemctl::connect()?,
        })
    }

    pub fn layout(&self, name: &str) -> VmLayout {
        VmLayout::new(&self.home, &self.unit_dir, name)
    }

    /// Creates the VM and starts it. Refused when the name is taken (also by a concurrent
    /// create: the VM's directory is made exclusively); a failure removes everything made.
    pub fn create(&self, req: &CreateRequest, sink: Sink) -> Result<VmRecord, Error> {
        name::check("vm", &req.name)?;
        let image = &req.image.image;
        let layout = self.layout(&req.name);
        if layout.state.exists() {
            return Err(Error::Exists {
                name: req.name.clone(),
            });
        }
        if layout.unit_file.exists() {
            return Err(Error::UnitTaken {
                path: layout.unit_file.clone(),
            });
        }
        if let Some(path) = layout.overlong_socket() {
            return Err(Error::SocketPathTooLong { path });
        }
        for (i, forward) in req.forwards.iter().enumerate() {
            if let Some(earlier) = req.forwards[..i].iter().find(|f| f.clashes_with(forward)) {
                return Err(Error::ForwardClash {
                    forward: forward.to_string(),
                    existing: earlier.to_string(),
                });
            }
        }
        crate::path_error::create_private_dir(&self.home.vms())?;
        match fs::DirBuilder::new().mode(0o700).create(&layout.state) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists {
                    name: req.name.clone(),
                });
            }
            other => other.map_err(PathError::at("create", &layout.state))?,
        }
        let _lock = lock(&layout)?;
        let record = VmRecord {
            name: req.name.clone(),
            image: req.image.name.clone(),
            image_key: image.manifest.key.clone(),
            cpus: req.cpus.unwrap_or(image.manifest.cpus),
            memory_mib: req
                .memory
                .map(|m| m.mib())
                .unwrap_or(image.manifest.memory_mib),
            accel: req.accel.into(),
            ssh_port: 0,
            forwards: req.forwards.clone(),
            network: req.network,
            qemu: req.qemu.clone(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let mut unit_written = false;
        let made = self.make(&layout, record, image, &mut unit_written, sink);
        if made.is_err() {
            self.remove_remains(&layout, unit_written);
        }
        made.map_err(|e| match e {
            Error::StartFailed {
                name, reason, log, ..
            } => Error::StartFailed {
                name,
                reason,
                log,
                kept: false,
            },
            other => other,
        })
    }

    fn make(
        &self,
        layout: &VmLayout,
        mut record: VmRecord,
        image: &BakedImage,
        unit_written: &mut bool,
        sink: Sink,
    ) -> Result<VmRecord, Error> {
        record.ssh_port = free_port(&record.forwards)?;
        // First, so that from now on `images rm` sees the VM's image as in use.
        record.save(&layout.record())?;
        events::phase(sink, "create the VM's disk", || {
            crate::disk::Overlay::create(&layout.disk(), &image.disk())
        })?;
        let host_key = fs::read_to_string(image.host_key())
            .map_err(PathError::at("read", &image.host_key()))?;
        let target = crate::ssh::Target {
            port: record.ssh_port,
            host_key,
            client_key: image.client_key(),
        };
        ClientFiles::write(&layout.ssh_dir(), &target)?;
        self.write_unit(layout, &record, true)?;
        *unit_written = true;
        self.systemctl.daemon_reload()?;
        let state = self.systemctl.show(&layout.unit())?;
        if state.load_state != "loaded" {
            return Err(Error::UnitNotLoaded {
                unit: layout.unit(),
                dir: self.unit_dir.clone(),
                load_state: state.load_state,
            });
        }
        events::phase(sink, &format!("start VM {}", record.name), || {
            self.start_unit(layout, false)
        })?;
        Ok(record)
    }

    /// Best effort after a failed create: stops and removes what was made.
    fn remove_remains(&self, layout: &VmLayout, unit_written: bool) {
        if unit_written {
            let _ = self.systemctl.stop(&layout.unit());
            let _ = fs::remove_file(&layout.unit_file);
            let _ = self.systemctl.daemon_reload();
            let _ = self.systemctl.reset_failed(&layout.unit());
        }
        let _ = fs::remove_dir_all(&layout.runtime);
        let _ = fs::remove_dir_all(&layout.state);
    }

    /// Starts the VM; `Ok(false)` when it was already running.
    pub fn start(&self, name: &str, sink: Sink) -> Result<bool, Error> {
        let (layout, _record, _lock) = self.locked(name)?;
        let state = self.systemctl.show(&layout.unit())?;
        if state.is_running() {
            return Ok(false);
        }
        events::phase(sink, &format!("start VM {name}"), || {
            self.start_unit(&layout, state.active_state == "failed")
        })?;
        Ok(true)
    }

    /// Stops the VM: a clean guest shutdown (see [`power_down`]) or, after [`STOP_TIMEOUT`],
    /// a kill, both by systemd through the unit.
    pub fn stop(&self, name: &str, sink: Sink) -> Result<Stopped, Error> {
        let (layout, _record, _lock) = self.locked(name)?;
        let unit = layout.unit();
        let state = self.systemctl.show(&unit)?;
        if !state.is_running() {
            return Ok(Stopped::AlreadyStopped {
                state: VmState::of(&state),
            });
        }
        events::phase(sink, &format!("shut down VM {name}"), || {
            self.systemctl.stop(&unit)
        })?;
        let after = self.systemctl.show(&unit)?;
        if after.active_state == "failed" {
            // The VM is stopped; the stop's result is reported here, not left as a failed unit.
            self.systemctl.reset_failed(&unit)?;
        }
        Ok(if after.result == "success" {
            Stopped::Clean
        } else {
            Stopped::Killed {
                result: after.result,
            }
        })
    }

    /// Stops (cleanly, as [`Vms::stop`]) and starts the VM, or starts it if it was stopped.
    pub fn restart(&self, name: &str, sink: Sink) -> Result<(), Error> {
        let (layout, _record, _lock) = self.locked(name)?;
        let unit = layout.unit();
        let state = self.systemctl.show(&unit)?;
        if !state.is_running() {
            return events::phase(sink, &format!("start VM {name}"), || {
                self.start_unit(&layout, state.active_state == "failed")
            });
        }
        events::phase(sink, &format!("restart VM {name}"), || {
            self.systemctl
                .restart(&unit)
                .map_err(|e| self.start_failed(&layout, e.to_string()))?;
            self.wait_for_monitor(&layout)
        })
    }

    /// Stops the VM if it runs, disables it, removes its unit, disk, sockets and state.
    /// `Ok(true)` when it had to be stopped first.
    pub fn delete(&self, name: &str, sink: Sink) -> Result<bool, Error> {
        let (layout, _record, _lock) = self.locked(name)?;
        let unit = layout.unit();
        let state = self.systemctl.show(&unit)?;
        let was_running = state.is_running();
        if was_running {
            events::phase(sink, &format!("shut down VM {name}"), || {
                self.systemctl.stop(&unit)
            })?;
        }
        if self.systemctl.show(&unit)?.active_state == "failed" {
            self.systemctl.reset_failed(&unit)?;
        }
        if state.unit_file_state == "enabled" {
            self.systemctl.disable(&unit)?;
        }
        match fs::remove_file(&layout.unit_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(PathError::at("remove", &layout.unit_file)(e).into());
            }
            _ => {}
        }
        self.systemctl.daemon_reload()?;
        remove_dir_if_present(&layout.runtime)?;
        remove_dir_if_present(&layout.state)?;
        Ok(was_running)
    }

    /// Every VM of this home, by name.
    pub fn list(&self) -> Result<Vec<VmStatus>, Error> {
        self.names()?.iter().map(|name| self.status(name)).collect()
    }

    pub fn status(&self, name: &str) -> Result<VmStatus, Error> {
        let (layout, record) = self.existing(name)?;
        let unit = self.systemctl.show(&layout.unit())?;
        let state = VmState::of(&unit);
        let (addresses, agent_error) = match state {
            VmState::Running => match guest_addresses(&layout.agent_socket()) {
                Ok(addresses) => (addresses, None),
                Err(e) => (Vec::new(), Some(e.to_string())),
            },
            _ => (Vec::new(), None),
        };
        Ok(VmStatus {
            name: record.name,
            state,
            addresses,
            agent_error,
            forwards: record.forwards,
            ssh_port: record.ssh_port,
            image: record.image,
            cpus: record.cpus,
            memory: memory_text(record.memory_mib),
            memory_mib: record.memory_mib,
            enabled: unit.unit_file_state == "enabled",
            unit: layout.unit(),
        })
    }

    /// The guest's serial console log (this boot's).
    pub fn serial_log(&self, name: &str) -> Result<PathBuf, Error> {
        Ok(self.existing(name)?.0.serial_log())
    }

    /// The `ssh` command into the running VM, pinned to its image's host key.
    pub fn ssh_command(&self, name: &str, command: &[String]) -> Result<Command, Error> {
        let (layout, _record) = self.existing(name)?;
        self.require_running(&layout)?;
        let mut ssh = Command::new(tools::find("ssh")?);
        ssh.args(ssh::args(
            &layout.ssh_dir().join(ClientFiles::SSH_CONFIG),
            command,
        ));
        Ok(ssh)
    }

    /// Adds a forward: at once over QMP when the VM runs, and to its record and unit so a
    /// restart keeps it. `Ok(true)` when it was applied to the running VM.
    pub fn add_forward(&self, name: &str, forward: Forward) -> Result<bool, Error> {
        let (layout, mut record, _lock) = self.locked(name)?;
        if let Some(existing) = record
            .all_forwards()
            .into_iter()
            .find(|f| f.clashes_with(&forward))
        {
            return Err(Error::ForwardClash {
                forward: forward.to_string(),
                existing: existing.to_string(),
            });
        }
        let running = self.systemctl.show(&layout.unit())?.is_running();
        if running {
            let said = Qmp::connect(&layout.qmp_socket())?.human_monitor(&format!(
                "hostfwd_add net0 {}",
                forward.rule(record.network)
            ))?;
            if !said.is_empty() {
                return Err(Error::ForwardRefused {
                    forward: forward.to_string(),
                    qemu_says: said,
                });
            }
            if record.network == Network::Outbound {
                let api = isolate::api_socket(&layout.runtime);
                slirp4netns::add_forward(&api, &forward)?;
            }
        }
        record.forwards.push(forward);
        self.save_and_reload(&layout, &record)?;
        Ok(running)
    }

    /// Removes a forward from the running VM and from its record and unit.
    pub fn remove_forward(&self, name: &str, forward: Forward) -> Result<bool, Error> {
        let (layout, mut record, _lock) = self.locked(name)?;
        if forward == Forward::ssh(record.ssh_port) {
            return Err(Error::SshForward {
                forward: forward.to_string(),
            });
        }
        let Some(index) = record.forwards.iter().position(|f| *f == forward) else {
            return Err(Error::NoSuchForward {
                name: name.to_owned(),
                forward: forward.to_string(),
                existing: record.forwards.iter().map(Forward::to_string).collect(),
            });
        };
        let running = self.systemctl.show(&layout.unit())?.is_running();
        if running {
            if record.network == Network::Outbound {
                let api = isolate::api_socket(&layout.runtime);
                slirp4netns::remove_forward(&api, &forward)?;
            }
            let said = Qmp::connect(&layout.qmp_socket())?.human_monitor(&format!(
                "hostfwd_remove net0 {}",
                forward.removal_rule(record.network)
            ))?;
            // "not found": QEMU no longer has it; the record is what is left to fix.
            if !said.ends_with("removed") && !said.ends_with("not found") {
                return Err(Error::ForwardRefused {
                    forward: forward.to_string(),
                    qemu_says: said,
                });
            }
        }
        record.forwards.remove(index);
        self.save_and_reload(&layout, &record)?;
        Ok(running)
    }

    /// Saves the running VM's RAM, devices and disk as snapshot `tag` (replacing one of that
    /// name).
    pub fn save_snapshot(&self, name: &str, tag: &str, sink: Sink) -> Result<(), Error> {
        name::check("snapshot", tag)?;
        let (layout, _record, _lock) = self.locked(name)?;
        self.require_running(&layout)?;
        let mut qmp = self.snapshot_monitor(&layout)?;
        events::phase(sink, &format!("save snapshot {tag}"), || {
            hmp_checked(&mut qmp, &format!("savevm {tag}"))
        })
    }

    /// Returns the running VM to snapshot `tag`.
    pub fn load_snapshot(&self, name: &str, tag: &str, sink: Sink) -> Result<(), Error> {
        name::check("snapshot", tag)?;
        let (layout, _record, _lock) = self.locked(name)?;
        self.require_running(&layout)?;
        let mut qmp = self.snapshot_monitor(&layout)?;
        // A failed loadvm leaves the guest paused: make sure the tag exists first.
        let existing = snapshots_of_running(&mut qmp)?;
        if !existing.iter().any(|s| s.tag == tag) {
            return Err(no_such_snapshot(name, tag, &existing));
        }
        events::phase(sink, &format!("load snapshot {tag}"), || {
            let loaded = hmp_checked(&mut qmp, &format!("loadvm {tag}"));
            if loaded.is_err() {
                let _ = qmp.execute("cont", None);
            }
            loaded
        })
    }

    pub fn delete_snapshot(&self, name: &str, tag: &str) -> Result<(), Error> {
        name::check("snapshot", tag)?;
        let (layout, _record, _lock) = self.locked(name)?;
        let existing = self.snapshots_at(&layout)?;
        if !existing.iter().any(|s| s.tag == tag) {
            return Err(no_such_snapshot(name, tag, &existing));
        }
        if self.systemctl.show(&layout.unit())?.is_running() {
            hmp_checked(
                &mut self.snapshot_monitor(&layout)?,
                &format!("delvm {tag}"),
            )
        } else {
            let mut qemu_img = Command::new(tools::find("qemu-img")?);
            qemu_img.args(["snapshot", "-d", tag]).arg(layout.disk());
            crate::external::run(&mut qemu_img)?;
            Ok(())
        }
    }

    pub fn snapshots(&self, name: &str) -> Result<Vec<Snapshot>, Error> {
        let (layout, _record) = self.existing(name)?;
        self.snapshots_at(&layout)
    }

    fn snapshots_at(&self, layout: &VmLayout) -> Result<Vec<Snapshot>, Error> {
        if self.systemctl.show(&layout.unit())?.is_running() {
            return snapshots_of_running(&mut Qmp::connect(&layout.qmp_socket())?);
        }
        // Stopped: the disk says. -U: a VM started meanwhile holds its lock; reading is safe.
        let mut qemu_img = Command::new(tools::find("qemu-img")?);
        qemu_img
            .args(["info", "-U", "--output=json"])
            .arg(layout.disk());
        let out = crate::external::run(&mut qemu_img)?;
        let info: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        Ok(parse_snapshots(info.get("snapshots")))
    }

    /// Starts the VM with the user manager.
    pub fn enable(&self, name: &str) -> Result<Enabled, Error> {
        let (layout, _record, _lock) = self.locked(name)?;
        self.systemctl.enable(&layout.unit())?;
        let user = current_user();
        let lingering = systemd::lingering(&user, Path::new("/var/lib/systemd/linger"));
        Ok(Enabled { user, lingering })
    }

    pub fn disable(&self, name: &str) -> Result<(), Error> {
        let (layout, _record, _lock) = self.locked(name)?;
        self.systemctl.disable(&layout.unit())?;
        Ok(())
    }

    /// The VM's layout and record; `NotFound` when it has none.
    fn existing(&self, name: &str) -> Result<(VmLayout, VmRecord), Error> {
        name::check("vm", name)?;
        let layout = self.layout(name);
        match VmRecord::load(&layout.record()) {
            Ok(record) => Ok((layout, record)),
            Err(record::Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Err(self.not_found(name))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// [`Vms::existing`], holding the VM's lock; the record is read after the lock is taken,
    /// so a change that waited sees what the one before it left (or that it was deleted).
    fn locked(&self, name: &str) -> Result<(VmLayout, VmRecord, VmLock), Error> {
        let (layout, _) = self.existing(name)?;
        let lock = match lock(&layout) {
            Err(Error::Io(PathError { source, .. }))
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Err(self.not_found(name));
            }
            other => other?,
        };
        let (layout, record) = self.existing(name)?;
        Ok((layout, record, lock))
    }

    fn not_found(&self, name: &str) -> Error {
        Error::NotFound {
            name: name.to_owned(),
            known: self.names().unwrap_or_default(),
        }
    }

    fn names(&self) -> Result<Vec<String>, Error> {
        let dir = self.home.vms();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(PathError::at("read", &dir)(e).into()),
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().join("vm.json").exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| name::check("vm", n).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    fn require_running(&self, layout: &VmLayout) -> Result<(), Error> {
        match self.systemctl.show(&layout.unit())?.is_running() {
            true => Ok(()),
            false => Err(Error::NotRunning {
                name: layout.name.clone(),
            }),
        }
    }

    fn snapshot_monitor(&self, layout: &VmLayout) -> Result<Qmp, Error> {
        let mut qmp = Qmp::connect(&layout.qmp_socket())?;
        qmp.set_timeout(SNAPSHOT_TIMEOUT);
        Ok(qmp)
    }

    /// systemd starts QEMU; it is up when its monitor answers. If QEMU exits first (a taken
    /// port, a missing disk), its own messages say why.
    fn start_unit(&self, layout: &VmLayout, was_failed: bool) -> Result<(), Error> {
        let unit = layout.unit();
        if was_failed {
            self.systemctl.reset_failed(&unit)?;
        }
        self.systemctl
            .start(&unit)
            .map_err(|e| self.start_failed(layout, e.to_string()))?;
        self.wait_for_monitor(layout)
    }

    fn wait_for_monitor(&self, layout: &VmLayout) -> Result<(), Error> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(mut qmp) = Qmp::connect(&layout.qmp_socket())
                && qmp.execute("query-status", None).is_ok()
            {
                return Ok(());
            }
            let state = self.systemctl.show(&layout.unit())?;
            if !state.is_running() {
                return Err(self.start_failed(layout, format!("QEMU exited ({})", state.result)));
            }
            if Instant::now() >= deadline {
                return Err(self.start_failed(
                    layout,
                    format!(
                        "QEMU's monitor did not answer within {}s",
                        START_TIMEOUT.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn start_failed(&self, layout: &VmLayout, reason: String) -> Error {
        let said = last_lines(&layout.qemu_log(), LOG_TAIL);
        Error::StartFailed {
            name: layout.name.clone(),
            reason: format!("{reason}\nQEMU's last messages:\n{said}"),
            log: layout.qemu_log(),
            kept: true,
        }
    }

    /// Renders the unit from the record: a new file (`create`), or one replacing the old in
    /// a rename.
    fn write_unit(&self, layout: &VmLayout, record: &VmRecord, create: bool) -> Result<(), Error> {
        let mkdir = tools::find("mkdir")?;
        let vmrun = std::env::current_exe()
            .map_err(PathError::at("find", Path::new("vmrun's own executable")))?;
        let spec = UnitSpec {
            vm: record.name.clone(),
            prepare: vec![mkdir.into(), "-p".into(), layout.runtime.clone().into()],
            run: console::exec_start(
                &vmrun,
                &layout.serial_log(),
                machine::qemu_argv(record, layout)?,
            ),
            stop: vec![
                vmrun.into(),
                "vm".into(),
                "powerdown".into(),
                "--qmp".into(),
                layout.qmp_socket().into(),
                "--agent".into(),
                layout.agent_socket().into(),
            ],
            qemu_log: layout.qemu_log(),
            stop_timeout: STOP_TIMEOUT,
        };
        let text = unit::render(&spec)?;
        fs::create_dir_all(&self.unit_dir).map_err(PathError::at("create", &self.unit_dir))?;
        let path = &layout.unit_file;
        if create {
            use std::io::Write;
            let mut file = match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return Err(Error::UnitTaken { path: path.clone() });
                }
                other => other.map_err(PathError::at("create", path))?,
            };
            Ok(file
                .write_all(text.as_bytes())
                .map_err(PathError::at("write", path))?)
        } else {
            let temp = path.with_extension("service.tmp");
            fs::write(&temp, text).map_err(PathError::at("write", &temp))?;
            Ok(fs::rename(&temp, path).map_err(PathError::at("replace", path))?)
        }
    }

    fn save_and_reload(&self, layout: &VmLayout, record: &VmRecord) -> Result<(), Error> {
        record.save(&layout.record())?;
        self.write_unit(layout, record, false)?;
        self.systemctl.daemon_reload()?;
        Ok(())
    }
}

/// The guest's addresses, loopback left out.
fn guest_addresses(agent_socket: &Path) -> Result<Vec<String>, Error> {
    let interfaces = GuestAgent::connect(agent_socket, AGENT_TIMEOUT)?.network_interfaces()?;
    Ok(interfaces
        .into_iter()
        .filter(|i| i.name != "lo")
        .flat_map(|i| i.addresses)
        .map(|a| a.address)
        .filter(|a| {
            a.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .collect())
}

/// A human monitor command whose only output is an error message.
fn hmp_checked(qmp: &mut Qmp, command: &str) -> Result<(), Error> {
    let said = qmp.human_monitor(command)?;
    match said.is_empty() {
        true => Ok(()),
        false => Err(Error::Snapshot {
            command: command.to_owned(),
            qemu_says: said,
        }),
    }
}

fn snapshots_of_running(qmp: &mut Qmp) -> Result<Vec<Snapshot>, Error> {
    let blocks = qmp.execute("query-block", None)?;
    let disk = blocks
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|b| b.pointer("/inserted/image"));
    Ok(parse_snapshots(
        disk.and_then(|image| image.get("snapshots")),
    ))
}

/// QEMU's SnapshotInfo list (QMP `query-block` and `qemu-img info` use the same fields).
fn parse_snapshots(list: Option<&Value>) -> Vec<Snapshot> {
    let number = |s: &Value, key: &str| s.get(key).and_then(Value::as_u64).unwrap_or(0);
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| Snapshot {
            tag: s
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            vm_state_size: number(s, "vm-state-size"),
            date: number(s, "date-sec"),
            vm_clock_seconds: number(s, "vm-clock-sec"),
        })
        .collect()
}

fn no_such_snapshot(name: &str, tag: &str, existing: &[Snapshot]) -> Error {
    Error::NoSuchSnapshot {
        name: name.to_owned(),
        tag: tag.to_owned(),
        existing: existing.iter().map(|s| s.tag.clone()).collect(),
    }
}

fn memory_text(mib: u64) -> String {
    if mib.is_multiple_of(1024) {
        format!("{}GiB", mib / 1024)
    } else {
        format!("{mib}MiB")
    }
}

/// A free port on 127.0.0.1 for the SSH forward, not one of the user's forwards. It is free
/// now; QEMU binds it when the VM starts (a start fails, saying so, if it was taken since).
fn free_port(forwards: &[Forward]) -> Result<u16, Error> {
    loop {
        let port = free_loopback_port().map_err(PathError::at("bind", Path::new("127.0.0.1:0")))?;
        if !forwards.iter().any(|f| f.clashes_with(&Forward::ssh(port))) {
            return Ok(port);
        }
    }
}

fn lock(layout: &VmLayout) -> Result<VmLock, Error> {
    let path = layout.lock();
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(PathError::at("open", &path))?;
    file.lock().map_err(PathError::at("lock", &path))?;
    Ok(VmLock { _file: file })
}

fn remove_dir_if_present(dir: &Path) -> Result<(), Error> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(PathError::at("remove", dir)(e).into())
        }
        _ => Ok(()),
    }
}

/// The login name, for the lingering check: the passwd entry of the real uid, else $USER.
fn current_user() -> String {
    // SAFETY: getuid has no preconditions; getpwuid's result is read at once, before any
    // other call in this thread could reuse its static buffer.
    unsafe {
        let entry = libc::getpwuid(libc::getuid());
        if !entry.is_null() && !(*entry).pw_name.is_null() {
            return std::ffi::CStr::from_ptr((*entry).pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    std::env::var("USER").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn states_from_systemd() {
        let unit = |load: &str, active: &str| UnitState {
            load_state: load.into(),
            active_state: active.into(),
            ..Default::default()
        };
        assert_eq!(VmState::of(&unit("loaded", "active")), VmState::Running);
        assert_eq!(
            VmState::of(&unit("loaded", "activating")),
            VmState::Starting
        );
        assert_eq!(
            VmState::of(&unit("loaded", "deactivating")),
            VmState::Stopping
        );
        assert_eq!(VmState::of(&unit("loaded", "inactive")), VmState::Stopped);
        assert_eq!(VmState::of(&unit("loaded", "failed")), VmState::Failed);
        assert_eq!(VmState::of(&unit("not-found", "inactive")), VmState::NoUnit);
        assert_eq!(serde_json::to_value(VmState::NoUnit).unwrap(), "no-unit");
    }

    #[test]
    fn snapshot_info() {
        let info = json!([{"id": "1", "name": "before", "vm-state-size": 300000, "date-sec": 1700000000, "date-nsec": 5, "vm-clock-sec": 42, "vm-clock-nsec": 1}]);
        assert_eq!(
            parse_snapshots(Some(&info)),
            [Snapshot {
                tag: "before".into(),
                vm_state_size: 300000,
                date: 1700000000,
                vm_clock_seconds: 42
            }]
        );
        assert!(parse_snapshots(None).is_empty());
    }

    #[test]
    fn free_ports_avoid_the_users_forwards() {
        let port = free_port(&[]).unwrap();
        assert!(port > 0);
        let taken: Vec<Forward> = (1..=5)
            .map(|i| format!("{}:80", port.wrapping_add(i)).parse().unwrap())
            .collect();
        assert!(!taken.iter().any(|f| f.host == free_port(&taken).unwrap()));
    }

    #[test]
    fn memory_for_people() {
        assert_eq!(memory_text(1024), "1GiB");
        assert_eq!(memory_text(1536), "1536MiB");
    }
}
