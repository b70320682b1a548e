//! Every wait ends when what it waits on cannot come any more, through the binary against
//! real VMs: a QEMU killed during a cold boot, during a resume and during the command is
//! reported at once with its exit; SIGTERM during a bake (`vmrun bake`, and the bake
//! `vmrun test` starts for a source it has not baked yet) ends vmrun with 143, takes the bake's
//! QEMU along and leaves no temporary directory; and what a SIGKILLed bake leaves is reaped
//! by the next call.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Live;
use vmrun::paths::Home;

/// How long vmrun may take to notice a dead QEMU and tear down.
const NOTICED: Duration = Duration::from_secs(2);
/// How long vmrun may take to end after SIGTERM.
const STOPPED: Duration = Duration::from_secs(5);

fn home() -> Home {
    Home::under(&common::test_home())
}

/// One test at a time: each times how fast vmrun reacts, which a machine busy with another
/// test's emulated guests would blur.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `vmrun ARGS` in `cwd` with the shared test home, started in the background.
fn start(cwd: &Path, args: &[&str]) -> Live {
    let mut cmd = Command::new(common::VMRUN);
    cmd.args(args)
        .current_dir(cwd)
        .env("VMRUN_HOME", common::test_home());
    Live::start(cmd)
}

/// The pid of the QEMU `live` started (its child running qemu-system), once there.
fn qemu_pid(live: &Live, timeout: Duration) -> i32 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(pid) = children(live.child.id() as i32)
            .into_iter()
            .find(|&pid| cmdline(pid).contains("qemu-system"))
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "vmrun started no QEMU");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cmdline(pid: i32) -> String {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&bytes).replace('\0', " ")
}

