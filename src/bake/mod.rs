//! `vmrun bake`: a source image, provisioned once by cloud-init from a native seed, stored
//! under a content key. One boot: cloud-init runs vmrun.yaml's `bake:` section, the verdict
//! hook reports on the serial console, the guest powers off.

pub mod cloud_config;
mod console;
mod failure;
mod keys;
pub mod on_demand;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::config::BakeConfig;
use crate::disk::{self, Overlay};
use crate::events::{Event, Sink, phase};
use crate::guest_text;
use crate::image::source::{self, ImageSource};
use crate::lock_file::LockFile;
use crate::name::ImageName;
use crate::net::{Network, isolate};
use crate::path_error::PathError;
use crate::paths::Home;
use crate::qemu::args::{Accel, Machine, MachineSize};
use crate::qemu::process::{self, QemuProcess};
use crate::qemu::serial::{Console, Lines, last_lines};
use crate::seed::{self, SeedIso};
use crate::store::{self, BakedImage, Manifest, Store};
use crate::wait::{Stop, Watch};
use crate::warm::{self, WarmState};
use console::ConsoleSignal;
use keys::KeyPair;

/// How often the bake looks at the console and at QEMU.
const POLL: Duration = Duration::from_millis(100);
/// Lines of the serial console shown when a bake fails.
const TAIL_LINES: usize = 30;
/// Console lines read between two looks at QEMU and the deadline.
const LINES_PER_CHECK: usize = 256;
/// After the verdict, how long the guest may take to power off.
const POWEROFF_GRACE: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Source(#[from] source::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Keys(#[from] keys::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    CloudConfig(#[from] cloud_config::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Seed(#[from] seed::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Disk(#[from] disk::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Qemu(#[from] process::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Isolate(#[from] isolate::Error),
    #[error(
        "cloud-init failed while provisioning: {errors}\n{}",
        failure::report(serial_log).unwrap_or_else(|| console_tail(serial_log))
    )]
    #[diagnostic(help("{}", failure::help(errors, serial_log)))]
    Provisioning { errors: String, serial_log: PathBuf },
    #[error(
        "the guest stopped ({status}) without reporting that provisioning finished\n{}",
        console_tail(serial_log)
    )]
    #[diagnostic(help("QEMU's own messages: {qemu_log}"))]
    NoVerdict {
        status: String,
        serial_log: PathBuf,
        qemu_log: String,
    },
    #[error("the bake did not finish within {}s\n{}", after.as_secs(), console_tail(serial_log))]
    #[diagnostic(help(
        "a slow package install needs a longer --timeout; \
         under TCG everything is ~10x slower than KVM"
    ))]
    Timeout {
        after: Duration,
        serial_log: PathBuf,
    },
    #[error("reading the warm state failed")]
    Warm(#[source] warm::Error),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Io(#[from] PathError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Stopped(#[from] Stop),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        use crate::exit_code::{BAD_INPUT, IMAGE_FAILED, INTERNAL};
        match self {
            Error::Source(e) => e.exit_code(),
            Error::Store(e) => e.exit_code(),
            Error::Disk(e) => e.exit_code(),
            Error::Isolate(e) => e.exit_code(),
            Error::Seed(e) => e.exit_code(),
            Error::CloudConfig(_) => BAD_INPUT,
            Error::Keys(_) | Error::Io(_) => INTERNAL,
            Error::Stopped(stop) => stop.exit_code(),
            Error::Qemu(_)
            | Error::Warm(_)
            | Error::Provisioning { .. }
            | Error::NoVerdict { .. }
            | Error::Timeout { .. } => IMAGE_FAILED,
        }
    }
}

fn console_tail(serial_log: &Path) -> String {
    format!(
        "last lines of the serial console ({}):\n{}",
        serial_log.display(),
        last_lines(serial_log, TAIL_LINES)
    )
}

/// Everything a bake needs, validated by the caller.
#[derive(Debug, Clone)]
pub struct BakeRequest {
    pub source: ImageSource,
    pub name: ImageName,
    pub bake: BakeConfig,
    pub size: MachineSize,
    pub accel: Accel,
    pub timeout: Duration,
}

