//! push and pull through the real rsync, with a stand-in for ssh that runs the remote
//! command on this machine in a directory playing the guest user's home. The filter rules,
//! the `-e` quoting, the listing, the options and what rsync makes of a hostile tree are
//! rsync's real behaviour; only the network is not. Run as root (as CI runs vmrun), the
//! hostile tree also holds device nodes.

use super::*;
use crate::ssh::sh_quote;
use crate::wait::{Stop, Watch};
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt, symlink};
use std::time::Instant;

/// The guest's rsync.
enum GuestRsync {
    Real,
    Missing,
    /// A shell script in its place, with the system's PATH; `$REAL` in it is the real rsync.
    Script(&'static str),
}

struct FakeGuest {
    root: tempfile::TempDir,
    home: PathBuf,
    rsync: Rsync,
    /// Where the stand-in ssh records the `-F` path it was given (a word of its remote shell
    /// that needs quoting).
    seen_config: PathBuf,
}

/// Bounds no working transfer here reaches.
fn bounds() -> Bounds<'static> {
    Bounds::new(Duration::from_secs(60), Watch::signals())
}

const MIB: ByteSize = ByteSize::from_bytes(1 << 20);

impl FakeGuest {
    fn new(guest_rsync: GuestRsync) -> FakeGuest {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        let bin = root.path().join("guest bin");
        fs::create_dir_all(&home).unwrap();
        fs::create_dir_all(&bin).unwrap();
        let real = tools::find("rsync").unwrap();
        match guest_rsync {
            GuestRsync::Real => symlink(&real, bin.join("rsync")).unwrap(),
            GuestRsync::Missing => {}
            GuestRsync::Script(script) => {
                let script = script.replace("$REAL", &sh_quote(real.to_str().unwrap()));
                write_executable(
                    &bin.join("rsync"),
                    &format!("#!/bin/sh\nPATH=/usr/bin:/bin\n{script}\n"),
                );
            }
        }
        let seen_config = root.path().join("seen-config");
        // Called as `ssh -F CONFIG HOST COMMAND...`; runs COMMAND like sshd would.
        let ssh = root.path().join("fake ssh");
        write_executable(
            &ssh,
            &format!(
                "#!/bin/sh\n[ \"$1\" = -F ] || exit 90\nprintf '%s' \"$2\" > {seen}\nshift 3\n\
                 cd {home} && PATH={bin} exec /bin/sh -c \"$*\"\n",
                seen = sh_quote(seen_config.to_str().unwrap()),
                home = sh_quote(home.to_str().unwrap()),
                bin = sh_quote(bin.to_str().unwrap()),
            ),
        );
        let ssh_config = root.path().join("run 'one'/ssh_config");
        let rsync = Rsync {
            rsync: real,
            shell: RemoteShell {
                argv: vec![ssh.into(), "-F".into(), ssh_config.into()],
            },
        };
        FakeGuest {
            root,
            home,
            rsync,
            seen_config,
        }
    }

    /// A destination in the fake guest's scratch space (the host side).
    fn destination(&self, name: &str) -> Destination {
        Destination::new(&self.root.path().join(name), &[self.root.path()])
    }
}

fn write_executable(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Every file under `dir`, relative, as strings.
fn files_under(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.insert(
                    path.strip_prefix(base)
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_owned(),
                );
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// Every entry under `dir` (not following links) with its type and permission bits.
fn modes_under(dir: &Path) -> Vec<(String, char, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let kind = match meta.file_type() {
                t if t.is_dir() => 'd',
                t if t.is_file() => 'f',
                _ => '?',
            };
            if kind == 'd' {
                stack.push(path.clone());
            }
            let name = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((name, kind, meta.permissions().mode() & 0o7777));
        }
    }
    out.sort();
    out
}

