//! The store entry a VM's disk stands on, held by key for as long as the VM exists (see
//! `crate::store::Reference` and the store's references): registered at create before the
//! disk is made, released at delete after everything else is gone.
//!
//! VMs created before vmrun kept references have none. [`adopt_image_references`] registers
//! one for every VM whose record exists; it runs whenever VMs are opened and before
//! `images rm`, so such a VM is covered from the first vmrun command after the upgrade that
//! could remove or free its image. Registering is idempotent, so this needs no marker. A
//! delete that runs meanwhile is harmless: it removes the record before it releases, and
//! adopting releases again what it registered for a record that vanished.

use super::{Error, VmName, VmRecord, layout, names};
use crate::paths::Home;
use crate::store::{self, Holder, Store};

/// Registers VM `name` as a holder of store entry `key`.
pub(super) fn hold(home: &Home, name: &VmName, key: &str) -> Result<(), Error> {
    Ok(Store::new(home).register(key, &holder(name))?)
}

/// Ends VM `name`'s hold on `key`; the entry goes if nothing else names or holds it.
pub(super) fn release(home: &Home, name: &VmName, key: &str) -> Result<(), Error> {
    Ok(Store::new(home).release(key, &holder(name))?)
}

fn holder(name: &VmName) -> Holder {
    Holder::Vm(name.to_string())
}

/// Registers the image reference of every VM of `home` (a no-op for VMs that have one). A
/// record that cannot be read is skipped, as is an image already removed: there is nothing
/// left to protect.
pub fn adopt_image_references(home: &Home) -> Result<(), Error> {
    for name in names(home)? {
        let record = home.vms().join(name.as_str()).join(layout::RECORD);
        let Ok(vm) = VmRecord::load(&record) else {
            continue;
        };
        match hold(home, &name, &vm.image_key) {
            Err(Error::Store(store::Error::NoEntry { .. })) => continue,
            other => other?,
        }
        if !record.exists() {
            release(home, &name, &vm.image_key)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_name(name: &str) -> crate::name::ImageName {
        crate::name::ImageName::new(name).unwrap()
    }
    use crate::store::Manifest;
    use std::fs;

    fn home_with_vm(vm: &str, key: &str) -> (tempfile::TempDir, Home, Store) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::under(dir.path());
        let store = Store::new(&home);
        let staging = store.staging().unwrap();
        let manifest = Manifest {
            key: key.into(),
            source: "s".into(),
            source_digest: "d".into(),
            created: 1,
            cpus: 1,
            memory_mib: 512,
            vmrun_version: "0".into(),
        };
        store.commit(staging, &manifest).unwrap();
        store.set_name(&image_name("base"), key).unwrap();
        let state = home.vms().join(vm);
        fs::create_dir_all(&state).unwrap();
        let record = serde_json::json!({
            "name": vm, "image": "base", "image_key": key, "cpus": 1, "memory_mib": 512,
            "accel": "tcg", "ssh_port": 2222, "forwards": [], "qemu": "/q", "created": 1
        });
        fs::write(state.join(layout::RECORD), record.to_string()).unwrap();
        (dir, home, store)
    }

    #[test]
    fn a_vm_from_before_references_is_adopted_once() {
        let (_dir, home, store) = home_with_vm("old", "k1");
        adopt_image_references(&home).unwrap();
        adopt_image_references(&home).unwrap();
        let err = store.remove(&image_name("base")).unwrap_err();
        assert_eq!(err.to_string(), "image `base` is in use by VM `old`");
        release(&home, &VmName::new("old").unwrap(), "k1").unwrap();
        store.remove(&image_name("base")).unwrap();
    }

    #[test]
    fn vms_whose_image_is_gone_or_whose_record_is_damaged_are_skipped() {
        let (_dir, home, store) = home_with_vm("old", "k1");
        store.remove(&image_name("base")).unwrap();
        let damaged = home.vms().join("damaged");
        fs::create_dir_all(&damaged).unwrap();
        fs::write(damaged.join(layout::RECORD), "{").unwrap();
        adopt_image_references(&home).unwrap();
    }
}
