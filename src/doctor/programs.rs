//! The external programs vmrun runs besides QEMU, found on PATH as vmrun finds them.

use super::Finding;
use crate::tools;

/// A program, what vmrun uses it for, and whether vmrun works at all without it.
struct Program {
    name: &'static str,
    used_for: &'static str,
    required: bool,
}

const PROGRAMS: &[Program] = &[
    Program {
        name: "qemu-img",
        used_for: "building `debian:bookworm` images and `vmrun vm snapshot list`",
        required: false,
    },
    Program {
        name: "rsync",
        used_for: "copying the project in and artifacts out",
        required: true,
    },
    Program {
        name: "ssh",
        used_for: "`vmrun ssh` and `vmrun vm ssh`",
        required: true,
    },
    Program {
        name: "ssh-keygen",
        used_for: "the keys generated at bake",
        required: true,
    },
    Program {
        name: "slirp4netns",
        used_for: "the default `outbound` network",
        required: true,
    },
    Program {
        name: "ip",
        used_for: "the default `outbound` network's routes",
        required: true,
    },
    Program {
        name: "mmdebstrap",
        used_for: "building `debian:bookworm` images",
        required: false,
    },
    Program {
        name: "mkfs.ext4",
        used_for: "building `debian:bookworm` images",
        required: false,
    },
    Program {
        name: "grub-mkimage",
        used_for: "building `debian:bookworm` images",
        required: false,
    },
];

pub(super) fn check() -> Vec<Finding> {
    PROGRAMS
        .iter()
        .map(|p| {
            judge(
                p,
                tools::find(p.name)
                    .ok()
                    .map(|path| path.display().to_string()),
            )
        })
        .collect()
}

fn judge(program: &Program, found: Option<String>) -> Finding {
    let Some(path) = found else {
        let detail = format!("not found on PATH (needed for {})", program.used_for);
        let fix = format!("apt-get install {}", tools::package_of(program.name));
        return if program.required {
            Finding::fail(program.name, detail, fix)
        } else {
            Finding::warn(program.name, detail, fix)
        };
    };
    Finding::ok(program.name, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn every_program_names_its_package() {
        for p in PROGRAMS {
            assert_ne!(
                tools::package_of(p.name),
                "the package that provides it",
                "{}",
                p.name
            );
        }
    }

    #[test]
    fn missing_required_fails_and_missing_optional_warns() {
        let rsync = PROGRAMS.iter().find(|p| p.name == "rsync").unwrap();
        let f = judge(rsync, None);
        assert_eq!(f.status, Status::Fail);
        assert_eq!(f.fix.as_deref(), Some("apt-get install rsync"));
        assert!(f.detail.contains("copying the project in"), "{}", f.detail);
        let mmdebstrap = PROGRAMS.iter().find(|p| p.name == "mmdebstrap").unwrap();
        assert_eq!(judge(mmdebstrap, None).status, Status::Warn);
        let found = judge(rsync, Some("/usr/bin/rsync".into()));
        assert_eq!(found, Finding::ok("rsync", "/usr/bin/rsync"));
    }
}
