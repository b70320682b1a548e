//! One change to a VM at a time: every command that changes a VM holds its lock
//! (`state/vms/NAME/.lock`, a flock) for the change, and reads the record after taking it.

use super::{Error, VmLayout, VmName, VmRecord, Vms};
use crate::lock_file::LockFile;
use crate::path_error::PathError;

/// A change to a VM is under way: other changes wait until this is dropped (and the file,
/// with its lock, closed).
pub(super) struct VmLock {
    _lock: LockFile,
}

/// Takes the VM's lock, waiting for a change under way to end.
pub(super) fn lock(layout: &VmLayout) -> Result<VmLock, Error> {
    let lock = LockFile::acquire(&layout.lock(), || ())?;
    Ok(VmLock { _lock: lock })
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
