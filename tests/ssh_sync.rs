//! vmrun's SSH client and rsync against one real guest: a plain Debian bake (baked through
//! the binary, or reused from the store), cold-booted once on an overlay with a loopback
//! forward, then every behaviour in turn on that one VM (booting is the slow part).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vmrun::config::{ByteSize, Command as GuestCommand, SyncConfig};
use vmrun::disk::Overlay;
use vmrun::net::{Network, forward::Forward};
use vmrun::paths::Home;
use vmrun::qemu::args::{Machine, MachineSize, command_line};
use vmrun::qemu::process::QemuProcess;
use vmrun::qemu::serial::Console;
use vmrun::ssh::{self, ClientFiles, Ended, Session, Target};
use vmrun::store::{BakedImage, Store};
use vmrun::sync::{Bounds, Destination, RemoteShell};
use vmrun::wait::{Stop, Watch};

const IMAGE_NAME: &str = "ssh-sync-test";
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const PROJECT_DIR: &str = "project dir";

/// Bounds for rsync that only a broken guest reaches.
fn bounds() -> Bounds<'static> {
    Bounds::new(Duration::from_secs(300), Watch::signals())
}

/// The plain bake of debian:bookworm (an empty vmrun.yaml): the same store key as other
/// tests' plain bakes, so usually a store hit.
fn baked_image() -> BakedImage {
    common::guest_image();
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("vmrun.yaml"), "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vmrun"))
        .args(["bake", "--image", "debian:bookworm", "--name", IMAGE_NAME])
        .current_dir(project.path())
        .env("VMRUN_HOME", common::test_home())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bake failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Store::new(&Home::under(&common::test_home()))
        .get(&vmrun::name::ImageName::new(IMAGE_NAME).unwrap())
        .unwrap()
}

/// A booted overlay of the image; QEMU is killed when this is dropped.
struct Guest {
    _qemu: QemuProcess,
    serial_log: PathBuf,
    target: Target,
}

impl Guest {
    fn boot(image: &BakedImage, dir: &Path) -> Guest {
        let disk = dir.join("disk.qcow2");
        Overlay::create(&disk, &image.disk()).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let serial_log = dir.join("serial.log");
        let console = Console::to_log(&serial_log).unwrap();
        let machine = Machine {
            accel: common::accel(),
            size: MachineSize {
                cpus: 2,
                memory_mib: 1024,
            },
            disk,
            seed: None,
            console: console.fd(),
            // QEMU is started here directly, not through `vmrun isolate`.
            network: Network::None,
            forwards: vec![Forward::ssh(port)],
            control: None,
            persistent: None,
        };
        let qemu = QemuProcess::spawn(
            &common::qemu_system(),
            &command_line(&machine),
            &dir.join("qemu.log"),
            console,
        )
        .unwrap();
        let host_key = std::fs::read_to_string(image.host_key())
            .unwrap()
            .trim()
            .to_owned();
        Guest {
            _qemu: qemu,
            serial_log,
            target: Target {
                port,
                host_key,
                client_key: image.client_key(),
            },
        }
    }

