//! A classic MBR partition table with one bootable Linux partition, and the GRUB boot code
//! patched to load GRUB's core image from the sectors right after the MBR (the "MBR gap").

pub const SECTOR: u64 = 512;
/// Where the single partition starts: 1 MiB, as every partitioning tool aligns it.
pub const PARTITION_START_LBA: u64 = 2048;

/// Offsets inside GRUB's i386-pc boot.img (grub-core/boot/i386/pc/boot.S).
const BOOT_KERNEL_SECTOR: usize = 0x5c;
const BOOT_DRIVE_CHECK: usize = 0x66;
/// The boot code area of an MBR; the disk signature and partition table follow.
const BOOT_CODE_LEN: usize = 440;
/// Segment diskboot.img loads the rest of core.img to (GRUB_BOOT_MACHINE_KERNEL_SEG + 0x20).
const CORE_LOAD_SEGMENT: u16 = 0x820;

#[derive(Debug, thiserror::Error, miette::Diagnostic, PartialEq)]
pub enum MbrError {
    #[error("GRUB boot.img is {0} bytes, expected 512")]
    BootImageSize(usize),
    #[error(
        "GRUB core.img is {core_sectors} sectors and does not fit before the partition \
         at sector {PARTITION_START_LBA}"
    )]
    CoreTooLarge { core_sectors: u64 },
    #[error("disk of {0} bytes is too small for a partition at 1 MiB")]
    DiskTooSmall(u64),
}

/// The first `PARTITION_START_LBA` sectors of a BIOS-bootable disk of `disk_size` bytes: MBR
/// with GRUB boot code and one bootable Linux partition filling the disk, then core.img from
/// sector 1.
pub fn boot_area(boot_img: &[u8], core_img: &[u8], disk_size: u64) -> Result<Vec<u8>, MbrError> {
    if boot_img.len() != SECTOR as usize {
        return Err(MbrError::BootImageSize(boot_img.len()));
    }
    let core_sectors = (core_img.len() as u64).div_ceil(SECTOR);
    if 1 + core_sectors > PARTITION_START_LBA {
        return Err(MbrError::CoreTooLarge { core_sectors });
    }
    let total_sectors = disk_size / SECTOR;
    if total_sectors <= PARTITION_START_LBA {
        return Err(MbrError::DiskTooSmall(disk_size));
    }
    let mut area = vec![0u8; (PARTITION_START_LBA * SECTOR) as usize];

    area[..BOOT_CODE_LEN].copy_from_slice(&boot_img[..BOOT_CODE_LEN]);
    // core.img's first sector lives at LBA 1.
    area[BOOT_KERNEL_SECTOR..BOOT_KERNEL_SECTOR + 8].copy_from_slice(&1u64.to_le_bytes());
    // For hard disks grub-install turns the jump at the drive check into NOPs, so boot.img
    // always uses the drive number the BIOS passed in DL.
    area[BOOT_DRIVE_CHECK..BOOT_DRIVE_CHECK + 2].copy_from_slice(&[0x90, 0x90]);
    write_partition_entry(&mut area, total_sectors - PARTITION_START_LBA);
    area[510] = 0x55;
    area[511] = 0xaa;

    let core_start = SECTOR as usize;
    area[core_start..core_start + core_img.len()].copy_from_slice(core_img);
    // diskboot.img (core.img's first sector) ends with a blocklist: where the rest of core.img is.
    let blocklist = core_start + SECTOR as usize - 12;
    area[blocklist..blocklist + 8].copy_from_slice(&2u64.to_le_bytes());
    area[blocklist + 8..blocklist + 10].copy_from_slice(&((core_sectors - 1) as u16).to_le_bytes());
    area[blocklist + 10..blocklist + 12].copy_from_slice(&CORE_LOAD_SEGMENT.to_le_bytes());
    Ok(area)
}

fn write_partition_entry(mbr: &mut [u8], sectors: u64) {
    let entry = &mut mbr[446..462];
    entry[0] = 0x80; // bootable
    entry[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]); // CHS start: past the CHS limit, use LBA
    entry[4] = 0x83; // Linux
    entry[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    entry[8..12].copy_from_slice(&(PARTITION_START_LBA as u32).to_le_bytes());
    entry[12..16].copy_from_slice(&(sectors.min(u32::MAX as u64) as u32).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot_img() -> Vec<u8> {
        (0..512).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn layout_of_a_2_gib_disk() {
        let core = vec![0x11u8; 3 * 512 + 7];
        let area = boot_area(&boot_img(), &core, 2 << 30).unwrap();
        assert_eq!(area.len(), 1 << 20);
        assert_eq!(&area[..0x5c], &boot_img()[..0x5c]);
        assert_eq!(&area[0x5c..0x64], &1u64.to_le_bytes());
        assert_eq!(&area[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(&area[510..512], &[0x55, 0xaa]);
        assert_eq!(area[446], 0x80);
        assert_eq!(area[450], 0x83);
        assert_eq!(u32::from_le_bytes(area[454..458].try_into().unwrap()), 2048);
        assert_eq!(
            u32::from_le_bytes(area[458..462].try_into().unwrap()),
            (2 << 30) / 512 - 2048
        );
        // Blocklist at the end of core.img's first sector: start 2, 3 more sectors, segment 0x820.
        assert_eq!(&area[1012..1020], &2u64.to_le_bytes());
        assert_eq!(&area[1020..1022], &3u16.to_le_bytes());
        assert_eq!(&area[1022..1024], &0x820u16.to_le_bytes());
        assert_eq!(area[1024], 0x11);
        assert_eq!(area[512 + core.len() - 1], 0x11);
        assert_eq!(area[512 + core.len()], 0);
    }

    #[test]
    fn rejects_bad_inputs() {
        assert_eq!(
            boot_area(&[0; 10], &[], 1 << 30),
            Err(MbrError::BootImageSize(10))
        );
        assert_eq!(
            boot_area(&boot_img(), &vec![0; 2048 * 512], 1 << 30),
            Err(MbrError::CoreTooLarge { core_sectors: 2048 })
        );
        assert_eq!(
            boot_area(&boot_img(), &[0; 512], 1 << 20),
            Err(MbrError::DiskTooSmall(1 << 20))
        );
    }
}
