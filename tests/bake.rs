//! `vmrun bake` through the binary, against real QEMU: a Debian bake provisioned from
//! vmrun.yaml, a cache hit, bakes from a local whole-disk image and from a URL, and the
//! failures.

mod common;
#[path = "support/http_server.rs"]
mod http_server;

use std::path::Path;
use std::process::{Command, Output};

const VMRUN: &str = env!("CARGO_BIN_EXE_vmrun");

/// `vmrun ARGS` in `cwd` with the shared test home.
fn vmrun(cwd: &Path, args: &[&str]) -> Output {
    Command::new(VMRUN)
        .args(args)
        .current_dir(cwd)
        .env("VMRUN_HOME", common::test_home())
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn images_json() -> serde_json::Value {
    let out = vmrun(Path::new("."), &["images", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fingerprint(public_key_file: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public_key_file)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().nth(1).unwrap().to_owned()
}

#[test]
fn debian_bake_runs_the_bake_section_pins_the_host_key_and_is_then_a_cache_hit() {
    common::guest_image(); // the Debian source, built once per test home
    let project = tempfile::tempdir().unwrap();
    let token = common::unique_token();
    // Each bake.run line reports on the console, so the stored bake log shows what ran.
    std::fs::write(
        project.path().join("vmrun.yaml"),
        format!(
            "vm:\n  cpus: 2\n  memory: 1G\n\
             bake:\n  files:\n    - path: /etc/vmrun-test\n      content: \"file-{token}\"\n  \
             run:\n    - echo \"run-saw $(cat /etc/vmrun-test)\" > /dev/ttyS0\n    \
             - [sh, -c, 'echo guest-host-key $(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) \
                 > /dev/ttyS0']\n    \
             - [sh, -c, 'echo own-name $(getent hosts $(hostname)) > /dev/ttyS0']\n    \
             - [sh, -c, 'echo motd-sessions $(grep -c pam_motd /etc/pam.d/sshd) \
                 $(grep -c ^session.*pam_motd /etc/pam.d/sshd) > /dev/ttyS0']\n"
        ),
    )
    .unwrap();
    let out = vmrun(
        project.path(),
        &["bake", "--image", "debian:bookworm", "--name", "bake-test"],
    );
    assert!(out.status.success(), "bake failed: {}", stderr(&out));

    let images = images_json();
    let entry = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "bake-test")
        .expect("listed");
    assert_eq!(entry["source"], "debian:bookworm");
    let key = entry["key"].as_str().unwrap().to_owned();
    let dir = vmrun::paths::Home::under(&common::test_home())
        .store()
        .join(&key);
    let log = std::fs::read_to_string(dir.join("bake-serial.log")).unwrap();
    assert!(
        log.contains(&format!("run-saw file-{token}")),
        "bake.run/files did not run:\n{log}"
    );
    let guest_key_line = log
        .lines()
        .find(|l| l.contains("guest-host-key"))
        .expect("host key line");
    assert!(
        guest_key_line.contains(&fingerprint(&dir.join("host_ed25519.pub"))),
        "guest has another host key: {guest_key_line}"
    );
    let own_name = log
        .lines()
        .find(|l| l.contains("own-name"))
        .expect("own-name line");
    assert!(
        own_name.contains("own-name 127.0.1.1 vmrun"),
        "the guest's name does not resolve locally: {own_name}"
    );
    // pam_motd's lines are there, commented out.
    let motd = log
        .lines()
        .find(|l| l.contains("motd-sessions"))
        .expect("motd-sessions line");
    assert!(
        motd.contains("motd-sessions 2 0"),
        "pam_motd still runs on SSH logins: {motd}"
    );
    let mode = std::fs::metadata(dir.join("client_ed25519"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    assert!(
        !dir.join("host_ed25519").exists(),
        "the host's private key is not kept"
    );

    // The same inputs again: no boot, the same entry, under another name too.
    let again = vmrun(
        project.path(),
        &[
            "bake",
            "--image",
            "debian:bookworm",
            "--name",
            "bake-test-again",
        ],
    );
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("reused image"),
        "{}",
        stderr(&again)
    );
    let images = images_json();
    let again_entry = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "bake-test-again")
        .unwrap();
    assert_eq!(again_entry["key"], key.as_str());

    let rm = vmrun(project.path(), &["images", "rm", "bake-test-again"]);
    assert!(rm.status.success(), "{}", stderr(&rm));
    assert!(dir.exists(), "entry still named bake-test");
}

#[test]
fn bake_from_a_local_whole_disk_image() {
    let image = common::guest_image();
    let base_before = common::sha256_file(image);
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("vmrun.yaml"),
        "bake:\n  run:\n    - echo local-bake-ran > /dev/ttyS0\n",
    )
    .unwrap();
    let out = vmrun(
        project.path(),
        &[
            "bake",
            "--image",
            image.to_str().unwrap(),
            "--name",
            "bake-local",
        ],
    );
    assert!(out.status.success(), "bake failed: {}", stderr(&out));
    let images = images_json();
    let entry = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "bake-local")
        .expect("listed");
    assert_eq!(entry["source"], image.to_str().unwrap());
    assert_eq!(
        common::sha256_file(image),
        base_before,
        "the source file was modified"
    );
}

