//! VMRUN_ACCEL against real QEMU: the probe guest, `auto` on this host, the remembered verdict.
//!
//! These machines have a /dev/kvm that opens but does not run guests (see ENVIRONMENT.md), so
//! `auto` is expected to choose TCG here; where KVM works (GitHub's runners) the workflow sets
//! `VMRUN_EXPECT_KVM=1` and `auto` must choose KVM.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vmrun::events::Event;
use vmrun::exit_code;
use vmrun::qemu::accel::probe_guest::{self, MARKER};
use vmrun::qemu::accel::{
    self, Accel, AccelChoice, KVM_DEVICE, Verdict, VerdictKey, probe, resolve, resolve_with,
};

/// Held by every test that starts a process or writes a script it then runs: one QEMU at a
/// time on these 2 cores, and no script being written (its fd open) while another thread
/// forks, which would make running it fail with ETXTBSY.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn qemu_system() -> PathBuf {
    which::which("qemu-system-x86_64")
        .expect("qemu-system-x86_64 is needed: apt-get install qemu-system-x86")
}

fn expect_kvm() -> bool {
    std::env::var("VMRUN_EXPECT_KVM").as_deref() == Ok("1")
}

/// Events a call emitted.
struct Recorder(Mutex<Vec<Event>>);

impl Recorder {
    fn new() -> Recorder {
        Recorder(Mutex::new(Vec::new()))
    }
    fn sink(&self) -> impl Fn(Event) + '_ {
        |event| {
            eprintln!("event: {event:?}");
            self.0.lock().unwrap().push(event)
        }
    }
    fn notices(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Notice(text) => Some(text.clone()),
                _ => None,
            })
            .collect()
    }
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// An executable shell script that counts its runs in `count` and then does `body`.
fn counting_script(path: &Path, count: &Path, body: &str) {
    let text = format!("#!/bin/sh\necho run >> '{}'\n{body}\n", count.display());
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn runs(count: &Path) -> usize {
    std::fs::read_to_string(count)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

#[test]
fn probe_guest_prints_its_marker_under_tcg() {
    let _serial = serial();
    let report = probe::run(
        &qemu_system(),
        Accel::Tcg,
        Duration::from_secs(30),
        tempfile::tempdir().unwrap().path(),
    )
    .unwrap();
    eprintln!(
        "probe under TCG: {:?} in {:?}\nserial: {:?}\nqemu: {:?}",
        report.outcome, report.elapsed, report.serial, report.qemu_log
    );
    assert_eq!(report.outcome, Ok(()));
    assert_eq!(
        report.serial,
        format!("vmrun-probe: real protected long\n{MARKER}\n")
    );
    assert_eq!(
        report.exit,
        Some(probe_guest::EXIT_OK),
        "the guest ends QEMU through isa-debug-exit"
    );
    // Well inside the probe's own deadline: the guest passes on TCG-speed hosts too.
    assert!(
        report.elapsed < probe::TIMEOUT,
        "the probe guest took {:?} under TCG",
        report.elapsed
    );
}

#[test]
fn auto_decides_once_and_remembers() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let facts = dir.path().join("host");
    let count = dir.path().join("qemu-runs");
    let qemu = dir.path().join("qemu-system-x86_64");
    counting_script(
        &qemu,
        &count,
        &format!("exec '{}' \"$@\"", qemu_system().display()),
    );
    let events = Recorder::new();

    if let Err(reason) = accel::open_kvm(Path::new(KVM_DEVICE)) {
        assert!(!expect_kvm(), "VMRUN_EXPECT_KVM=1, but {reason}");
        eprintln!("note: {reason}: only the fallback without a probe is checked");
        assert_eq!(
            resolve(AccelChoice::Auto, &qemu, &facts, &events.sink()).unwrap(),
            Accel::Tcg
        );
        assert_eq!(
            events.notices(),
            [format!("KVM not available ({reason}); using TCG")]
        );
        assert_eq!(runs(&count), 0);
        return;
    }
    let expected = if expect_kvm() { Accel::Kvm } else { Accel::Tcg };

    let started = Instant::now();
    let first = resolve(AccelChoice::Auto, &qemu, &facts, &events.sink()).unwrap();
    let took = started.elapsed();
    eprintln!("first resolve(Auto): {first:?} in {took:?}");
    assert_eq!(first, expected);
    assert!(
        took < Duration::from_secs(10),
        "resolve(Auto) took {took:?}"
    );
    assert_eq!(runs(&count), 1, "the probe ran QEMU once");
    let notices = events.notices();
    match expected {
        Accel::Tcg => {
            assert_eq!(notices.len(), 1, "{notices:?}");
            assert!(
                notices[0].starts_with("KVM does not run guests here (")
                    && notices[0].ends_with("); using TCG"),
                "{notices:?}"
            );
        }
        Accel::Kvm => assert_eq!(notices, Vec::<String>::new()),
    }
    events.take();

    let verdict = Verdict::load(&facts)
        .unwrap()
        .expect("a verdict was stored");
    eprintln!("{verdict:?}");
    assert_eq!(verdict.usable, expected == Accel::Kvm);
    assert_eq!(
        verdict.key,
        VerdictKey::current(Path::new(KVM_DEVICE), &qemu, &probe::fingerprint()).unwrap()
    );
    assert_eq!(verdict.reason.is_empty(), verdict.usable);
    if !verdict.usable {
        assert!(notices[0].contains(&verdict.reason));
    }

    let started = Instant::now();
    let second = resolve(AccelChoice::Auto, &qemu, &facts, &events.sink()).unwrap();
    eprintln!(
        "second resolve(Auto): {second:?} in {:?}",
        started.elapsed()
    );
    assert_eq!(second, first);
    assert_eq!(
        runs(&count),
        1,
        "the remembered verdict was used: QEMU did not run again"
    );
    match expected {
        Accel::Tcg => assert_eq!(
            events.notices(),
            [format!(
                "KVM does not run guests here (remembered: {}); using TCG",
                verdict.reason
            )]
        ),
        Accel::Kvm => assert_eq!(events.notices(), Vec::<String>::new()),
    }
    assert!(
        !events
            .take()
            .iter()
            .any(|e| matches!(e, Event::PhaseStarted(_))),
        "no probe phase the second time"
    );
}

#[test]
fn a_changed_key_checks_again() {
    let _serial = serial();
    if let Err(reason) = accel::open_kvm(Path::new(KVM_DEVICE)) {
        eprintln!("note: {reason}: `auto` does not probe here, so there is no verdict to re-check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let facts = dir.path().join("host");
    let count = dir.path().join("qemu-runs");
    let qemu = dir.path().join("fake-qemu");
    // A QEMU that fails at once: a quick "no" from the probe.
    let fake = "echo 'qemu-system-x86_64: error: a fake QEMU for vmrun tests' >&2\nexit 1";
    counting_script(&qemu, &count, fake);
    let events = Recorder::new();
    let auto =
        |events: &Recorder| resolve(AccelChoice::Auto, &qemu, &facts, &events.sink()).unwrap();

    assert_eq!(auto(&events), Accel::Tcg);
    assert_eq!(runs(&count), 1);
    let notices = events.notices();
    assert_eq!(notices.len(), 1);
    assert!(
        notices[0].contains("QEMU exited (exit status 1)"),
        "{notices:?}"
    );
    assert!(
        notices[0].contains("error: a fake QEMU for vmrun tests"),
        "{notices:?}"
    );
    events.take();

    assert_eq!(auto(&events), Accel::Tcg);
    assert_eq!(runs(&count), 1, "remembered");
    assert!(events.notices()[0].contains("(remembered: QEMU exited"));

    // Another QEMU binary (here: another size) is checked again.
    counting_script(&qemu, &count, &format!("# version 2\n{fake}"));
    assert_eq!(auto(&events), Accel::Tcg);
    assert_eq!(runs(&count), 2, "a changed QEMU binary is probed again");

    // So is another /dev/kvm (a new boot, a reloaded module): the stored key says another inode.
    let mut stored = Verdict::load(&facts).unwrap().unwrap();
    stored.key.kvm_ino ^= 1;
    stored.store(&facts).unwrap();
    assert_eq!(auto(&events), Accel::Tcg);
    assert_eq!(runs(&count), 3, "a changed /dev/kvm is probed again");

    // A verdict file that cannot be parsed (here: an older vmrun's text) is no verdict.
    events.take();
    std::fs::write(Verdict::path(&facts), "format=1\nusable=yes\n").unwrap();
    assert_eq!(auto(&events), Accel::Tcg);
    assert_eq!(runs(&count), 4);
    assert!(
        events.take().iter().any(|e| matches!(e, Event::Detail(text)
            if text.starts_with("ignoring the KVM verdict") && text.ends_with("; checking again"))),
        "the ignored file is mentioned"
    );
    assert!(
        Verdict::load(&facts).unwrap().is_some(),
        "and is replaced by a good one"
    );
}

#[test]
fn tcg_never_touches_the_kvm_device() {
    let dir = tempfile::tempdir().unwrap();
    let device = dir.path().join("kvm");
    let facts = dir.path().join("host");
    let events = Recorder::new();
    // With a device that does not exist, anything that looked at it would say so.
    assert_eq!(
        resolve_with(
            AccelChoice::Tcg,
            &device,
            Path::new("/no/qemu"),
            &facts,
            &events.sink()
        )
        .unwrap(),
        Accel::Tcg
    );
    assert_eq!(events.take(), []);
    assert!(!facts.exists(), "no verdict for TCG");
    // And resolve() (the real /dev/kvm) is the same path through the code.
    assert_eq!(
        resolve(
            AccelChoice::Tcg,
            Path::new("/no/qemu"),
            &facts,
            &events.sink()
        )
        .unwrap(),
        Accel::Tcg
    );
    assert_eq!(events.take(), []);

    // While `auto` with that device looks, and says so in one line.
    assert_eq!(
        resolve_with(
            AccelChoice::Auto,
            &device,
            Path::new("/no/qemu"),
            &facts,
            &events.sink()
        )
        .unwrap(),
        Accel::Tcg
    );
    assert_eq!(
        events.take(),
        [Event::Notice(format!(
            "KVM not available ({} does not exist); using TCG",
            device.display()
        ))]
    );
    assert!(!facts.exists(), "nothing to remember without a device");
}

#[test]
fn forced_kvm_uses_the_device_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let facts = dir.path().join("host");
    let events = Recorder::new();
    let missing = dir.path().join("kvm");
    let err = resolve_with(
        AccelChoice::Kvm,
        &missing,
        Path::new("/no/qemu"),
        &facts,
        &events.sink(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "VMRUN_ACCEL=kvm, but KVM cannot be used: {} does not exist",
            missing.display()
        )
    );
    let top = vmrun::error::Error::from(err);
    assert_eq!(top.exit_code(), exit_code::VM_FAILED);

    // Where /dev/kvm opens, `kvm` trusts the user: no probe, no verdict.
    match accel::open_kvm(Path::new(KVM_DEVICE)) {
        Ok(()) => {
            assert_eq!(
                resolve(
                    AccelChoice::Kvm,
                    Path::new("/no/qemu"),
                    &facts,
                    &events.sink()
                )
                .unwrap(),
                Accel::Kvm
            );
            assert_eq!(events.take(), []);
            assert!(!facts.exists());
        }
        Err(reason) => {
            let err = resolve(
                AccelChoice::Kvm,
                Path::new("/no/qemu"),
                &facts,
                &events.sink(),
            )
            .unwrap_err();
            assert!(err.to_string().ends_with(&reason.to_string()), "{err}");
        }
    }
}

#[test]
fn a_bad_value_names_the_variable_and_the_value() {
    let err = AccelChoice::parse(Some(OsStr::new("fast"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "VMRUN_ACCEL is `fast`, which is not one of auto, kvm, tcg"
    );
    let top = vmrun::error::Error::from(err);
    assert_eq!(top.exit_code(), exit_code::BAD_INPUT);
    let rendered = format!("{:?}", miette::Report::new(top));
    assert!(
        rendered.contains("`fast`") && rendered.contains("unset VMRUN_ACCEL"),
        "{rendered}"
    );
}

/// `from_env` reads the real environment: checked in child processes (this test binary run
/// again, for `from_env_in_a_child` only) so no test here changes its own environment.
#[test]
fn from_env_reads_vmrun_accel() {
    let _serial = serial();
    let child = |value: Option<&str>, expect: &str| {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command
            .args(["from_env_in_a_child", "--exact", "--nocapture"])
            .env("VMRUN_ACCEL_CHILD_EXPECTS", expect);
        match value {
            Some(value) => command.env("VMRUN_ACCEL", value),
            None => command.env_remove("VMRUN_ACCEL"),
        };
        let out = command.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("1 passed"),
            "child for {value:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    child(None, "Auto");
    child(Some(""), "Auto");
    child(Some("tcg"), "Tcg");
    child(Some("kvm"), "Kvm");
    child(
        Some("qemu"),
        "error: VMRUN_ACCEL is `qemu`, which is not one of auto, kvm, tcg",
    );
}

#[test]
fn from_env_in_a_child() {
    let Ok(expect) = std::env::var("VMRUN_ACCEL_CHILD_EXPECTS") else {
        return; // run by from_env_reads_vmrun_accel only
    };
    let got = match AccelChoice::from_env() {
        Ok(choice) => format!("{choice:?}"),
        Err(e) => format!("error: {e}"),
    };
    assert_eq!(got, expect);
}

/// The probe against KVM with QEMU's default CPU (vmrun's own KVM arguments add `-cpu host`,
/// which QEMU rejects at once on these machines): here KVM reaches long mode but only
/// emulates the guest, so the probe's work does not finish in time; where KVM works it does.
#[test]
fn probe_under_kvm_with_the_default_cpu() {
    let _serial = serial();
    if let Err(reason) = accel::open_kvm(Path::new(KVM_DEVICE)) {
        assert!(!expect_kvm(), "VMRUN_EXPECT_KVM=1, but {reason}");
        eprintln!("note: {reason}: the probe under KVM is not run");
        return;
    }
    let kvm = ["-accel", "kvm"].map(std::ffi::OsString::from);
    let report = probe::run_with(
        &qemu_system(),
        &kvm,
        probe::TIMEOUT,
        tempfile::tempdir().unwrap().path(),
    )
    .unwrap();
    eprintln!(
        "probe under KVM: {:?} in {:?}\nserial: {:?}\nqemu: {:?}",
        report.outcome, report.elapsed, report.serial, report.qemu_log
    );
    if expect_kvm() {
        assert_eq!(report.outcome, Ok(()));
        assert!(
            report.elapsed < Duration::from_secs(2),
            "{:?}",
            report.elapsed
        );
    } else {
        let Err(reason) = &report.outcome else {
            panic!("KVM passed the probe on a host where it is broken")
        };
        assert!(
            report.elapsed < Duration::from_secs(7),
            "{:?}",
            report.elapsed
        );
        assert!(!report.serial.contains(MARKER));
        assert!(
            reason.starts_with("the probe guest ") || reason.contains("KVM internal error"),
            "{reason}"
        );
    }
}

/// A QEMU that cannot even start says nothing about KVM: TCG for now, one notice, and no
/// verdict, so the next run checks again.
#[test]
fn a_probe_that_cannot_run_is_no_verdict() {
    let _serial = serial();
    if let Err(reason) = accel::open_kvm(Path::new(KVM_DEVICE)) {
        eprintln!("note: {reason}: `auto` does not probe here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let facts = dir.path().join("host");
    let qemu = dir.path().join("not-executable");
    std::fs::write(&qemu, "").unwrap();
    let events = Recorder::new();
    assert_eq!(
        resolve(AccelChoice::Auto, &qemu, &facts, &events.sink()).unwrap(),
        Accel::Tcg
    );
    let notices = events.notices();
    assert_eq!(notices.len(), 1, "{notices:?}");
    let expected = format!(
        "cannot check whether KVM runs guests here (cannot start {}: ",
        qemu.display()
    );
    assert!(
        notices[0].starts_with(&expected) && notices[0].ends_with("; using TCG"),
        "{notices:?}"
    );
    assert!(Verdict::load(&facts).unwrap().is_none());
}
