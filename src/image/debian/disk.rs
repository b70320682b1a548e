//! The whole disk: one ext4 partition at 1 MiB made from the root file system without mounting
//! it (`mkfs.ext4 -d`), GRUB's boot code and core image in front of it, then qcow2.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::Error;
use crate::external;
use crate::image::mbr::{self, PARTITION_START_LBA, SECTOR};
use crate::path_error::PathError;
use crate::tools;

/// Host programs the disk assembly uses.
pub(super) struct Tools {
    mkfs: PathBuf,
    grub_mkimage: PathBuf,
    qemu_img: PathBuf,
    /// GRUB's i386-pc modules and boot.img.
    pub(super) grub_dir: PathBuf,
}

impl Tools {
    pub(super) fn find() -> Result<Tools, Error> {
        let grub_dir = PathBuf::from("/usr/lib/grub/i386-pc");
        if !grub_dir.join("boot.img").is_file() {
            return Err(tools::MissingTool {
                program: "grub-mkimage".into(),
                package: "grub-pc-bin",
            }
            .into());
        }
        Ok(Tools {
            mkfs: tools::find("mkfs.ext4")?,
            grub_mkimage: tools::find("grub-mkimage")?,
            qemu_img: tools::find("qemu-img")?,
            grub_dir,
        })
    }
}

/// GRUB modules built into core.img: enough to read grub.cfg and boot Linux from ext4 on MBR.
const CORE_MODULES: &[&str] = &[
    "biosdisk",
    "part_msdos",
    "ext2",
    "normal",
    "linux",
    "configfile",
    "search",
    "echo",
    "boot",
];

pub(super) fn assemble(
    tools: &Tools,
    rootfs: &Path,
    raw: &Path,
    disk_size: u64,
) -> Result<(), Error> {
    let file = fs::File::create(raw).map_err(PathError::at("create", raw))?;
    file.set_len(disk_size)
        .map_err(PathError::at("size", raw))?;
    drop(file);

    let offset = PARTITION_START_LBA * SECTOR;
    let fs_kib = (disk_size - offset) / 1024;
    external::run(
        Command::new(&tools.mkfs)
            .args(["-q", "-F", "-L", "rootfs", "-d"])
            .arg(rootfs)
            .arg("-E")
            .arg(format!("offset={offset}"))
            .arg(raw)
            .arg(format!("{fs_kib}k")),
    )
    .map_err(|source| Error::Step {
        step: "mkfs.ext4",
        source,
    })?;

    let core_path = raw.with_extension("core.img");
    external::run(
        Command::new(&tools.grub_mkimage)
            .args(["-O", "i386-pc", "-p", "(hd0,msdos1)/boot/grub", "-o"])
            .arg(&core_path)
            .args(CORE_MODULES),
    )
    .map_err(|source| Error::Step {
        step: "grub-mkimage",
        source,
    })?;
    let core = fs::read(&core_path).map_err(PathError::at("read", &core_path))?;
    fs::remove_file(&core_path).map_err(PathError::at("remove", &core_path))?;
    let boot_img_path = tools.grub_dir.join("boot.img");
    let boot_img = fs::read(&boot_img_path).map_err(PathError::at("read", &boot_img_path))?;

    let area = mbr::boot_area(&boot_img, &core, disk_size)?;
    let mut disk = OpenOptions::new()
        .write(true)
        .open(raw)
        .map_err(PathError::at("open", raw))?;
    Ok(disk.write_all(&area).map_err(PathError::at("write", raw))?)
}

pub(super) fn to_qcow2(tools: &Tools, raw: &Path, out: &Path) -> Result<(), Error> {
    external::run(
        Command::new(&tools.qemu_img)
            .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
            .arg(raw)
            .arg(out),
    )
    .map(drop)
    .map_err(|source| Error::Step {
        step: "qemu-img convert",
        source,
    })
}
