//! The remembered answer to "does KVM run guests on this host?", in `FACTS/kvm-verdict`.
//!
//! It holds for one [`VerdictKey`]: the identity of /dev/kvm (device number, inode, ctime:
//! a new boot, module reload or permission change makes a new one), the host kernel, the
//! QEMU binary (path, size, mtime) and the probe itself. Any change and the probe runs again.
//!
//! The file is JSON, like vmrun's other state files; delete it to check again:
//! ```text
//! {
//!   "key": {
//!     "kvm_rdev": 2792,
//!     "kvm_ino": 88,
//!     "kvm_ctime": { "secs": 1763841853, "nanos": 123456789 },
//!     "kernel_release": "6.1.0-27-amd64",
//!     "kernel_version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.115-1 (2024-11-01)",
//!     "qemu_path": "/usr/bin/qemu-system-x86_64",
//!     "qemu_size": 18622592,
//!     "qemu_mtime": { "secs": 1731002580, "nanos": 0 },
//!     "probe": "0f3c9a1b2d4e5f60"
//!   },
//!   "usable": false,
//!   "reason": "the probe guest reached long mode but did not finish in 5 s ...",
//!   "probe_ms": 5003,
//!   "checked_at": 1763900000
//! }
//! ```
//! A file that does not parse (an older vmrun's `name=value` text, a torn or edited file) is
//! no verdict: [`Verdict::load`] says why in one line and the probe runs again, replacing it.

use std::ffi::CStr;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::path_error::PathError;

/// The file's name inside the facts directory.
pub const FILE: &str = "kvm-verdict";

/// What a verdict holds for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerdictKey {
    pub kvm_rdev: u64,
    pub kvm_ino: u64,
    pub kvm_ctime: Timestamp,
    pub kernel_release: String,
    pub kernel_version: String,
    /// A path that is not UTF-8 cannot be stored: such a host is probed on every call.
    pub qemu_path: PathBuf,
    pub qemu_size: u64,
    pub qemu_mtime: Timestamp,
    /// [`probe::fingerprint`](super::probe::fingerprint).
    pub probe: String,
}

/// Seconds and nanoseconds, as stat gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    pub key: VerdictKey,
    pub usable: bool,
    /// Why KVM is not usable (empty when it is).
    pub reason: String,
    /// How long the probe took.
    pub probe_ms: u64,
    /// When, in seconds since the Unix epoch.
    pub checked_at: u64,
}

/// Why a stored verdict is not trusted. One line, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the KVM verdict `{}`: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "ignoring the KVM verdict `{}` (an older vmrun's or a damaged file): {source}",
        .path.display()
    )]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Why a verdict could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot encode it as JSON: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("{error}: {}", .error.source)]
    Write {
        #[from]
        error: PathError,
    },
}

impl VerdictKey {
    /// The key for this host now: stats `kvm_device` and `qemu`, asks uname.
    pub fn current(kvm_device: &Path, qemu: &Path, probe: &str) -> io::Result<VerdictKey> {
        let kvm = std::fs::metadata(kvm_device).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot stat {}: {e}", kvm_device.display()),
            )
        })?;
        let binary = std::fs::metadata(qemu).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot stat {}: {e}", qemu.display()))
        })?;
        let (kernel_release, kernel_version) = uname()?;
        Ok(VerdictKey {
            kvm_rdev: kvm.rdev(),
            kvm_ino: kvm.ino(),
            kvm_ctime: Timestamp {
                secs: kvm.ctime(),
                nanos: kvm.ctime_nsec(),
            },
            kernel_release,
            kernel_version,
            qemu_path: qemu.to_owned(),
            qemu_size: binary.size(),
            qemu_mtime: Timestamp {
                secs: binary.mtime(),
                nanos: binary.mtime_nsec(),
            },
            probe: probe.to_owned(),
        })
    }
}

impl Verdict {
    pub fn path(facts_dir: &Path) -> PathBuf {
        facts_dir.join(FILE)
    }

    /// The stored verdict, whatever key it holds for; `Ok(None)` when there is none. A file
    /// that cannot be read or parsed is an error that says why in one line; it is no verdict
    /// either, and the next [`store`](Self::store) replaces it.
    pub fn load(facts_dir: &Path) -> Result<Option<Verdict>, LoadError> {
        let path = Self::path(facts_dir);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(LoadError::Read { path, source }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| LoadError::Parse { path, source })
    }

