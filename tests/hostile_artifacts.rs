//! A guest that hands back hostile artifacts, through the binary against real VMs, run as
//! root as CI runs vmrun: device nodes, a setuid root shell, a FIFO, a socket, symlinks out
//! of the project, a 0777 directory, a 1 TiB sparse report; a symlinked destination; and a
//! guest whose rsync never answers while vmrun gets SIGTERM. Three runs of the shared
//! baked image, one of them without booting at all.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn vmrun_test(project: &Path) -> Command {
    let mut cmd = Command::new(common::VMRUN);
    cmd.arg("test").arg("--image").arg(common::baked_image());
    cmd.current_dir(project)
        .env("VMRUN_HOME", common::test_home());
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An error report's words in one line, without the wrapping and the frame miette draws.
fn unwrapped(report: &str) -> String {
    report
        .split_whitespace()
        .filter(|w| *w != "│")
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every entry under `dir`, links not followed, with its file type and mode.
fn entries_under(dir: &Path) -> Vec<(PathBuf, fs::FileType, u32)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.extend(entries_under(&path));
        }
        out.push((path, meta.file_type(), meta.permissions().mode() & 0o7777));
    }
    out
}

fn umask() -> u32 {
    let out = Command::new("sh").args(["-c", "umask"]).output().unwrap();
    u32::from_str_radix(text(&out.stdout).trim(), 8).unwrap()
}

