//! Whether KVM runs guests here and, when it does not, why: the same answer `VMRUN_ACCEL=auto`
//! acts on ([`accel::kvm_state`]), remembered per host, so a second doctor is instant.

use std::path::Path;

use super::{Finding, Host};
use crate::qemu::accel::{self, AccelChoice, KvmState, VAR, verdict::Verdict};

const CHECK: &str = "kvm";

pub(super) fn check(host: &Host, qemu: Option<&Path>) -> Finding {
    let choice = match &host.accel {
        Ok(choice) => *choice,
        Err(e) => {
            return Finding::fail(
                CHECK,
                e.clone(),
                format!("unset {VAR}, or set it to auto, kvm or tcg"),
            );
        }
    };
    let facts = host.home.host_facts();
    let state = match qemu {
        Some(qemu) => accel::kvm_state(&host.kvm_device, qemu, &facts, host.sink),
        // Without QEMU there is no probe: only whether the device opens.
        None => match accel::open_kvm(&host.kvm_device) {
            Err(reason) => KvmState::Unavailable(reason),
            Ok(()) => KvmState::Unknown("QEMU is not installed, so no guest can be tried".into()),
        },
    };
    judge(choice, state, &Verdict::path(&facts).display().to_string())
}

/// `verdict_file`: where the remembered answer is, for the fix.
fn judge(choice: AccelChoice, state: KvmState, verdict_file: &str) -> Finding {
    let forced = |what: &str| format!("{VAR}={what}");
    match (state, choice) {
        (
            KvmState::Runs {
                remembered,
                probe_ms,
            },
            AccelChoice::Tcg,
        ) => Finding::warn(
            CHECK,
            format!(
                "KVM runs guests here ({}), but {} turns it off",
                how(remembered, probe_ms),
                forced("tcg")
            ),
            format!("unset {VAR} to run VMs with KVM, many times faster than TCG"),
        ),
        (
            KvmState::Runs {
                remembered,
                probe_ms,
            },
            _,
        ) => Finding::ok(
            CHECK,
            format!("KVM runs guests here ({})", how(remembered, probe_ms)),
        ),
        (KvmState::Unavailable(reason), choice) => {
            let detail = format!("KVM is not available: {reason}");
            let fix = reason.help().unwrap_or_else(|| format!("set {VAR}=tcg"));
            by_choice(choice, detail, fix)
        }
        (KvmState::DoesNotRun { reason, .. }, choice) => {
            let detail = format!("/dev/kvm opens, but KVM does not run guests here ({reason})");
            let fix = format!(
                "KVM inside a VM needs working nested virtualisation: turn it on (or fix it) in \
                 the hypervisor that runs this machine, or run on bare metal; until then set \
                 {VAR}=tcg to skip the check (the verdict is remembered in {verdict_file}; \
                 delete it to check again)"
            );
            by_choice(choice, detail, fix)
        }
        (KvmState::Unknown(why), choice) => {
            let detail = format!("cannot check whether KVM runs guests here ({why})");
            by_choice(choice, detail, "see the other findings".into())
        }
    }
}

/// KVM is not usable: `auto` falls back to TCG (a warning), `kvm` fails every run, and `tcg`
/// asked for no KVM in the first place.
fn by_choice(choice: AccelChoice, detail: String, fix: String) -> Finding {
    match choice {
        AccelChoice::Auto => {
            Finding::warn(CHECK, format!("{detail}; vmrun uses TCG, far slower"), fix)
        }
        AccelChoice::Kvm => Finding::fail(
            CHECK,
            format!("{detail}, and {VAR}=kvm: runs will fail"),
            fix,
        ),
        AccelChoice::Tcg => Finding::ok(CHECK, format!("{VAR}=tcg; {detail}")),
    }
}

fn how(remembered: bool, probe_ms: u64) -> String {
    let when = if remembered { "remembered; " } else { "" };
    format!("{when}probe guest: {probe_ms} ms")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;
    use crate::qemu::accel::Unavailable;

    fn broken() -> KvmState {
        KvmState::DoesNotRun {
            reason: "the probe guest made no progress in 5 s".into(),
            remembered: true,
        }
    }

    #[test]
    fn kvm_that_opens_but_runs_no_guest_says_why_and_what_to_do() {
        let f = judge(AccelChoice::Auto, broken(), "/h/kvm-verdict");
        assert_eq!(f.status, Status::Warn);
        assert!(
            f.detail.contains(
                "/dev/kvm opens, but KVM does not run guests here \
                 (the probe guest made no progress in 5 s); vmrun uses TCG, far slower"
            ),
            "{}",
            f.detail
        );
        let fix = f.fix.unwrap();
        assert!(
            fix.contains("nested virtualisation") && fix.contains("/h/kvm-verdict"),
            "{fix}"
        );
        assert_eq!(judge(AccelChoice::Kvm, broken(), "f").status, Status::Fail);
        let tcg = judge(AccelChoice::Tcg, broken(), "f");
        assert_eq!(tcg.status, Status::Ok);
        assert!(
            tcg.detail
                .starts_with("VMRUN_ACCEL=tcg; /dev/kvm opens, but"),
            "{}",
            tcg.detail
        );
    }

    #[test]
    fn a_missing_device_gives_the_accelerator_modules_help() {
        let state = KvmState::Unavailable(Unavailable::Missing {
            path: "/dev/kvm".into(),
        });
        let f = judge(AccelChoice::Auto, state, "f");
        assert_eq!(f.status, Status::Warn);
        assert!(f.detail.contains("/dev/kvm does not exist"), "{}", f.detail);
        assert!(f.fix.unwrap().contains("kvm_intel"));
    }

    #[test]
    fn working_kvm_is_ok_unless_turned_off() {
        let runs = || KvmState::Runs {
            remembered: false,
            probe_ms: 180,
        };
        assert_eq!(
            judge(AccelChoice::Auto, runs(), "f"),
            Finding::ok(CHECK, "KVM runs guests here (probe guest: 180 ms)")
        );
        let off = judge(AccelChoice::Tcg, runs(), "f");
        assert_eq!(off.status, Status::Warn);
        assert!(off.fix.unwrap().starts_with("unset VMRUN_ACCEL"));
    }
}