    /// Writes the verdict whole or not at all (a temporary file renamed over the old one), so
    /// a concurrent vmrun reads either verdict, never half of one.
    pub fn store(&self, facts_dir: &Path) -> Result<(), StoreError> {
        let json = serde_json::to_string_pretty(self)? + "\n";
        std::fs::create_dir_all(facts_dir).map_err(PathError::at("create", facts_dir))?;
        Ok(crate::atomic_file::write(
            &Self::path(facts_dir),
            json.as_bytes(),
        )?)
    }
}

/// The running kernel's release and version (`uname -r`, `uname -v`).
fn uname() -> io::Result<(String, String)> {
    // SAFETY: utsname is plain bytes; uname fills it or fails.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is a valid, writable utsname.
    if unsafe { libc::uname(&mut name) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let field = |chars: &[libc::c_char]| {
        // SAFETY: uname NUL-terminates each field inside its array.
        unsafe { CStr::from_ptr(chars.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    Ok((field(&name.release), field(&name.version)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict() -> Verdict {
        Verdict {
            key: VerdictKey {
                kvm_rdev: 2792,
                kvm_ino: 88,
                kvm_ctime: Timestamp {
                    secs: 1_763_841_853,
                    nanos: 5,
                },
                kernel_release: "6.1.0-27-amd64".into(),
                kernel_version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.115-1 (2024-11-01)".into(),
                qemu_path: "/usr/bin/qemu-system-x86_64".into(),
                qemu_size: 18_622_592,
                qemu_mtime: Timestamp {
                    secs: 1_731_002_580,
                    nanos: 0,
                },
                probe: "0f3c9a1b2d4e5f60".into(),
            },
            usable: false,
            reason: "the probe guest reached protected mode, then made no progress in 5 s".into(),
            probe_ms: 5003,
            checked_at: 1_763_900_000,
        }
    }

    fn stored(v: &Verdict) -> String {
        let dir = tempfile::tempdir().unwrap();
        v.store(dir.path()).unwrap();
        std::fs::read_to_string(Verdict::path(dir.path())).unwrap()
    }

    fn load_text(text: &str) -> Result<Option<Verdict>, LoadError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(Verdict::path(dir.path()), text).unwrap();
        Verdict::load(dir.path())
    }

    #[test]
    fn json_format() {
        assert_eq!(
            stored(&verdict()),
            r##"{
  "key": {
    "kvm_rdev": 2792,
    "kvm_ino": 88,
    "kvm_ctime": {
      "secs": 1763841853,
      "nanos": 5
    },
    "kernel_release": "6.1.0-27-amd64",
    "kernel_version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.115-1 (2024-11-01)",
    "qemu_path": "/usr/bin/qemu-system-x86_64",
    "qemu_size": 18622592,
    "qemu_mtime": {
      "secs": 1731002580,
      "nanos": 0
    },
    "probe": "0f3c9a1b2d4e5f60"
  },
  "usable": false,
  "reason": "the probe guest reached protected mode, then made no progress in 5 s",
  "probe_ms": 5003,
  "checked_at": 1763900000
}
"##
        );
    }

    #[test]
    fn round_trips() {
        assert_eq!(load_text(&stored(&verdict())).unwrap(), Some(verdict()));
        let usable = Verdict {
            usable: true,
            reason: String::new(),
            ..verdict()
        };
        assert_eq!(load_text(&stored(&usable)).unwrap(), Some(usable));
    }

    #[test]
    fn odd_characters_in_values_round_trip() {
        let mut v = verdict();
        v.key.qemu_path = "/opt/q\\e=mu\n\u{1}é/bin".into();
        v.reason = "line one\nline two \\ done \"quoted\"".into();
        let text = stored(&v);
        assert!(
            text.contains(r#""qemu_path": "/opt/q\\e=mu\n\u0001é/bin","#),
            "{text}"
        );
        assert_eq!(
            text.lines().count(),
            stored(&verdict()).lines().count(),
            "a value spilled onto another line"
        );
        assert_eq!(load_text(&text).unwrap(), Some(v));
    }

    #[test]
    fn a_qemu_path_that_is_not_utf8_is_not_stored() {
        use std::os::unix::ffi::OsStringExt;
        let dir = tempfile::tempdir().unwrap();
        let mut v = verdict();
        v.key.qemu_path = std::ffi::OsString::from_vec(b"/opt/\xff/qemu".to_vec()).into();
        let err = v.store(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Encode(_)), "{err}");
        assert!(
            Verdict::load(dir.path()).unwrap().is_none(),
            "nothing was written"
        );
    }

    #[test]
    fn anything_else_is_no_verdict() {
        let text = stored(&verdict());
        let rejected = |text: &str| match load_text(text) {
            Err(LoadError::Parse { .. }) => {}
            other => panic!("{other:?} for {text}"),
        };
        rejected(&text.replace("\"usable\": false", "\"usable\": \"maybe\""));
        rejected(&text.replace("    \"kvm_ino\": 88,\n", ""));
        rejected(&text.replace("\"kvm_ino\": 88", "\"kvm_ino\": \"x\""));
        rejected(&text.replace("\"nanos\": 5\n", "\"nanos\": 5, \"extra\": 1\n"));
        rejected(&text.replace("\"probe_ms\"", "\"probe ms\""));
        rejected(&text[..text.len() / 2]);
        rejected("");
    }

    #[test]
    fn an_older_vmruns_text_file_is_ignored_with_one_line() {
        let old = "# vmrun: whether KVM runs guests on this host. Delete this file to check \
                   again.\n\
                   format=1\n\
                   kvm.rdev=2792\n\
                   usable=no\n";
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(Verdict::path(dir.path()), old).unwrap();
        let err = Verdict::load(dir.path()).unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "ignoring the KVM verdict `{}` (an older vmrun's or a damaged file): ",
                Verdict::path(dir.path()).display()
            )),
            "{message}"
        );
        assert_eq!(message.lines().count(), 1, "{message}");
        verdict().store(dir.path()).unwrap();
        assert_eq!(
            Verdict::load(dir.path()).unwrap(),
            Some(verdict()),
            "replaced"
        );
    }

    #[test]
    fn store_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let facts = dir.path().join("host");
        assert_eq!(Verdict::load(&facts).unwrap(), None);
        verdict().store(&facts).unwrap();
        assert_eq!(Verdict::load(&facts).unwrap(), Some(verdict()));
        let usable = Verdict {
            usable: true,
            ..verdict()
        };
        usable.store(&facts).unwrap();
        assert_eq!(Verdict::load(&facts).unwrap(), Some(usable));
        assert_eq!(
            std::fs::read_dir(&facts).unwrap().count(),
            1,
            "a temporary file was left behind"
        );
    }

    #[test]
    fn an_unreadable_file_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(Verdict::path(dir.path())).unwrap();
        let err = Verdict::load(dir.path()).unwrap_err();
        assert!(matches!(err, LoadError::Read { .. }), "{err}");
        assert!(err.to_string().contains(FILE), "{err}");
    }

    #[test]
    fn key_changes_with_the_qemu_binary_and_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("kvm");
        let qemu = dir.path().join("qemu");
        std::fs::write(&device, "").unwrap();
        std::fs::write(&qemu, "one").unwrap();
        let first = VerdictKey::current(&device, &qemu, "p").unwrap();
        assert_eq!(VerdictKey::current(&device, &qemu, "p").unwrap(), first);
        assert_ne!(
            VerdictKey::current(&device, &qemu, "q").unwrap(),
            first,
            "another probe"
        );

        std::fs::write(&qemu, "three").unwrap();
        let bigger = VerdictKey::current(&device, &qemu, "p").unwrap();
        assert_ne!(bigger, first, "QEMU's size changed");

        let file = std::fs::File::options().write(true).open(&qemu).unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
        let older = VerdictKey::current(&device, &qemu, "p").unwrap();
        assert_ne!(older, bigger, "QEMU's mtime changed");

        let other_device = dir.path().join("kvm2");
        std::fs::write(&other_device, "").unwrap();
        assert_ne!(
            VerdictKey::current(&other_device, &qemu, "p")
                .unwrap()
                .kvm_ino,
            older.kvm_ino,
            "another inode"
        );

        // chmod changes the ctime (which /dev/kvm gets, too, when udev sets its mode).
        use std::os::unix::fs::PermissionsExt;
        let before = VerdictKey::current(&device, &qemu, "p").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::set_permissions(&device, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_ne!(
            VerdictKey::current(&device, &qemu, "p").unwrap().kvm_ctime,
            before.kvm_ctime
        );
    }

    #[test]
    fn key_of_this_host() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = dir.path().join("qemu");
        std::fs::write(&qemu, "").unwrap();
        let key = VerdictKey::current(&qemu, &qemu, "p").unwrap();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(key.kernel_release, release.trim());
        assert!(!key.kernel_version.is_empty());
        let missing = VerdictKey::current(&dir.path().join("no-kvm"), &qemu, "p").unwrap_err();
        assert!(missing.to_string().contains("no-kvm"), "{missing}");
    }
}
