//! `vmrun test` through the binary against real VMs under QEMU: a third-party test suite,
//! exact exit codes, separate output streams, loopback-only forwards, parallel runs, and
//! teardown when vmrun is interrupted or killed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Live;
use vmrun::paths::Home;

fn vmrun_test(project: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(common::VMRUN);
    cmd.arg("test")
        .arg("--image")
        .arg(common::baked_image())
        .args(args);
    cmd.current_dir(project)
        .env("VMRUN_HOME", common::test_home());
    cmd
}

fn run(project: &Path, args: &[&str]) -> Output {
    vmrun_test(project, args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn runs_dir() -> PathBuf {
    Home::under(&common::test_home()).runs()
}

/// Whether any process on the machine runs QEMU on a disk inside `dir`, or slirp4netns for
/// its network (whose API socket is there).
fn qemu_using(dir: &Path) -> bool {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        (cmdline.contains("qemu-system") || cmdline.contains("slirp4netns\0"))
            && cmdline.contains(&needle)
    })
}

/// A live run's directory, once its VM is reachable over SSH.
fn wait_until_up(live: &mut Live) -> PathBuf {
    let line = live.wait_for(": boot: done", Duration::from_secs(300));
    runs_dir().join(common::run_id(&line).unwrap())
}

/// SIGINT; the exit code and all of stderr.
fn interrupt(live: Live) -> (Option<i32>, String) {
    live.signal(libc::SIGINT);
    let (code, err, _) = live.finish();
    (code, err)
}

#[test]
fn a_third_party_test_suite_passes_in_the_guest() {
    let project = tempfile::tempdir().unwrap();
    let download = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "idna==3.7",
            "-d",
        ])
        .arg(project.path())
        .output()
        .unwrap();
    assert!(
        download.status.success(),
        "pip download: {}",
        text(&download.stderr)
    );
    let unpack = Command::new("tar")
        .args(["xzf", "idna-3.7.tar.gz", "--strip-components=1"])
        .current_dir(project.path())
        .status()
        .unwrap();
    assert!(unpack.success());
    std::fs::remove_file(project.path().join("idna-3.7.tar.gz")).unwrap();
    // The suite's own exit code: `set -o pipefail` in bash, since the command uses a pipe.
    std::fs::write(
        project.path().join("vmrun.yaml"),
        "test:\n  command: [bash, -o, pipefail, -c, \
         'python3 -m unittest discover -s tests -t . 2>&1 | tee unittest.log']\n  \
         artifacts: [unittest.log]\n",
    )
    .unwrap();
    let out = run(project.path(), &[]);
    assert!(
        out.status.success(),
        "suite failed ({:?}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    let log = std::fs::read_to_string(project.path().join("vmrun-artifacts/unittest.log"))
        .expect("artifact copied back");
    assert!(
        log.contains("Ran ") && log.trim_end().ends_with("OK"),
        "{log}"
    );
    assert!(
        text(&out.stdout).contains("Ran "),
        "output streamed to stdout"
    );
}

