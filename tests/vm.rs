//! `vmrun vm ...` through the binary, against a real systemd user manager (found through
//! XDG_RUNTIME_DIR, as `.ci/run` starts it) and real QEMU: one VM's whole life, then the
//! error cases, which boot nothing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const VMRUN: &str = env!("CARGO_BIN_EXE_vmrun");

/// Fails (not skips) when no user manager answers: the VM tests cannot mean anything then.
fn require_user_manager() {
    let out = Command::new("systemctl")
        .args(["--user", "is-system-running"])
        .output();
    let state = out
        .as_ref()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    if !matches!(state.as_str(), "running" | "degraded") {
        let stderr = out
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_else(|e| e.to_string());
        panic!(
            "no systemd user manager answers (`systemctl --user is-system-running`: \
             `{state}` {stderr}); \
             XDG_RUNTIME_DIR={:?}. Start one as .ci/run does: mkdir -p /run/systemd/system; \
             export XDG_RUNTIME_DIR=/tmp/xdg-$UID; mkdir -m700 -p $XDG_RUNTIME_DIR; \
             /lib/systemd/systemd --user &",
            std::env::var_os("XDG_RUNTIME_DIR")
        );
    }
}

/// `vmrun ARGS` with `home` as VMRUN_HOME, in an empty directory.
fn vmrun_in(home: &Path, args: &[&str]) -> Output {
    static CWD: OnceLock<tempfile::TempDir> = OnceLock::new();
    let cwd = CWD.get_or_init(|| tempfile::tempdir().unwrap());
    Command::new(VMRUN)
        .args(args)
        .current_dir(cwd.path())
        .env("VMRUN_HOME", home)
        .output()
        .unwrap()
}

fn vmrun(args: &[&str]) -> Output {
    vmrun_in(&common::test_home(), args)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    out
}

#[track_caller]
fn fails_with(out: &Output, code: u8, says: &str) {
    assert_eq!(
        out.status.code(),
        Some(code as i32),
        "stderr: {}",
        stderr(out)
    );
    assert!(
        stderr(out).contains(says),
        "expected `{says}` in: {}",
        stderr(out)
    );
}

/// The image the VMs are made from, baked once through the binary in the shared test home.
fn image() -> &'static str {
    static IMAGE: OnceLock<&str> = OnceLock::new();
    IMAGE.get_or_init(|| {
        common::guest_image();
        ok(vmrun(&[
            "bake",
            "--image",
            "debian:bookworm",
            "--name",
            "vm-test",
        ]));
        "vm-test"
    })
}

fn unit_dir() -> PathBuf {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    config
        .unwrap_or_else(|| Path::new(&std::env::var_os("HOME").unwrap()).join(".config"))
        .join("systemd/user")
}

/// A VM name no other test process uses (unit names are per user, not per VMRUN_HOME).
fn vm_name(prefix: &str) -> String {
    let token = common::unique_token();
    format!("{prefix}-{}", &token[token.len().saturating_sub(12)..])
}

/// Deletes the VM when a test ends early, so no unit is left running.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = vmrun(&["vm", "delete", &self.0]);
    }
}

fn list() -> Vec<Value> {
    let out = ok(vmrun(&["vm", "list", "--json"]));
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn entry(name: &str) -> Value {
    list()
        .into_iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed"))
}

/// Polls `check` every second until it gives a value; panics naming `what` after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            eprintln!(
                "[vm test] {what}: after {:.1}s",
                started.elapsed().as_secs_f64()
            );
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {}s waiting for {what}",
            timeout.as_secs()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The guest's addresses from the guest agent, once it has booted that far.
fn wait_for_addresses(name: &str) -> Vec<String> {
    wait_for("guest agent addresses", Duration::from_secs(300), || {
        let vm = entry(name);
        let addresses: Vec<String> = vm["addresses"]
            .as_array()?
            .iter()
            .filter_map(|a| a.as_str().map(String::from))
            .collect();
        addresses
            .iter()
            .any(|a| a == "10.0.2.15")
            .then_some(addresses)
    })
}

