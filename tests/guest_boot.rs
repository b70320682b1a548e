//! A real guest boots vmrun's native overlay with vmrun's native seed, and cloud-init applies
//! the seed: the foundation every later command stands on, checked end to end under QEMU.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use vmrun::disk::Overlay;
use vmrun::qemu::args::{Machine, MachineSize, command_line};
use vmrun::qemu::process::QemuProcess;
use vmrun::qemu::serial::Console;
use vmrun::seed::SeedIso;
use vmrun::wait::{Stop, Watch};

/// Boot to poweroff under TCG takes ~80 s on these machines; leave room for a slow host.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

#[test]
fn cloud_init_applies_a_native_seed_on_a_native_overlay() {
    let image = common::guest_image();
    let base_before = common::sha256_file(image);
    let dir = tempfile::tempdir().unwrap();
    let token = common::unique_token();
    let hostname = format!("seeded-{}", &token[..8]);

    // write_files and runcmd come from user-data, the hostname from meta-data: all three must
    // have been applied for the line to appear on the serial console.
    let user_data = format!(
        "#cloud-config\n\
         write_files:\n  - path: /var/tmp/vmrun-token\n    content: \"{token}\"\n\
         runcmd:\n  - [sh, -c, 'echo \"vmrun-seed-check host=$(hostname) \
              token=$(cat /var/tmp/vmrun-token)\" > /dev/ttyS0']\n\
         power_state:\n  mode: poweroff\n  timeout: 60\n"
    );
    let meta_data = format!("instance-id: iid-{token}\nlocal-hostname: {hostname}\n");
    let seed = dir.path().join("seed.iso");
    SeedIso::new(user_data)
        .meta_data(meta_data)
        .write_to(&seed)
        .unwrap();
    let disk = dir.path().join("disk.qcow2");
    Overlay::create(&disk, image).unwrap();
    let overlay_before = std::fs::metadata(&disk).unwrap().len();

    let serial_log = dir.path().join("serial.log");
    let console = Console::to_log(&serial_log).unwrap();
    let machine = Machine {
        accel: common::accel(),
        size: MachineSize {
            cpus: 2,
            memory_mib: 1024,
        },
        disk: disk.clone(),
        seed: Some(seed),
        console: console.fd(),
        // Nothing to reach: the guest provisions itself from the seed.
        network: vmrun::net::Network::None,
        forwards: vec![],
        control: None,
        persistent: None,
    };
    let mut qemu = QemuProcess::spawn(
        &common::qemu_system(),
        &command_line(&machine),
        &dir.path().join("qemu.log"),
        console,
    )
    .unwrap();
    let status = Watch::signals()
        .until(
            Instant::now() + BOOT_TIMEOUT,
            Duration::from_millis(100),
            || Ok::<_, Stop>(qemu.exited().map(|exited| exited.status)),
        )
        .unwrap();
    // Reaped, and its console log complete.
    qemu.kill().unwrap();
    let serial = String::from_utf8_lossy(&std::fs::read(&serial_log).unwrap()).into_owned();
    let tail: String = serial
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    let qemu_log = std::fs::read_to_string(dir.path().join("qemu.log")).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "guest did not power off cleanly ({status:?}); QEMU said: {qemu_log}\nserial tail:\n{tail}"
    );
    let expected = format!("vmrun-seed-check host={hostname} token={token}");
    assert!(
        serial.contains(&expected),
        "no `{expected}` on the serial console; tail:\n{tail}"
    );

    // The guest's writes went to the overlay; the base image is bit-for-bit what it was.
    assert!(
        std::fs::metadata(&disk).unwrap().len() > overlay_before,
        "overlay did not grow"
    );
    assert_eq!(
        common::sha256_file(image),
        base_before,
        "base image changed"
    );
    let check = Command::new("qemu-img")
        .args(["check", "-q", "-f", "qcow2"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "qemu-img check: {}",
        String::from_utf8_lossy(&check.stdout)
    );
}
