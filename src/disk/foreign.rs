//! Image and archive formats vmrun recognises but does not use, so that a wrong file is named
//! for what it is (and how to convert it) instead of being booted as a raw disk.

use std::fmt;

/// A recognised format that is neither qcow2 (v2/v3) nor raw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignFormat {
    Qcow1,
    Vmdk,
    Vhdx,
    Vhd,
    Vdi,
    Qed,
    Parallels,
    Luks,
    Gzip,
    Xz,
    Zstd,
    Bzip2,
    Zip,
    Tar,
}

/// Magic bytes at a fixed offset from the start of the file. (qcow v1 shares qcow2's magic;
/// the sniffer tells them apart by version, before it looks here.)
const HEAD_MAGICS: &[(usize, &[u8], ForeignFormat)] = &[
    (0, b"KDMV", ForeignFormat::Vmdk),
    (0, b"COWD", ForeignFormat::Vmdk),
    (0, b"# Disk DescriptorFile", ForeignFormat::Vmdk),
    (0, b"vhdxfile", ForeignFormat::Vhdx),
    (0, b"conectix", ForeignFormat::Vhd),
    (0x40, b"\x7f\x10\xda\xbe", ForeignFormat::Vdi),
    (0, b"QED\x00", ForeignFormat::Qed),
    (0, b"WithoutFreeSpace", ForeignFormat::Parallels),
    (0, b"WithouFreSpacExt", ForeignFormat::Parallels),
    (0, b"LUKS\xba\xbe", ForeignFormat::Luks),
    (0, b"\x1f\x8b\x08", ForeignFormat::Gzip),
    (0, b"\xfd7zXZ\x00", ForeignFormat::Xz),
    (0, b"\x28\xb5\x2f\xfd", ForeignFormat::Zstd),
    (0, b"BZh", ForeignFormat::Bzip2),
    (0, b"PK\x03\x04", ForeignFormat::Zip),
    (257, b"ustar", ForeignFormat::Tar),
];

impl ForeignFormat {
    /// Identifies a format from the file's first bytes (`head`) and its last 512 bytes
    /// (`tail`; a fixed-size VHD is raw data with a footer there).
    pub(crate) fn identify(head: &[u8], tail: &[u8]) -> Option<ForeignFormat> {
        let found = HEAD_MAGICS
            .iter()
            .find(|(offset, magic, _)| head.get(*offset..offset + magic.len()) == Some(*magic))
            .map(|(_, _, format)| *format);
        found.or_else(|| tail.starts_with(b"conectix").then_some(ForeignFormat::Vhd))
    }

    /// What the file is, as a noun phrase ("a VMDK image").
    pub fn description(self) -> &'static str {
        match self {
            ForeignFormat::Qcow1 => "a qcow (version 1) image",
            ForeignFormat::Vmdk => "a VMDK image",
            ForeignFormat::Vhdx => "a VHDX image",
            ForeignFormat::Vhd => "a VHD (vpc) image",
            ForeignFormat::Vdi => "a VDI image",
            ForeignFormat::Qed => "a QED image",
            ForeignFormat::Parallels => "a Parallels image",
            ForeignFormat::Luks => "a LUKS-encrypted image",
            ForeignFormat::Gzip => "gzip-compressed",
            ForeignFormat::Xz => "xz-compressed",
            ForeignFormat::Zstd => "zstd-compressed",
            ForeignFormat::Bzip2 => "bzip2-compressed",
            ForeignFormat::Zip => "a zip archive",
            ForeignFormat::Tar => "a tar archive",
        }
    }

    /// What to do about it.
    pub fn remedy(self) -> &'static str {
        match self {
            ForeignFormat::Gzip
            | ForeignFormat::Xz
            | ForeignFormat::Zstd
            | ForeignFormat::Bzip2 => "decompress it first",
            ForeignFormat::Zip | ForeignFormat::Tar => "extract the disk image from it first",
            ForeignFormat::Luks => "decrypt it with qemu-img convert -O qcow2 and its secret",
            _ => "convert it with qemu-img convert -O qcow2",
        }
    }
}

impl fmt::Display for ForeignFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_magics_at_their_offsets() {
        let mut vdi = vec![0u8; 512];
        vdi[0x40..0x44].copy_from_slice(b"\x7f\x10\xda\xbe");
        assert_eq!(ForeignFormat::identify(&vdi, &[]), Some(ForeignFormat::Vdi));
        assert_eq!(
            ForeignFormat::identify(b"KDMV\x01\0\0\0", &[]),
            Some(ForeignFormat::Vmdk)
        );
        assert_eq!(
            ForeignFormat::identify(b"\x1f\x8b\x08\0", &[]),
            Some(ForeignFormat::Gzip)
        );
    }

    #[test]
    fn fixed_vhd_is_found_by_its_footer() {
        assert_eq!(
            ForeignFormat::identify(&[0; 512], b"conectix\0\0"),
            Some(ForeignFormat::Vhd)
        );
    }

    #[test]
    fn plain_data_is_not_foreign() {
        assert_eq!(ForeignFormat::identify(&[0; 4096], &[0; 512]), None);
        assert_eq!(ForeignFormat::identify(b"", b""), None);
    }
}
