//! Running a host program to completion, with an error that names the program and shows the
//! end of what it printed.

use std::process::{Command, Output};

/// How many trailing lines of a failed program's stderr go into the error.
const STDERR_TAIL_LINES: usize = 20;

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
}

/// Runs `cmd`, capturing its output; a non-zero exit is an error carrying stderr's tail.
pub fn run(cmd: &mut Command) -> Result<Output, ExternalError> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let output = cmd.output().map_err(|source| ExternalError::Spawn {
        program: program.clone(),
        source,
    })?;
    if output.status.success() {
        return Ok(output);
    }
    Err(ExternalError::Failed {
        program,
        status: output.status,
        stderr_tail: tail(&output.stderr),
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
    fn missing_program_is_a_spawn_error() {
        assert!(matches!(
            run(&mut Command::new("/nonexistent/prog")),
            Err(ExternalError::Spawn { .. })
        ));
    }
}
