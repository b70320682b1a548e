//! Copying the project into a guest and artifacts back out, with the system's rsync over
//! the system's ssh, configured by [`crate::ssh::ClientFiles`] (pinned host key, vmrun's
//! client key). No shell runs on the host: rsync gets its arguments as a vector and splits
//! `-e` itself.

mod filter;

pub use filter::{pull_rules, push_rules};

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::config::SyncConfig;
use crate::ssh::GUEST_HOST;
use crate::tools::{self, MissingTool};

/// rsync's exit code when files vanished while it read them: a project or an artifact
/// directory changing under it is not a failure of the copy.
const RSYNC_VANISHED: i32 = 24;
/// The remote shell's "command not found", passed on by rsync.
const COMMAND_NOT_FOUND: i32 = 127;
/// Prefix of the lines `pull` asks rsync to print for each item it handled.
const ITEM_PREFIX: &[u8] = b"vmrun-item ";

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error(transparent)]
    #[diagnostic(transparent)]
    MissingTool(#[from] MissingTool),
    #[error("the guest has no rsync: add it to bake.packages")]
    #[diagnostic(help("in vmrun.yaml: `bake: {{packages: [rsync]}}`, then bake the image again"))]
    NoRsyncInGuest,
    #[error("rsync could not {action} ({status})\n{stderr}")]
    Rsync {
        action: &'static str,
        status: String,
        stderr: String,
    },
    #[error("cannot run {}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        use crate::exit_code::{INTERNAL, MISSING_TOOL};
        match self {
            Error::MissingTool(_) | Error::NoRsyncInGuest => MISSING_TOOL,
            Error::Rsync { .. } | Error::Spawn { .. } | Error::CreateDir { .. } => INTERNAL,
        }
    }
}

/// Copies the contents of `project` into `remote_dir` in the guest (absolute, or relative
/// to the guest user's home), deleting what else is there. rsync creates `remote_dir` if it
/// is missing, but not its parent, which must exist. Which files go is decided by
/// [`push_rules`].
pub fn push(
    ssh_config: &Path,
    project: &Path,
    remote_dir: &str,
    sync: &SyncConfig,
) -> Result<(), Error> {
    Rsync::find(ssh_config)?.push(project, remote_dir, sync)
}

/// Copies what `globs` match in the guest's `remote_dir` (see [`pull_rules`]) into
/// `local_dir` (created if missing), keeping their paths relative to `remote_dir`. Returns
/// those relative paths, files and links only, sorted.
pub fn pull(
    ssh_config: &Path,
    remote_dir: &str,
    globs: &[String],
    local_dir: &Path,
) -> Result<Vec<PathBuf>, Error> {
    Rsync::find(ssh_config)?.pull(remote_dir, globs, local_dir)
}

/// rsync with its remote shell.
struct Rsync {
    rsync: PathBuf,
    ssh: PathBuf,
    ssh_config: PathBuf,
}

impl Rsync {
    fn find(ssh_config: &Path) -> Result<Rsync, Error> {
        Ok(Rsync {
            rsync: tools::find("rsync")?,
            ssh: tools::find("ssh")?,
            ssh_config: ssh_config.to_owned(),
        })
    }

    fn push(&self, project: &Path, remote_dir: &str, sync: &SyncConfig) -> Result<(), Error> {
        let mut command = self.command();
        command.arg("--delete").args(push_rules(sync));
        command.arg(local(project)).arg(remote(remote_dir));
        self.run(command, "copy the project into the guest")
            .map(drop)
    }

    fn pull(
        &self,
        remote_dir: &str,
        globs: &[String],
        local_dir: &Path,
    ) -> Result<Vec<PathBuf>, Error> {
        std::fs::create_dir_all(local_dir).map_err(|source| Error::CreateDir {
            path: local_dir.to_owned(),
            source,
        })?;
        let mut command = self.command();
        // -ii lists every item, also those already up to date locally; -8 leaves non-ASCII
        // names as they are, so only control characters come escaped.
        command.args(["-ii", "-8", "--prune-empty-dirs"]);
        command.arg(OsStr::from_bytes(
            &[b"--out-format=", ITEM_PREFIX, b"%i %n"].concat(),
        ));
        command.args(pull_rules(globs));
        command.arg(remote(remote_dir)).arg(local(local_dir));
        let stdout = self.run(command, "copy the artifacts out of the guest")?;
        Ok(pulled_files(&stdout))
    }

