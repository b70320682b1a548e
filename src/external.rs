//! Running a host program to completion, with an error that names the program and shows the
//! end of what it printed. The program runs in a process group of its own, which is ended
//! when vmrun is asked to stop or the program outlives its deadline.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::wait::{Stop, Watch};

/// How many trailing lines of a failed program's stderr go into the error.
const STDERR_TAIL_LINES: usize = 20;
/// The longest any one program may run (building a Debian root file system is the longest).
const TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// How often the program is looked at.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ExternalError {
    #[error("could not start `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{program}` failed ({status})\n{stderr_tail}")]
    Failed {
        program: String,
        status: std::process::ExitStatus,
        stderr_tail: String,
    },
    #[error("`{program}` did not finish within {}s, and was stopped", TIMEOUT.as_secs())]
    TimedOut { program: String },
    #[error("cannot wait for `{program}`")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Stopped(#[from] Stop),
}

/// Runs `cmd`, capturing its output; a non-zero exit is an error carrying stderr's tail.
pub fn run(cmd: &mut Command) -> Result<Output, ExternalError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let failed = |source| ExternalError::Wait {
        program: program.clone(),
        source,
    };
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| ExternalError::Spawn {
            program: program.clone(),
            source,
        })?;
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let waited = Watch::signals().until(Instant::now() + TIMEOUT, POLL, || {
        Ok::<_, Stop>(crate::child::peek_exit(child.id()))
    });
    let status = crate::child::end_group(&mut child).map_err(failed)?;
    match waited {
        Err(stop) => return Err(stop.into()),
        Ok(None) => return Err(ExternalError::TimedOut { program }),
        Ok(Some(_)) => {}
    }
    let output = Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    if output.status.success() {
        return Ok(output);
    }
    Err(ExternalError::Failed {
        program,
        status: output.status,
        stderr_tail: tail(&output.stderr),
    })
}

/// Reads a pipe to its end in a thread of its own, so neither pipe can fill and block the
/// program while the other is read.
fn read_all(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_carries_program_and_stderr_tail() {
        let err =
            run(Command::new("sh").args(["-c", "echo one >&2; echo two >&2; exit 3"])).unwrap_err();
        let ExternalError::Failed {
            program,
            status,
            stderr_tail,
        } = err
        else {
            panic!("wrong variant")
        };
        assert_eq!(program, "sh");
        assert_eq!(status.code(), Some(3));
        assert_eq!(stderr_tail, "one\ntwo");
    }

    #[test]
    fn tail_keeps_only_the_last_lines() {
        let many: String = (0..50).map(|i| format!("l{i}\n")).collect();
        let t = tail(many.as_bytes());
        assert!(t.starts_with("l30\n") && t.ends_with("l49"), "{t}");
    }

    #[test]
    fn output_comes_back_whole() {
        let out = run(Command::new("sh").args(["-c", "seq 100000; seq 3 >&2"])).unwrap();
        assert_eq!(
            out.stdout.len(),
            (1..=100000)
                .map(|n: u32| n.to_string().len() + 1)
                .sum::<usize>()
        );
        assert_eq!(out.stderr, b"1\n2\n3\n");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        assert!(matches!(
            run(&mut Command::new("/nonexistent/prog")),
            Err(ExternalError::Spawn { .. })
        ));
    }
}
