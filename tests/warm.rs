//! Warm start against real VMs: runs resume the state saved at bake, each with the host's
//! time, its own randomness and a fresh disk, and boot cold, saying why, when they cannot.

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use vmrun::paths::Home;

fn vmrun_test(project: &Path, image: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(common::VMRUN);
    cmd.args(["test", "--image", image])
        .args(args)
        .current_dir(project)
        .env("VMRUN_HOME", common::test_home());
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// What one resumed run saw: the guest's clock against the host's when the line arrived,
/// 16 random bytes, whether an earlier run's file was there, and vmrun's stderr.
struct Seen {
    clock_skew: f64,
    random: String,
    earlier_file: bool,
    stderr: String,
}

fn resumed_run(project: &Path) -> Seen {
    let script = "date +%s.%N; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; \
                  test -e /var/tmp/earlier && echo earlier-file; touch /var/tmp/earlier";
    let started = now();
    let mut child = vmrun_test(project, common::baked_image(), &["--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let guest_clock: f64 = lines.next().unwrap().unwrap().trim().parse().unwrap();
    let read = now();
    // The guest read its clock after vmrun started and before its line arrived here: how far
    // it is outside that window is its error (the line's way out, slow on a busy machine, is
    // not the guest's clock's).
    let clock_skew = (started - guest_clock).max(guest_clock - read).max(0.0);
    let random = lines.next().unwrap().unwrap();
    let earlier_file = lines.any(|l| l.unwrap() == "earlier-file");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    Seen {
        clock_skew,
        random,
        earlier_file,
        stderr: text(&out.stderr),
    }
}

#[test]
fn resumed_runs_get_the_hosts_time_their_own_randomness_and_a_fresh_disk() {
    let project = tempfile::tempdir().unwrap();
    let first = resumed_run(project.path());
    let second = resumed_run(project.path());
    for seen in [&first, &second] {
        assert!(
            !seen.stderr.contains("booting cold"),
            "did not resume: {}",
            seen.stderr
        );
        assert!(
            seen.clock_skew < 1.0,
            "guest clock outside the run by {:.3}s",
            seen.clock_skew
        );
        assert!(!seen.earlier_file, "a file from an earlier run was there");
        assert_eq!(seen.random.len(), 32, "{}", seen.random);
    }
    assert_ne!(
        first.random, second.random,
        "two resumed runs produced the same random bytes"
    );
}

#[test]
fn a_run_that_asks_for_another_machine_size_boots_cold_and_says_why() {
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("vmrun.yaml"), "vm:\n  memory: 1536M\n").unwrap();
    let out: Output = vmrun_test(project.path(), common::baked_image(), &["--", "free", "-m"])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("booting cold: the warm state does not fit") && err.contains("1536 MiB"),
        "{err}"
    );
    let total: u64 = text(&out.stdout)
        .lines()
        .find(|l| l.starts_with("Mem:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        total > 1100,
        "the guest has {total} MiB, not the 1536 MiB asked for"
    );
}

#[test]
fn an_image_without_a_warm_state_boots_cold_and_says_why() {
    // A store entry as an older vmrun made it: the baked image without `warm/`.
    let image = common::baked_image();
    let home = Home::under(&common::test_home());
    let entry = std::fs::canonicalize(home.images().join(image)).unwrap();
    let key = "0000000000000000000000000000000000000000000000000000000000000cold";
    let copy = home.store().join(key);
    if !copy.exists() {
        let staging = home.store().join(".test-cold-copy");
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir(&staging).unwrap();
        for file in [
            "disk.qcow2",
            "host_ed25519.pub",
            "client_ed25519",
            "image.json",
        ] {
            std::fs::copy(entry.join(file), staging.join(file)).unwrap();
        }
        let _ = std::fs::rename(&staging, &copy);
    }
    let link = home.images().join("test-no-warm");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(Path::new("../store").join(key), &link).unwrap();

    let project = tempfile::tempdir().unwrap();
    let out = vmrun_test(project.path(), "test-no-warm", &["--", "true"])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("booting cold: the image has no warm state"),
        "{err}"
    );
}

#[test]
fn a_failed_warm_capture_is_a_warning_and_the_image_runs_cold() {
    // The guest agent, which runs set the clock through, is masked: the capture cannot
    // finish, but the provisioned image is good.
    common::baked_image();
    let project = tempfile::tempdir().unwrap();
    std::fs::write(
        project.path().join("vmrun.yaml"),
        format!(
            "bake:\n  run:\n    - systemctl mask qemu-guest-agent\n    - echo {}\n",
            common::unique_token()
        ),
    )
    .unwrap();
    let name = format!("no-agent-{}", common::unique_token());
    let out = Command::new(common::VMRUN)
        .args(["bake", "--image", "debian:bookworm", "--name", &name])
        .current_dir(project.path())
        .env("VMRUN_HOME", common::test_home())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "the bake failed: {err}");
    assert!(
        err.contains("warning: the warm state could not be saved, so runs of this image boot cold")
            && err.contains("guest agent"),
        "{err}"
    );

    let out = vmrun_test(project.path(), &name, &["--", "true"])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("booting cold: the image has no warm state"),
        "{err}"
    );
}