    /// rsync in archive mode through `ssh -F CONFIG`. Owners and groups are not copied:
    /// files belong to whoever receives them (the guest user; the user running vmrun).
    fn command(&self) -> Command {
        let mut command = Command::new(&self.rsync);
        command.args(["--archive", "--no-owner", "--no-group"]);
        let mut shell = rsync_quote(self.ssh.as_os_str());
        shell.push(" -F ");
        shell.push(rsync_quote(self.ssh_config.as_os_str()));
        command.arg("-e").arg(shell);
        command.stdin(Stdio::null());
        command
    }

    /// Runs rsync to the end; its stdout on success.
    fn run(&self, mut command: Command, action: &'static str) -> Result<Vec<u8>, Error> {
        let output = command.output().map_err(|source| Error::Spawn {
            program: self.rsync.clone(),
            source,
        })?;
        let stderr = String::from_utf8_lossy(&output.stderr)
            .trim_end()
            .to_owned();
        match output.status.code() {
            Some(0 | RSYNC_VANISHED) => Ok(output.stdout),
            code if no_remote_rsync(code, &stderr) => Err(Error::NoRsyncInGuest),
            _ => Err(Error::Rsync {
                action,
                status: output.status.to_string(),
                stderr,
            }),
        }
    }
}

/// Whether rsync failed because the guest's shell found no rsync to run.
fn no_remote_rsync(code: Option<i32>, stderr: &str) -> bool {
    code == Some(COMMAND_NOT_FOUND)
        || stderr.contains("rsync: command not found")
        || stderr.contains("remote command not found")
}

/// `HOST:DIR/`: the trailing slash makes rsync copy into the directory, not below it.
fn remote(dir: &str) -> OsString {
    with_trailing_slash(OsStr::new(&format!("{GUEST_HOST}:{dir}")))
}

/// `DIR/` for a local directory; a relative one starts with `./`, or rsync would take a
/// name like `a:b` for a remote host `a`.
fn local(dir: &Path) -> OsString {
    if dir.is_absolute() {
        with_trailing_slash(dir.as_os_str())
    } else {
        with_trailing_slash(Path::new(".").join(dir).as_os_str())
    }
}

fn with_trailing_slash(path: &OsStr) -> OsString {
    let mut path = path.to_owned();
    if !path.as_bytes().ends_with(b"/") {
        path.push("/");
    }
    path
}

/// One word for rsync's own splitting of `-e` (not a shell's): it splits at spaces outside
/// quotes and has no backslash escapes, so a `'` is closed out of and written inside double
/// quotes, which reads the same in rsync and in a POSIX shell.
fn rsync_quote(word: &OsStr) -> OsString {
    let mut quoted = vec![b'\''];
    for &b in word.as_bytes() {
        if b == b'\'' {
            quoted.extend_from_slice(br#"'"'"'"#);
        } else {
            quoted.push(b);
        }
    }
    quoted.push(b'\'');
    OsString::from_vec(quoted)
}

/// Files and links from rsync's item lines (`PREFIX %i %n`), directories left out.
fn pulled_files(stdout: &[u8]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = stdout
        .split(|&b| b == b'\n')
        .filter_map(|line| line.strip_prefix(ITEM_PREFIX))
        // %i is 11 characters; the second is the item's type.
        .filter(|item| item.len() > 12 && item[1] != b'd')
        .map(|item| PathBuf::from(OsString::from_vec(unescape(&item[12..]))))
        .collect();
    files.sort();
    files
}

/// Undoes rsync's `\#ooo` (octal) escapes of characters it will not print, like newlines.
fn unescape(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        let escape = name
            .get(i..i + 5)
            .filter(|e| e.starts_with(b"\\#") && e[2..].iter().all(|d| (b'0'..=b'7').contains(d)));
        match escape {
            Some(e) => {
                out.push(
                    e[2..]
                        .iter()
                        .fold(0u8, |n, d| n.wrapping_mul(8).wrapping_add(d - b'0')),
                );
                i += 5;
            }
            None => {
                out.push(name[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