/// `vmrun vm ssh NAME -- ARGS`, once: a VM that is still booting is waited for by vmrun.
#[track_caller]
fn ssh(name: &str, args: &[&str]) -> String {
    let mut command = vec!["vm", "ssh", name, "--"];
    command.extend(args);
    stdout(&ok(vmrun(&command)))
}

/// `text` with its words joined by single spaces: miette wraps long messages in a box.
fn words(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().filter(|w| *w != "│").collect();
    words.join(" ")
}

fn state(name: &str) -> Value {
    entry(name)["state"].clone()
}

/// GET `path` from 127.0.0.1:`port`; `None` until something answers with HTTP.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.starts_with("HTTP/").then_some(response)
}

/// A python web server in the guest on port 8000, serving /etc (so /hostname is the guest's).
fn serve_http_in_guest(name: &str) {
    ssh(
        name,
        &[
            "sudo",
            "systemd-run",
            "--unit",
            "vmrun-test-web",
            "--working-directory",
            "/etc",
            "python3",
            "-m",
            "http.server",
            "8000",
        ],
    );
}

#[test]
fn a_vm_lives_from_create_to_delete() {
    require_user_manager();
    let image = image();
    let name = vm_name("vmtest");
    let started = Instant::now();
    let phase = |what: &str| {
        eprintln!(
            "[vm test +{:>6.1}s] {what}",
            started.elapsed().as_secs_f64()
        )
    };

    // Two creates of one name at once: exactly one wins.
    let create = || {
        Command::new(VMRUN)
            .args([
                "vm", "create", &name, "--image", image, "--cpus", "2", "--memory", "1G",
            ])
            .env("VMRUN_HOME", common::test_home())
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (create(), create());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let _cleanup = Cleanup(name.clone());
    let (won, lost) = if a.status.success() { (a, b) } else { (b, a) };
    let won = ok(won);
    fails_with(&lost, vmrun::exit_code::BAD_INPUT, "already exists");
    phase("created");
    // `vm create` returns when the VM can be used: no sleep, no retry.
    ok(vmrun(&["vm", "ssh", &name, "--", "true"]));
    assert!(
        stderr(&won).contains(": running, SSH on"),
        "{}",
        stderr(&won)
    );

    let unit_file = unit_dir().join(format!("vmrun-{name}.service"));
    let layout = vmrun::vm::VmLayout::new(
        &vmrun::paths::Home::under(&common::test_home()),
        &unit_dir(),
        &vmrun::vm::VmName::new(&name).unwrap(),
    );
    assert!(unit_file.is_file());
    fails_with(
        &vmrun(&["vm", "create", &name, "--image", image]),
        vmrun::exit_code::BAD_INPUT,
        "already exists",
    );
    fails_with(
        &vmrun(&["images", "rm", image]),
        vmrun::exit_code::BAD_INPUT,
        &format!("is in use by VM `{name}`"),
    );
    let alias = images_are_held_by_key_while_used(&name);
    phase("images rm refused while a VM or a run uses the image");

    let vm = entry(&name);
    assert_eq!(vm["state"], "running", "{vm}");
    assert_eq!(vm["image"], image);
    assert_eq!(vm["cpus"], 2);
    assert_eq!(vm["memory"], "1GiB");
    assert!(vm["addresses"].is_array());

    let addresses = wait_for_addresses(&name);
    phase(&format!("addresses from the guest agent: {addresses:?}"));
    assert!(ssh(&name, &["uname", "-a"]).starts_with("Linux vmrun "));
    // Each word arrives as one argv element, whatever the remote shell would make of it.
    assert_eq!(
        ssh(&name, &["printf", "%s|", "a b", "it's", "$HOME", "*"]),
        "a b|it's|$HOME|*|"
    );
    let status = ok(vmrun(&["vm", "status", &name]));
    assert!(stdout(&status).contains("10.0.2.15"), "{}", stdout(&status));
    phase("ssh works");

    // A forward added at run time reaches a server in the guest, on 127.0.0.1 only.
    serve_http_in_guest(&name);
    let port = vmrun::qemu::port::free_loopback_port().unwrap();
    let spec = format!("{port}:8000");
    ok(vmrun(&["vm", "forward", &name, "add", &spec]));
    let page = wait_for(
        "the guest's web server through the forward",
        Duration::from_secs(120),
        || http_get(port, "/hostname"),
    );
    assert!(
        page.contains("200") && page.trim_end().ends_with("vmrun"),
        "{page}"
    );
    let elsewhere = TcpStream::connect(("127.0.0.2", port))
        .map(drop)
        .map_err(|e| e.kind());
    assert_eq!(
        elsewhere,
        Err(std::io::ErrorKind::ConnectionRefused),
        "the forward listens beyond 127.0.0.1"
    );
    fails_with(
        &vmrun(&["vm", "forward", &name, "add", &spec]),
        vmrun::exit_code::BAD_INPUT,
        "clashes with",
    );
    assert_eq!(entry(&name)["forwards"][0]["host"], port);
    phase("forward works");

    // Snapshots: save, change the disk, load: the change is gone.
    ssh(
        &name,
        &["sh", "-c", "echo before > /home/vmrun/marker && sync"],
    );
    ok(vmrun(&["vm", "snapshot", &name, "save", "s1"]));
    assert!(stdout(&ok(vmrun(&["vm", "snapshot", &name, "list"]))).starts_with("s1 "));
    ssh(
        &name,
        &["sh", "-c", "echo after > /home/vmrun/marker && sync"],
    );
    ok(vmrun(&["vm", "snapshot", &name, "load", "s1"]));
    assert_eq!(ssh(&name, &["cat", "/home/vmrun/marker"]), "before\n");
    fails_with(
        &vmrun(&["vm", "snapshot", &name, "load", "nope"]),
        vmrun::exit_code::BAD_INPUT,
        "no snapshot `nope`",
    );
    assert_eq!(
        ssh(&name, &["cat", "/home/vmrun/marker"]),
        "before\n",
        "a failed load leaves the guest running"
    );
    ok(vmrun(&["vm", "snapshot", &name, "delete", "s1"]));
    assert_eq!(stdout(&ok(vmrun(&["vm", "snapshot", &name, "list"]))), "");
    phase("snapshots work");

    let enable = ok(vmrun(&["vm", "enable", &name]));
    if !Path::new("/var/lib/systemd/linger").join(whoami()).exists() {
        assert!(
            stderr(&enable).contains("lingering is off"),
            "{}",
            stderr(&enable)
        );
    }
    assert_eq!(entry(&name)["enabled"], true);

    let stopped = Instant::now();
    let stop = ok(vmrun(&["vm", "stop", &name]));
    assert!(
        stderr(&stop).contains("the guest powered off"),
        "not a clean stop: {}",
        stderr(&stop)
    );
    phase(&format!(
        "stopped cleanly in {:.1}s",
        stopped.elapsed().as_secs_f64()
    ));
    assert_eq!(entry(&name)["state"], "stopped");
    assert!(
        !layout.qmp_socket().exists(),
        "QEMU removes its sockets when it exits"
    );
    assert!(stderr(&ok(vmrun(&["vm", "stop", &name]))).contains("already stopped"));
    assert!(
        stdout(&ok(vmrun(&["vm", "snapshot", &name, "list"]))).is_empty(),
        "snapshots of a stopped VM come from its disk"
    );
    fails_with(
        &vmrun(&["vm", "ssh", &name, "--", "true"]),
        vmrun::exit_code::BAD_INPUT,
        "is not running",
    );

    // --no-wait returns while the guest boots; `vm ssh` then waits for it.
    let start = ok(vmrun(&["vm", "start", &name, "--no-wait"]));
    assert!(stderr(&start).contains("booting"), "{}", stderr(&start));
    assert_eq!(state(&name), "booting");
    ssh(&name, &["true"]);
    assert_eq!(state(&name), "running");
    wait_for_addresses(&name);
    phase("started again");
    // This start booted (the first resumed the image's warm state, whose boot is past).
    let logs = ok(vmrun(&["vm", "logs", &name]));
    assert!(
        stdout(&logs).contains("Linux version"),
        "the serial console log: {}",
        stdout(&logs)
    );
    ok(vmrun(&["vm", "restart", &name]));
    assert_eq!(state(&name), "running");
    wait_for_addresses(&name);
    phase("restarted");
    // The forward is part of the VM now, not only of the QEMU it was added to.
    serve_http_in_guest(&name);
    wait_for(
        "the forward after a restart",
        Duration::from_secs(120),
        || http_get(port, "/hostname"),
    );
    ok(vmrun(&["vm", "forward", &name, "remove", &spec]));
    assert!(entry(&name)["forwards"].as_array().unwrap().is_empty());
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the removed forward still listens"
    );

    ok(vmrun(&["vm", "delete", &name]));
    phase("deleted");
    assert!(!unit_file.exists());
    assert!(
        !unit_dir()
            .join("default.target.wants")
            .join(format!("vmrun-{name}.service"))
            .exists()
    );
    assert!(!layout.state.exists(), "{} is left", layout.state.display());
    assert!(
        !layout.runtime.exists(),
        "{} is left",
        layout.runtime.display()
    );
    let show = systemctl(&["show", "-p", "LoadState", &format!("vmrun-{name}.service")]);
    assert_eq!(stdout(&show).trim(), "LoadState=not-found");
    assert!(!list().iter().any(|v| v["name"] == name.as_str()));
    fails_with(
        &vmrun(&["vm", "delete", &name]),
        vmrun::exit_code::BAD_INPUT,
        "no VM named",
    );
    ok(vmrun(&["images", "--json"]));
    // Nothing holds the image now: the alias goes (the entry stays: `image` names it).
    ok(vmrun(&["images", "rm", &alias]));
    ok(vmrun(&["images", "--json"]));
}