/// The sha256 of the image's saved RAM file, in hex.
fn ram_file_digest(image: &str) -> String {
    use sha2::Digest;
    let home = Home::under(&common::test_home());
    let ram = std::fs::canonicalize(home.images().join(image))
        .unwrap()
        .join("warm/ram");
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(&ram).unwrap(), &mut hasher).unwrap();
    format!("{:x}", hasher.finalize())
}

#[test]
fn clones_running_at_once_never_see_each_others_ram_and_the_ram_file_stays_as_saved() {
    let image = common::baked_image();
    let before = ram_file_digest(image);
    // Each clone writes a marker of its own into tmpfs (guest RAM), waits long enough for
    // the other to have written its own, and counts the markers it can see.
    let script = "m=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \\n'); \
                  echo \"$m\" > /dev/shm/clone-$m; echo start $(date +%s.%N); sleep 4; \
                  echo seen $(ls /dev/shm | grep -c '^clone-') mine $m; echo end $(date +%s.%N)";
    let project = tempfile::tempdir().unwrap();
    let out = vmrun_test(
        project.path(),
        image,
        &["--jobs", "2", "--repeat", "2", "--", "sh", "-c", script],
    )
    .output()
    .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("booting cold"), "did not resume: {stderr}");
    let field = |word: &str| -> Vec<String> {
        stdout
            .lines()
            .filter_map(|l| {
                l.split_once(&format!("] {word} "))
                    .map(|(_, v)| v.to_owned())
            })
            .collect()
    };
    let (starts, ends, seen) = (field("start"), field("end"), field("seen"));
    assert_eq!(
        (starts.len(), ends.len(), seen.len()),
        (2, 2, 2),
        "{stdout}"
    );
    let time = |s: &String| s.parse::<f64>().unwrap();
    // The two clones ran at the same time: each started before the other ended.
    assert!(
        time(&starts[0]) < time(&ends[1]) && time(&starts[1]) < time(&ends[0]),
        "the clones did not overlap: {stdout}"
    );
    for line in &seen {
        assert!(
            line.starts_with("1 mine "),
            "a clone saw another's RAM: {stdout}"
        );
    }
    assert_ne!(seen[0], seen[1], "{stdout}");
    assert_eq!(
        ram_file_digest(image),
        before,
        "runs changed the saved RAM file"
    );
}

#[test]
fn the_guests_sshd_does_not_re_exec_itself_for_each_connection() {
    let project = tempfile::tempdir().unwrap();
    let listener = "tr '\\0' ' ' < /proc/$(pgrep -o -x sshd)/cmdline";
    let out = vmrun_test(
        project.path(),
        common::baked_image(),
        &["--", "sh", "-c", listener],
    )
    .output()
    .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("/usr/sbin/sshd -D -r"), "{stdout}");
}
