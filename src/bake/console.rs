//! What a bake reads on the guest's serial console: cloud-init's stages as they start, and
//! the verdict line the bake's power_state hook prints (`cloud-init/bake-verdict.sh`).

/// What one console line tells about the bake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleSignal {
    /// cloud-init started a stage (`init-local`, `init`, `modules:config`, `modules:final`).
    Stage(String),
    /// cloud-init finished all stages.
    CloudInitFinished,
    /// The verdict: provisioning succeeded.
    Succeeded,
    /// The verdict: cloud-init reported errors (joined with "; ").
    Failed(String),
}

/// Reads one console line; `marker` is the bake's verdict token.
pub fn signal(line: &str, marker: &str) -> Option<ConsoleSignal> {
    // Anywhere in the line: kernel messages may share it. Nothing else can print the marker,
    // which is fresh for each bake.
    if let Some(rest) = line
        .find(marker)
        .and_then(|at| line[at + marker.len()..].strip_prefix(' '))
    {
        return Some(match rest.strip_prefix("failed: ") {
            Some(errors) => ConsoleSignal::Failed(errors.trim().to_owned()),
            None if rest.trim() == "ok" => ConsoleSignal::Succeeded,
            None => return None,
        });
    }
    let after = &line[line.find("Cloud-init v. ")?..];
    if let Some(stage) = after
        .split("running '")
        .nth(1)
        .and_then(|s| s.split('\'').next())
    {
        return Some(ConsoleSignal::Stage(stage.to_owned()));
    }
    after
        .contains(" finished at ")
        .then_some(ConsoleSignal::CloudInitFinished)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "vmrun-bake-5f3a";

    #[test]
    fn cloud_init_stages() {
        let line = "[   26.88] cloud-init[254]: Cloud-init v. 22.4.2 running 'init-local' at Mon, 23 Nov 2026 22:48:02 +0000. Up 26.46 seconds.";
        assert_eq!(
            signal(line, M),
            Some(ConsoleSignal::Stage("init-local".into()))
        );
        let line =
            "cloud-init[374]: Cloud-init v. 22.4.2 running 'modules:final' at Mon, 23 Nov 2026";
        assert_eq!(
            signal(line, M),
            Some(ConsoleSignal::Stage("modules:final".into()))
        );
        let line = "[   80.1] cloud-init[401]: Cloud-init v. 22.4.2 finished at Mon, 23 Nov 2026 22:49:00 +0000. Datasource DataSourceNoCloud";
        assert_eq!(signal(line, M), Some(ConsoleSignal::CloudInitFinished));
    }

    #[test]
    fn verdicts_need_the_exact_marker() {
        assert_eq!(
            signal("vmrun-bake-5f3a ok", M),
            Some(ConsoleSignal::Succeeded)
        );
        assert_eq!(
            signal(
                "vmrun-bake-5f3a failed: ('scripts_user', RuntimeError('x')); other",
                M
            ),
            Some(ConsoleSignal::Failed(
                "('scripts_user', RuntimeError('x')); other".into()
            ))
        );
        assert_eq!(
            signal("vmrun-bake-0000 ok", M),
            None,
            "another bake's marker"
        );
        assert_eq!(
            signal("[ 80.5] reboot: Power down vmrun-bake-5f3a ok", M),
            Some(ConsoleSignal::Succeeded)
        );
        assert_eq!(signal("vmrun-bake-5f3a okay", M), None);
        assert_eq!(signal("Debian GNU/Linux 12 vmrun ttyS0", M), None);
    }
}
