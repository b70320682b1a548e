//! The files an export may hold: a fixed set of names, each with the one place in a store
//! entry it is written to, its mode and its largest size. A name in a file that is not one of
//! these is refused, so an import writes nowhere but these places inside its staging directory.

use crate::framed;

/// Largest size of a member that is a small text file (manifest, keys, machine record).
const SMALL: u64 = 1 << 20;
/// Largest size of a disk layer or saved state: far beyond any real image, and a bound a
/// hostile header cannot get past.
const LARGE: u64 = 1 << 46;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Member {
    Manifest,
    HostKey,
    ClientKey,
    WarmMachine,
    Disk,
    WarmDisk,
    /// The image the baked layer stands on: the source it was baked from.
    SourceQcow2,
    SourceRaw,
    WarmState,
    WarmRam,
}

impl Member {
    /// Every member, in the order an export writes them (small files first).
    pub const ALL: [Member; 10] = [
        Member::Manifest,
        Member::HostKey,
        Member::ClientKey,
        Member::WarmMachine,
        Member::Disk,
        Member::WarmDisk,
        Member::SourceQcow2,
        Member::SourceRaw,
        Member::WarmState,
        Member::WarmRam,
    ];

    /// Its name in the file, which is also its path relative to the store entry.
    pub fn name(self) -> &'static str {
        match self {
            Member::Manifest => "image.json",
            Member::HostKey => "host_ed25519.pub",
            Member::ClientKey => "client_ed25519",
            Member::WarmMachine => "warm/machine.json",
            Member::Disk => "disk.qcow2",
            Member::WarmDisk => "warm/disk.qcow2",
            Member::SourceQcow2 => "source.qcow2",
            Member::SourceRaw => "source.raw",
            Member::WarmState => "warm/state",
            Member::WarmRam => "warm/ram",
        }
    }

    pub fn from_name(name: &str) -> Option<Member> {
        Member::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The mode it is written with: the client key is private.
    pub fn mode(self) -> u32 {
        match self {
            Member::ClientKey => 0o600,
            _ => 0o644,
        }
    }

    pub fn max_size(self) -> u64 {
        match self {
            Member::Manifest | Member::HostKey | Member::ClientKey | Member::WarmMachine => SMALL,
            _ => LARGE,
        }
    }

    /// Whether it belongs to the warm state (`warm/`).
    pub fn is_warm(self) -> bool {
        matches!(
            self,
            Member::WarmMachine | Member::WarmDisk | Member::WarmState | Member::WarmRam
        )
    }

    pub fn is_source(self) -> bool {
        matches!(self, Member::SourceQcow2 | Member::SourceRaw)
    }
}

framed::by_name!(Member, "an image export");

impl framed::Member for Member {
    fn name(self) -> &'static str {
        Member::name(self)
    }
    fn mode(self) -> u32 {
        Member::mode(self)
    }
    fn max_size(self) -> u64 {
        Member::max_size(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BakedImage;

    #[test]
    fn names_are_where_the_store_and_the_warm_state_keep_them() {
        assert_eq!(Member::Manifest.name(), BakedImage::MANIFEST);
        assert_eq!(Member::HostKey.name(), BakedImage::HOST_KEY);
        assert_eq!(Member::ClientKey.name(), BakedImage::CLIENT_KEY);
        assert_eq!(Member::Disk.name(), BakedImage::DISK);
        let entry = tempfile::tempdir().unwrap();
        std::fs::create_dir(entry.path().join(crate::warm::DIR)).unwrap();
        std::fs::write(entry.path().join(Member::WarmMachine.name()), WARM_MACHINE).unwrap();
        let warm = crate::warm::WarmState::load(entry.path()).unwrap().unwrap();
        assert_eq!(warm.disk, entry.path().join(Member::WarmDisk.name()));
        assert_eq!(warm.state, entry.path().join(Member::WarmState.name()));
        assert_eq!(warm.ram, entry.path().join(Member::WarmRam.name()));
    }

    const WARM_MACHINE: &str = r#"{"format": 1, "qemu_version": "QEMU emulator version 7.2",
        "accel": "tcg", "cpus": 2, "memory_mib": 1024, "args": [], "state_bytes": 1}"#;

    #[test]
    fn only_the_fixed_names_are_members() {
        for member in Member::ALL {
            assert_eq!(Member::from_name(member.name()), Some(member));
            let json = serde_json::to_string(&member).unwrap();
            assert_eq!(serde_json::from_str::<Member>(&json).unwrap(), member);
        }
        for bad in [
            "../disk.qcow2",
            "/etc/passwd",
            "warm/../../x",
            "warm",
            "",
            "DISK.QCOW2",
        ] {
            assert_eq!(Member::from_name(bad), None, "{bad}");
        }
        let err = serde_json::from_str::<Member>(r#""../../.ssh/authorized_keys""#).unwrap_err();
        assert!(
            err.to_string()
                .contains("is not a file an image export may hold")
        );
    }
}