/// `images rm` counts what uses an image by its key, not by the name it was reached by: with
/// VM `vm` running on `image`, another name for the same entry (a second bake of the same
/// inputs) is refused too, and so it is while a `vmrun test` run uses it, naming the run;
/// once that run is killed with SIGKILL, it no longer holds anything. Returns the alias.
fn images_are_held_by_key_while_used(vm: &str) -> String {
    use std::io::BufRead;
    let alias = vm_name("alias");
    ok(vmrun(&[
        "bake",
        "--image",
        "debian:bookworm",
        "--name",
        &alias,
    ]));
    // The holders named, and those not: other tests' VMs and runs on the same image may be
    // named too, since they run at once.
    let in_use_by = |holders: &[&str], not: &[&str]| {
        let out = vmrun(&["images", "rm", &alias]);
        assert_eq!(
            out.status.code(),
            Some(vmrun::exit_code::BAD_INPUT as i32),
            "{}",
            stderr(&out)
        );
        let said = words(&stderr(&out));
        let expected = format!("image `{alias}` is in use by ");
        assert!(said.contains(&expected), "expected `{expected}` in: {said}");
        let named = said.split(" help:").next().unwrap_or_default();
        for holder in holders {
            assert!(named.contains(holder), "expected {holder} among: {said}");
        }
        for gone in not {
            assert!(!named.contains(gone), "{gone} still named: {said}");
        }
    };
    let vm_holds = format!("VM `{vm}`");
    in_use_by(&[&vm_holds], &[]);
    let project = tempfile::tempdir().unwrap();
    let mut run = Command::new(VMRUN)
        .args(["test", "--image", &alias, "--", "sleep", "300"])
        .current_dir(project.path())
        .env("VMRUN_HOME", common::test_home())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(run.stderr.take().unwrap()).lines();
    let id = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| common::run_id(&line))
        .expect("the run names itself on stderr");
    let run_holds = format!("run `{id}`");
    in_use_by(&[&vm_holds, &run_holds], &[]);
    // SIGKILL: the run cannot let go itself; its lock goes with the process.
    run.kill().unwrap();
    run.wait().unwrap();
    in_use_by(&[&vm_holds], &[&run_holds]);
    alias
}

