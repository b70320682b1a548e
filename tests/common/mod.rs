//! Shared by the integration tests that boot VMs: one Debian guest image per test process,
//! built by vmrun's own builder and cached on disk by the hash of its inputs.
#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use vmrun::events::Event;
use vmrun::image::debian::DebianImage;
use vmrun::qemu::args::Accel;

/// The VMRUN_HOME all tests share (`VMRUN_TEST_HOME`, else under target/tmp): the Debian
/// source image and baked images are content-addressed there, so each is made once and
/// later test processes reuse them.
pub fn test_home() -> PathBuf {
    std::env::var_os("VMRUN_TEST_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("vmrun-home"))
}

/// The test guest image (qcow2, never modified by tests: they boot overlays on it). It is
/// where `vmrun bake --image debian:bookworm` finds it in [`test_home`].
pub fn guest_image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let cache = vmrun::paths::Home::under(&test_home())
            .sources()
            .join("debian");
        let started = Instant::now();
        let sink = move |event: Event| {
            eprintln!(
                "[guest image +{:>5.1}s] {event:?}",
                started.elapsed().as_secs_f64()
            )
        };
        match DebianImage::bookworm().ensure_cached(&cache, &sink) {
            Ok(path) => path,
            Err(err) => panic!(
                "building the test guest image failed: {:?}",
                miette::Report::new(err)
            ),
        }
    })
}

/// KVM only when asked for (GitHub's runners); these machines have no working KVM.
pub fn accel() -> Accel {
    match std::env::var("VMRUN_ACCEL").as_deref() {
        Ok("kvm") => Accel::Kvm,
        _ => Accel::Tcg,
    }
}

pub fn qemu_system() -> PathBuf {
    which::which("qemu-system-x86_64")
        .expect("qemu-system-x86_64 is needed: apt-get install qemu-system-x86")
}

/// A token no earlier run could have printed.
pub fn unique_token() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", nanos, std::process::id())
}

pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).unwrap();
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The path of the vmrun binary under test.
pub const VMRUN: &str = env!("CARGO_BIN_EXE_vmrun");

/// The name of an image baked with an empty vmrun.yaml from the test guest, in [`test_home`]:
/// baked once per test home (the store hands every later bake of the same inputs back at once).
pub fn baked_image() -> &'static str {
    static BAKED: OnceLock<&'static str> = OnceLock::new();
    BAKED.get_or_init(|| {
        guest_image();
        let empty = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(VMRUN)
            .args(["bake", "--image", "debian:bookworm", "--name", "test-base"])
            .current_dir(empty.path())
            .env("VMRUN_HOME", test_home())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "baking the test image failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        "test-base"
    })
}

/// The id of the first run vmrun names in `text`, its stderr (`[  0.0s] run ID: boot ...`).
pub fn run_id(text: &str) -> Option<String> {
    let rest = &text[text.find("] run ")? + "] run ".len()..];
    Some(rest.split(':').next()?.to_owned())
}

/// vmrun started in the background (its stdout discarded), its stderr read line by line by a
/// thread so a test can wait for what it says.
pub struct Live {
    pub child: std::process::Child,
    stderr: std::sync::mpsc::Receiver<String>,
    lines: Vec<String>,
}

impl Live {
    pub fn start(mut cmd: std::process::Command) -> Live {
        use std::io::BufRead;
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        Live {
            child,
            stderr: rx,
            lines: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle`; returns it.
    pub fn wait_for(&mut self, needle: &str, timeout: std::time::Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => self.lines.push(line),
                Err(_) => panic!("no `{needle}` on stderr; saw:\n{}", self.lines.join("\n")),
            }
        }
    }

    /// Sends `signal` to vmrun (the child this test started).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) of the child this test spawned, not reaped yet.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Waits for vmrun to exit; its exit code, all of stderr, and how long the wait took.
    pub fn finish(mut self) -> (Option<i32>, String, std::time::Duration) {
        let asked = Instant::now();
        let status = self.child.wait().unwrap();
        let took = asked.elapsed();
        self.lines.extend(self.stderr.iter());
        (status.code(), self.lines.join("\n"), took)
    }
}