/// The result: the stored image and whether it came from the cache.
#[derive(Debug, Clone)]
pub struct Baked {
    pub image: BakedImage,
    pub cached: bool,
}

/// Bakes `req` (or finds the same bake in the store) and gives it `req.name`.
pub fn bake(req: &BakeRequest, home: &Home, qemu: &Path, sink: Sink) -> Result<Baked, Error> {
    let local = req.source.materialize(&home.sources(), sink)?;
    let key = cache_key(&local.digest, &req.bake, req.size)?;
    let store = Store::new(home);
    if let Some(image) = store.entry(&key)? {
        ensure_warm(&image, req, home, qemu, sink)?;
        store.set_name(&req.name, &key)?;
        sink(Event::Notice(format!(
            "same inputs as an earlier bake: reusing {}",
            &key[..12]
        )));
        return Ok(Baked {
            image,
            cached: true,
        });
    }

    let staging = store.staging()?;
    let dir = staging.path();
    let host_key = KeyPair::generate(&dir.join("host_ed25519"), "vmrun-guest")?;
    let client_key = KeyPair::generate(&dir.join(BakedImage::CLIENT_KEY), "vmrun")?;
    let marker = format!("vmrun-bake-{}", crate::random::hex(8));
    let secrets = cloud_config::BakeSecrets {
        client_public_key: client_key.public_line.clone(),
        host_private_key: host_key.private_key()?,
        host_public_key: host_key.public_line.clone(),
        verdict_marker: marker.clone(),
    };
    // The guest has the host key now; the store keeps only its public half.
    fs::remove_file(&host_key.private_path)
        .map_err(PathError::at("remove", &host_key.private_path))?;
    let seed_path = dir.join("seed.iso");
    SeedIso::new(cloud_config::user_data(&req.bake, &secrets)?)
        .meta_data(cloud_config::meta_data(&format!(
            "vmrun-bake-{}",
            &key[..16]
        )))
        .write_to(&seed_path)?;
    let disk = dir.join(BakedImage::DISK);
    Overlay::create(&disk, &local.path)?;

    let serial_log = dir.join(BakedImage::BAKE_LOG);
    let (console, lines) =
        Console::with_lines(&serial_log).map_err(PathError::at("create", &serial_log))?;
    let machine = Machine {
        accel: req.accel,
        size: req.size,
        disk,
        seed: Some(seed_path.clone()),
        console: console.fd(),
        // Provisioning installs packages: the outside world, not the host.
        network: Network::Outbound,
        forwards: vec![],
        control: None,
        persistent: None,
    };
    let vm = Booting {
        console,
        lines,
        serial_log: &serial_log,
        dir,
    };
    let provisioned = boot_until_verdict(&machine, vm, qemu, &marker, req.timeout, sink);
    if let Err(e) = provisioned {
        return Err(keep_log_of_failure(e, &serial_log, home, req.name.as_str()));
    }
    for leftover in [seed_path, dir.join("qemu.log")] {
        fs::remove_file(&leftover).map_err(PathError::at("remove", &leftover))?;
    }
    // What the isolated network left, if it was used.
    for leftover in [isolate::api_socket(dir), dir.join(isolate::RESOLV_CONF)] {
        match fs::remove_file(&leftover) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(PathError::at("remove", &leftover)(e).into());
            }
            _ => {}
        }
    }

    let manifest = Manifest {
        key: key.clone(),
        source: req.source.describe(),
        source_digest: local.digest,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        cpus: req.size.cpus,
        memory_mib: req.size.memory_mib,
        vmrun_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let image = store.commit(staging, &manifest)?;
    ensure_warm(&image, req, home, qemu, sink)?;
    store.set_name(&req.name, &key)?;
    Ok(Baked {
        image,
        cached: false,
    })
}

