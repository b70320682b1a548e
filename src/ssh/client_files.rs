//! Files that let the system's ssh (`vmrun ssh`, `vmrun vm ssh`) reach a guest exactly as
//! vmrun's own connections do: only the pinned host key is accepted, only vmrun's client key
//! is offered.

use crate::path_error::PathError;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Error, Target, USER};

/// The host name to give ssh with [`ClientFiles::ssh_config`] (`ssh -F CONFIG guest`). The
/// config applies to every name, so any other works too; this one reads well in commands.
pub const GUEST_HOST: &str = "guest";

/// The written files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFiles {
    pub ssh_config: PathBuf,
    pub known_hosts: PathBuf,
}

/// The known_hosts line that pins `host_key_line` for the forwarded port
/// (`[127.0.0.1]:PORT ssh-ed25519 AAAA...`; the key's comment is dropped).
pub fn known_hosts_line(port: u16, host_key_line: &str) -> String {
    let key: Vec<&str> = host_key_line.split_whitespace().take(2).collect();
    format!("[127.0.0.1]:{port} {}", key.join(" "))
}

/// The system ssh's arguments with the files at `ssh_config`: `command` is one remote
/// command, each word quoted for the guest's shell so it arrives as the same argv; none, a
/// login shell.
pub fn system_ssh_args(ssh_config: &Path, command: &[String]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["-F".into(), ssh_config.as_os_str().to_owned()];
    // `--`: nothing after it is taken as an option of ssh's.
    args.extend(["--".into(), GUEST_HOST.into()]);
    args.extend(command.iter().map(|word| super::sh_quote(word).into()));
    args
}

impl ClientFiles {
    pub const SSH_CONFIG: &str = "ssh_config";
    pub const KNOWN_HOSTS: &str = "known_hosts";

    /// Writes `known_hosts` and `ssh_config` for `target` into `dir` (created 0700 if
    /// missing), both 0600. The client key path must be absolute: ssh would resolve a
    /// relative one against its own working directory.
    pub fn write(dir: &Path, target: &Target) -> Result<ClientFiles, Error> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(PathError::at("create", dir))?;
        let files = ClientFiles {
            ssh_config: dir.join(Self::SSH_CONFIG),
            known_hosts: dir.join(Self::KNOWN_HOSTS),
        };
        write_private(
            &files.known_hosts,
            &(known_hosts_line(target.port, &target.host_key) + "\n"),
        )?;
        let config = render_ssh_config(target.port, &target.client_key, &files.known_hosts)?;
        write_private(&files.ssh_config, &config)?;
        Ok(files)
    }
}

/// The ssh_config text. `StrictHostKeyChecking yes` with a known_hosts file of one line is
/// what pins the key; the system-wide known hosts are ignored so no other line can match.
/// Keepalives end a connection to a guest that stopped answering instead of hanging.
/// Key exchange is curve25519: the default hybrid post-quantum exchange costs an emulated
/// guest about a second more per connection, and these connections never leave the host.
fn render_ssh_config(port: u16, client_key: &Path, known_hosts: &Path) -> Result<String, Error> {
    Ok(format!(
        "# Written by vmrun for one VM.\n\
         Host *\n\
         \x20 HostName 127.0.0.1\n\
         \x20 Port {port}\n\
         \x20 User {USER}\n\
         \x20 IdentitiesOnly yes\n\
         \x20 IdentityFile {}\n\
         \x20 UserKnownHostsFile {}\n\
         \x20 GlobalKnownHostsFile none\n\
         \x20 StrictHostKeyChecking yes\n\
         \x20 UpdateHostKeys no\n\
         \x20 BatchMode yes\n\
         \x20 LogLevel ERROR\n\
         \x20 ServerAliveInterval 10\n\
         \x20 ServerAliveCountMax 6\n\
         \x20 KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org\n",
        config_path(client_key)?,
        config_path(known_hosts)?,
    ))
}

/// A path as one ssh_config argument: double-quoted, with `"` and `\` escaped for ssh's
/// argument splitter and `%` doubled, since ssh expands `%` tokens in these paths.
fn config_path(path: &Path) -> Result<String, Error> {
    let unusable = || Error::UnusablePath {
        path: path.to_owned(),
    };
    let text = path.to_str().ok_or_else(unusable)?;
    if !path.is_absolute() || text.contains(['\n', '\r', '\0']) {
        return Err(unusable());
    }
    let mut quoted = String::from("\"");
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            '%' => quoted.push_str("%%"),
            _ => quoted.push(c),
        }
    }
    quoted.push('"');
    Ok(quoted)
}

fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    let io = |source| Error::Io(PathError::at("write", path)(source));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_ssh_gets_the_config_and_quoted_words() {
        let command = ["uname".to_owned(), "-a".to_owned(), "it's $HOME".to_owned()];
        let text: Vec<String> = system_ssh_args(Path::new("/s/db/ssh/ssh_config"), &command)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            text.join(" "),
            "-F /s/db/ssh/ssh_config -- guest 'uname' '-a' 'it'\\''s $HOME'"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    const KEY: &str = "ssh-ed25519 \
                       AAAAC3NzaC1lZDI1NTE5AAAAIGq2hWgF0dJx3jZ0b3nC0Gf6E0U1Jw3b8r3fY0gQm6x1 \
                       vmrun host";

    #[test]
    fn known_hosts_line_pins_the_port_and_drops_the_comment() {
        assert_eq!(
            known_hosts_line(40022, KEY),
            "[127.0.0.1]:40022 ssh-ed25519 \
             AAAAC3NzaC1lZDI1NTE5AAAAIGq2hWgF0dJx3jZ0b3nC0Gf6E0U1Jw3b8r3fY0gQm6x1"
        );
    }

    #[test]
    fn ssh_config_rendering() {
        let text = render_ssh_config(
            2222,
            Path::new("/keys/client"),
            Path::new("/run/a/known_hosts"),
        )
        .unwrap();
        assert_eq!(
            text,
            "# Written by vmrun for one VM.\nHost *\n  HostName 127.0.0.1\n  Port 2222\n  \
             User vmrun\n  IdentitiesOnly yes\n  IdentityFile \"/keys/client\"\n  \
             UserKnownHostsFile \"/run/a/known_hosts\"\n  GlobalKnownHostsFile none\n  \
             StrictHostKeyChecking yes\n  UpdateHostKeys no\n  BatchMode yes\n  \
             LogLevel ERROR\n  ServerAliveInterval 10\n  ServerAliveCountMax 6\n  \
             KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org\n"
        );
        assert_eq!(
            config_path(Path::new(r#"/a "b" %c\d"#)).unwrap(),
            r#""/a \"b\" %%c\\d""#
        );
        assert!(matches!(
            config_path(Path::new("relative")),
            Err(Error::UnusablePath { .. })
        ));
        assert!(matches!(
            config_path(Path::new("/new\nline")),
            Err(Error::UnusablePath { .. })
        ));
    }

    /// ssh itself reads the files back (`ssh -G` prints the resolved configuration without
    /// connecting), from a directory whose name needs every kind of quoting.
    #[test]
    fn system_ssh_reads_the_paths_back() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(r#"run "1" it's %h\x"#);
        let target = Target {
            port: 40022,
            host_key: KEY.into(),
            client_key: dir.join("client key"),
        };
        let files = ClientFiles::write(&dir, &target).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        for file in [&files.ssh_config, &files.known_hosts] {
            assert_eq!(
                fs::metadata(file).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(
            fs::read_to_string(&files.known_hosts).unwrap(),
            known_hosts_line(40022, KEY) + "\n"
        );

        let out = Command::new("ssh")
            .arg("-G")
            .arg("-F")
            .arg(&files.ssh_config)
            .arg(GUEST_HOST)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let resolved = String::from_utf8(out.stdout).unwrap();
        let has = |line: String| {
            assert!(
                resolved.lines().any(|l| l == line),
                "no `{line}` in:\n{resolved}"
            )
        };
        has("hostname 127.0.0.1".into());
        has("port 40022".into());
        has("user vmrun".into());
        has("stricthostkeychecking true".into());
        has("batchmode yes".into());
        has(format!(
            "userknownhostsfile {}",
            files.known_hosts.display()
        ));
        // ssh -G prints identity files before expanding their `%` tokens.
        has(format!(
            "identityfile {}",
            dir.join("client key")
                .display()
                .to_string()
                .replace('%', "%%")
        ));
    }
}
