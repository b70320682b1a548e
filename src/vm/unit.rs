//! The systemd user unit of a persistent VM, rendered from `templates/vmrun-vm.service` by
//! pure functions. Every path and argument goes through systemd's own quoting (never a shell),
//! so a home directory with spaces, quotes, `%` or `$` reaches QEMU exactly as it is.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

const TEMPLATE: &str = include_str!("../../templates/vmrun-vm.service");

/// A value that systemd's unit syntax cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
#[error("{what} `{}` cannot be written into a systemd unit: {reason}", value.display())]
#[diagnostic(help(
    "move it (or VMRUN_HOME) to a path without quotes, backslashes or control characters"
))]
pub struct Unquotable {
    pub what: &'static str,
    pub value: PathBuf,
    pub reason: &'static str,
}

/// What the unit runs, each command as an argv (program first).
#[derive(Debug, Clone, PartialEq)]
pub struct UnitSpec {
    pub vm: String,
    /// Makes the VM's runtime directory (sockets), which is gone after a reboot.
    pub prepare: Vec<OsString>,
    /// QEMU.
    pub run: Vec<OsString>,
    /// Asks the guest to power off and waits for QEMU to exit.
    pub stop: Vec<OsString>,
    /// Where QEMU's own messages go.
    pub qemu_log: PathBuf,
    /// How long a clean shutdown may take before systemd kills QEMU.
    pub stop_timeout: Duration,
}

/// The unit file's text.
pub fn render(spec: &UnitSpec) -> Result<String, Unquotable> {
    let fields = [
        ("{{vm}}", spec.vm.clone()),
        ("{{prepare}}", exec_line("", &spec.prepare)?),
        ("{{run}}", exec_line("", &spec.run)?),
        // `-`: when the stop helper itself fails, systemd goes on to stop QEMU by signal.
        ("{{stop}}", exec_line("-", &spec.stop)?),
        ("{{qemu_log}}", path_value("QEMU's log", &spec.qemu_log)?),
        ("{{stop_timeout}}", spec.stop_timeout.as_secs().to_string()),
    ];
    let mut text = TEMPLATE.to_owned();
    for (placeholder, value) in fields {
        debug_assert!(
            text.contains(placeholder),
            "{placeholder} is in the template"
        );
        text = text.replace(placeholder, &value);
    }
    Ok(text)
}

/// An `Exec*=` line: `prefix` (e.g. `-`) and the program, then each argument quoted.
pub fn exec_line(prefix: &str, argv: &[OsString]) -> Result<String, Unquotable> {
    let (program, args) = argv.split_first().expect("a command has a program");
    let mut line = executable(prefix, Path::new(program))?;
    for arg in args {
        // systemd would run it, but could not report the unit's properties over D-Bus, so
        // no `systemctl show` (and no vmrun command) would work on the VM.
        let text = arg.to_str().ok_or_else(|| Unquotable {
            what: "the argument",
            value: arg.into(),
            reason: "it is not UTF-8 (systemd cannot report a unit that runs it)",
        })?;
        line.push(' ');
        line.push_str(&argument(text));
    }
    Ok(line)
}

/// The program of an `Exec*=` line. systemd refuses quotes, backslashes and control
/// characters in it (even escaped) and does not expand `$` there; `%` is a specifier.
fn executable(prefix: &str, program: &Path) -> Result<String, Unquotable> {
    let unquotable = |reason| Unquotable {
        what: "the program",
        value: program.to_owned(),
        reason,
    };
    let text = program.to_str().ok_or(unquotable("it is not UTF-8"))?;
    if !program.is_absolute() {
        return Err(unquotable("it is not an absolute path"));
    }
    if text
        .chars()
        .any(|c| matches!(c, '"' | '\'' | '\\') || c.is_control())
    {
        return Err(unquotable(
            "systemd does not run programs whose path has quotes, backslashes \
             or control characters",
        ));
    }
    let word = format!("{prefix}{}", text.replace('%', "%%"));
    Ok(if word.contains(char::is_whitespace) {
        format!("\"{word}\"")
    } else {
        word
    })
}

/// One argument after the program: as is when plain, else double-quoted with C escapes
/// (control characters as `\xNN`). `%` (specifiers) and `$` (environment variables) are
/// doubled either way.
pub fn argument(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./,:=+@%$".contains(&b));
    let mut out = String::with_capacity(text.len() + 2);
    if !plain {
        out.push('"');
    }
    for c in text.chars() {
        match c {
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if c.is_control() => c
                .encode_utf8(&mut [0; 4])
                .bytes()
                .for_each(|b| out.push_str(&format!("\\x{b:02x}"))),
            c => out.push(c),
        }
    }
    if !plain {
        out.push('"');
    }
    out
}