/// The image's content key: the source's digest, the seed as rendered from the `bake:`
/// section and vmrun's templates (secrets left out), and vmrun's version.
pub fn cache_key(
    source_digest: &str,
    bake: &BakeConfig,
    size: MachineSize,
) -> Result<String, Error> {
    let mut h = Sha256::new();
    // The machine's size is part of the image: its warm state was saved with it.
    h.update(format!(
        "vmrun-bake\0{}\0{source_digest}\0{}\0{}\0",
        env!("CARGO_PKG_VERSION"),
        size.cpus,
        size.memory_mib
    ));
    h.update(cloud_config::cache_material(bake)?);
    Ok(crate::sha256::Sha256::finish(h).to_string())
}

/// Gives the entry its warm state if it has none yet (a fresh bake, or an entry whose
/// capture failed before). One vmrun at a time does it; a half-written state is replaced.
fn ensure_warm(
    image: &BakedImage,
    req: &BakeRequest,
    home: &Home,
    qemu: &Path,
    sink: Sink,
) -> Result<(), Error> {
    let current = |image: &BakedImage| -> Result<bool, Error> {
        let warm = WarmState::load(&image.dir).map_err(Error::Warm)?;
        Ok(warm.is_some_and(|w| w.machine.format == warm::machine::FORMAT))
    };
    if current(image)? {
        return Ok(());
    }
    let _lock = LockFile::acquire(&image.dir.join("warm.lock"), || {
        sink(Event::Detail(
            "waiting for another vmrun saving this image's warm state".into(),
        ))
    })?;
    if current(image)? {
        return Ok(());
    }
    // A half-written state, or one an older vmrun saved (runs then boot cold): replaced.
    let partial = image.dir.join(crate::warm::DIR);
    if partial.exists() {
        sink(Event::Detail(
            "replacing the warm state an older vmrun or an interrupted bake left".into(),
        ));
        fs::remove_dir_all(&partial).map_err(PathError::at("remove", &partial))?;
    }
    let capture = warm::Capture {
        image,
        accel: req.accel,
        size: req.size,
        qemu,
        boot_timeout: req.timeout,
        runs: &home.runs(),
    };
    let saved = phase(sink, "save the warm state", || {
        warm::capture(&capture, sink)
    });
    match saved {
        Ok(_) => Ok(()),
        Err(e) => {
            let _ = fs::remove_dir_all(&partial);
            match e {
                warm::Error::Stopped(stop @ Stop::Signal(_)) => Err(stop.into()),
                // The image is provisioned and usable: it runs cold.
                e => {
                    sink(Event::Notice(format!(
                        "warning: the warm state could not be saved, so runs of this image \
                         boot cold (bake it again to retry): {}",
                        crate::error_line::one_line(&e)
                    )));
                    Ok(())
                }
            }
        }
    }
}

/// The bake VM's console and logs, before QEMU starts.
struct Booting<'a> {
    console: Console,
    lines: Lines,
    serial_log: &'a Path,
    /// The staging directory: QEMU's log, and the isolated network's files.
    dir: &'a Path,
}

