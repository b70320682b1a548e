//! The remembered answer to "does KVM run guests on this host?", in `FACTS/kvm-verdict`.
//!
//! It holds for one [`VerdictKey`]: the identity of /dev/kvm (device number, inode, ctime:
//! a new boot, module reload or permission change makes a new one), the host kernel, the
//! QEMU binary (path, size, mtime) and the probe itself. Any change and the probe runs again.
//!
//! The file is text, one `name=value` a line; bytes outside printable ASCII and `\` are
//! written as `\xHH`:
//! ```text
//! # vmrun: whether KVM runs guests on this host. Delete this file to check again.
//! format=1
//! kvm.rdev=2792
//! kvm.ino=88
//! kvm.ctime=1763841853.123456789
//! kernel.release=6.1.0-27-amd64
//! kernel.version=#1 SMP PREEMPT_DYNAMIC Debian 6.1.115-1 (2024-11-01)
//! qemu.path=/usr/bin/qemu-system-x86_64
//! qemu.size=18622592
//! qemu.mtime=1731002580.000000000
//! probe=0f3c9a1b2d4e5f60
//! usable=no
//! reason=the probe guest reached long mode but did not finish in 5 s ...
//! probe_ms=5003
//! checked_at=1763900000
//! ```

use std::collections::HashMap;
use std::ffi::{CStr, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The file's name inside the facts directory.
pub const FILE: &str = "kvm-verdict";

const FORMAT: &str = "1";

/// What a verdict holds for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictKey {
    pub kvm_rdev: u64,
    pub kvm_ino: u64,
    pub kvm_ctime: Timestamp,
    pub kernel_release: String,
    pub kernel_version: String,
    pub qemu_path: PathBuf,
    pub qemu_size: u64,
    pub qemu_mtime: Timestamp,
    /// [`probe::fingerprint`](super::probe::fingerprint).
    pub probe: String,
}

/// Seconds and nanoseconds, as stat gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
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

    /// The stored verdict, whatever key it holds for; `None` when there is none or it cannot
    /// be read or parsed (the probe then simply runs again).
    pub fn load(facts_dir: &Path) -> Option<Verdict> {
        let bytes = std::fs::read(Self::path(facts_dir)).ok()?;
        Verdict::parse(std::str::from_utf8(&bytes).ok()?)
    }

    /// Writes the verdict whole or not at all (a temporary file renamed over the old one), so
    /// a concurrent vmrun reads either verdict, never half of one.
    pub fn store(&self, facts_dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(facts_dir)?;
        let mut file = tempfile::NamedTempFile::new_in(facts_dir)?;
        file.write_all(self.to_text().as_bytes())?;
        file.persist(Self::path(facts_dir)).map_err(|e| e.error)?;
        Ok(())
    }

    pub fn to_text(&self) -> String {
        let k = &self.key;
        let mut text = String::from(
            "# vmrun: whether KVM runs guests on this host. Delete this file to check again.\n",
        );
        let mut line = |name: &str, value: &[u8]| {
            text.push_str(name);
            text.push('=');
            text.push_str(&escape(value));
            text.push('\n');
        };
        line("format", FORMAT.as_bytes());
        line("kvm.rdev", k.kvm_rdev.to_string().as_bytes());
        line("kvm.ino", k.kvm_ino.to_string().as_bytes());
        line("kvm.ctime", k.kvm_ctime.to_string().as_bytes());
        line("kernel.release", k.kernel_release.as_bytes());
        line("kernel.version", k.kernel_version.as_bytes());
        line("qemu.path", k.qemu_path.as_os_str().as_bytes());
        line("qemu.size", k.qemu_size.to_string().as_bytes());
        line("qemu.mtime", k.qemu_mtime.to_string().as_bytes());
        line("probe", k.probe.as_bytes());
        line("usable", if self.usable { b"yes" } else { b"no" });
        line("reason", self.reason.as_bytes());
        line("probe_ms", self.probe_ms.to_string().as_bytes());
        line("checked_at", self.checked_at.to_string().as_bytes());
        text
    }

    /// Parses [`to_text`](Self::to_text)'s output; `None` for anything else (another format,
    /// a missing or malformed field).
    pub fn parse(text: &str) -> Option<Verdict> {
        let mut fields: HashMap<&str, Vec<u8>> = HashMap::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = line.split_once('=')?;
            fields.insert(name, unescape(value)?);
        }
        let text = |name: &str| {
            fields
                .get(name)
                .and_then(|v| String::from_utf8(v.clone()).ok())
        };
        let number = |name: &str| text(name)?.parse::<u64>().ok();
        let time = |name: &str| text(name)?.parse::<Timestamp>().ok();
        if text("format")? != FORMAT {
            return None;
        }
        let key = VerdictKey {
            kvm_rdev: number("kvm.rdev")?,
            kvm_ino: number("kvm.ino")?,
            kvm_ctime: time("kvm.ctime")?,
            kernel_release: text("kernel.release")?,
            kernel_version: text("kernel.version")?,
            qemu_path: PathBuf::from(OsString::from_vec(fields.get("qemu.path")?.clone())),
            qemu_size: number("qemu.size")?,
            qemu_mtime: time("qemu.mtime")?,
            probe: text("probe")?,
        };
        let usable = match text("usable")?.as_str() {
            "yes" => true,
            "no" => false,
            _ => return None,
        };
        Some(Verdict {
            key,
            usable,
            reason: text("reason")?,
            probe_ms: number("probe_ms")?,
            checked_at: number("checked_at")?,
        })
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:09}", self.secs, self.nanos)
    }
}