fn systemctl(args: &[&str]) -> Output {
    Command::new("systemctl")
        .arg("--user")
        .args(args)
        .output()
        .unwrap()
}

/// Removes a unit file written by a test, and the manager's memory of it.
struct RemoveUnit(PathBuf);

impl Drop for RemoveUnit {
    fn drop(&mut self) {
        let unit = self.0.file_name().unwrap().to_str().unwrap().to_owned();
        let _ = systemctl(&["stop", &unit]);
        let _ = std::fs::remove_file(&self.0);
        let _ = systemctl(&["reset-failed", &unit]);
        let _ = systemctl(&["daemon-reload"]);
    }
}

fn whoami() -> String {
    String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned()
}

/// A forward whose port is taken cannot be bound: the create fails saying why, and leaves no
/// disk, record, sockets or unit behind.
fn seconds_since_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The guest's uptime in seconds.
fn uptime(name: &str) -> f64 {
    let text = ssh(name, &["cat", "/proc/uptime"]);
    text.split_whitespace().next().unwrap().parse().unwrap()
}

fn boot_id(name: &str) -> String {
    ssh(name, &["cat", "/proc/sys/kernel/random/boot_id"])
        .trim()
        .to_owned()
}

#[test]
fn a_vm_made_from_a_warm_state_resumes_it_then_boots_its_own_disk() {
    require_user_manager();
    let image = image();
    let (a, b) = (vm_name("warm-a"), vm_name("warm-b"));
    let _cleanup = (Cleanup(a.clone()), Cleanup(b.clone()));

    let created = Instant::now();
    let out = ok(vmrun(&["vm", "create", &a, "--image", image]));
    let said = stderr(&out);
    assert!(
        said.contains(&format!("resume VM {a} from the image's warm state: done")),
        "{said}"
    );
    assert!(!said.contains("booting cold"), "{said}");
    ssh(&a, &["true"]);
    // The guest counts on from the save: it has been up longer than the VM exists.
    let up = uptime(&a);
    assert!(
        up > created.elapsed().as_secs_f64(),
        "uptime {up}s: booted, not resumed"
    );
    // Its clock is the host's, not the save's.
    let before = seconds_since_epoch();
    let guest: f64 = ssh(&a, &["date", "+%s.%N"]).trim().parse().unwrap();
    let after = seconds_since_epoch();
    assert!(
        guest > before - 2.0 && guest < after + 2.0,
        "guest clock {guest}, host {before}..{after}"
    );
    let layout = vmrun::vm::VmLayout::new(
        &vmrun::paths::Home::under(&common::test_home()),
        &unit_dir(),
        &vmrun::vm::VmName::new(&a).unwrap(),
    );
    let record = vmrun::vm::VmRecord::load(&layout.record()).unwrap();
    assert_eq!(
        record.warm.map(|w| w.resume),
        Some(false),
        "later starts boot"
    );

    // A second VM from the same state: the same saved kernel, its own randomness.
    let out = ok(vmrun(&["vm", "create", &b, "--image", image]));
    assert!(stderr(&out).contains("from the image's warm state: done"));
    ssh(&b, &["true"]);
    let resumed_boot = boot_id(&a);
    assert_eq!(boot_id(&b), resumed_boot, "both resumed the same save");
    let random = |name: &str| ssh(name, &["od", "-An", "-tx1", "-N32", "/dev/urandom"]);
    assert_ne!(random(&a), random(&b));
    ok(vmrun(&["vm", "delete", &b]));

    // A snapshot of the resumed start loads in a later, booted one.
    ok(vmrun(&["vm", "snapshot", &a, "save", "resumed"]));
    let stopped = stderr(&ok(vmrun(&["vm", "stop", &a])));
    assert!(stopped.contains("the guest powered off"), "{stopped}");
    let started = Instant::now();
    let out = ok(vmrun(&["vm", "start", &a]));
    assert!(!stderr(&out).contains("resume VM"), "{}", stderr(&out));
    ssh(&a, &["true"]);
    assert_ne!(boot_id(&a), resumed_boot, "the second start boots");
    let up = uptime(&a);
    assert!(
        up < started.elapsed().as_secs_f64(),
        "uptime {up}s: not booted"
    );
    ok(vmrun(&["vm", "snapshot", &a, "load", "resumed"]));
    assert_eq!(boot_id(&a), resumed_boot);
    ssh(&a, &["true"]);
    ok(vmrun(&["vm", "delete", &a]));
}