/// Boots the bake VM and follows its console until the verdict and the poweroff.
fn boot_until_verdict(
    machine: &Machine,
    vm: Booting,
    qemu: &Path,
    marker: &str,
    timeout: Duration,
    sink: Sink,
) -> Result<(), Error> {
    let started = Instant::now();
    sink(Event::PhaseStarted("boot and provision".into()));
    let Booting {
        console,
        lines,
        serial_log,
        dir,
    } = vm;
    let qemu_log = &dir.join("qemu.log");
    let (program, args) = isolate::command(machine, dir, qemu)?;
    let mut vm = QemuProcess::spawn(&program, &args, qemu_log, console)?;
    // Bound after `vm`, so dropped before it: a console reader waiting for room in the queue
    // then ends, and dropping `vm` (which waits for the reader) cannot hang.
    let lines = lines;
    let serial_log = serial_log.to_owned();
    let mut verdict: Option<Result<(), String>> = None;
    let mut deadline = started + timeout;
    // QEMU's exit is how a bake ends, so the wait watches only for a stop request; it sleeps
    // in the console's receive between two looks.
    let watch = Watch::signals();
    let status = loop {
        watch.check()?;
        if let Some(exited) = vm.exited() {
            // The rest of the console, which may hold the verdict, until its reader ends.
            verdict = lines.iter().fold(verdict, |verdict, line| {
                read(&line, marker, sink).or(verdict)
            });
            break exited.status;
        }
        if Instant::now() >= deadline {
            vm.kill()?;
            return match verdict {
                Some(Err(errors)) => Err(Error::Provisioning { errors, serial_log }),
                _ => Err(Error::Timeout {
                    after: started.elapsed(),
                    serial_log,
                }),
            };
        }
        // A bounded batch: a flooded console must not keep QEMU and the deadline unchecked.
        let first = lines.recv_timeout(POLL).ok();
        for line in first
            .into_iter()
            .chain(lines.try_iter().take(LINES_PER_CHECK))
        {
            if let Some(said) = read(&line, marker, sink) {
                verdict = Some(said);
                deadline = deadline.min(Instant::now() + POWEROFF_GRACE);
            }
        }
    };
    match verdict {
        Some(Ok(())) if status.success() => {
            sink(Event::PhaseFinished {
                phase: "boot and provision".into(),
                elapsed: started.elapsed(),
            });
            Ok(())
        }
        Some(Err(errors)) => Err(Error::Provisioning { errors, serial_log }),
        _ => Err(Error::NoVerdict {
            status: crate::child::describe(status),
            serial_log,
            qemu_log: fs::read_to_string(qemu_log)
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }),
    }
}

/// Tells what one console line says about the bake; the verdict, when it is one.
fn read(line: &str, marker: &str, sink: Sink) -> Option<Result<(), String>> {
    match console::signal(line, marker)? {
        ConsoleSignal::Stage(stage) => sink(Event::Detail(format!(
            "cloud-init: {}",
            guest_text::line(&stage)
        ))),
        ConsoleSignal::CloudInitFinished => sink(Event::Detail("cloud-init finished".into())),
        ConsoleSignal::Succeeded => {
            sink(Event::Detail("provisioned; powering off".into()));
            return Some(Ok(()));
        }
        ConsoleSignal::Failed(errors) => return Some(Err(guest_text::line(&errors))),
    }
    None
}

/// A failed bake's staging directory is removed; its console log is kept where the error
/// points, so the failure can be looked into.
fn keep_log_of_failure(error: Error, serial_log: &Path, home: &Home, name: &str) -> Error {
    let kept = home
        .state
        .join("failed-bakes")
        .join(format!("{name}.serial.log"));
    let moved = kept.parent().is_some_and(|d| fs::create_dir_all(d).is_ok())
        && fs::copy(serial_log, &kept).is_ok();
    if !moved {
        return error;
    }
    match error {
        Error::Provisioning { errors, .. } => Error::Provisioning {
            errors,
            serial_log: kept,
        },
        Error::NoVerdict {
            status, qemu_log, ..
        } => Error::NoVerdict {
            status,
            serial_log: kept,
            qemu_log,
        },
        Error::Timeout { after, .. } => Error::Timeout {
            after,
            serial_log: kept,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: MachineSize = MachineSize {
        cpus: 2,
        memory_mib: 1024,
    };

    #[test]
    fn cache_key_follows_source_bake_section_and_size() {
        let plain = BakeConfig::default();
        let key = cache_key("sha-a", &plain, SIZE).unwrap();
        assert_eq!(key.len(), 64);
        assert_eq!(key, cache_key("sha-a", &plain, SIZE).unwrap());
        assert_ne!(key, cache_key("sha-b", &plain, SIZE).unwrap());
        assert_ne!(
            key,
            cache_key(
                "sha-a",
                &plain,
                MachineSize {
                    memory_mib: 2048,
                    ..SIZE
                }
            )
            .unwrap()
        );
        let with_packages = BakeConfig {
            packages: vec!["curl".into()],
            ..Default::default()
        };
        assert_ne!(key, cache_key("sha-a", &with_packages, SIZE).unwrap());
    }
}