/// The guest (with sudo) fills `hostile/` with everything a regular file is not, and
/// `zz-reports/` with a report, a 1 TiB sparse one, and one after it; the command exits 7.
#[test]
fn hostile_artifacts_come_back_as_plain_files_within_the_cap() {
    let scratch = tempfile::tempdir().unwrap();
    let host_secret = scratch.path().join("host-secret");
    fs::write(&host_secret, "host secret\n").unwrap();
    let project = scratch.path().join("project");
    fs::create_dir(&project).unwrap();
    let script = format!(
        r#"set -e
mkdir -p hostile/open hostile/sgid-dir zz-reports
echo report > hostile/a-report.txt
echo private > hostile/private.txt && chmod 600 hostile/private.txt
echo inner > hostile/open/inner.txt && chmod 777 hostile/open
echo inner > hostile/sgid-dir/inner.txt && sudo chmod 2755 hostile/sgid-dir
echo red > "hostile/$(printf '\033[31mred.txt')"
sudo mknod hostile/sda b 8 0
sudo mknod hostile/null c 1 3 && sudo chmod 666 hostile/null
sudo cp /bin/sh hostile/suid-sh && sudo chmod 4755 hostile/suid-sh
mkfifo hostile/fifo
python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind("hostile/socket")'
ln -s {secret} hostile/to-host
ln -s .. hostile/up
ln -s /etc/shadow "hostile/$(printf 'bad\nname')"
echo '<a/>' > zz-reports/a.xml
truncate -s 1T zz-reports/zz-big.xml
echo '<late/>' > zz-reports/zz-late.xml
exit 7
"#,
        secret = host_secret.display()
    );
    let yaml = format!(
        "test:\n  command: [sh, -c, {}]\n  artifacts: [hostile, zz-reports]\n",
        serde_json::to_string(&script).unwrap()
    );
    fs::write(project.join("vmrun.yaml"), yaml).unwrap();

    let out = vmrun_test(&project).output().unwrap();
    let err = text(&out.stderr);
    eprintln!("{err}");
    assert_eq!(
        out.status.code(),
        Some(7),
        "the command's own exit code: {err}"
    );

    // The skipped ones, named on one line, names made visible.
    let skipped = err
        .lines()
        .find(|l| l.contains("skipped 7 artifacts that are not regular files:"))
        .unwrap_or_else(|| panic!("{err}"));
    for item in [
        "hostile/to-host (symlink)",
        "hostile/up (symlink)",
        r"hostile/bad\x0aname (symlink)",
        "hostile/sda (block device)",
        "hostile/null (char device)",
        "hostile/fifo (FIFO)",
        "hostile/socket (socket)",
    ] {
        assert!(skipped.contains(item), "{item} not in: {skipped}");
    }
    // The cap: the 1 TiB file refused with a clear error, what followed it left.
    let report = unwrapped(&err);
    assert!(
        report.contains(
            "the artifacts reach 1.0 TiB with zz-reports/zz-big.xml, \
             past test.artifacts-max-size (1GiB)"
        ),
        "{err}"
    );
    assert!(
        report.contains("artifacts-max-size: 4G"),
        "says how to raise it: {err}"
    );
    assert!(
        err.contains(
            "failed (exit 7); artifacts: \
             the artifacts reach 1.0 TiB with zz-reports/zz-big.xml, past"
        ),
        "{err}"
    );

    let artifacts = project.join("vmrun-artifacts");
    let mask = umask();
    let mut files: Vec<(String, u32)> = Vec::new();
    for (path, file_type, mode) in entries_under(&artifacts) {
        let name = path
            .strip_prefix(&artifacts)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            file_type.is_file() || file_type.is_dir(),
            "{name} came back as {file_type:?}"
        );
        assert!(
            !file_type.is_symlink() && !file_type.is_block_device() && !file_type.is_char_device()
        );
        assert!(!file_type.is_fifo() && !file_type.is_socket());
        assert_eq!(mode & 0o7000, 0, "{name} has mode {mode:o}");
        if file_type.is_dir() {
            assert_eq!(mode, 0o755 & !mask, "{name}");
        } else {
            files.push((name, mode));
        }
    }
    files.sort();
    let (plain, exec) = (0o644 & !mask, 0o755 & !mask);
    assert_eq!(
        files,
        [
            ("hostile/\u{1b}[31mred.txt".to_owned(), plain),
            ("hostile/a-report.txt".to_owned(), plain),
            ("hostile/open/inner.txt".to_owned(), plain),
            ("hostile/private.txt".to_owned(), plain),
            ("hostile/sgid-dir/inner.txt".to_owned(), plain),
            ("hostile/suid-sh".to_owned(), exec),
            ("zz-reports/a.xml".to_owned(), plain),
        ]
    );
    assert_eq!(
        fs::read_to_string(artifacts.join("zz-reports/a.xml")).unwrap(),
        "<a/>\n"
    );
    assert_eq!(fs::read_to_string(&host_secret).unwrap(), "host secret\n");
    // The summary counts the bytes that came back.
    assert!(
        err.lines().any(|l| l.contains(" KiB  failed (exit 7)")),
        "{err}"
    );
}

/// `vmrun-artifacts -> a host directory`, as a pull request could commit it: refused before
/// any VM starts, the error naming the link; the host directory stays empty.
#[test]
fn a_symlinked_destination_is_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let host_dir = scratch.path().join("host-dir");
    fs::create_dir(&host_dir).unwrap();
    let project = scratch.path().join("project");
    fs::create_dir(&project).unwrap();
    symlink(&host_dir, project.join("vmrun-artifacts")).unwrap();
    fs::write(
        project.join("vmrun.yaml"),
        "test:\n  command: echo hi > x.txt\n  artifacts: [x.txt]\n",
    )
    .unwrap();
    let out = vmrun_test(&project).output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(vmrun::exit_code::BAD_INPUT as i32),
        "{err}"
    );
    let link = project.join("vmrun-artifacts");
    assert!(
        unwrapped(&err).contains(&format!(
            "the artifacts destination {} is a symlink",
            link.display()
        )),
        "{err}"
    );
    assert!(!err.contains(": boot"), "a VM was started: {err}");
    assert_eq!(fs::read_dir(&host_dir).unwrap().count(), 0);
}

