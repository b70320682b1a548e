//! The root file system: mmdebstrap, then the few files that make it boot as a cloud image.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::Error;
use crate::external;
use crate::path_error::PathError;

/// Files written into the root file system, by path relative to its root.
pub(super) const TEMPLATES: &[(&str, &str)] = &[
    (
        "boot/grub/grub.cfg",
        include_str!("../../../templates/debian/grub.cfg"),
    ),
    ("etc/fstab", include_str!("../../../templates/debian/fstab")),
    (
        "etc/cloud/cloud.cfg.d/90_vmrun.cfg",
        include_str!("../../../templates/debian/cloud.cfg"),
    ),
];

pub(super) fn bootstrap(
    mmdebstrap: &Path,
    suite: &str,
    mirror: Option<&str>,
    packages: &[&str],
    rootfs: &Path,
) -> Result<(), Error> {
    let mut command = Command::new(mmdebstrap);
    command
        .arg("--variant=minbase")
        .arg(format!("--include={}", packages.join(",")))
        .arg(suite)
        .arg(rootfs);
    // Without a mirror argument mmdebstrap uses the host's apt sources.
    command.args(mirror);
    external::run(&mut command)
        .map(drop)
        .map_err(|source| Error::Step {
            step: "mmdebstrap",
            source,
        })
}

/// Writes the templates, GRUB's modules (from the host's `grub_dir`) and an empty machine-id,
/// so each VM made from the image gets its own.
pub(super) fn configure(rootfs: &Path, grub_dir: &Path) -> Result<(), Error> {
    for (relative, text) in TEMPLATES {
        let path = rootfs.join(relative);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(PathError::at("create", dir))?;
        }
        fs::write(&path, text).map_err(PathError::at("write", &path))?;
    }
    let machine_id = rootfs.join("etc/machine-id");
    fs::write(&machine_id, "").map_err(PathError::at("write", &machine_id))?;
    let modules = rootfs.join("boot/grub/i386-pc");
    fs::create_dir_all(&modules).map_err(PathError::at("create", &modules))?;
    for entry in fs::read_dir(grub_dir).map_err(PathError::at("read", grub_dir))? {
        let entry = entry.map_err(PathError::at("read", grub_dir))?;
        let target = modules.join(entry.file_name());
        fs::copy(entry.path(), &target).map_err(PathError::at("write", &target))?;
    }
    Ok(())
}