/// A path as a setting's whole value (`StandardOutput=append:PATH`): taken literally, except
/// `%` specifiers; a line break would end the setting.
fn path_value(what: &'static str, path: &Path) -> Result<String, Unquotable> {
    let unquotable = |reason| Unquotable {
        what,
        value: path.to_owned(),
        reason,
    };
    let text = path.to_str().ok_or(unquotable("it is not UTF-8"))?;
    if text.chars().any(char::is_control) {
        return Err(unquotable("it has control characters"));
    }
    if text.ends_with(char::is_whitespace) {
        return Err(unquotable("it ends with white space"));
    }
    Ok(text.replace('%', "%%"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(items: &[&str]) -> Vec<OsString> {
        items.iter().map(OsString::from).collect()
    }

    fn spec(dir: &str) -> UnitSpec {
        UnitSpec {
            vm: "db".into(),
            prepare: os(&["/usr/bin/mkdir", "-p", &format!("{dir}/run/vms/db")]),
            run: os(&[
                "/usr/bin/qemu-system-x86_64",
                "-drive",
                &format!("file={dir}/state/vms/db/disk.qcow2,if=virtio"),
            ]),
            stop: os(&[
                "/usr/local/bin/vmrun",
                "vm",
                "powerdown",
                "--qmp",
                &format!("{dir}/run/vms/db/qmp.sock"),
            ]),
            qemu_log: format!("{dir}/state/vms/db/qemu.log").into(),
            stop_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn plain_paths_stay_readable() {
        let unit = render(&spec("/home/ann/.local/state/vmrun")).unwrap();
        assert!(unit.contains("\nDescription=vmrun VM db\n"), "{unit}");
        assert!(
            unit.contains(
                "\nExecStartPre=/usr/bin/mkdir -p /home/ann/.local/state/vmrun/run/vms/db\n"
            ),
            "{unit}"
        );
        assert!(
            unit.contains(
                "\nExecStart=/usr/bin/qemu-system-x86_64 -drive \
                 file=/home/ann/.local/state/vmrun/state/vms/db/disk.qcow2,if=virtio\n"
            ),
            "{unit}"
        );
        assert!(
            unit.contains("\nExecStop=-/usr/local/bin/vmrun vm powerdown --qmp /home/ann/"),
            "{unit}"
        );
        assert!(
            unit.contains(
                "\nStandardOutput=append:/home/ann/.local/state/vmrun/state/vms/db/qemu.log\n"
            ),
            "{unit}"
        );
        assert!(unit.contains("\nTimeoutStopSec=60\n"), "{unit}");
        assert!(unit.contains("\nWantedBy=default.target\n"), "{unit}");
        assert!(!unit.contains("{{"), "every placeholder filled: {unit}");
    }

    #[test]
    fn odd_paths_are_quoted_the_way_systemd_unquotes() {
        let unit = render(&spec("/home/a b/it's \"x\" 100%/$HOME\\")).unwrap();
        assert!(
            unit.contains(
                r#"ExecStartPre=/usr/bin/mkdir -p "/home/a b/it's \"x\" 100%%/$$HOME\\/run/vms/db""#
            ),
            "{unit}"
        );
        assert!(
            unit.contains(
                r#"StandardOutput=append:/home/a b/it's "x" 100%%/$HOME\/state/vms/db/qemu.log"#
            ),
            "{unit}"
        );
    }

    #[test]
    fn arguments() {
        assert_eq!(argument("-m"), "-m");
        assert_eq!(
            argument("file=/a/b.qcow2,if=virtio"),
            "file=/a/b.qcow2,if=virtio"
        );
        assert_eq!(argument("50%"), "50%%");
        assert_eq!(argument("$HOME"), "$$HOME");
        assert_eq!(argument(""), r#""""#);
        assert_eq!(argument(";"), r#"";""#);
        assert_eq!(argument("a b"), r#""a b""#);
        assert_eq!(argument("it's"), r#""it's""#);
        assert_eq!(
            argument("tab\there\nnl\u{85}"),
            r#""tab\x09here\x0anl\xc2\x85""#
        );
        assert_eq!(argument("café"), "\"café\"");
    }

    #[test]
    fn programs() {
        assert_eq!(
            exec_line("-", &os(&["/opt/my apps/vmrun", "x"])).unwrap(),
            r#""-/opt/my apps/vmrun" x"#
        );
        assert_eq!(
            exec_line("", &os(&["/opt/100%/q"])).unwrap(),
            "/opt/100%%/q"
        );
        assert_eq!(
            exec_line("", &os(&["/opt/$x/q"])).unwrap(),
            "/opt/$x/q",
            "$ is literal in the program"
        );
        for bad in [
            "/opt/it's/q",
            "/opt/\"/q",
            "/opt/a\\b/q",
            "/opt/a\nb/q",
            "relative/q",
        ] {
            assert!(exec_line("", &os(&[bad])).is_err(), "{bad:?}");
        }
        use std::os::unix::ffi::OsStringExt;
        let not_text = vec!["/bin/q".into(), OsString::from_vec(b"a\xffb".to_vec())];
        assert_eq!(
            exec_line("", &not_text).unwrap_err().reason,
            "it is not UTF-8 (systemd cannot report a unit that runs it)"
        );
    }

    #[test]
    fn log_paths_with_line_breaks_are_refused() {
        let mut s = spec("/home/x");
        s.qemu_log = "/home/x\n[Service]\nExecStart=/bin/evil".into();
        let err = render(&s).unwrap_err();
        assert_eq!(err.reason, "it has control characters");
    }
}
