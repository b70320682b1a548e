//! The line sshd hands to the guest user's shell for a test command.

use std::collections::BTreeMap;

use crate::config::Command;

/// `s` as one word for a POSIX shell: inside single quotes nothing is special, and a single
/// quote itself closes the quotes, is escaped, and reopens them (`'` becomes `'\''`).
/// Shell words cannot hold NUL bytes; a string with one is cut there by the shell.
pub fn sh_quote(s: &str) -> String {
    let mut quoted = String::with_capacity(s.len() + 2);
    quoted.push('\'');
    for c in s.chars() {
        if c == '\'' {
            quoted.push_str(r"'\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// `cd DIR && exec env -- K=V ... sh -c CMD` for a shell command, or `... env -- K=V ... ARGV...`
/// for an argv, every word single-quoted.
///
/// `exec` makes the command the process sshd waits for, so a command killed by a signal is
/// reported as that signal (SSH's exit-signal) rather than as a shell's 128+N, and a signal
/// sent to the session reaches it. `env --` keeps an argv whose program name starts with
/// `-` from being read as an option; env still takes a first argv element containing `=` for
/// a variable, so such a program must be named by a path without `=`.
pub fn remote_command_line(dir: &str, env: &BTreeMap<String, String>, command: &Command) -> String {
    let mut words = vec![
        "cd".to_owned(),
        sh_quote(dir),
        "&&".to_owned(),
        "exec".to_owned(),
        "env".to_owned(),
        "--".to_owned(),
    ];
    words.extend(
        env.iter()
            .map(|(name, value)| sh_quote(&format!("{name}={value}"))),
    );
    words.extend(command.argv().iter().map(|arg| sh_quote(arg)));
    words.join(" ")
}

/// `command_line` as [`super::Session::exec`] sends it: the command reads /dev/null, and a
/// watchdog holds the channel's stdin instead. Closing the channel (at the command's end, or
/// when vmrun abandons it) ends that stdin, and the watchdog then kills the session's
/// process group (sshd makes it one per command), so nothing the command started keeps
/// running. (SSH's own `signal` request cannot do this here: libssh2, through ssh2, refuses
/// any request on a channel once `exec` has been sent.)
pub(super) fn killed_on_close(command_line: &str) -> String {
    format!(
        "exec 3<&0 </dev/null; {{ cat <&3; kill -KILL 0; }} >/dev/null 2>&1 & \
         exec 3<&-; {command_line}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::process::Output;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Runs `line` with the host's sh, as sshd would run it with the guest user's shell.
    fn run_locally(line: &str) -> Output {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(line)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap()
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote(""), "''");
        assert_eq!(sh_quote("plain"), "'plain'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote("$HOME `x` \"y\" \\ *"), "'$HOME `x` \"y\" \\ *'");
    }

    #[test]
    fn shell_and_argv_forms() {
        let vars = env(&[("B", "two words"), ("A", "1")]);
        assert_eq!(
            remote_command_line(
                "/home/vmrun/project",
                &vars,
                &Command::Shell("pytest -q && echo 'ok'".into())
            ),
            concat!(
                r"cd '/home/vmrun/project' && exec env -- 'A=1' 'B=two words' ",
                r"'sh' '-c' 'pytest -q && echo '\''ok'\'''"
            )
        );
        assert_eq!(
            remote_command_line(
                "p",
                &BTreeMap::new(),
                &Command::Argv(vec!["cargo".into(), "test".into()])
            ),
            "cd 'p' && exec env -- 'cargo' 'test'"
        );
    }

    #[test]
    fn runs_in_the_directory_with_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().to_str().unwrap();
        let line = remote_command_line(
            dir,
            &env(&[("GREETING", "it's $HOME")]),
            &Command::Shell("pwd; echo \"$GREETING\"".into()),
        );
        let out = run_locally(&line);
        let expected = format!(
            "{}\nit's $HOME\n",
            std::fs::canonicalize(dir).unwrap().display()
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    }

    #[test]
    fn a_program_named_like_an_option_runs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("-x"), "#!/bin/sh\necho dash-program\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("-x"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let path = format!("{}:/usr/bin:/bin", dir.path().display());
        let line = remote_command_line(
            dir.path().to_str().unwrap(),
            &env(&[("PATH", &path)]),
            &Command::Argv(vec!["-x".into()]),
        );
        assert_eq!(
            String::from_utf8_lossy(&run_locally(&line).stdout),
            "dash-program\n"
        );
    }

    #[test]
    fn exit_status_and_signal_death_reach_the_caller() {
        use std::os::unix::process::ExitStatusExt;
        let out = run_locally(&remote_command_line(
            "/",
            &BTreeMap::new(),
            &Command::Shell("exit 7".into()),
        ));
        assert_eq!(out.status.code(), Some(7));
        // The outer sh execs, so its own process dies of the signal: what sshd reports.
        let out = run_locally(&remote_command_line(
            "/",
            &BTreeMap::new(),
            &Command::Shell("kill -KILL $$".into()),
        ));
        assert_eq!(out.status.signal(), Some(libc::SIGKILL));
    }

    /// Half the characters are ones the shell treats specially, half anything but NUL.
    const WORD: &str = "(['\"\\\\$`!*?;&|<>(){} \t\n=~#-]|[^\u{0}]){0,12}";

    #[test]
    fn closing_stdin_kills_the_command_and_what_it_started() {
        use std::io::{BufRead, BufReader};
        use std::os::unix::process::{CommandExt, ExitStatusExt};
        use std::process::Stdio;
        // A process group of its own, as sshd gives each command: the watchdog kills it.
        let line = killed_on_close(&remote_command_line(
            "/",
            &BTreeMap::new(),
            &Command::Shell("sleep 300 & echo $!; cat; echo stdin-ended; wait".into()),
        ));
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(&line)
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let (mut sleep_pid, mut text) = (String::new(), String::new());
        stdout.read_line(&mut sleep_pid).unwrap();
        stdout.read_line(&mut text).unwrap();
        // The command's own stdin is /dev/null: its `cat` ended at once.
        assert_eq!(text, "stdin-ended\n");
        drop(child.stdin.take());
        let started = std::time::Instant::now();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // The background sleep went with it (gone, or a zombie nobody has reaped yet).
        std::thread::sleep(std::time::Duration::from_millis(100));
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", sleep_pid.trim())).unwrap_or_default();
        assert!(
            stat.is_empty() || stat.contains(") Z "),
            "the command's background sleep outlived it: {stat}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Any argv (no NUL: shell words cannot hold one) comes out exactly: printed
        /// NUL-separated by printf in a directory whose name needs quoting too.
        #[test]
        fn argv_round_trips_through_sh(
            args in proptest::collection::vec(WORD, 0..6),
            dir_name in "(['\"\\\\$` *-]|[^\u{0}/]){1,10}",
            value in WORD,
        ) {
            prop_assume!(dir_name != "." && dir_name != "..");
            let root = tempfile::tempdir().unwrap();
            let dir = root.path().join(&dir_name);
            std::fs::create_dir(&dir).unwrap();
            let mut argv = vec![
                "sh".to_owned(),
                "-c".to_owned(),
                r#"printf '%s\0' "$PWD" "$V" "$@""#.to_owned(),
                "sh".to_owned(),
            ];
            argv.extend(args.iter().cloned());
            let line = remote_command_line(
                dir.to_str().unwrap(),
                &env(&[("V", &value)]),
                &Command::Argv(argv),
            );
            let out = run_locally(&line);
            prop_assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stderr));
            let mut expected = vec![dir.to_str().unwrap().to_owned(), value.clone()];
            expected.extend(args);
            let printed: Vec<String> = out
                .stdout
                .split(|&b| b == 0)
                .map(|w| String::from_utf8(w.to_vec()).unwrap())
                .collect();
            prop_assert_eq!(&printed[..printed.len() - 1], &expected[..]);
        }

        /// A shell command line reaches `sh -c` unchanged.
        #[test]
        fn shell_command_round_trips(word in WORD) {
            let script = format!("printf '%s' {}", sh_quote(&word));
            let out = run_locally(&remote_command_line(
                "/",
                &BTreeMap::new(),
                &Command::Shell(script),
            ));
            prop_assert_eq!(String::from_utf8(out.stdout).unwrap(), word);
        }
    }
}