#[test]
fn a_failed_create_leaves_nothing_behind() {
    require_user_manager();
    let image = image();
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let name = vm_name("failing");
    let out = vmrun(&[
        "vm",
        "create",
        &name,
        "--image",
        image,
        "--forward",
        &format!("{port}:80"),
    ]);
    fails_with(
        &out,
        vmrun::exit_code::VM_FAILED,
        &format!("VM `{name}` did not start"),
    );
    // The isolated network's forwards are bound on the host by slirp4netns.
    assert!(
        stderr(&out).contains(&format!(
            "slirp4netns refused to forward tcp 127.0.0.1:{port}"
        )),
        "the reason is shown: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("nothing of the VM is left"),
        "{}",
        stderr(&out)
    );
    let layout = vmrun::vm::VmLayout::new(
        &vmrun::paths::Home::under(&common::test_home()),
        &unit_dir(),
        &vmrun::vm::VmName::new(&name).unwrap(),
    );
    assert!(!layout.state.exists(), "{} is left", layout.state.display());
    assert!(
        !layout.runtime.exists(),
        "{} is left",
        layout.runtime.display()
    );
    assert!(
        !layout.unit_file.exists(),
        "{} is left",
        layout.unit_file.display()
    );
    let show = systemctl(&["show", "-p", "LoadState", &layout.unit()]);
    assert_eq!(stdout(&show).trim(), "LoadState=not-found");
    // The name is free again.
    fails_with(
        &vmrun(&["vm", "status", &name]),
        vmrun::exit_code::BAD_INPUT,
        "no VM named",
    );
}

