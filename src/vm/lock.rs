//! One change to a VM at a time: every command that changes a VM holds its lock
//! (`state/vms/NAME/.lock`, a flock) for the change, and reads the record after taking it.

use std::fs::{self, File};
use std::os::unix::fs::OpenOptionsExt;

use super::{Error, VmLayout, VmName, VmRecord, Vms};
use crate::path_error::PathError;

/// A change to a VM is under way: other changes wait until this is dropped (and the file,
/// with its lock, closed).
pub(super) struct VmLock {
    _file: File,
}

/// Takes the VM's lock, waiting for a change under way to end.
pub(super) fn lock(layout: &VmLayout) -> Result<VmLock, Error> {
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

impl Vms {
    /// The VM's layout and record, holding the VM's lock; the record is read after the lock
    /// is taken, so a change that waited sees what the one before it left (or that it was
    /// deleted).
    pub(super) fn locked(&self, name: &VmName) -> Result<(VmLayout, VmRecord, VmLock), Error> {
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
}