    fn console_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.serial_log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Everything written, with when each piece arrived.
#[derive(Default)]
struct Recorder {
    pieces: Vec<(Instant, Vec<u8>)>,
}

impl Recorder {
    fn text(&self) -> String {
        String::from_utf8(self.pieces.iter().flat_map(|(_, b)| b.clone()).collect()).unwrap()
    }
}

impl Write for Recorder {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pieces.push((Instant::now(), buf.to_vec()));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs a shell command in the home directory; its outcome, stdout and stderr.
fn run(session: &Session, line: &str) -> (Ended, String, String) {
    run_in(session, ".", &BTreeMap::new(), line)
}

fn run_in(
    session: &Session,
    dir: &str,
    env: &BTreeMap<String, String>,
    line: &str,
) -> (Ended, String, String) {
    let (mut out, mut err) = (Recorder::default(), Recorder::default());
    let command = ssh::remote_command_line(dir, env, &GuestCommand::Shell(line.into()));
    let outcome = session
        .exec(
            &command,
            &mut out,
            &mut err,
            Some(Instant::now() + Duration::from_secs(60)),
            &Watch::signals(),
            &|| true,
        )
        .unwrap();
    (outcome, out.text(), err.text())
}

fn public_key_of(private: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-yf")
        .arg(private)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn fingerprint(public_key_file: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public_key_file)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

fn new_key(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

fn write_files(root: &Path, files: &[&str]) {
    for file in files {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("content of {file}\n")).unwrap();
    }
}

/// Runs one part of the test and says how long it took.
fn step<T>(name: &str, part: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = part();
    eprintln!("[ssh_sync] {name}: {:.1}s", started.elapsed().as_secs_f64());
    result
}

#[test]
fn ssh_and_rsync_against_one_booted_guest() {
    let image = step("bake (or store hit)", baked_image);
    let scratch = tempfile::tempdir().unwrap();
    let guest = Guest::boot(&image, scratch.path());

    let session = step(
        "cold boot to SSH ready (wait_ready)",
        || match ssh::wait_ready(
            &guest.target,
            Instant::now() + BOOT_TIMEOUT,
            &Watch::signals(),
        ) {
            Ok(session) => session,
            Err(e) => panic!(
                "{:?}\nconsole:\n{}",
                miette::Report::new(e),
                guest.console_tail()
            ),
        },
    );
    step("exit codes and signals", || {
        exit_codes_and_signals_come_back(&session)
    });
    step("streaming", || output_is_streamed_and_kept_apart(&session));
    step("deadline and stop", || {
        deadline_and_stop_end_the_command(&session)
    });
    // rsync through vmrun's relay over this session, as a run copies (in a directory whose
    // name needs quoting in rsync's `-e`).
    let ssh_dir = scratch.path().join("run 'a' %h");
    ClientFiles::write(&ssh_dir, &guest.target).unwrap();
    let relay = ssh::Relay::listen(&ssh_dir).unwrap();
    let shell = RemoteShell {
        argv: relay.remote_shell(Path::new(common::VMRUN)),
    };
    std::thread::scope(|scope| {
        let _serving = relay.serve_in(scope, &session);
        step("push", || {
            push_copies_the_project_as_configured(&session, &shell)
        });
        step("pull", || {
            pull_brings_artifacts_back(&session, &shell, scratch.path())
        });
        step("guest without rsync", || {
            a_guest_without_rsync_is_named(&session, &shell)
        });
    });
    step("wrong keys", || {
        wrong_keys_fail_at_once(&guest.target, &image, scratch.path())
    });
}

fn exit_codes_and_signals_come_back(session: &Session) {
    for code in [0, 1, 7] {
        assert_eq!(run(session, &format!("exit {code}")).0, Ended::Exited(code));
    }
    assert_eq!(
        run(session, "kill -KILL $$").0,
        Ended::Signalled("KILL".into())
    );
    assert_eq!(
        run(session, "kill -TERM $$").0,
        Ended::Signalled("TERM".into())
    );
    // An argv runs as is, in the directory, with the environment.
    let env = BTreeMap::from([("GREETING".to_owned(), "it's \"here\" $HOME".to_owned())]);
    let mut out = Recorder::default();
    let argv = GuestCommand::Argv(vec![
        "sh".into(),
        "-c".into(),
        "pwd; printf '%s\\n' \"$GREETING\" \"$1\"".into(),
        "sh".into(),
        "a 'b' c".into(),
    ]);
    let outcome = session
        .exec(
            &ssh::remote_command_line("/tmp", &env, &argv),
            &mut out,
            &mut std::io::sink(),
            None,
            &Watch::signals(),
            &|| true,
        )
        .unwrap();
    assert_eq!(outcome, Ended::Exited(0));
    assert_eq!(out.text(), "/tmp\nit's \"here\" $HOME\na 'b' c\n");
}

fn output_is_streamed_and_kept_apart(session: &Session) {
    let (outcome, out, err) = run(
        session,
        "echo out1; echo err1 >&2; echo out2; echo err2 >&2; exit 3",
    );
    assert_eq!(
        (outcome, out.as_str(), err.as_str()),
        (Ended::Exited(3), "out1\nout2\n", "err1\nerr2\n")
    );

    // Much output on both at once: all of it, in order, each on its own stream.
    let (outcome, out, err) = run(session, "seq 1 200000; seq 1 100000 >&2");
    assert_eq!(outcome, Ended::Exited(0));
    let seq = |n: u32| (1..=n).map(|i| format!("{i}\n")).collect::<String>();
    assert!(
        out == seq(200000),
        "stdout: {} bytes, not the expected {}",
        out.len(),
        seq(200000).len()
    );
    assert!(
        err == seq(100000),
        "stderr: {} bytes, not the expected {}",
        err.len(),
        seq(100000).len()
    );

    let (mut out, mut err) = (Recorder::default(), Recorder::default());
    let started = Instant::now();
    let command = ssh::remote_command_line(
        ".",
        &BTreeMap::new(),
        &GuestCommand::Shell("echo first; echo early >&2; sleep 2; echo second".into()),
    );
    let outcome = session
        .exec(
            &command,
            &mut out,
            &mut err,
            None,
            &Watch::signals(),
            &|| true,
        )
        .unwrap();
    let ended = Instant::now();
    assert_eq!(outcome, Ended::Exited(0));
    assert_eq!(
        (out.text().as_str(), err.text().as_str()),
        ("first\nsecond\n", "early\n")
    );
    let first_out = out.pieces[0].0;
    let first_err = err.pieces[0].0;
    eprintln!(
        "streaming: first stdout after {:.2}s, first stderr after {:.2}s, end after {:.2}s",
        (first_out - started).as_secs_f64(),
        (first_err - started).as_secs_f64(),
        (ended - started).as_secs_f64()
    );
    assert!(
        ended - first_out >= Duration::from_millis(1500),
        "stdout was not passed on as it came"
    );
    assert!(
        ended - first_err >= Duration::from_millis(1500),
        "stderr was not passed on as it came"
    );
}

fn deadline_and_stop_end_the_command(session: &Session) {
    let pid_file = "/tmp/vmrun-deadline.pid";
    let command = ssh::remote_command_line(
        ".",
        &BTreeMap::new(),
        &GuestCommand::Shell(format!("echo $$ > {pid_file}; sleep 300")),
    );
    let started = Instant::now();
    let outcome = session
        .exec(
            &command,
            &mut std::io::sink(),
            &mut std::io::sink(),
            Some(started + Duration::from_secs(3)),
            &Watch::signals(),
            &|| true,
        )
        .unwrap();
    assert_eq!(outcome, Ended::TimedOut);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "the deadline was noticed late: {took:?}"
    );
    // The command was killed, not just left behind.
    let give_up = Instant::now() + Duration::from_secs(10);
    while run(session, &format!("kill -0 $(cat {pid_file}) 2>/dev/null")).0 != Ended::Exited(1) {
        assert!(
            Instant::now() < give_up,
            "the timed-out command still runs in the guest"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // What ends the wait: a process standing in for the guest's QEMU, which exits after a
    // second (the real one is not killed: the session is used again below).
    let dir = tempfile::tempdir().unwrap();
    let stand_in = QemuProcess::spawn(
        Path::new("/bin/sh"),
        &["-c".into(), "sleep 1".into()],
        &dir.path().join("log"),
        Console::to_log(&dir.path().join("serial.log")).unwrap(),
    )
    .unwrap();
    let asked = Instant::now();
    let command = ssh::remote_command_line(
        ".",
        &BTreeMap::new(),
        &GuestCommand::Shell("sleep 300".into()),
    );
    let outcome = session
        .exec(
            &command,
            &mut std::io::sink(),
            &mut std::io::sink(),
            None,
            &Watch::qemu(&stand_in),
            &|| true,
        )
        .unwrap_err();
    let ssh::Error::Stopped(Stop::QemuExited(exited)) = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(exited.status.code(), Some(0));
    assert!(
        asked.elapsed() < Duration::from_secs(4),
        "the stop was noticed late"
    );
    // The session is still usable afterwards.
    assert_eq!(run(session, "true").0, Ended::Exited(0));
}

fn push_copies_the_project_as_configured(session: &Session, shell: &RemoteShell) {
    let project = tempfile::tempdir().unwrap();
    write_files(
        project.path(),
        &[
            ".git/HEAD",
            "file with spaces.txt",
            "it's.txt",
            "src/main.rs",
            "debug.log",
            "keep.log",
            "build/out.o",
            "target/x",
        ],
    );
    std::fs::write(project.path().join(".gitignore"), "*.log\nbuild/\n").unwrap();
    let sync = SyncConfig {
        include: vec!["keep.log".into()],
        exclude: vec!["target/".into()],
    };
    vmrun::sync::push(shell, project.path(), PROJECT_DIR, &sync, &bounds()).unwrap();
    let (outcome, listing, err) = run_in(
        session,
        PROJECT_DIR,
        &BTreeMap::new(),
        "find . -type f | sort",
    );
    assert_eq!(outcome, Ended::Exited(0), "{err}");
    assert_eq!(
        listing,
        "./.gitignore\n./file with spaces.txt\n./it's.txt\n./keep.log\n./src/main.rs\n"
    );
    let (_, content, _) = run_in(
        session,
        PROJECT_DIR,
        &BTreeMap::new(),
        "cat 'file with spaces.txt'; stat -c %U src/main.rs",
    );
    assert_eq!(content, "content of file with spaces.txt\nvmrun\n");
}

fn pull_brings_artifacts_back(session: &Session, shell: &RemoteShell, scratch: &Path) {
    let (outcome, _, err) = run_in(
        session,
        PROJECT_DIR,
        &BTreeMap::new(),
        "mkdir -p out/deep cov && echo j > junit.xml && echo d > out/deep/junit.xml && \
         echo r > out/report.txt && echo c > cov/index.html",
    );
    assert_eq!(outcome, Ended::Exited(0), "{err}");
    let local = scratch.join("artifacts");
    let globs = vec!["**/junit.xml".to_owned(), "cov".to_owned()];
    let destination = Destination::new(&local, &[scratch]);
    let pulled = vmrun::sync::pull(
        shell,
        PROJECT_DIR,
        &globs,
        &destination,
        ByteSize::from_bytes(1 << 20),
        &bounds(),
    )
    .unwrap();
    let expected: Vec<PathBuf> = ["cov/index.html", "junit.xml", "out/deep/junit.xml"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(pulled.files, expected);
    assert_eq!(pulled.bytes, 6);
    assert_eq!(
        std::fs::read_to_string(local.join("out/deep/junit.xml")).unwrap(),
        "d\n"
    );
    assert!(!local.join("out/report.txt").exists());
}

fn wrong_keys_fail_at_once(target: &Target, image: &BakedImage, scratch: &Path) {
    // Another valid ed25519 key pinned in place of the guest's: refused before logging in.
    let wrong = Target {
        host_key: public_key_of(&image.client_key()),
        ..target.clone()
    };
    let started = Instant::now();
    let err = ssh::wait_ready(
        &wrong,
        started + Duration::from_secs(120),
        &Watch::signals(),
    )
    .err()
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a wrong host key was retried: {:?}",
        started.elapsed()
    );
    let pinned_fp = ssh::HostKey::parse_line(&wrong.host_key)
        .unwrap()
        .fingerprint();
    let guest_fp = fingerprint(&image.host_key());
    match &err {
        ssh::Error::HostKeyMismatch {
            expected, found, ..
        } => assert_eq!((expected, found), (&pinned_fp, &guest_fp)),
        other => panic!("expected a host key mismatch, got {other:?}"),
    }
    assert_eq!(err.exit_code(), vmrun::exit_code::VM_FAILED);
    let message = err.to_string();
    assert!(
        message.contains(&pinned_fp) && message.contains(&guest_fp),
        "{message}"
    );

    // The right host, a key the guest does not know: refused, not retried.
    let stranger = Target {
        client_key: new_key(scratch, "stranger"),
        ..target.clone()
    };
    let started = Instant::now();
    let err = ssh::wait_ready(
        &stranger,
        started + Duration::from_secs(120),
        &Watch::signals(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, ssh::Error::Auth { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "a refused login was retried"
    );
}

fn a_guest_without_rsync_is_named(session: &Session, shell: &RemoteShell) {
    let project = tempfile::tempdir().unwrap();
    write_files(project.path(), &["a"]);
    assert_eq!(
        run(session, "sudo mv /usr/bin/rsync /usr/bin/rsync.off").0,
        Ended::Exited(0)
    );
    let result = vmrun::sync::push(
        shell,
        project.path(),
        "other",
        &SyncConfig::default(),
        &bounds(),
    );
    assert_eq!(
        run(session, "sudo mv /usr/bin/rsync.off /usr/bin/rsync").0,
        Ended::Exited(0)
    );
    let err = result.unwrap_err();
    assert!(matches!(err, vmrun::sync::Error::NoRsyncInGuest), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the guest has no rsync: add it to bake.packages"
    );
    // And with rsync back, the same push works.
    vmrun::sync::push(
        shell,
        project.path(),
        "other",
        &SyncConfig::default(),
        &bounds(),
    )
    .unwrap();
}
