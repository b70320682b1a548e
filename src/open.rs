//! `vmrun open BUNDLE`: resumes the VM a failed run left in a bundle (see
//! [`crate::run::capture`]), as it was, on the image the bundle names, found in this home's
//! store. Only the host side is new: QEMU (vmrun's own command line, never one from the
//! bundle), its network and the SSH forward. The guest's clock, randomness and processes
//! are what the failed test saw. The bundle is read, never changed, so it opens again.
//!
//! What the bundle says is checked before it is used: its seal, made with the image's
//! client key, so only a holder of the image can make one that opens; every field; the disk
//! layer as any image from outside; the state is loaded by QEMU only once all of that passed.

use std::fs;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::bundle::{self, BootKind, Header, SealKey, Sealed, Verified};
use crate::disk::{self, DiskFormat};
use crate::events::{self, Sink};
use crate::net::forward::Forward;
use crate::net::isolate;
use crate::path_error::PathError;
use crate::paths::Home;
use crate::qemu::args::{Control, Incoming, Machine, MachineSize, Ram};
use crate::qemu::process::{self, QemuProcess};
use crate::qemu::serial::Console;
use crate::run::RunDir;
use crate::ssh::{self, system_ssh_args};
use crate::store::{self, BakedImage, Store};
use crate::wait::Watch;
use crate::warm::{self, StateFile, machine};

/// How long the resumed guest's SSH server has to answer: it was running when the VM was
/// saved, so it answers at once unless the failure took it down.
const SSH_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Bundle(#[from] bundle::Error),
    #[error(
        "{} needs image {key} (the run named it `{label}`), which is not in this store ({store})",
        .bundle.display()
    )]
    #[diagnostic(help(
        "on a machine that has it: vmrun images export NAME -o FILE; here: vmrun images import FILE"
    ))]
    ImageMissing {
        bundle: PathBuf,
        key: String,
        label: String,
        store: String,
    },
    #[error("{} was saved by {saved}; this is {now}", .bundle.display())]
    #[diagnostic(help("open it where the same QEMU version is installed"))]
    QemuVersion {
        bundle: PathBuf,
        saved: String,
        now: String,
    },
    #[error("{} cannot be opened: its disk layer is refused", .bundle.display())]
    UnsafeLayer {
        bundle: PathBuf,
        #[source]
        #[diagnostic_source]
        source: disk::Error,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Disk(#[from] disk::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Warm(#[from] warm::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Isolate(#[from] isolate::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Qemu(#[from] process::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Ssh(#[from] ssh::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Run(#[from] crate::run::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Tool(#[from] crate::tools::MissingTool),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Io(#[from] PathError),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        use crate::exit_code::{BAD_INPUT, INTERNAL, VM_FAILED};
        match self {
            Error::Bundle(e) => e.exit_code(),
            Error::ImageMissing { .. } | Error::QemuVersion { .. } | Error::UnsafeLayer { .. } => {
                BAD_INPUT
            }
            Error::Store(e) => e.exit_code(),
            Error::Disk(e) => e.exit_code(),
            Error::Warm(e) => e.exit_code(),
            Error::Isolate(e) => e.exit_code(),
            Error::Ssh(e) => e.exit_code(),
            Error::Run(e) => e.exit_code(),
            Error::Qemu(_) => VM_FAILED,
            Error::Tool(_) => crate::exit_code::MISSING_TOOL,
            Error::Io(_) => INTERNAL,
        }
    }
}

/// The bundle's header and whether its seal was checked: for `vmrun open --info`, which
/// also describes a bundle whose image is not here, or whose seal does not match.
pub fn info(path: &Path, home: &Home) -> Result<(Sealed, Verified), Error> {
    let sealed = bundle::read_header(path)?;
    let verified = match Store::new(home).entry(&sealed.header.image.key)? {
        Some(image) => match sealed.verify(&seal_key(&image)?) {
            Ok(()) => Verified::Yes,
            Err(_) => Verified::Mismatch,
        },
        None => Verified::ImageMissing,
    };
    Ok((sealed, verified))
}

