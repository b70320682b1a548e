//! `debian:bookworm`: a whole-disk, BIOS-bootable Debian image built from Debian's packages,
//! laid out like a cloud image (MBR, GRUB, one ext4 root, cloud-init, sshd), with no downloads
//! from anywhere but the host's apt sources and no loop devices or mounts.

mod disk;
mod rootfs;

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::events::{Event, Sink, phase};
use crate::external::ExternalError;
use crate::image::mbr::MbrError;
use crate::lock_file::LockFile;
use crate::path_error::PathError;
use crate::scratch::Scratch;
use crate::tools::MissingTool;

/// Bumped whenever the builder's output changes for the same inputs.
const BUILDER_REVISION: u32 = 1;
/// The prefix of a build's working directory beside the images.
const BUILD_PREFIX: &str = ".debian-build-";

/// Packages on top of mmdebstrap's minbase: what a cloud image has and vmrun needs.
const PACKAGES: &[&str] = &[
    "linux-image-cloud-amd64",
    "systemd-sysv",
    "udev",
    "cloud-init",
    "openssh-server",
    "rsync",
    "qemu-guest-agent",
    "sudo",
    "ifupdown",
    "isc-dhcp-client",
    "netbase",
    "iproute2",
    "python3",
];

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error(transparent)]
    #[diagnostic(transparent)]
    MissingTool(#[from] MissingTool),
    #[error(
        "building a Debian image needs root: mmdebstrap and mkfs.ext4 -d must keep file owners"
    )]
    #[diagnostic(help("run as root, or bake from a local or downloaded image instead"))]
    NotRoot,
    #[error("{step} failed")]
    Step {
        step: &'static str,
        #[source]
        source: ExternalError,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Io(#[from] PathError),
    #[error(transparent)]
    #[diagnostic(transparent)]
    Mbr(#[from] MbrError),
}

impl Error {}

/// What to build: a Debian suite with vmrun's package set on a disk of a given size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebianImage {
    pub suite: String,
    /// Size of the whole disk in bytes (the qcow2 stays as small as its contents).
    pub disk_size: u64,
    /// A Debian mirror URL; `None` uses the host's apt sources. Not part of the cache key:
    /// every mirror serves the same suite.
    pub mirror: Option<String>,
}

impl DebianImage {
    /// Debian bookworm on a 4 GiB disk, from the mirror in `VMRUN_DEBIAN_MIRROR` if set (hosts
    /// whose apt sources are not Debian's, e.g. Ubuntu CI runners), else the host's apt sources.
    pub fn bookworm() -> DebianImage {
        let mirror = std::env::var("VMRUN_DEBIAN_MIRROR")
            .ok()
            .filter(|m| !m.is_empty());
        DebianImage {
            suite: "bookworm".to_owned(),
            disk_size: 4 << 30,
            mirror,
        }
    }

    /// Hash of everything that decides the image's contents, for the cache.
    pub fn cache_key(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!(
            "vmrun-debian-builder-{BUILDER_REVISION}\0{}\0{}\0",
            self.suite, self.disk_size
        ));
        for package in PACKAGES {
            h.update(package);
            h.update("\0");
        }
        for (name, text) in rootfs::TEMPLATES {
            h.update(name);
            h.update("\0");
            h.update(text);
            h.update("\0");
        }
        crate::hex::encode(&h.finalize())
    }

    /// Removes what builds in `cache_dir` by killed vmruns left; their names.
    pub fn reap(cache_dir: &Path) -> Vec<String> {
        crate::scratch::reap(cache_dir, BUILD_PREFIX)
    }

    /// The image in `cache_dir`, built first if it is not there. Concurrent callers (several
    /// test processes, several vmrun calls) wait on one lock and build it once.
    pub fn ensure_cached(&self, cache_dir: &Path, sink: Sink) -> Result<PathBuf, Error> {
        let key = self.cache_key();
        let path = cache_dir.join(format!("debian-{}-{}.qcow2", self.suite, &key[..16]));
        if path.exists() {
            return Ok(path);
        }
        fs::create_dir_all(cache_dir).map_err(PathError::at("create", cache_dir))?;
        let lock_path = cache_dir.join(format!(".debian-{}.lock", &key[..16]));
        let _lock = LockFile::acquire(&lock_path, || {
            sink(Event::Notice(format!(
                "waiting for another vmrun building debian:{}",
                self.suite
            )))
        })?;
        if !path.exists() {
            let work = Scratch::new_in(cache_dir, BUILD_PREFIX)?;
            let built = work.path().join("disk.qcow2");
            self.build(work.path(), &built, sink)?;
            fs::rename(&built, &path).map_err(PathError::at("move the built image to", &path))?;
        }
        Ok(path)
    }

    /// Builds the image into `out` (qcow2), using `work` for the root file system and raw disk.
    pub fn build(&self, work: &Path, out: &Path, sink: Sink) -> Result<(), Error> {
        if !running_as_root() {
            return Err(Error::NotRoot);
        }
        let tools = disk::Tools::find()?;
        let mmdebstrap = crate::tools::find("mmdebstrap")?;
        let rootfs = work.join("rootfs");
        let raw = work.join("disk.raw");
        phase(
            sink,
            &format!("bootstrap Debian {} (mmdebstrap)", self.suite),
            || {
                rootfs::bootstrap(
                    &mmdebstrap,
                    &self.suite,
                    self.mirror.as_deref(),
                    PACKAGES,
                    &rootfs,
                )
            },
        )?;
        phase(sink, "configure boot, fstab and cloud-init", || {
            rootfs::configure(&rootfs, &tools.grub_dir)
        })?;
        phase(sink, "make the whole-disk image (ext4 root, GRUB)", || {
            disk::assemble(&tools, &rootfs, &raw, self.disk_size)
        })?;
        fs::remove_dir_all(&rootfs).map_err(PathError::at("remove", &rootfs))?;
        phase(sink, "convert to qcow2", || {
            disk::to_qcow2(&tools, &raw, out)
        })?;
        Ok(fs::remove_file(&raw).map_err(PathError::at("remove", &raw))?)
    }
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_depends_on_suite_and_size() {
        let base = DebianImage::bookworm();
        let key = base.cache_key();
        assert_eq!(key.len(), 64);
        assert_eq!(key, DebianImage::bookworm().cache_key());
        assert_ne!(
            key,
            DebianImage {
                suite: "trixie".into(),
                ..base.clone()
            }
            .cache_key()
        );
        assert_ne!(
            key,
            DebianImage {
                disk_size: 8 << 30,
                ..base.clone()
            }
            .cache_key()
        );
        assert_eq!(
            key,
            DebianImage {
                mirror: Some("http://mirror.example/debian".into()),
                ..base
            }
            .cache_key()
        );
    }
}
