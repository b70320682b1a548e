//! A hostile test inside a real guest tries to reach the host through the network: the
//! host's loopback through 10.0.2.2, the host's own address, a link-local address the test
//! makes answer on the host (as a cloud's metadata service does), and the guest's own view of
//! loopback. With the default `outbound` network none of it connects and Debian's mirror
//! still answers; `host` opens the loopback on purpose; `none` reaches nothing.

mod common;

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the guest runs: tries each `NAME=ADDR:PORT` argument and prints `NAME connected` or
/// `NAME blocked (why)`; then `mirror STATUS` for Debian's mirror.
const PROBE: &str = concat!(
    r#"
import socket, sys, urllib.request
for arg in sys.argv[1:]:
    name, target = arg.split("=")
    host, port = target.rsplit(":", 1)
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((host, int(port)))
        s.sendall(b"from the guest\n")
        print(name, "connected", flush=True)
    except OSError as e:
        print(name, "blocked", "(%s)" % e, flush=True)
    finally:
        s.close()
try:
    with urllib.request.urlopen("#,
    r#""http://deb.debian.org/debian/dists/bookworm/Release", timeout=20) as r:
        print("mirror", r.status, flush=True)
except Exception as e:
    print("mirror failed", "(%s)" % e, flush=True)
"#
);

/// A listener on the host that counts the connections it accepts.
struct Listener {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Listener {
    fn on(address: Ipv4Addr) -> Listener {
        let socket = TcpListener::bind((address, 0)).unwrap();
        let port = socket.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for mut stream in socket.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = stream.read(&mut [0; 64]);
            }
        });
        Listener { port, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// 169.254.77.7 on the host's loopback interface for as long as it lives (root only).
struct LinkLocalAddress;

const LINK_LOCAL: Ipv4Addr = Ipv4Addr::new(169, 254, 77, 7);

impl LinkLocalAddress {
    fn add() -> LinkLocalAddress {
        let status = Command::new("ip")
            .args(["addr", "add", "169.254.77.7/32", "dev", "lo"])
            .status()
            .unwrap();
        assert!(
            status.success(),
            "adding {LINK_LOCAL} to lo needs root, as CI runs the tests"
        );
        LinkLocalAddress
    }
}

impl Drop for LinkLocalAddress {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["addr", "del", "169.254.77.7/32", "dev", "lo"])
            .status();
    }
}

/// The host's first non-loopback IPv4 address: where its services on every interface listen.
fn host_address() -> Ipv4Addr {
    vmrun::net::blocked::host_addresses()
        .unwrap()
        .into_iter()
        .find(|a| !a.is_loopback() && !a.is_link_local())
        .expect("the host has an address besides loopback")
}

fn probe(network: &str, targets: &[(&str, Ipv4Addr, u16)]) -> Output {
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("probe.py"), PROBE).unwrap();
    let mut cmd = Command::new(common::VMRUN);
    cmd.args([
        "test",
        "--image",
        common::baked_image(),
        "--network",
        network,
        "--",
        "python3",
        "probe.py",
    ]);
    cmd.args(
        targets
            .iter()
            .map(|(name, address, port)| format!("{name}={address}:{port}")),
    );
    let out = cmd
        .current_dir(project.path())
        .env("VMRUN_HOME", common::test_home())
        .output()
        .unwrap();
    assert_no_slirp4netns_left(&run_dir(&out));
    out
}

fn said(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn line(out: &Output, name: &str) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no line for {name}\n{}", said(out)))
        .to_owned()
}

/// The directory of the run whose id vmrun printed first (`run ID: boot ...`).
fn run_dir(out: &Output) -> PathBuf {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let id = common::run_id(&stderr)
        .unwrap_or_else(|| panic!("no run id in vmrun's messages\n{}", said(out)));
    vmrun::paths::Home::under(&common::test_home())
        .runs()
        .join(id)
}

/// slirp4netns exits with the QEMU it served: none may be left for the run in `dir`.
fn assert_no_slirp4netns_left(dir: &Path) {
    let needle = format!("{}/", dir.display());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left = std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
            let cmdline = String::from_utf8_lossy(
                &std::fs::read(p.path().join("cmdline")).unwrap_or_default(),
            )
            .into_owned();
            cmdline.starts_with("slirp4netns") && cmdline.contains(&needle)
        });
        if !left {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a slirp4netns of a finished run is still running"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn by_default_the_guest_reaches_debians_mirror_but_not_the_host() {
    let _address = LinkLocalAddress::add();
    let loopback = Listener::on(Ipv4Addr::LOCALHOST);
    let everywhere = Listener::on(Ipv4Addr::UNSPECIFIED);
    let metadata = Listener::on(LINK_LOCAL);
    let host = host_address();
    let out = probe(
        "outbound",
        &[
            (
                "gateway-to-host-loopback",
                Ipv4Addr::new(10, 0, 2, 2),
                loopback.port,
            ),
            (
                "gateway-to-host-any",
                Ipv4Addr::new(10, 0, 2, 2),
                everywhere.port,
            ),
            ("host-address", host, everywhere.port),
            ("link-local", LINK_LOCAL, metadata.port),
            ("metadata", Ipv4Addr::new(169, 254, 169, 254), 80),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    for name in [
        "gateway-to-host-loopback",
        "gateway-to-host-any",
        "host-address",
        "link-local",
        "metadata",
    ] {
        assert!(
            line(&out, name).contains("blocked"),
            "{name}: {}",
            said(&out)
        );
    }
    assert_eq!(line(&out, "mirror"), "mirror 200", "{}", said(&out));
    assert_eq!(
        (
            loopback.accepted(),
            everywhere.accepted(),
            metadata.accepted()
        ),
        (0, 0, 0),
        "{}",
        said(&out)
    );
}

#[test]
fn the_host_network_opens_the_hosts_loopback_on_purpose() {
    let loopback = Listener::on(Ipv4Addr::LOCALHOST);
    let out = probe(
        "host",
        &[(
            "gateway-to-host-loopback",
            Ipv4Addr::new(10, 0, 2, 2),
            loopback.port,
        )],
    );
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert_eq!(
        line(&out, "gateway-to-host-loopback"),
        "gateway-to-host-loopback connected",
        "{}",
        said(&out)
    );
    assert_eq!(loopback.accepted(), 1, "{}", said(&out));
}

#[test]
fn no_network_reaches_nothing_but_vmrun_still_gets_in() {
    let loopback = Listener::on(Ipv4Addr::LOCALHOST);
    let out = probe(
        "none",
        &[(
            "gateway-to-host-loopback",
            Ipv4Addr::new(10, 0, 2, 2),
            loopback.port,
        )],
    );
    assert_eq!(out.status.code(), Some(0), "{}", said(&out));
    assert!(
        line(&out, "gateway-to-host-loopback").contains("blocked"),
        "{}",
        said(&out)
    );
    assert!(
        line(&out, "mirror").starts_with("mirror failed"),
        "{}",
        said(&out)
    );
    assert_eq!(loopback.accepted(), 0, "{}", said(&out));
}