/// The live children of `parent`.
fn children(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...: comm may hold spaces, so split after its `)`.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
            fields.first() != Some(&"Z") && fields.get(1) == Some(&parent.to_string().as_str())
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

/// SIGKILL to a QEMU the test's own vmrun started (found by [`Live::qemu_pid`]).
fn kill_qemu(pid: i32) -> Instant {
    // SAFETY: kill(2) of a process of the vmrun this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    Instant::now()
}

fn assert_noticed_the_kill(live: Live, killed: Instant) {
    let (code, err, _) = live.finish();
    let took = killed.elapsed();
    assert_eq!(code, Some(243), "{err}");
    assert!(err.contains("QEMU exited (signal 9)"), "{err}");
    assert!(err.contains("QEMU's log"), "no end of QEMU's log: {err}");
    assert!(
        took < NOTICED,
        "vmrun took {took:?} after QEMU died to say so"
    );
}

fn vmrun_test(project: &Path, args: &[&str]) -> Live {
    let mut all = vec!["test", "--image", common::baked_image()];
    all.extend(args);
    start(project, &all)
}

#[test]
fn qemu_killed_during_a_cold_boot_is_reported_at_once() {
    let _one = one_at_a_time();
    let project = tempfile::tempdir().unwrap();
    let mut live = vmrun_test(project.path(), &["--cold", "--", "true"]);
    live.wait_for(": boot", Duration::from_secs(120));
    let pid = qemu_pid(&live, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(4));
    let killed = kill_qemu(pid);
    assert_noticed_the_kill(live, killed);
}

#[test]
fn qemu_killed_during_a_resume_is_reported_at_once() {
    let _one = one_at_a_time();
    let project = tempfile::tempdir().unwrap();
    let mut live = vmrun_test(project.path(), &["--", "true"]);
    live.wait_for(": boot", Duration::from_secs(120));
    let killed = kill_qemu(qemu_pid(&live, Duration::from_secs(30)));
    assert_noticed_the_kill(live, killed);
}

#[test]
fn qemu_killed_during_the_command_is_reported_at_once() {
    let _one = one_at_a_time();
    let project = tempfile::tempdir().unwrap();
    let mut live = vmrun_test(
        project.path(),
        &["--", "sh", "-c", "echo command-started >&2; sleep 600"],
    );
    live.wait_for("command-started", Duration::from_secs(300));
    let killed = kill_qemu(qemu_pid(&live, Duration::from_secs(5)));
    assert_noticed_the_kill(live, killed);
}

/// A project whose vmrun.yaml bakes the test guest with a `bake:` section no other test
/// uses, so the bake is never a store hit.
fn project_with_a_new_bake(image_line: bool) -> tempfile::TempDir {
    let project = tempfile::tempdir().unwrap();
    let image = if image_line {
        "image: debian:bookworm\n"
    } else {
        ""
    };
    std::fs::write(
        project.path().join("vmrun.yaml"),
        format!(
            "{image}bake:\n  run:\n    - echo {}\n",
            common::unique_token()
        ),
    )
    .unwrap();
    project
}

/// The temporary directories vmrun makes for bakes, warm captures and runs that the QEMU
/// `qemu` uses (its disk, its sockets): this test's own, not another test process's.
fn temporary_dirs_of(qemu: i32) -> Vec<PathBuf> {
    let uses = cmdline(qemu);
    let home = home();
    let places = [
        (home.store(), ".staging-"),
        (home.sources().join("debian"), ".debian-build-"),
        (home.runs(), ".warm-"),
    ];
    places
        .iter()
        .flat_map(|(dir, prefix)| {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
                .map(|e| e.path())
                .filter(|dir| uses.contains(&*dir.to_string_lossy()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// SIGTERM once the bake's QEMU runs: 143 within [`STOPPED`], the QEMU gone, and (after the
/// next call) no temporary directory of this bake left.
fn sigterm_during_a_bake(live: Live) {
    let qemu = qemu_pid(&live, Duration::from_secs(300));
    std::thread::sleep(Duration::from_secs(3));
    let before = temporary_dirs_of(qemu);
    assert!(
        !before.is_empty(),
        "the bake's staging directory is not where this test looks: {}",
        cmdline(qemu)
    );
    live.signal(libc::SIGTERM);
    let (code, err, took) = live.finish();
    assert_eq!(code, Some(143), "{err}");
    assert!(took < STOPPED, "vmrun took {took:?} to stop");
    assert!(!alive(qemu), "the bake's QEMU ({qemu}) outlived vmrun");
    let out = Command::new(common::VMRUN)
        .arg("images")
        .env("VMRUN_HOME", common::test_home())
        .output()
        .unwrap();
    assert!(out.status.success());
    let left: Vec<&PathBuf> = before.iter().filter(|d| d.exists()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn sigterm_during_vmrun_bake_stops_it_and_leaves_nothing() {
    let _one = one_at_a_time();
    common::baked_image(); // the Debian source image exists: the bake boots at once
    let project = project_with_a_new_bake(false);
    let live = start(
        project.path(),
        &[
            "bake",
            "--image",
            "debian:bookworm",
            "--name",
            "stopped-bake",
        ],
    );
    sigterm_during_a_bake(live);
}

#[test]
fn sigterm_during_the_bake_vmrun_test_starts_stops_it_and_leaves_nothing() {
    let _one = one_at_a_time();
    common::baked_image();
    let project = project_with_a_new_bake(true);
    let live = start(project.path(), &["test", "--", "true"]);
    sigterm_during_a_bake(live);
}

#[test]
fn what_a_killed_bake_left_is_reaped_by_the_next_call() {
    let _one = one_at_a_time();
    common::baked_image();
    let project = project_with_a_new_bake(false);
    let live = start(
        project.path(),
        &[
            "bake",
            "--image",
            "debian:bookworm",
            "--name",
            "killed-bake",
        ],
    );
    let qemu = qemu_pid(&live, Duration::from_secs(300));
    std::thread::sleep(Duration::from_secs(3));
    let staging = temporary_dirs_of(qemu);
    let mut child = live.child;
    child.kill().unwrap(); // SIGKILL: no handler runs, nothing is cleaned up
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(qemu) {
        assert!(Instant::now() < deadline, "QEMU outlived a SIGKILLed vmrun");
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<&PathBuf> = staging.iter().filter(|d| d.exists()).collect();
    assert!(!left.is_empty(), "nothing was left to reap: {staging:?}");
    let out = Command::new(common::VMRUN)
        .arg("images")
        .env("VMRUN_HOME", common::test_home())
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let still: Vec<&&PathBuf> = left.iter().filter(|d| d.exists()).collect();
    assert!(still.is_empty(), "not reaped: {still:?}\n{err}");
    assert!(
        err.contains("left by a bake whose vmrun was killed"),
        "{err}"
    );
}