#[test]
fn bad_names_are_refused_before_anything_is_written() {
    let home = tempfile::tempdir().unwrap();
    for bad in ["../x", "a b", "a.service", "a/b", "é", &"x".repeat(49)] {
        let out = vmrun_in(home.path(), &["vm", "create", bad, "--image", "whatever"]);
        fails_with(&out, vmrun::exit_code::BAD_INPUT, "invalid vm name");
        assert!(!unit_dir().join(format!("vmrun-{bad}.service")).exists());
        for command in [
            &["vm", "start", bad][..],
            &["vm", "delete", bad],
            &["vm", "forward", bad, "add", "1:2"],
        ] {
            fails_with(
                &vmrun_in(home.path(), command),
                vmrun::exit_code::BAD_INPUT,
                "invalid vm name",
            );
        }
    }
    assert_eq!(
        std::fs::read_dir(home.path()).unwrap().count(),
        0,
        "something was written into VMRUN_HOME"
    );
}

#[test]
fn unknown_vms_and_images_are_errors() {
    require_user_manager();
    let home = tempfile::tempdir().unwrap();
    let name = vm_name("nosuch");
    for command in [
        &["vm", "start", &name][..],
        &["vm", "stop", &name],
        &["vm", "restart", &name],
        &["vm", "delete", &name],
        &["vm", "status", &name],
        &["vm", "logs", &name],
        &["vm", "ssh", &name],
        &["vm", "enable", &name],
        &["vm", "forward", &name, "add", "8080:80"],
        &["vm", "snapshot", &name, "list"],
    ] {
        fails_with(
            &vmrun_in(home.path(), command),
            vmrun::exit_code::BAD_INPUT,
            &format!("no VM named `{name}`"),
        );
    }
    let out = vmrun_in(
        home.path(),
        &["vm", "create", &name, "--image", "no-such-image"],
    );
    fails_with(
        &out,
        vmrun::exit_code::BAD_INPUT,
        "no baked image named `no-such-image`",
    );
    assert!(!home.path().join("state/vms").join(&name).exists());
    assert!(!unit_dir().join(format!("vmrun-{name}.service")).exists());
    assert_eq!(
        stdout(&ok(vmrun_in(home.path(), &["vm", "list", "--json"]))).trim(),
        "[]"
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    let home = tempfile::tempdir().unwrap();
    for (args, says) in [
        (
            &["vm", "create", "x", "--image", "i", "--forward", "80"][..],
            "expected [tcp|udp:][ADDR:]HOST:GUEST",
        ),
        (
            &["vm", "create", "x", "--image", "i", "--forward", "0:80"],
            "`0` is not a port",
        ),
        (
            &["vm", "create", "x", "--image", "i", "--cpus", "0"],
            "--cpus 0",
        ),
        (
            &["vm", "create", "x", "--image", "i", "--memory", "lots"],
            "--memory",
        ),
        (
            &["vm", "forward", "x", "add", "localhost:1:2"],
            "not an IPv4 address",
        ),
    ] {
        fails_with(&vmrun_in(home.path(), args), vmrun::exit_code::USAGE, says);
    }
    assert_eq!(std::fs::read_dir(home.path()).unwrap().count(), 0);
}

#[test]
fn without_a_user_manager_vm_commands_say_so() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(VMRUN)
        .args(["vm", "list"])
        .env("VMRUN_HOME", home.path())
        .env("XDG_RUNTIME_DIR", home.path())
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .output()
        .unwrap();
    fails_with(
        &out,
        vmrun::exit_code::VM_FAILED,
        "no systemd user manager answers",
    );
    assert!(
        stderr(&out).contains("/lib/systemd/systemd --user"),
        "{}",
        stderr(&out)
    );
}