impl std::str::FromStr for Timestamp {
    type Err = ();
    fn from_str(s: &str) -> Result<Timestamp, ()> {
        let (secs, nanos) = s.split_once('.').ok_or(())?;
        if nanos.len() != 9 {
            return Err(());
        }
        Ok(Timestamp {
            secs: secs.parse().map_err(|_| ())?,
            nanos: nanos.parse().map_err(|_| ())?,
        })
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

fn escape(value: &[u8]) -> String {
    let mut out = String::with_capacity(value.len());
    for &b in value {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

fn unescape(value: &str) -> Option<Vec<u8>> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            let hex = value
                .get(i + 2..i + 4)
                .filter(|_| bytes.get(i + 1) == Some(&b'x'))?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
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

    #[test]
    fn text_format() {
        assert_eq!(
            verdict().to_text(),
            "# vmrun: whether KVM runs guests on this host. Delete this file to check again.\n\
             format=1\n\
             kvm.rdev=2792\n\
             kvm.ino=88\n\
             kvm.ctime=1763841853.000000005\n\
             kernel.release=6.1.0-27-amd64\n\
             kernel.version=#1 SMP PREEMPT_DYNAMIC Debian 6.1.115-1 (2024-11-01)\n\
             qemu.path=/usr/bin/qemu-system-x86_64\n\
             qemu.size=18622592\n\
             qemu.mtime=1731002580.000000000\n\
             probe=0f3c9a1b2d4e5f60\n\
             usable=no\n\
             reason=the probe guest reached protected mode, then made no progress in 5 s\n\
             probe_ms=5003\n\
             checked_at=1763900000\n"
        );
    }

    #[test]
    fn round_trips() {
        assert_eq!(Verdict::parse(&verdict().to_text()), Some(verdict()));
        let usable = Verdict {
            usable: true,
            reason: String::new(),
            ..verdict()
        };
        assert_eq!(Verdict::parse(&usable.to_text()), Some(usable));
    }

    #[test]
    fn odd_bytes_in_values_round_trip() {
        let mut v = verdict();
        v.key.qemu_path = PathBuf::from(OsString::from_vec(b"/opt/q\\e=mu\n\xff/bin".to_vec()));
        v.reason = "line one\nline two \\ done".into();
        let text = v.to_text();
        assert!(
            text.contains("qemu.path=/opt/q\\x5ce=mu\\x0a\\xff/bin\n"),
            "{text}"
        );
        assert_eq!(
            text.lines().count(),
            15,
            "a value spilled onto another line"
        );
        assert_eq!(Verdict::parse(&text), Some(v));
    }

    #[test]
    fn anything_else_is_no_verdict() {
        let text = verdict().to_text();
        assert_eq!(Verdict::parse(&text.replace("format=1", "format=2")), None);
        assert_eq!(
            Verdict::parse(&text.replace("usable=no", "usable=maybe")),
            None
        );
        assert_eq!(Verdict::parse(&text.replace("kvm.ino=88\n", "")), None);
        assert_eq!(
            Verdict::parse(&text.replace("kvm.ino=88", "kvm.ino=x")),
            None
        );
        assert_eq!(
            Verdict::parse(&text.replace("kvm.ctime=1763841853.000000005", "kvm.ctime=1763841853")),
            None
        );
        assert_eq!(
            Verdict::parse(&text.replace("reason=the", "reason=\\q")),
            None
        );
        assert_eq!(
            Verdict::parse(&text.replace("usable=no", "usable no")),
            None
        );
        assert_eq!(Verdict::parse(""), None);
    }

    #[test]
    fn store_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let facts = dir.path().join("host");
        assert_eq!(Verdict::load(&facts), None);
        verdict().store(&facts).unwrap();
        assert_eq!(Verdict::load(&facts), Some(verdict()));
        let usable = Verdict {
            usable: true,
            ..verdict()
        };
        usable.store(&facts).unwrap();
        assert_eq!(Verdict::load(&facts), Some(usable));
        assert_eq!(
            std::fs::read_dir(&facts).unwrap().count(),
            1,
            "a temporary file was left behind"
        );
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
