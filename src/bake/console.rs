//! What a bake reads on the guest's serial console: cloud-init's stages as they start, the
//! verdict line the bake's power_state hook prints (`cloud-init/bake-verdict.sh`), and, when
//! provisioning failed, which cloud-init modules failed and what they printed.

use std::collections::VecDeque;

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

/// Lines kept of what one failed module printed: the last ones, which explain the failure.
pub const MODULE_LINES: usize = 20;
/// Bytes kept of one such line.
const LINE_BYTES: usize = 400;

/// A cloud-init module that failed, and the lines cloud-init printed on the console since the
/// one before it (stage start or failure): its own output, as it cannot be told apart from a
/// quiet module's before it. Lines are as the guest wrote them, not yet made safe to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFailure {
    /// As cloud-init names it (`locale`, `scripts-user`).
    pub module: String,
    /// The last [`MODULE_LINES`] of them, each cut at [`LINE_BYTES`].
    pub lines: Vec<String>,
    /// How many earlier ones were left out.
    pub omitted: usize,
}

/// Every module failure in a console transcript, in order.
///
/// cloud-init's lines reach the console through the journal as `[ TIME] cloud-init[PID]: TEXT`
/// (anywhere in a line: a login prompt may precede one); its log lines within them start with a
/// timestamp, which is dropped. A failure is cloud-init's `Running module NAME (...) failed`.
pub fn module_failures(transcript: &str) -> Vec<ModuleFailure> {
    let mut failures = Vec::new();
    let mut recent: VecDeque<&str> = VecDeque::new();
    let mut omitted = 0;
    for text in transcript.lines().filter_map(cloud_init_text) {
        let text = without_log_time(text);
        if text.starts_with("Cloud-init v. ") {
            recent.clear();
            omitted = 0;
        } else if let Some(module) = failed_module(text) {
            failures.push(ModuleFailure {
                module: module.to_owned(),
                lines: recent.drain(..).map(cut).collect(),
                omitted: std::mem::take(&mut omitted),
            });
        } else {
            if recent.len() == MODULE_LINES {
                recent.pop_front();
                omitted += 1;
            }
            recent.push_back(text);
        }
    }
    failures
}

/// What cloud-init printed, from a console line that came from it.
fn cloud_init_text(line: &str) -> Option<&str> {
    let at = line.find("cloud-init[")? + "cloud-init[".len();
    let rest = &line[at..];
    let pid_end = rest.find(']')?;
    if pid_end == 0 || !rest[..pid_end].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest[pid_end..]
        .strip_prefix("]: ")
        .map(|text| text.trim_end_matches('\r'))
}

/// `2026-12-01 22:25:52,691 - util.py[WARNING]: ...` without its first 26 characters.
fn without_log_time(text: &str) -> &str {
    let is_time = text.len() > 26
        && text.is_char_boundary(26)
        && text[..26].bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b' ',
            13 | 16 => b == b':',
            19 => b == b',',
            23 | 25 => b == b' ',
            24 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    if is_time { &text[26..] } else { text }
}

/// The module named by `util.py[WARNING]: Running module NAME (<module ...>) failed`.
fn failed_module(text: &str) -> Option<&str> {
    let rest = &text[text.find("Running module ")? + "Running module ".len()..];
    if !text.ends_with(") failed") {
        return None;
    }
    let name = rest.split(' ').next()?;
    (!name.is_empty()).then_some(name)
}

