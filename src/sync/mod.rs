//! Copying the project into a guest and artifacts back out, with the system's rsync through
//! a [`RemoteShell`] (for a run, vmrun's relay over its own SSH session: see
//! [`crate::ssh::Relay`]). No shell runs on the host: rsync gets its arguments as a vector
//! and splits `-e` itself. Every rsync ends at its deadline or when vmrun is asked to stop (see
//! [`Bounds`]), and gives up on a guest that sends nothing for a minute.
//!
//! Artifacts come from a guest that runs the code under test with root inside: they are
//! hostile input. A pull first lists what the globs match (names, types and sizes; no
//! content crosses), then copies only the regular files whose sizes fit under the cap,
//! watching the bytes as they arrive in case files grew after the listing. rsync may create
//! only files and directories, with ordinary modes (see `options`), in a destination reached
//! without symlinks (see [`Destination`]). The rest is named in [`Pulled::skipped`].

mod bounded;
mod destination;
mod error;
mod filter;
mod options;
mod output;
mod selection;

pub use bounded::Bounds;
pub use destination::Destination;
pub use error::{Error, OverCap};
pub use filter::{pull_rules, push_rules};
pub use output::Kind;
pub use selection::{Skipped, describe_skipped};

use std::ffi::{OsStr, OsString};
use std::ops::ControlFlow;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::config::{ByteSize, SyncConfig};
use crate::guest_text;
use crate::ssh::GUEST_HOST;
use crate::tools;
use bounded::Ending;
use output::{file_item, list_entry, progress_bytes};

/// How long copying the project in, or the artifacts out, may take in all: about 30 GB at
/// the speeds of a loopback forward, and a bound on a guest that sends just often enough
/// not to count as stalled.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// rsync's own `--timeout`: how long it waits for data before giving up (exit 30). A guest
/// whose rsync stalls, or a forward that drops packets after the handshake, fails after
/// this rather than at [`TRANSFER_TIMEOUT`].
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// rsync's exit code when files vanished while it read them: a project or an artifact
/// directory changing under it is not a failure of the copy.
const RSYNC_VANISHED: i32 = 24;
/// rsync's exit code for [`STALL_TIMEOUT`].
const RSYNC_STALLED: i32 = 30;
/// The remote shell's "command not found", passed on by rsync.
const COMMAND_NOT_FOUND: i32 = 127;

/// What a pull copied and what it left in the guest.
#[derive(Debug, Default)]
pub struct Pulled {
    /// Files copied (or already there and the same), relative to the destination, sorted.
    pub files: Vec<PathBuf>,
    /// Their sizes together.
    pub bytes: u64,
    /// Matches that are not regular files or directories: never copied.
    pub skipped: Vec<Skipped>,
    /// Set when the cap stopped the copy; the files before the one named are kept.
    pub over_cap: Option<OverCap>,
}

/// Copies the contents of `project` into `remote_dir` in the guest (absolute, or relative
/// to the guest user's home), deleting what else is there. rsync creates `remote_dir` if it
/// is missing, but not its parent, which must exist. Which files go is decided by
/// [`push_rules`].
pub fn push(
    shell: &RemoteShell,
    project: &Path,
    remote_dir: &str,
    sync: &SyncConfig,
    bounds: &Bounds,
) -> Result<(), Error> {
    Rsync::find(shell)?.push(project, remote_dir, sync, bounds)
}

/// Copies the regular files that `globs` match in the guest's `remote_dir` (see
/// [`pull_rules`]) into `destination` (made when something comes), keeping their paths
/// relative to `remote_dir`, until they add up to more than `cap`.
pub fn pull(
    shell: &RemoteShell,
    remote_dir: &str,
    globs: &[String],
    destination: &Destination,
    cap: ByteSize,
    bounds: &Bounds,
) -> Result<Pulled, Error> {
    Rsync::find(shell)?.pull(remote_dir, globs, destination, cap, bounds)
}

/// rsync's remote shell (`-e`): a program and its first arguments, to which rsync appends
/// the host and the command to run there (`... HOST rsync --server ...`), like ssh's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteShell {
    pub argv: Vec<OsString>,
}

/// rsync with its remote shell.
struct Rsync {
    rsync: PathBuf,
    shell: RemoteShell,
}

impl Rsync {
    fn find(shell: &RemoteShell) -> Result<Rsync, Error> {
        Ok(Rsync {
            rsync: tools::find("rsync")?,
            shell: shell.clone(),
        })
    }

    /// Archive mode into the guest: the project's links, modes and times as they are.
    /// Owners and groups are not copied: files belong to the guest user.
    fn push(
        &self,
        project: &Path,
        remote_dir: &str,
        sync: &SyncConfig,
        bounds: &Bounds,
    ) -> Result<(), Error> {
        let mut command = self.command();
        command.args(["--archive", "--no-owner", "--no-group", "--delete"]);
        command.args(push_rules(sync));
        command.arg(local(project)).arg(remote(remote_dir));
        let action = "copy the project into the guest";
        self.run(&mut command, None, action, bounds, &mut |_| {
            ControlFlow::Continue(())
        })
    }

