//! The rsync options that decide what copying artifacts out may create on the host. Each was
//! checked with the real rsync, as root, against a tree holding device nodes, a FIFO, a
//! socket, symlinks out of the tree, setuid/setgid files and 0777/sticky directories, and
//! against a destination holding a setuid file and symlinks (rsync's manual alone is not
//! enough: see `--chmod` below).

/// Options for a pull, for a process whose umask is `umask`:
/// - `-t` keeps modification times. No `--archive`: it means `-rlptgoD`, and `-l` makes
///   symlinks (to anywhere), `-D` device nodes, FIFOs and sockets (as root), `-o`/`-g` the
///   guest's owners (as root) and `-p` the guest's modes (a 0755 directory came back 0777).
/// - `--no-links --no-devices --no-specials --no-owner --no-group`: the receiving rsync (ours)
///   then skips such files ("skipping non-regular file"), whatever the guest's rsync sends.
/// - `--perms` with `--chmod=a=rX,u+w,a-st` and the umask's bits taken away: files 0644,
///   executables and directories 0755, then the umask. `--chmod=ugo=rX` alone keeps setuid,
///   setgid and sticky bits (hence `a-st`), and with `--no-perms` a file already in the
///   destination keeps its mode, setuid too, while its content is replaced by the guest's.
///   The receiving side applies `--chmod` (rsync does not pass it to the sender).
pub fn pull_options(umask: u32) -> Vec<String> {
    [
        "-t",
        "--perms",
        "--no-links",
        "--no-devices",
        "--no-specials",
        "--no-owner",
        "--no-group",
    ]
    .into_iter()
    .map(String::from)
    .chain([format!("--chmod={}", chmod(umask))])
    .collect()
}

/// `a=rX,u+w,a-st`, then `u-…,g-…,o-…` for the bits `umask` masks.
fn chmod(umask: u32) -> String {
    let mut spec = "a=rX,u+w,a-st".to_owned();
    for (who, shift) in [('u', 6), ('g', 3), ('o', 0)] {
        let bits: String = [('r', 4), ('w', 2), ('x', 1)]
            .into_iter()
            .filter(|(_, bit)| umask >> shift & bit != 0)
            .map(|(letter, _)| letter)
            .collect();
        if !bits.is_empty() {
            spec += &format!(",{who}-{bits}");
        }
    }
    spec
}

/// This process's umask, from `/proc/self/status`: umask(2) can only read it by setting it,
/// which would race with other threads creating files. Where it cannot be read, 077: the
/// strictest guess.
pub fn current_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
            u32::from_str_radix(line.trim(), 8).ok()
        })
        .unwrap_or(0o077)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_takes_the_umask_away() {
        assert_eq!(chmod(0), "a=rX,u+w,a-st");
        assert_eq!(chmod(0o022), "a=rX,u+w,a-st,g-w,o-w");
        assert_eq!(chmod(0o027), "a=rX,u+w,a-st,g-w,o-rwx");
        assert_eq!(chmod(0o277), "a=rX,u+w,a-st,u-w,g-rwx,o-rwx");
    }

    #[test]
    fn pull_options_in_full() {
        assert_eq!(
            pull_options(0o022),
            [
                "-t",
                "--perms",
                "--no-links",
                "--no-devices",
                "--no-specials",
                "--no-owner",
                "--no-group",
                "--chmod=a=rX,u+w,a-st,g-w,o-w"
            ]
        );
    }

    #[test]
    fn reads_this_process_umask() {
        // A child inherits the umask; setting ours here would race with other tests.
        let out = std::process::Command::new("sh")
            .args(["-c", "umask"])
            .output()
            .unwrap();
        let shown = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            current_umask(),
            u32::from_str_radix(shown.trim(), 8).unwrap()
        );
    }
}