/// Opens the bundle at `path` and runs `command` in its VM over SSH (an interactive shell
/// when empty); returns the exit code of ssh (the command's own). The VM goes when it ends.
pub fn open(
    path: &Path,
    command: &[String],
    home: &Home,
    qemu: &Path,
    sink: Sink,
) -> Result<i32, Error> {
    let sealed = bundle::read_header(path)?;
    let header = &sealed.header;
    let image = Store::new(home)
        .entry(&header.image.key)?
        .ok_or_else(|| Error::ImageMissing {
            bundle: path.to_owned(),
            key: header.image.key.clone(),
            label: crate::guest_text::line(&header.image.name),
            store: home.store().display().to_string(),
        })?;
    let key = seal_key(&image)?;
    sealed.verify(&key)?;
    let now = warm::qemu_version(qemu)?;
    if now != header.qemu_version {
        return Err(Error::QemuVersion {
            bundle: path.to_owned(),
            saved: header.qemu_version.clone(),
            now,
        });
    }

    let id = crate::random::hex(4);
    let dir = RunDir::create(&home.runs(), &id)?;
    let _held = image.hold(&id)?;
    events::phase(sink, &format!("open {}", path.display()), || {
        bundle::extract(path, &key, dir.path(), sink).map(drop)
    })?;
    let disk = dir.file("disk.qcow2");
    attach_disk(path, &disk, &base_disk(&image, header)?)?;

    let port = crate::qemu::port::free_loopback_port()
        .map_err(PathError::at("bind", Path::new("127.0.0.1")))?;
    let console = Console::to_log(&dir.file("serial.log"))
        .map_err(PathError::at("create", &dir.file("serial.log")))?;
    let machine = Machine {
        accel: header.machine.accel,
        size: MachineSize {
            cpus: header.machine.cpus,
            memory_mib: header.machine.memory_mib,
        },
        disk: disk.clone(),
        seed: None,
        console: console.fd(),
        network: header.machine.network,
        forwards: vec![Forward::ssh(port)],
        control: Some(Control {
            generation: Some(header.machine.generation.clone()),
            ..machine::control(
                dir.path(),
                Ram::Anonymous,
                Some(Incoming {
                    layers: disk::backing_chain(&disk)?.len(),
                }),
            )
        }),
        persistent: None,
    };
    let state_path = dir.file("state");
    let state = fs::File::open(&state_path).map_err(PathError::at("open", &state_path))?;
    let (program, args) = isolate::command(&machine, dir.path(), qemu)?;
    let vm = QemuProcess::spawn_passing(
        &program,
        &args,
        &dir.file("qemu.log"),
        console,
        state.as_fd(),
    )?;
    dir.record_qemu_pid(vm.pid())?;
    let watch = Watch::qemu(&vm);
    events::phase(sink, "resume its VM as it was saved", || {
        warm::resume(
            &dir.file(machine::QMP_SOCKET),
            StateFile::Inherited(state.as_raw_fd()),
            false,
            &watch,
        )
    })?;
    drop(state);
    // The state is in QEMU: the copy goes now rather than at the end.
    fs::remove_file(&state_path).map_err(PathError::at("remove", &state_path))?;

    let target = image.ssh_target(port)?;
    let files = ssh::ClientFiles::write(&dir.ssh_dir(), &target)?;
    let session = ssh::wait_ready(&target, Instant::now() + SSH_TIMEOUT, &watch)?;
    drop(session);
    let code = run_ssh(&files.ssh_config, command)?;
    drop(vm);
    drop(dir);
    Ok(code)
}

fn seal_key(image: &BakedImage) -> Result<SealKey, Error> {
    let path = image.client_key();
    let bytes = fs::read(&path).map_err(PathError::at("read", &path))?;
    Ok(SealKey::from_client_key(&bytes))
}

/// The layer the bundle's disk stands on: the image's warm layer or its own disk.
fn base_disk(image: &BakedImage, header: &Header) -> Result<PathBuf, Error> {
    Ok(match header.machine.boot {
        BootKind::Cold => image.disk(),
        BootKind::Warm => match warm::WarmState::load(&image.dir)? {
            Some(warm) => warm.disk,
            None => {
                let dir = image.dir.join(warm::DIR);
                return Err(
                    PathError::at("read", &dir)(std::io::ErrorKind::NotFound.into()).into(),
                );
            }
        },
    })
}

/// Checks the bundle's disk layer as an image from outside (qcow2, no external data file,
/// no encryption, no unknown feature, a qcow2 backing file) and makes it stand on `base`:
/// the backing name it recorded was a path on the machine that saved it.
fn attach_disk(bundle: &Path, disk: &Path, base: &Path) -> Result<(), Error> {
    let refused = |source| Error::UnsafeLayer {
        bundle: bundle.to_owned(),
        source,
    };
    match disk::sniff(disk).map_err(refused)? {
        DiskFormat::Qcow2 {
            backing: Some(_),
            backing_format: Some(format),
            ..
        } if format == "qcow2" => {}
        _ => {
            return Err(refused(disk::Error::CorruptQcow2 {
                path: disk.to_owned(),
                reason: "it is not a qcow2 layer over a qcow2 image".into(),
            }));
        }
    }
    disk::set_backing_name(disk, base).map_err(refused)
}

/// The system ssh into the VM, with the files written for it: `command` (each word quoted
/// for the guest's shell), or an interactive shell.
fn run_ssh(config: &Path, command: &[String]) -> Result<i32, Error> {
    let mut ssh_command = Command::new(crate::tools::find("ssh")?);
    ssh_command.args(system_ssh_args(config, command));
    let status = ssh_command
        .status()
        .map_err(PathError::at("run", Path::new("ssh")))?;
    Ok(status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::Overlay;

    #[test]
    fn the_disk_layer_is_made_to_stand_on_this_stores_layer_and_a_raw_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
        let elsewhere = dir.path().join("elsewhere.qcow2");
        Overlay::create(&elsewhere, &raw).unwrap();
        let layer = dir.path().join("disk.qcow2");
        Overlay::create(&layer, &elsewhere).unwrap();
        let base = dir.path().join("base.qcow2");
        Overlay::create(&base, &raw).unwrap();
        attach_disk(Path::new("b.vmrun"), &layer, &base).unwrap();
        let DiskFormat::Qcow2 { backing, .. } = disk::sniff(&layer).unwrap() else {
            panic!("not qcow2")
        };
        assert_eq!(backing.as_deref(), Some(base.as_path()));

        let err = attach_disk(Path::new("b.vmrun"), &raw, &base).unwrap_err();
        assert_eq!(err.exit_code(), crate::exit_code::BAD_INPUT);
        assert!(
            err.to_string().contains("b.vmrun cannot be opened"),
            "{err}"
        );
    }
}