#[test]
fn exit_codes_come_back_exactly_and_streams_stay_apart() {
    let project = tempfile::tempdir().unwrap();
    let cases: [(&str, i32); 4] = [
        ("exit 0", 0),
        ("exit 1", 1),
        ("exit 7", 7),
        ("kill -KILL $$", 137),
    ];
    // Two at a time: the machine has two cores.
    for pair in cases.chunks(2) {
        let children: Vec<_> = pair
            .iter()
            .map(|(script, _)| {
                let script = format!("echo to-stdout; echo to-stderr >&2; {script}");
                vmrun_test(project.path(), &["--", "sh", "-c", &script])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for ((script, code), child) in pair.iter().zip(children) {
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(*code),
                "`{script}`: {}",
                text(&out.stderr)
            );
            assert_eq!(text(&out.stdout), "to-stdout\n", "`{script}` stdout");
            let err = text(&out.stderr);
            assert!(
                err.contains("to-stderr\n") && !err.contains("to-stdout"),
                "`{script}` stderr: {err}"
            );
        }
    }
}

/// The port of a live run's SSH forward, from its ssh_config.
fn forward_port(run_dir: &Path) -> u16 {
    let config = std::fs::read_to_string(run_dir.join("ssh/ssh_config")).unwrap();
    config
        .lines()
        .find_map(|l| l.trim().strip_prefix("Port "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn keep_leaves_a_failed_runs_vm_up_for_vmrun_ssh_on_loopback_only() {
    let project = tempfile::tempdir().unwrap();
    let mut live = Live::start(vmrun_test(
        project.path(),
        &["--keep", "--", "sh", "-c", "exit 5"],
    ));
    let run_dir = wait_until_up(&mut live);
    let id = run_dir.file_name().unwrap().to_str().unwrap().to_owned();
    let port = forward_port(&run_dir);
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let listening: Vec<&str> = tcp
        .lines()
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.len() > 3 && fields[3] == "0A" && fields[1].ends_with(&format!(":{port:04X}"))
        })
        .collect();
    assert_eq!(listening.len(), 1, "{listening:?}");
    assert!(
        listening[0]
            .split_whitespace()
            .nth(1)
            .unwrap()
            .starts_with("0100007F:"),
        "not on 127.0.0.1: {}",
        listening[0]
    );

    live.wait_for("its VM is kept", Duration::from_secs(60));
    let ssh = Command::new(common::VMRUN)
        .args(["ssh", &id, "--", "echo", "inside", "it's"])
        .env("VMRUN_HOME", common::test_home())
        .output()
        .unwrap();
    assert!(ssh.status.success(), "vmrun ssh: {}", text(&ssh.stderr));
    assert_eq!(text(&ssh.stdout), "inside it's\n");
    assert!(qemu_using(&run_dir), "the kept VM is gone");

    let (code, err) = interrupt(live);
    assert_eq!(code, Some(130), "{err}");
    assert!(
        err.contains(&format!("vmrun ssh {id}")),
        "says how to get in: {err}"
    );
    assert!(!run_dir.exists(), "run directory left behind");
    assert!(!qemu_using(&run_dir), "QEMU left running");
}

/// The guest's sshd counts the logins of one run that copies a project in, runs a command
/// and copies an artifact out: one (vmrun's session; rsync rides it through the relay). The
/// run boots cold so that the guest's journal of this boot holds no logins from the bake;
/// it fails so that `--keep` leaves its VM up to be asked, after the artifacts came back.
#[test]
fn a_run_makes_one_ssh_login_for_sync_command_and_artifacts() {
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("data.txt"), "from the host\n").unwrap();
    std::fs::write(
        project.path().join("vmrun.yaml"),
        "test:\n  artifacts: [result.txt]\n",
    )
    .unwrap();
    let mut live = Live::start(vmrun_test(
        project.path(),
        &[
            "--cold",
            "--keep",
            "--",
            "sh",
            "-c",
            "cp data.txt result.txt && exit 5",
        ],
    ));
    let run_dir = wait_until_up(&mut live);
    let id = run_dir.file_name().unwrap().to_str().unwrap().to_owned();
    live.wait_for("its VM is kept", Duration::from_secs(300));
    let artifact = project.path().join("vmrun-artifacts/result.txt");
    assert_eq!(
        std::fs::read_to_string(&artifact).unwrap(),
        "from the host\n"
    );

    let journal = Command::new(common::VMRUN)
        .args([
            "ssh",
            &id,
            "--",
            "sudo",
            "journalctl",
            "-b",
            "-u",
            "ssh",
            "-o",
            "cat",
        ])
        .env("VMRUN_HOME", common::test_home())
        .output()
        .unwrap();
    assert!(
        journal.status.success(),
        "vmrun ssh: {}",
        text(&journal.stderr)
    );
    let journal = text(&journal.stdout);
    let logins = journal
        .lines()
        .filter(|l| l.starts_with("Accepted publickey for vmrun"))
        .count();
    // The run's login, and this `vmrun ssh`.
    assert_eq!(logins, 2, "{journal}");

    let (code, err) = interrupt(live);
    assert_eq!(code, Some(130), "{err}");
}

#[test]
fn sigint_during_the_command_tears_everything_down() {
    let project = tempfile::tempdir().unwrap();
    let mut live = Live::start(vmrun_test(project.path(), &["--", "sleep", "600"]));
    let run_dir = wait_until_up(&mut live);
    assert!(qemu_using(&run_dir));
    std::thread::sleep(Duration::from_secs(3));
    let (code, err) = interrupt(live);
    assert_eq!(code, Some(130), "{err}");
    assert!(!run_dir.exists(), "run directory left behind");
    assert!(!qemu_using(&run_dir), "QEMU left running");
}

#[test]
fn a_killed_vmrun_takes_its_qemu_along_and_the_next_call_reaps_its_files() {
    let project = tempfile::tempdir().unwrap();
    let mut live = Live::start(vmrun_test(project.path(), &["--", "sleep", "600"]));
    let run_dir = wait_until_up(&mut live);
    live.child.kill().unwrap(); // SIGKILL: no handler runs
    live.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while qemu_using(&run_dir) {
        assert!(
            Instant::now() < deadline,
            "QEMU or its slirp4netns outlived a SIGKILLed vmrun"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(run_dir.exists(), "nothing ran to remove it yet");
    let out = Command::new(common::VMRUN)
        .args(["images"])
        .env("VMRUN_HOME", common::test_home())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        !run_dir.exists(),
        "the next vmrun call did not reap the dead run"
    );
}

#[test]
fn parallel_runs_do_not_collide_and_repeat_uses_fresh_overlays() {
    let project = tempfile::tempdir().unwrap();
    // Each run writes a marker and fails if an earlier run's marker is there.
    let script = "test ! -e /var/tmp/seen && touch /var/tmp/seen && \
                  echo shard=$VMRUN_SHARD_INDEX/$VMRUN_SHARD_COUNT";
    let out = run(
        project.path(),
        &[
            "--repeat", "2", "--jobs", "2", "--shard", "2/3", "--", "sh", "-c", script,
        ],
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("shard=2/3").count(), 2, "{stdout}");
    assert!(err.contains("2 passed, 0 failed"), "{err}");
}

#[test]
fn timeout_ends_the_command_with_124() {
    let project = tempfile::tempdir().unwrap();
    let out = run(project.path(), &["--timeout", "3s", "--", "sleep", "60"]);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("timed out after 3s"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn until_fail_stops_at_the_first_failure() {
    let project = tempfile::tempdir().unwrap();
    let out = run(
        project.path(),
        &["--until-fail", "--repeat", "5", "--", "sh", "-c", "exit 3"],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("0 passed, 1 failed"),
        "more runs after the first failure: {err}"
    );
}

#[test]
fn a_guest_that_does_not_come_up_in_time_fails_with_its_console() {
    let project = tempfile::tempdir().unwrap();
    let out = run(
        project.path(),
        &["--cold", "--boot-timeout", "3s", "--", "true"],
    );
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(vmrun::exit_code::VM_FAILED as i32),
        "{err}"
    );
    assert!(err.contains("did not become reachable over SSH"), "{err}");
    assert!(err.contains("last lines of the serial console"), "{err}");
}

/// The lines of `stream` with when each arrived.
fn timed_lines(
    stream: impl std::io::Read + Send + 'static,
) -> std::thread::JoinHandle<Vec<(Instant, String)>> {
    std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
            .map(|line| (Instant::now(), line))
            .collect()
    })
}

#[test]
fn a_series_brings_the_next_vm_up_while_a_command_runs_and_runs_commands_in_turn() {
    let project = tempfile::tempdir().unwrap();
    let mut child = vmrun_test(
        project.path(),
        &[
            "--repeat",
            "3",
            "--",
            "sh",
            "-c",
            "echo begin; sleep 3; echo end",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let stdout = timed_lines(child.stdout.take().unwrap());
    let stderr = timed_lines(child.stderr.take().unwrap());
    assert!(child.wait().unwrap().success());
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let lines: Vec<&str> = stdout.iter().map(|(_, l)| l.as_str()).collect();
    // One command at a time, whole, in turn.
    assert_eq!(lines, ["begin", "end", "begin", "end", "begin", "end"]);
    // The second run's VM started coming up before the first command ended.
    let boots: Vec<Instant> = stderr
        .iter()
        .filter(|(_, l)| l.ends_with(": boot ..."))
        .map(|(at, _)| *at)
        .collect();
    let all: Vec<&str> = stderr.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(boots.len(), 3, "{all:#?}");
    assert!(
        boots[1] < stdout[1].0,
        "run 2 came up only after run 1: {all:#?}"
    );
    assert!(
        boots[2] < stdout[3].0,
        "run 3 came up only after run 2: {all:#?}"
    );
}