fn cut(line: &str) -> String {
    if line.len() <= LINE_BYTES {
        return line.to_owned();
    }
    let mut end = LINE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "vmrun-bake-5f3a";

    #[test]
    fn cloud_init_stages() {
        let line = "[   26.88] cloud-init[254]: Cloud-init v. 22.4.2 running 'init-local' at \
             Mon, 23 Nov 2026 22:48:02 +0000. Up 26.46 seconds.";
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
        let line = "[   80.1] cloud-init[401]: Cloud-init v. 22.4.2 finished at Mon, 23 Nov 2026 \
             22:49:00 +0000. Datasource DataSourceNoCloud";
        assert_eq!(signal(line, M), Some(ConsoleSignal::CloudInitFinished));
    }

    /// A real bake's console (Debian bookworm, cloud-init 22.4.2) whose `locale` module failed,
    /// then whose `bake.run` failed; the kernel's and systemd's lines in between cut short.
    const FAILED_BAKE: &str = "\
[   20.197031] cloud-init[305]: Cloud-init v. 22.4.2 running 'init' at Wed, 02 Dec 2026 \
    00:34:26 +0000. Up 20.00 seconds.
[   21.483900] cloud-init[305]: 2026-12-02 00:34:28,089 - \
    schema.py[WARNING]: Invalid cloud-config provided: \
    Please run 'sudo cloud-init schema --system' to see the schema errors.
[\x1b[0;32m  OK  \x1b[0m] Finished \x1b[0;1;39mcloud-init.service\x1b[0m \
    - Initial cloud-init job (metadata service crawler).\r
vmrun login: [   36.562650] cloud-init[361]: Cloud-init v. 22.4.2 \
    running 'modules:config' at Wed, 02 Dec 2026 \
    00:34:41 +0000. Up 34.67 seconds.
[   36.569963] cloud-init[361]: Generating locales (this might take a while)...
[   36.577455] cloud-init[361]: Generation complete.
[   36.648805] cloud-init[361]: *** update-locale: Error: invalid locale settings:  LANG=en_US.UTF-8
[   36.660826] cloud-init[361]: 2026-12-02 00:34:43,277 - util.py[WARNING]: \
    Running module locale (<module 'cloudinit.config.cc_locale' from \
    '/usr/lib/python3/dist-packages/cloudinit/config/cc_locale.py'>) failed
[   57.838941] cloud-init[388]: Cloud-init v. 22.4.2 running 'modules:final' at Tue, 01 Dec 2026 \
    22:25:51 +0000. Up 57.36 seconds.
[   58.660590] cloud-init[388]: failing-18ed4189db6bf7c57e6d
[   58.670762] cloud-init[388]: 2026-12-01 22:25:52,680 - \
    cc_scripts_user.py[WARNING]: Failed to run module scripts-user \
    (scripts in /var/lib/cloud/instance/scripts)
[   58.678604] cloud-init[388]: 2026-12-01 22:25:52,691 - \
    util.py[WARNING]: Running module scripts-user \
    (<module 'cloudinit.config.cc_scripts_user' from \
    '/usr/lib/python3/dist-packages/cloudinit/config/cc_scripts_user.py'>) failed
ci-info: +-------------+--------------------------------------------------+---------+---------+
<14>Dec  1 22:25:52 cloud-init: #############################################################
[   59.739379] cloud-init[388]: Cloud-init v. 22.4.2 finished at Tue, 01 Dec 2026 22:25:53 +0000. \
    Datasource DataSourceNoCloud [seed=/dev/vdb][dsmode=net].  Up 59.67 seconds
vmrun-bake-720486f1e984bc44 failed: ('locale', ProcessExecutionError(\"Unexpected error \
    while running command. Command: ['update-locale'] \
    Exit code: 1\")); ('scripts-user', RuntimeError(\
    'Runparts: 1 failures (runcmd) in 1 attempted commands'))
[\x1b[0;32m  OK  \x1b[0m] Stopped target \x1b[0;1;39mcloud-init.target\x1b[0m - Cloud-init target.\r
[   72.840443] reboot: Power down
";

    #[test]
    fn failed_modules_with_their_own_lines() {
        assert_eq!(
            module_failures(FAILED_BAKE),
            [
                ModuleFailure {
                    module: "locale".into(),
                    lines: vec![
                        "Generating locales (this might take a while)...".into(),
                        "Generation complete.".into(),
                        "*** update-locale: Error: invalid locale settings:  LANG=en_US.UTF-8"
                            .into(),
                    ],
                    omitted: 0,
                },
                ModuleFailure {
                    module: "scripts-user".into(),
                    lines: vec![
                        "failing-18ed4189db6bf7c57e6d".into(),
                        "cc_scripts_user.py[WARNING]: Failed to run module scripts-user \
                         (scripts in /var/lib/cloud/instance/scripts)"
                            .into(),
                    ],
                    omitted: 0,
                },
            ]
        );
        assert_eq!(
            module_failures(&FAILED_BAKE.replace(") failed", ") done")),
            []
        );
    }

    #[test]
    fn a_module_that_printed_much_keeps_its_last_lines() {
        let mut console =
            String::from("[ 1.0] cloud-init[9]: Cloud-init v. 22.4.2 running 'modules:final'\n");
        for i in 0..(MODULE_LINES + 7) {
            console.push_str(&format!("[ 2.0] cloud-init[9]: apt line {i}\n"));
        }
        console.push_str(&format!("[ 2.1] cloud-init[9]: {}\n", "x".repeat(5000)));
        console.push_str(
            "[ 3.0] cloud-init[9]: util.py[WARNING]: Running module \
             package-update-upgrade-install (<module>) failed\n",
        );
        let failures = module_failures(&console);
        assert_eq!(failures.len(), 1);
        let failure = &failures[0];
        assert_eq!(failure.module, "package-update-upgrade-install");
        assert_eq!(failure.lines.len(), MODULE_LINES);
        assert_eq!(failure.omitted, 8);
        assert_eq!(failure.lines[0], "apt line 8");
        assert_eq!(
            failure.lines[MODULE_LINES - 1],
            format!("{}...", "x".repeat(LINE_BYTES))
        );
    }

    #[test]
    fn only_cloud_init_lines_count() {
        assert_eq!(
            cloud_init_text("[ 1.0] cloud-init[12]: hello\r"),
            Some("hello")
        );
        assert_eq!(
            cloud_init_text("login: [ 1.0] cloud-init[12]: hi"),
            Some("hi")
        );
        assert_eq!(
            cloud_init_text("<14>Dec  1 22:25:52 cloud-init: ####"),
            None
        );
        assert_eq!(cloud_init_text("[ 1.0] cloud-init[]: x"), None);
        assert_eq!(cloud_init_text("[ 1.0] cloud-init[1a]: x"), None);
        assert_eq!(
            without_log_time("2026-12-01 22:25:52,691 - util.py[WARNING]: x"),
            "util.py[WARNING]: x"
        );
        assert_eq!(
            without_log_time("2026-12-01 22:25:52 691 - x"),
            "2026-12-01 22:25:52 691 - x"
        );
        assert_eq!(without_log_time("short"), "short");
        assert_eq!(
            without_log_time("éééééééééééééééééééééé"),
            "éééééééééééééééééééééé"
        );
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
