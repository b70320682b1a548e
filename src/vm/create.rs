//! `vm create`: a new VM's record, disk, SSH files and unit, then its first start, which
//! resumes the image's warm state when it fits (see `warm_start`). Refused when the name is
//! taken; a failure removes everything made.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::lock::lock;
use super::record::WarmStart;
use super::{Error, Forward, VmLayout, VmName, VmRecord, Vms, image_reference};
use crate::events::{self, Event, Sink};
use crate::name::ImageName;
use crate::net::Network;
use crate::path_error::PathError;
use crate::paths::Home;
use crate::qemu::args::Accel;
use crate::qemu::args::MachineSize;
use crate::qemu::port::free_loopback_port;
use crate::ssh::ClientFiles;
use crate::store::{BakedImage, NamedImage, Store};
use crate::warm;

/// What `vm create` needs, validated by the caller.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub name: VmName,
    /// The baked image, its disk chain already checked ([`image_for_create`]).
    pub image: NamedImage,
    pub size: MachineSize,
    pub forwards: Vec<Forward>,
    pub network: Network,
    pub accel: Accel,
    pub qemu: PathBuf,
}

/// The baked image `name`, for a new VM: refused when its disk chain holds a layer the qcow2
/// reader refuses (a store entry changed after its bake). Meant to run before systemd or QEMU
/// are asked anything, so that a refused image leaves nothing behind.
pub fn image_for_create(home: &Home, name: &ImageName) -> Result<NamedImage, Error> {
    let image = Store::new(home).get(name)?;
    crate::disk::backing_chain(&image.disk())?;
    Ok(NamedImage {
        name: name.to_string(),
        image,
    })
}

impl Vms {
    /// Creates the VM and starts QEMU (see `readiness` for waiting until it can be used).
    /// Refused when the name is taken (also by a concurrent create: the VM's directory is
    /// made exclusively); a failure removes everything made.
    pub fn create(&self, req: &CreateRequest, sink: Sink) -> Result<VmRecord, Error> {
        let image = &req.image.image;
        let layout = self.layout(&req.name);
        if layout.state.exists() {
            return Err(Error::Exists {
                name: req.name.to_string(),
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
                    name: req.name.to_string(),
                });
            }
            other => other.map_err(PathError::at("create", &layout.state))?,
        }
        let _lock = lock(&layout)?;
        let record = VmRecord {
            name: req.name.to_string(),
            image: req.image.name.clone(),
            image_key: image.manifest.key.clone(),
            cpus: req.size.cpus,
            memory_mib: req.size.memory_mib,
            accel: req.accel,
            ssh_port: 0,
            forwards: req.forwards.clone(),
            network: req.network,
            qemu: req.qemu.clone(),
            created: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            warm: None,
        };
        let mut unit_written = false;
        let made = self.make(&layout, record, image, &mut unit_written, sink);
        if made.is_err() {
            self.remove_remains(&layout, &image.manifest.key, unit_written);
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
        // First, so that from now on `images rm` sees the image as in use.
        image_reference::hold(&self.home, &layout.name, &record.image_key)?;
        record.ssh_port = free_port(&record.forwards)?;
        let base = match warm::fitting(&image.dir, &record.qemu, record.accel, record.size())? {
            Ok(warm) => {
                record.warm = Some(WarmStart { resume: true });
                warm.disk
            }
            Err(why) => {
                sink(Event::Notice(format!("booting cold: {why}")));
                image.disk()
            }
        };
        record.save(&layout.record())?;
        events::phase(sink, "create the VM's disk", || {
            crate::disk::Overlay::create(&layout.disk(), &base)
        })?;
        ClientFiles::write(&layout.ssh_dir(), &image.ssh_target(record.ssh_port)?)?;
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
        self.start_unit(layout, &record, false, sink)?;
        Ok(VmRecord::load(&layout.record())?)
    }

    /// Best effort after a failed create: stops and removes what was made, the image
    /// reference last (as `delete` does).
    fn remove_remains(&self, layout: &VmLayout, image_key: &str, unit_written: bool) {
        if unit_written {
            let _ = self.systemctl.stop(&layout.unit());
            let _ = fs::remove_file(&layout.unit_file);
            let _ = self.systemctl.daemon_reload();
            let _ = self.systemctl.reset_failed(&layout.unit());
        }
        let _ = fs::remove_dir_all(&layout.runtime);
        let _ = fs::remove_dir_all(&layout.state);
        let _ = image_reference::release(&self.home, &layout.name, image_key);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_avoid_the_users_forwards() {
        let port = free_port(&[]).unwrap();
        assert!(port > 0);
        let taken: Vec<Forward> = (1..=5)
            .map(|i| format!("{}:80", port.wrapping_add(i)).parse().unwrap())
            .collect();
        assert!(!taken.iter().any(|f| f.host == free_port(&taken).unwrap()));
    }
}