/// The guest's rsync replaced by one that never answers: vmrun, stuck in the artifacts pull,
/// gets SIGTERM, exits 143 within a few seconds, and leaves nothing it started running.
#[test]
fn sigterm_ends_a_stalled_pull() {
    let project = tempfile::tempdir().unwrap();
    let script = "sudo mv /usr/bin/rsync /usr/bin/rsync.real && \
                  printf '#!/bin/sh\\nexec sleep 3600\\n' | sudo tee /usr/bin/rsync >/dev/null && \
                  sudo chmod 755 /usr/bin/rsync && echo rsync-stalls";
    let yaml = format!(
        "test:\n  command: [sh, -c, {}]\n  artifacts: [x]\n",
        serde_json::to_string(script).unwrap()
    );
    fs::write(project.path().join("vmrun.yaml"), yaml).unwrap();
    let mut child = vmrun_test(project.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let vmrun = child.id() as i32;
    let stdout = child.stdout.take().unwrap();
    let (command_done, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        if lines.any(|l| l.is_ok_and(|l| l == "rsync-stalls")) {
            let _ = command_done.send(());
        }
    });

    // The pull is under way when, after the command, vmrun has an rsync child.
    let deadline = Instant::now() + Duration::from_secs(300);
    done.recv_timeout(Duration::from_secs(300))
        .expect("the command ran");
    let rsync = loop {
        if let Some(pid) = children(vmrun)
            .into_iter()
            .find(|&pid| command_name(pid) == "rsync")
        {
            break pid;
        }
        assert!(Instant::now() < deadline, "no rsync started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "vmrun ended before the pull"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // Stalled, not just slow: still there a while later.
    std::thread::sleep(Duration::from_secs(2));
    assert!(running(rsync), "rsync ended by itself");
    let started_by_vmrun = descendants(vmrun);
    assert!(
        started_by_vmrun
            .iter()
            .any(|&pid| command_name(pid).starts_with("qemu-system")),
        "{started_by_vmrun:?}"
    );
    // rsync's remote shell is vmrun's relay (rsync's child), over vmrun's own session: no ssh.
    let names_of = |pids: &[i32]| {
        pids.iter()
            .map(|&pid| command_name(pid))
            .collect::<Vec<_>>()
    };
    assert!(
        names_of(&children(rsync)).contains(&"vmrun".to_owned()),
        "{:?}",
        names_of(&started_by_vmrun)
    );
    assert!(
        !names_of(&started_by_vmrun).contains(&"ssh".to_owned()),
        "{:?}",
        names_of(&started_by_vmrun)
    );

    let names: Vec<String> = started_by_vmrun
        .iter()
        .map(|&pid| format!("{pid} {}", command_name(pid)))
        .collect();
    let signalled = Instant::now();
    // SAFETY: kill(2) of the child this test spawned.
    unsafe { libc::kill(vmrun, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    let err = text(&out.stderr);
    eprintln!("vmrun ended {took:?} after SIGTERM; it had started: {names:?}");
    assert_eq!(out.status.code(), Some(143), "{err}");
    assert!(took < Duration::from_secs(5), "vmrun took {took:?} to end");
    std::thread::sleep(Duration::from_millis(200));
    let left: Vec<(i32, String)> = started_by_vmrun
        .iter()
        .filter(|&&pid| running(pid))
        .map(|&pid| (pid, command_name(pid)))
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
}

/// The direct children of `pid`, from /proc.
fn children(pid: i32) -> Vec<i32> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default();
    tasks
        .iter()
        .flat_map(|task| {
            fs::read_to_string(task.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter_map(|pid| pid.parse().ok())
        .collect()
}

fn descendants(pid: i32) -> Vec<i32> {
    let mut all = Vec::new();
    for child in children(pid) {
        all.push(child);
        all.extend(descendants(child));
    }
    all
}

fn command_name(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Alive and not a zombie waiting to be reaped.
fn running(pid: i32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}
