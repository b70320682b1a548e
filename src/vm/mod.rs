//! Persistent VMs: an overlay on a baked image, run by QEMU as a systemd user unit
//! (`vmrun-NAME.service`), so it outlives vmrun and, with lingering, a reboot; vmrun has no
//! daemon of its own. systemd says whether QEMU runs; the guest's SSH says whether the VM
//! can be used; QMP changes a running one (forwards, snapshots); the guest agent reports its
//! addresses.
//!
//! [`Vms`] is split by concern, one file each: `create`, `lifecycle` (start, stop, restart,
//! delete, enable), `readiness` (waiting for SSH), `status`, `forwards` (changed live),
//! `snapshots`, `lock` (one change at a time), `image_reference` (the store entry a VM
//! stands on), `unit_file` and `warm_start` (a first start that resumes the image's warm
//! state). Names arrive checked ([`VmName`]); nothing here checks them
//! again.

mod console;
mod create;
mod error;
mod forwards;
mod image_reference;
mod layout;
mod lifecycle;
mod lock;
mod machine;
mod power;
mod readiness;
pub mod record;
mod snapshots;
pub mod ssh;
mod status;
pub mod systemd;
pub mod unit;
mod unit_file;
mod warm_start;

use std::fs;
use std::path::PathBuf;

pub use crate::name::{SnapshotTag, VmName};
pub use crate::net::forward::Forward;
pub use console::run_qemu;
pub use create::{CreateRequest, image_for_create};
pub use error::Error;
pub use image_reference::adopt_image_references;
pub use layout::{VmLayout, unit_name};
pub use lifecycle::{Enabled, STOP_TIMEOUT, Stopped};
pub use power::{PowerDown, power_down};
pub use readiness::BOOT_TIMEOUT;
pub use record::VmRecord;
pub use snapshots::Snapshot;
pub use status::{VmState, VmStatus};

use crate::path_error::PathError;
use crate::paths::Home;
use systemd::Systemctl;

/// The persistent VMs of one vmrun home, and the user manager that runs them.
pub struct Vms {
    home: Home,
    unit_dir: PathBuf,
    systemctl: Systemctl,
}

impl Vms {
    /// Finds the user's unit directory, checks that the user manager answers, and registers
    /// the image references of VMs made before vmrun kept them.
    pub fn open(home: Home) -> Result<Vms, Error> {
        let unit_dir = systemd::user_unit_dir(|name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .ok_or(Error::NoUnitDir)?;
        let systemctl = Systemctl::connect()?;
        adopt_image_references(&home)?;
        Ok(Vms {
            home,
            unit_dir,
            systemctl,
        })
    }

    pub fn layout(&self, name: &VmName) -> VmLayout {
        VmLayout::new(&self.home, &self.unit_dir, name)
    }

    /// The VM's layout and record; `NotFound` when it has none.
    fn existing(&self, name: &VmName) -> Result<(VmLayout, VmRecord), Error> {
        let layout = self.layout(name);
        match VmRecord::load(&layout.record()) {
            Ok(record) => Ok((layout, record)),
            Err(record::Error::Io(PathError { source, .. }))
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Err(self.not_found(name))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn not_found(&self, name: &VmName) -> Error {
        Error::NotFound {
            name: name.to_string(),
            known: names(&self.home)
                .unwrap_or_default()
                .iter()
                .map(VmName::to_string)
                .collect(),
        }
    }

    /// The guest's serial console log (this boot's).
    pub fn serial_log(&self, name: &VmName) -> Result<PathBuf, Error> {
        Ok(self.existing(name)?.0.serial_log())
    }

    fn require_running(&self, layout: &VmLayout) -> Result<(), Error> {
        match self.systemctl.show(&layout.unit())?.is_running() {
            true => Ok(()),
            false => Err(Error::NotRunning {
                name: layout.name.to_string(),
            }),
        }
    }
}

/// The VMs of `home`, sorted: the directories that hold a record, under a valid name.
fn names(home: &Home) -> Result<Vec<VmName>, Error> {
    let dir = home.vms();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PathError::at("read", &dir)(e).into()),
    };
    let mut names: Vec<VmName> = entries
        .flatten()
        .filter(|e| e.path().join(layout::RECORD).exists())
        .filter_map(|e| VmName::new(e.file_name().to_str()?).ok())
        .collect();
    names.sort();
    Ok(names)
}
