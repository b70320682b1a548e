//! External programs vmrun runs (QEMU, rsync, ssh, image builders), found on PATH with an
//! error that says which package to install.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("`{program}` was not found on PATH")]
#[diagnostic(
    code(vmrun::missing_tool),
    help("install it: apt-get install {package}")
)]
pub struct MissingTool {
    pub program: String,
    pub package: &'static str,
}

/// The Debian package that ships `program`, for the install hint.
pub fn package_of(program: &str) -> &'static str {
    match program {
        "qemu-system-x86_64" => "qemu-system-x86",
        "qemu-img" | "qemu-io" => "qemu-utils",
        "mmdebstrap" => "mmdebstrap",
        "mkfs.ext4" => "e2fsprogs",
        "grub-mkimage" => "grub-pc-bin",
        "rsync" => "rsync",
        "ssh" | "ssh-keygen" => "openssh-client",
        "genisoimage" | "isoinfo" => "genisoimage",
        "slirp4netns" => "slirp4netns",
        "ip" => "iproute2",
        _ => "the package that provides it",
    }
}

/// Finds `program` on PATH.
pub fn find(program: &str) -> Result<PathBuf, MissingTool> {
    which::which(program).map_err(|_| MissingTool {
        program: program.to_owned(),
        package: package_of(program),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_names_the_package() {
        let err = find("qemu-system-x86_64-definitely-not-here").unwrap_err();
        assert_eq!(err.program, "qemu-system-x86_64-definitely-not-here");
        assert_eq!(package_of("qemu-system-x86_64"), "qemu-system-x86");
    }
}