/// The unit renderer's quoting, checked by systemd itself: a unit rendered as a VM's is, whose
/// "QEMU" prints the argv it was given into its log at an awkward path.
#[test]
fn systemd_reads_back_the_arguments_and_paths_vmrun_quotes() {
    use std::ffi::OsString;
    use vmrun::vm::unit::{UnitSpec, render};
    require_user_manager();
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("a b 'c' \"d\" 100% $HOME \\e");
    std::fs::create_dir(&odd).unwrap(); // the log's directory: systemd opens the log first
    let words: Vec<OsString> = vec![
        "plain".into(),
        "".into(),
        ";".into(),
        "a b".into(),
        "50%".into(),
        "${HOME} $USER".into(),
        "it's \"quoted\" \\ back".into(),
        "tab\tnewline\n".into(),
        "café".into(),
        "ctl\x01\u{85}".into(),
        odd.clone().into(),
    ];
    let mut run: Vec<OsString> = vec![
        "/bin/sh".into(),
        "-c".into(),
        r#"for a in "$@"; do printf '[%s]' "$a"; done"#.into(),
        "sh".into(),
    ];
    run.extend(words.iter().cloned());
    let name = vm_name("quoting");
    let spec = UnitSpec {
        vm: name.clone(),
        prepare: vec![
            "/usr/bin/mkdir".into(),
            "-p".into(),
            odd.join("made by ExecStartPre").into(),
        ],
        run,
        stop: vec!["/bin/true".into()],
        qemu_log: odd.join("qemu log"),
        stop_timeout: Duration::from_secs(5),
    };
    let unit_name = format!("vmrun-{name}.service");
    let unit_file = unit_dir().join(&unit_name);
    std::fs::create_dir_all(unit_dir()).unwrap();
    std::fs::write(&unit_file, render(&spec).unwrap()).unwrap();
    let _remove = RemoveUnit(unit_file.clone());
    ok(systemctl(&["daemon-reload"]));
    let started = systemctl(&["start", &unit_name]);
    let mut expected = Vec::new();
    for word in &words {
        expected.push(b'[');
        expected.extend_from_slice(word.as_encoded_bytes());
        expected.push(b']');
    }
    let printed = wait_for("the unit's output", Duration::from_secs(30), || {
        std::fs::read(&spec.qemu_log)
            .ok()
            .filter(|p| p.len() >= expected.len())
    });
    ok(started);
    assert_eq!(
        String::from_utf8_lossy(&printed),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(printed, expected);
    assert!(odd.join("made by ExecStartPre").is_dir());
}