fn write(root: &Path, files: &[&str]) {
    for file in files {
        let path = root.join(file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, format!("content of {file}")).unwrap();
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no failure modes.
    unsafe { libc::geteuid() == 0 }
}

fn alive(pid: &str) -> bool {
    let stat = fs::read_to_string(format!("/proc/{}/stat", pid.trim())).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

#[test]
fn push_follows_gitignore_include_and_exclude_and_never_copies_git() {
    let guest = FakeGuest::new(GuestRsync::Real);
    let project = tempfile::tempdir().unwrap();
    write(
        project.path(),
        &[
            ".git/config",
            "sub/.git",
            "a file with spaces.txt",
            "it's quoted.txt",
            "debug.log",
            "keep.log",
            "build/out.o",
            "dist/pkg.tar",
            "target/debug/x",
            "src/main.rs",
            "src/notes.tmp",
            "sub/ok.txt",
            "sub/secret.txt",
            "sub/deeper/secret.txt",
        ],
    );
    fs::write(project.path().join(".gitignore"), "*.log\nbuild/\ndist/\n").unwrap();
    fs::write(project.path().join("sub/.gitignore"), "secret.txt\n").unwrap();
    // Left in the guest by an earlier push: removed.
    write(&guest.home.join("work dir"), &["stale.txt"]);

    let sync = SyncConfig {
        include: strings(&["keep.log", "dist/"]),
        exclude: strings(&["target/", "*.tmp"]),
    };
    guest
        .rsync
        .push(project.path(), "work dir", &sync, &bounds())
        .unwrap();

    assert_eq!(
        files_under(&guest.home.join("work dir")),
        set(&[
            ".gitignore",
            "a file with spaces.txt",
            "it's quoted.txt",
            "keep.log",
            "dist/pkg.tar",
            "src/main.rs",
            "sub/.gitignore",
            "sub/ok.txt",
        ])
    );
    assert_eq!(
        fs::read_to_string(guest.home.join("work dir/it's quoted.txt")).unwrap(),
        "content of it's quoted.txt"
    );
    // rsync split `-e` back into its words, quote and space included.
    assert_eq!(
        fs::read_to_string(&guest.seen_config).unwrap(),
        guest.rsync.shell.argv[2].to_str().unwrap()
    );
}

#[test]
fn push_creates_the_directory_but_not_its_parent() {
    let guest = FakeGuest::new(GuestRsync::Real);
    let project = tempfile::tempdir().unwrap();
    write(project.path(), &["a"]);
    guest
        .rsync
        .push(project.path(), "project", &SyncConfig::default(), &bounds())
        .unwrap();
    assert_eq!(files_under(&guest.home.join("project")), set(&["a"]));
    let err = guest
        .rsync
        .push(
            project.path(),
            "deep/er/project",
            &SyncConfig::default(),
            &bounds(),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Rsync {
                action: "copy the project into the guest",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("deep/er/project"), "{err}");
}

#[test]
fn pull_copies_what_the_globs_match_and_lists_it() {
    let guest = FakeGuest::new(GuestRsync::Real);
    write(
        &guest.home.join("project"),
        &[
            "junit.xml",
            "a/junit.xml",
            "a/b/junit.xml",
            "a/b/other.txt",
            "coverage/index.html",
            "coverage/css/style.css",
            "logs/run 1.log",
            "logs/skip.txt",
            "line\nbreak.xml",
            "src/main.rs",
        ],
    );
    let out = guest.destination("artifacts");
    let globs = strings(&["**/junit.xml", "coverage", "logs/*.log", "*.xml"]);
    let pulled = guest
        .rsync
        .pull("project", &globs, &out, MIB, &bounds())
        .unwrap();
    let expected = [
        "a/b/junit.xml",
        "a/junit.xml",
        "coverage/css/style.css",
        "coverage/index.html",
        "junit.xml",
        "line\nbreak.xml",
        "logs/run 1.log",
    ];
    assert_eq!(
        pulled.files,
        expected.iter().map(PathBuf::from).collect::<Vec<_>>()
    );
    let sizes: u64 = expected
        .iter()
        .map(|f| format!("content of {f}").len() as u64)
        .sum();
    assert_eq!(pulled.bytes, sizes);
    assert!(pulled.skipped.is_empty() && pulled.over_cap.is_none());
    assert_eq!(files_under(&out.path()), set(&expected));
    assert_eq!(
        fs::read_to_string(out.path().join("a/b/junit.xml")).unwrap(),
        "content of a/b/junit.xml"
    );

    // Again: nothing changes, and everything is still listed as there.
    assert_eq!(
        guest
            .rsync
            .pull("project", &globs, &out, MIB, &bounds())
            .unwrap()
            .files
            .len(),
        expected.len()
    );
    // Nothing matches: nothing comes, no directory is made, and that is not an error.
    let empty = guest.destination("empty");
    let pulled = guest
        .rsync
        .pull("project", &strings(&["*.none"]), &empty, MIB, &bounds())
        .unwrap();
    assert!(pulled.files.is_empty() && pulled.bytes == 0);
    assert!(!empty.path().exists());
}

/// What a guest with root can leave where the globs look: only regular files and
/// directories come back, with ordinary modes; the rest is named. Files and links already
/// in the destination are replaced, never written through.
#[test]
fn a_hostile_tree_comes_back_as_plain_files_and_directories() {
    let guest = FakeGuest::new(GuestRsync::Real);
    let project = guest.home.join("project");
    let out = project.join("out");
    write(
        &out,
        &[
            "report.xml",
            "suid",
            "sgid-dir/inner.txt",
            "open/inner.txt",
            "exe",
            "private.txt",
        ],
    );
    let host_secret = guest.root.path().join("host-secret");
    fs::write(&host_secret, "secret").unwrap();
    let chmod = |name: &str, mode: u32| {
        fs::set_permissions(out.join(name), fs::Permissions::from_mode(mode)).unwrap()
    };
    chmod("suid", 0o4755);
    chmod("sgid-dir", 0o2755);
    chmod("open", 0o1777);
    chmod("exe", 0o751);
    chmod("private.txt", 0o600);
    symlink(&host_secret, out.join("to-host")).unwrap();
    symlink("..", out.join("up")).unwrap();
    let fifo = std::ffi::CString::new(out.join("fifo").into_os_string().into_vec()).unwrap();
    // SAFETY: mkfifo(3) with a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let _socket = std::os::unix::net::UnixListener::bind(out.join("socket")).unwrap();
    let mut expected_skipped = vec![
        ("fifo", Kind::Fifo),
        ("socket", Kind::Socket),
        ("to-host", Kind::Symlink),
        ("up", Kind::Symlink),
    ];
    if is_root() {
        for (name, kind, numbers) in [("sda", "b", ["8", "0"]), ("null", "c", ["1", "3"])] {
            let status = std::process::Command::new("mknod")
                .arg(out.join(name))
                .arg(kind)
                .args(numbers)
                .status()
                .unwrap();
            assert!(status.success());
        }
        chmod("null", 0o666);
        expected_skipped.extend([("null", Kind::CharDevice), ("sda", Kind::BlockDevice)]);
    }
    expected_skipped.sort_by_key(|(name, _)| *name);

    // A destination where an earlier run left a setuid file, and links into the host.
    let host_dir = tempfile::tempdir().unwrap();
    let destination = guest.destination("artifacts");
    let local = destination.prepare().unwrap();
    fs::create_dir(local.join("out")).unwrap();
    fs::write(local.join("out/suid"), "old").unwrap();
    fs::set_permissions(local.join("out/suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    symlink(host_dir.path(), local.join("out/sgid-dir")).unwrap();
    symlink(&host_secret, local.join("out/report.xml")).unwrap();

    let pulled = guest
        .rsync
        .pull("project", &strings(&["out"]), &destination, MIB, &bounds())
        .unwrap();

    let mut skipped: Vec<(&str, Kind)> = pulled
        .skipped
        .iter()
        .map(|s| (std::str::from_utf8(&s.name).unwrap(), s.kind))
        .collect();
    skipped
        .iter_mut()
        .for_each(|(name, _)| *name = name.strip_prefix("out/").unwrap());
    skipped.sort_by_key(|(name, _)| *name);
    assert_eq!(skipped, expected_skipped);
    let umask = options::current_umask();
    let (file, exec, dir) = (0o644 & !umask, 0o755 & !umask, 0o755 & !umask);
    assert_eq!(
        modes_under(&local),
        [
            ("out".to_owned(), 'd', dir),
            ("out/exe".to_owned(), 'f', exec),
            ("out/open".to_owned(), 'd', dir),
            ("out/open/inner.txt".to_owned(), 'f', file),
            ("out/private.txt".to_owned(), 'f', file),
            ("out/report.xml".to_owned(), 'f', file),
            ("out/sgid-dir".to_owned(), 'd', dir),
            ("out/sgid-dir/inner.txt".to_owned(), 'f', file),
            ("out/suid".to_owned(), 'f', exec),
        ]
    );
    assert_eq!(
        fs::read_to_string(local.join("out/suid")).unwrap(),
        "content of suid"
    );
    assert_eq!(fs::read_to_string(&host_secret).unwrap(), "secret");
    assert_eq!(fs::read_dir(host_dir.path()).unwrap().count(), 0);
    // Nothing but files and directories anywhere, also for root.
    for entry in walk_all(&local) {
        let t = fs::symlink_metadata(&entry).unwrap().file_type();
        assert!(t.is_file() || t.is_dir(), "{} is {t:?}", entry.display());
        assert!(!t.is_block_device() && !t.is_char_device() && !t.is_fifo() && !t.is_socket());
    }
}

fn walk_all(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            out.extend(walk_all(&path));
        }
        out.push(path);
    }
    out
}

/// A 1 TiB sparse file is refused from the listing: not a byte of it is read or written.
/// What rsync lists before it comes; it and what follows stay.
#[test]
fn the_cap_refuses_a_huge_file_and_keeps_what_came_before() {
    let guest = FakeGuest::new(GuestRsync::Real);
    let project = guest.home.join("project");
    write(&project, &["a.xml", "c.xml"]);
    fs::File::create(project.join("big.xml"))
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let destination = guest.destination("artifacts");
    let started = Instant::now();
    let pulled = guest
        .rsync
        .pull(
            "project",
            &strings(&["*.xml"]),
            &destination,
            MIB,
            &bounds(),
        )
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(pulled.files, [PathBuf::from("a.xml")]);
    let over = pulled.over_cap.unwrap();
    assert_eq!(over.artifact, "big.xml");
    assert_eq!(
        Error::from(over).to_string(),
        "the artifacts reach 1.0 TiB with big.xml, past test.artifacts-max-size (1MiB): \
         it and the artifacts after it were not copied"
    );
    assert_eq!(files_under(&destination.path()), set(&["a.xml"]));
}

/// A file that grows after the listing (or a guest rsync that sends more than it listed) is
/// cut off by the bytes rsync reports receiving; rsync removes its partial file.
#[test]
fn bytes_past_the_cap_stop_the_copy_while_it_runs() {
    // Listing: the real rsync. Sending: the file grows to 200 MiB first, then is sent at
    // 10 MB/s, so the cut comes long before the end.
    let script = r#"case "$*" in *--list-only*) ;; *) truncate -s 200M project/grow.bin ;; esac
first=$1; shift; exec $REAL "$first" --bwlimit=10000 "$@""#;
    let guest = FakeGuest::new(GuestRsync::Script(script));
    let project = guest.home.join("project");
    write(&project, &["a.bin", "grow.bin"]);
    let destination = guest.destination("artifacts");
    let started = Instant::now();
    let pulled = guest
        .rsync
        .pull(
            "project",
            &strings(&["*.bin"]),
            &destination,
            MIB,
            &bounds(),
        )
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(pulled.files, [PathBuf::from("a.bin")]);
    let over = pulled.over_cap.unwrap();
    assert_eq!(over.artifact, "grow.bin");
    assert!(
        over.total > MIB.bytes() && over.total < 100 << 20,
        "{}",
        over.total
    );
    assert_eq!(files_under(&destination.path()), set(&["a.bin"]));
}

/// A guest whose rsync never answers: the deadline ends it, or a stop request does, within
/// about a second, and nothing it started is left running.
#[test]
fn a_stalled_guest_rsync_ends_at_the_deadline_or_a_stop() {
    let guest = FakeGuest::new(GuestRsync::Script("echo $$ > stalled.pid; exec sleep 300"));
    let started = Instant::now();
    let bounds = Bounds::new(Duration::from_secs(1), Watch::signals());
    let err = guest
        .rsync
        .pull(
            "project",
            &strings(&["*"]),
            &guest.destination("out"),
            MIB,
            &bounds,
        )
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        err.to_string(),
        "rsync did not list the artifacts in the guest within 1s, and was stopped"
    );
    assert_eq!(err.exit_code(), crate::exit_code::VM_FAILED);
    let pid = fs::read_to_string(guest.home.join("stalled.pid")).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !alive(&pid),
        "the guest's stalled rsync ({pid}) is still running"
    );

    let asked = Instant::now();
    let (_dir, qemu) = crate::qemu::process::fake("sleep 0.3");
    let bounds = Bounds::new(Duration::from_secs(60), Watch::qemu(&qemu));
    let project = tempfile::tempdir().unwrap();
    let err = guest
        .rsync
        .push(project.path(), "project", &SyncConfig::default(), &bounds)
        .unwrap_err();
    assert!(
        matches!(err, Error::Stopped(Stop::QemuExited(_))),
        "{err:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
}

#[test]
fn a_guest_without_rsync_is_named() {
    let guest = FakeGuest::new(GuestRsync::Missing);
    let project = tempfile::tempdir().unwrap();
    write(project.path(), &["a"]);
    let err = guest
        .rsync
        .push(project.path(), "project", &SyncConfig::default(), &bounds())
        .unwrap_err();
    assert!(matches!(err, Error::NoRsyncInGuest), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the guest has no rsync: add it to bake.packages"
    );
    assert_eq!(err.exit_code(), crate::exit_code::MISSING_TOOL);
    let err = guest
        .rsync
        .pull(
            "project",
            &strings(&["*"]),
            &guest.destination("out"),
            MIB,
            &bounds(),
        )
        .unwrap_err();
    assert!(matches!(err, Error::NoRsyncInGuest), "{err:?}");
}

#[test]
fn other_failures_show_rsyncs_message() {
    let guest = FakeGuest::new(GuestRsync::Real);
    let err = guest
        .rsync
        .pull(
            "no-such-dir",
            &strings(&["*"]),
            &guest.destination("out"),
            MIB,
            &bounds(),
        )
        .unwrap_err();
    let Error::Rsync { action, stderr, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*action, "list the artifacts in the guest");
    assert!(stderr.contains("no-such-dir"), "{stderr}");
    assert_eq!(err.exit_code(), crate::exit_code::INTERNAL);
}

#[test]
fn local_directories_cannot_pass_for_hosts() {
    assert_eq!(local(Path::new("/abs/a:b")), OsStr::new("/abs/a:b/"));
    assert_eq!(local(Path::new("a:b")), OsStr::new("./a:b/"));
    assert_eq!(local(Path::new("out/")), OsStr::new("./out/"));
}

#[test]
fn quoting_for_rsyncs_remote_shell() {
    assert_eq!(
        rsync_quote(OsStr::new("/a b/it's")),
        OsStr::new(r#"'/a b/it'"'"'s'"#)
    );
}