#[test]
fn bake_from_a_url_downloads_checks_and_provisions_it() {
    let image = common::guest_image();
    let digest = common::sha256_file(image);
    let server = http_server::Server::start(std::fs::read(image).unwrap());
    let url = server.url("/images/debian-bookworm.qcow2");
    let project = tempfile::tempdir().unwrap();
    // A token of this run's own: the bake cannot be a store hit of an earlier one.
    let token = common::unique_token();
    std::fs::write(
        project.path().join("vmrun.yaml"),
        format!("bake:\n  run:\n    - echo url-bake-ran-{token} > /dev/ttyS0\n"),
    )
    .unwrap();
    let out = vmrun(
        project.path(),
        &[
            "bake", "--image", &url, "--sha256", &digest, "--name", "bake-url",
        ],
    );
    assert!(out.status.success(), "bake failed: {}", stderr(&out));
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.status / 100 == 2),
        "{:?}",
        server.requests()
    );
    let images = images_json();
    let entry = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "bake-url")
        .expect("listed");
    assert_eq!(entry["source"], url.as_str());
    let dir = vmrun::paths::Home::under(&common::test_home())
        .store()
        .join(entry["key"].as_str().unwrap());
    let log = std::fs::read_to_string(dir.join("bake-serial.log")).unwrap();
    assert!(
        log.contains(&format!("url-bake-ran-{token}")),
        "bake.run did not run in the downloaded image:\n{log}"
    );
}

#[test]
fn failed_provisioning_shows_why_and_registers_nothing() {
    common::guest_image();
    let project = tempfile::tempdir().unwrap();
    let token = common::unique_token();
    std::fs::write(
        project.path().join("vmrun.yaml"),
        format!("bake:\n  run:\n    - echo failing-{token}\n    - exit 3\n"),
    )
    .unwrap();
    let out = vmrun(
        project.path(),
        &["bake", "--image", "debian:bookworm", "--name", "bake-fails"],
    );
    assert_eq!(
        out.status.code(),
        Some(vmrun::exit_code::IMAGE_FAILED as i32),
        "{}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("cloud-init failed while provisioning"),
        "{err}"
    );
    assert!(
        err.contains("scripts_user") || err.contains("scripts-user"),
        "names the failed module: {err}"
    );
    assert!(
        squeezed(&err).contains(&squeezed(
            "cloud-init module `scripts-user` failed; its lines on the serial console"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("failing-{token}")),
        "the command's own output: {err}"
    );
    let images = images_json();
    assert!(
        !images
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "bake-fails")
    );
}

/// An error report without whitespace and the frame miette draws: its wrapping may cut a
/// line anywhere, even inside a word.
fn squeezed(report: &str) -> String {
    report
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '│')
        .collect()
}

#[test]
fn a_failed_locale_module_shows_its_own_lines_and_how_to_override_it() {
    common::guest_image();
    let project = tempfile::tempdir().unwrap();
    // As on a Debian image with the `locales` package but no locale generated: locale-gen
    // generates nothing, and update-locale refuses cloud-init's default, en_US.UTF-8 (vmrun's
    // own image has no `locales` and skips the module; the bake's files stand in for it,
    // written before cloud-init's config stage runs the module).
    std::fs::write(
        project.path().join("vmrun.yaml"),
        r#"bake:
  files:
    - path: /usr/sbin/locale-gen
      permissions: "0755"
      content: |
        #!/bin/sh
        echo "Generating locales (this might take a while)..."
        echo "Generation complete."
    - path: /usr/sbin/update-locale
      permissions: "0755"
      content: |
        #!/bin/sh
        echo "*** update-locale: Error: invalid locale settings:  LANG=en_US.UTF-8" >&2
        exit 1
  user-data:
    locale: en_US.UTF-8
"#,
    )
    .unwrap();
    let out = vmrun(
        project.path(),
        &[
            "bake",
            "--image",
            "debian:bookworm",
            "--name",
            "bake-locale",
        ],
    );
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(vmrun::exit_code::IMAGE_FAILED as i32),
        "{err}"
    );
    let report = squeezed(&err);
    for expected in [
        // cloud-init's error, whole: it spans several lines in the guest.
        "cloud-init failed while provisioning: ('locale', ProcessExecutionError(",
        "Command: ['update-locale', '--locale-file=/etc/default/locale', 'LANG=en_US.UTF-8'] \
         Exit code: 1",
        // The module's own lines, which say why.
        "cloud-init module `locale` failed; its lines on the serial console",
        "Generating locales (this might take a while)...",
        "*** update-locale: Error: invalid locale settings:  LANG=en_US.UTF-8",
        // How to fix or skip it.
        "`bake: {user-data: {locale: C.UTF-8}}`",
        "`bake: {user-data: {locale: false}}`",
    ] {
        assert!(report.contains(&squeezed(expected)), "{expected}: {err}");
    }
    assert!(
        !err.contains("reboot: Power down"),
        "the shutdown after the failure explains nothing: {err}"
    );
}

#[test]
fn junk_source_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, b"this is not a disk").unwrap();
    let out = vmrun(dir.path(), &["bake", "--image", junk.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(vmrun::exit_code::BAD_INPUT as i32),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(junk.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
    let missing = dir.path().join("missing.qcow2");
    let out = vmrun(dir.path(), &["bake", "--image", missing.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(vmrun::exit_code::BAD_INPUT as i32),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains(missing.to_str().unwrap()),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_config_points_at_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vmrun.yaml"),
        "vm:\n  cpus: 2\nbake:\n  pakages: [curl]\n",
    )
    .unwrap();
    let out = vmrun(dir.path(), &["bake", "--image", "debian:bookworm"]);
    assert_eq!(
        out.status.code(),
        Some(vmrun::exit_code::BAD_INPUT as i32),
        "{}",
        stderr(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("pakages"), "{err}");
    assert!(err.contains("vmrun.yaml:4:"), "{err}");
}

#[test]
fn missing_qemu_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(VMRUN)
        .args(["bake", "--image", "debian:bookworm"])
        .current_dir(dir.path())
        .env("VMRUN_HOME", dir.path())
        .env("PATH", dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(vmrun::exit_code::MISSING_TOOL as i32),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("apt-get install qemu-system-x86"),
        "{}",
        stderr(&out)
    );
}