    /// What the globs match in the guest, as rsync lists it (names sorted per directory).
    fn list(
        &self,
        remote_dir: &str,
        globs: &[String],
        bounds: &Bounds,
    ) -> Result<Vec<output::Entry>, Error> {
        let mut command = self.command();
        command.args(["-r", "--list-only"]).args(pull_rules(globs));
        command.arg(remote(remote_dir));
        let mut entries = Vec::new();
        self.run(
            &mut command,
            None,
            "list the artifacts in the guest",
            bounds,
            &mut |line| {
                entries.extend(list_entry(line));
                ControlFlow::Continue(())
            },
        )?;
        Ok(entries)
    }

    fn pull(
        &self,
        remote_dir: &str,
        globs: &[String],
        destination: &Destination,
        cap: ByteSize,
        bounds: &Bounds,
    ) -> Result<Pulled, Error> {
        let selection = selection::select(self.list(remote_dir, globs, bounds)?, cap);
        let mut pulled = Pulled {
            skipped: selection.skipped,
            over_cap: selection.over_cap,
            ..Pulled::default()
        };
        if selection.files.is_empty() {
            return Ok(pulled);
        }
        let local_dir = destination.prepare()?;
        let mut command = self.command();
        command.args(options::pull_options(options::current_umask()));
        // Exactly the selected files, by name (NUL-separated on stdin); -ii prints an item
        // line for each, also for those already there; progress2 counts the bytes received.
        command.args(["-ii", "--files-from=-", "--from0", "--info=progress2"]);
        command.arg(output::item_format());
        command.arg(remote(remote_dir)).arg(local(&local_dir));
        let names: Vec<u8> = selection
            .files
            .iter()
            .flat_map(|name| name.iter().copied().chain([0]))
            .collect();
        // rsync prints a file's item line before its bytes, so the last one is in flight.
        let (mut done, mut in_flight) = (Vec::new(), None);
        let mut over_cap = None;
        self.run(
            &mut command,
            Some(names),
            "copy the artifacts out of the guest",
            bounds,
            &mut |line| {
                if let Some(item) = file_item(line) {
                    done.extend(in_flight.replace(item));
                } else if let Some(bytes) = progress_bytes(line).filter(|&b| b > cap.bytes()) {
                    let name = in_flight.take().map(|(_, name)| name).unwrap_or_default();
                    over_cap = Some(OverCap {
                        artifact: guest_text::line(&name),
                        total: bytes,
                        cap,
                    });
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            },
        )?;
        done.extend(in_flight);
        pulled.over_cap = over_cap.or(pulled.over_cap);
        pulled.bytes = done.iter().map(|(size, _)| size).sum();
        pulled.files = done
            .into_iter()
            .map(|(_, name)| PathBuf::from(OsString::from_vec(name)))
            .collect();
        pulled.files.sort();
        Ok(pulled)
    }

    /// rsync through the remote shell, with the stall timeout. `-8` leaves non-ASCII names
    /// in its output as they are, so only control characters come escaped; `--no-h` prints
    /// numbers without digit separators.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.rsync);
        command
            .args(["-8", "--no-h"])
            .arg(format!("--timeout={}", STALL_TIMEOUT.as_secs()));
        let words: Vec<OsString> = self.shell.argv.iter().map(|w| rsync_quote(w)).collect();
        command.arg("-e").arg(words.join(OsStr::new(" ")));
        command
    }

    /// Runs rsync within `bounds`, each line of its stdout to `on_line`; a cut by `on_line`
    /// is not an error.
    fn run(
        &self,
        command: &mut Command,
        input: Option<Vec<u8>>,
        action: &'static str,
        bounds: &Bounds,
        on_line: &mut dyn FnMut(&[u8]) -> ControlFlow<()>,
    ) -> Result<(), Error> {
        let ending =
            bounded::run(command, input, bounds, on_line).map_err(|source| Error::Spawn {
                program: self.rsync.clone(),
                source,
            })?;
        match ending {
            Ending::Exited { status, stderr } => match status.code() {
                Some(0 | RSYNC_VANISHED) => Ok(()),
                Some(RSYNC_STALLED) => Err(Error::Stalled {
                    action,
                    idle: STALL_TIMEOUT,
                }),
                code if no_remote_rsync(code, &stderr) => Err(Error::NoRsyncInGuest),
                _ => {
                    let stderr = stderr
                        .lines()
                        .map(guest_text::line)
                        .collect::<Vec<_>>()
                        .join("\n");
                    Err(Error::Rsync {
                        action,
                        status: status.to_string(),
                        stderr,
                    })
                }
            },
            Ending::Cut => Ok(()),
            Ending::TimedOut => Err(Error::TimedOut {
                action,
                limit: bounds.timeout,
            }),
            Ending::Stopped(stop) => Err(stop.into()),
        }
    }
}

/// Whether rsync failed because the guest's shell found no rsync to run.
fn no_remote_rsync(code: Option<i32>, stderr: &str) -> bool {
    // rsync 3.5 (bookworm's security update) passes on the shell's own words, `rsync: not found`.
    code == Some(COMMAND_NOT_FOUND)
        || [
            "rsync: command not found",
            "remote command not found",
            "rsync: not found",
        ]
        .iter()
        .any(|said| stderr.contains(said))
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

#[cfg(test)]
mod tests;
