//! `vmrun doctor` on this host, as a user runs it. These machines have a /dev/kvm that opens
//! but does not run guests (ENVIRONMENT.md): doctor must say so and why. Where KVM works
//! (GitHub's runners, `VMRUN_EXPECT_KVM=1`) it must say that instead.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn expect_kvm() -> bool {
    std::env::var("VMRUN_EXPECT_KVM").as_deref() == Ok("1")
}

/// `vmrun doctor ARGS` with a home of its own (so the KVM probe runs once, here) and
/// `VMRUN_ACCEL` as given (`None`: unset, i.e. auto).
fn doctor(home: &Path, accel: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmrun"));
    cmd.arg("doctor").args(args).env("VMRUN_HOME", home);
    match accel {
        Some(value) => cmd.env("VMRUN_ACCEL", value),
        None => cmd.env_remove("VMRUN_ACCEL"),
    };
    cmd.output().expect("vmrun runs")
}

fn kvm_line(stdout: &str) -> &str {
    stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("kvm"))
        .unwrap_or_else(|| panic!("no kvm line in:\n{stdout}"))
}

#[test]
fn lines_say_kvm_is_present_but_unusable_and_why_and_name_qemus_version() {
    assert!(
        Path::new("/dev/kvm").exists(),
        "these machines have /dev/kvm (ENVIRONMENT.md)"
    );
    let home = tempfile::tempdir().unwrap();
    let out = doctor(home.path(), None, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Nothing vmrun needs is missing here (.ci/run installs it all): warnings only.
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");

    let qemu = stdout
        .lines()
        .find(|l| l.starts_with("ok    qemu "))
        .unwrap_or_else(|| {
            panic!("no ok qemu line in:\n{stdout}");
        });
    let version = qemu.split_whitespace().nth(3).unwrap_or_default();
    assert!(
        version.split('.').count() == 3 && version.split('.').all(|n| n.parse::<u32>().is_ok()),
        "{qemu}"
    );

    let kvm = kvm_line(&stdout);
    if expect_kvm() {
        assert!(
            kvm.starts_with("ok    kvm") && kvm.contains("KVM runs guests here"),
            "{kvm}"
        );
        return;
    }
    assert!(kvm.starts_with("warn  kvm"), "{kvm}");
    assert!(
        kvm.contains("/dev/kvm opens, but KVM does not run guests here ("),
        "{kvm}"
    );
    // Why: the probe's own words (here QEMU aborts on an MSR, or the guest makes no progress).
    let why = kvm
        .split_once("does not run guests here (")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    assert!(why.len() > 10 && !why.starts_with(')'), "{kvm}");
    assert!(kvm.contains("vmrun uses TCG"), "{kvm}");
    assert!(
        kvm.contains(" -> ") && kvm.contains("nested virtualisation"),
        "{kvm}"
    );
}

#[test]
fn json_is_an_array_of_check_status_detail_fix() {
    let home = tempfile::tempdir().unwrap();
    let out = doctor(home.path(), Some("tcg"), &["--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let findings: Vec<Value> = serde_json::from_str(&stdout).expect("an array of objects");
    for f in &findings {
        let keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 4, "{f}");
        for key in ["check", "status", "detail", "fix"] {
            assert!(keys.contains(&key), "{f}");
        }
        assert!(
            ["ok", "warn", "fail"].contains(&f["status"].as_str().unwrap()),
            "{f}"
        );
        assert!(f["fix"].is_null() || f["fix"].is_string(), "{f}");
    }
    let find = |check: &str| {
        findings
            .iter()
            .find(|f| f["check"] == check)
            .unwrap_or_else(|| panic!("no {check} in {stdout}"))
    };
    let qemu = find("qemu");
    assert_eq!(qemu["status"], "ok");
    assert!(
        qemu["detail"].as_str().unwrap().starts_with("QEMU "),
        "{qemu}"
    );
    let kvm = find("kvm");
    let detail = kvm["detail"].as_str().unwrap();
    // VMRUN_ACCEL=tcg asked for no KVM: doctor still says what KVM would do here.
    if expect_kvm() {
        assert_eq!(kvm["status"], "warn", "{kvm}");
        assert!(detail.contains("KVM runs guests here"), "{kvm}");
    } else {
        assert_eq!(kvm["status"], "ok", "{kvm}");
        assert!(
            detail
                .starts_with("VMRUN_ACCEL=tcg; /dev/kvm opens, but KVM does not run guests here ("),
            "{kvm}"
        );
    }
    for check in [
        "rsync",
        "ssh",
        "ssh-keygen",
        "slirp4netns",
        "ip",
        "namespaces",
        "disk space",
    ] {
        assert_eq!(find(check)["status"], "ok", "{check}: {stdout}");
    }
}

#[test]
fn a_bad_accelerator_value_fails_with_exit_1() {
    let home = tempfile::tempdir().unwrap();
    let out = doctor(home.path(), Some("hvf"), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let kvm = kvm_line(&stdout);
    assert!(
        kvm.starts_with("fail  kvm") && kvm.contains("`hvf`"),
        "{kvm}"
    );
}
