//! push and pull through the real rsync, with a stand-in for ssh that runs the remote
//! command on this machine in a directory playing the guest user's home. The filter rules,
//! the `-e` quoting and the item parsing are rsync's real behaviour; only the network is not.

use super::*;
use crate::ssh::sh_quote;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;

struct FakeGuest {
    _root: tempfile::TempDir,
    home: PathBuf,
    rsync: Rsync,
    /// Where the stand-in ssh records the `-F` path it was given.
    seen_config: PathBuf,
}

impl FakeGuest {
    /// `with_rsync: false` leaves rsync off the remote command's PATH.
    fn new(with_rsync: bool) -> FakeGuest {
        let root = tempfile::tempdir().unwrap();
        let home = root.path().join("home");
        let bin = root.path().join("guest bin");
        fs::create_dir_all(&home).unwrap();
        fs::create_dir_all(&bin).unwrap();
        if with_rsync {
            std::os::unix::fs::symlink(tools::find("rsync").unwrap(), bin.join("rsync")).unwrap();
        }
        let seen_config = root.path().join("seen-config");
        // Called as `ssh -F CONFIG HOST COMMAND...`; runs COMMAND like sshd would.
        let ssh = root.path().join("fake ssh");
        fs::write(
            &ssh,
            format!(
                "#!/bin/sh\n[ \"$1\" = -F ] || exit 90\nprintf '%s' \"$2\" > {seen}\nshift 3\ncd {home} && PATH={bin} exec /bin/sh -c \"$*\"\n",
                seen = sh_quote(seen_config.to_str().unwrap()),
                home = sh_quote(home.to_str().unwrap()),
                bin = sh_quote(bin.to_str().unwrap()),
            ),
        )
        .unwrap();
        fs::set_permissions(&ssh, fs::Permissions::from_mode(0o755)).unwrap();
        let ssh_config = root.path().join("run 'one'/ssh_config");
        let rsync = Rsync {
            rsync: tools::find("rsync").unwrap(),
            ssh,
            ssh_config,
        };
        FakeGuest {
            _root: root,
            home,
            rsync,
            seen_config,
        }
    }
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

#[test]
fn push_follows_gitignore_include_and_exclude_and_never_copies_git() {
    let guest = FakeGuest::new(true);
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
    guest.rsync.push(project.path(), "work dir", &sync).unwrap();

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
    // rsync split `-e` back into the ssh_config path, quote and space included.
    assert_eq!(
        fs::read_to_string(&guest.seen_config).unwrap(),
        guest.rsync.ssh_config.to_str().unwrap()
    );
}

#[test]
fn push_creates_the_directory_but_not_its_parent() {
    let guest = FakeGuest::new(true);
    let project = tempfile::tempdir().unwrap();
    write(project.path(), &["a"]);
    guest
        .rsync
        .push(project.path(), "project", &SyncConfig::default())
        .unwrap();
    assert_eq!(files_under(&guest.home.join("project")), set(&["a"]));
    let err = guest
        .rsync
        .push(project.path(), "deep/er/project", &SyncConfig::default())
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
    let guest = FakeGuest::new(true);
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
    let local = tempfile::tempdir().unwrap();
    let out = local.path().join("artifacts");
    let globs = strings(&["**/junit.xml", "coverage", "logs/*.log", "*.xml"]);
    let pulled = guest.rsync.pull("project", &globs, &out).unwrap();
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
        pulled,
        expected.iter().map(PathBuf::from).collect::<Vec<_>>()
    );
    assert_eq!(files_under(&out), set(&expected));
    assert_eq!(
        fs::read_to_string(out.join("a/b/junit.xml")).unwrap(),
        "content of a/b/junit.xml"
    );

    // Again: nothing changes, and everything is still listed as there.
    assert_eq!(
        guest.rsync.pull("project", &globs, &out).unwrap().len(),
        expected.len()
    );
    // Nothing matches: nothing comes, and that is not an error.
    assert_eq!(
        guest
            .rsync
            .pull(
                "project",
                &strings(&["*.none"]),
                &local.path().join("empty")
            )
            .unwrap(),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn a_guest_without_rsync_is_named() {
    let guest = FakeGuest::new(false);
    let project = tempfile::tempdir().unwrap();
    write(project.path(), &["a"]);
    let err = guest
        .rsync
        .push(project.path(), "project", &SyncConfig::default())
        .unwrap_err();
    assert!(matches!(err, Error::NoRsyncInGuest), "{err:?}");
    assert_eq!(
        err.to_string(),
        "the guest has no rsync: add it to bake.packages"
    );
    assert_eq!(err.exit_code(), crate::exit_code::MISSING_TOOL);
    let err = guest
        .rsync
        .pull("project", &strings(&["*"]), &project.path().join("out"))
        .unwrap_err();
    assert!(matches!(err, Error::NoRsyncInGuest), "{err:?}");
}

#[test]
fn other_failures_show_rsyncs_message() {
    let guest = FakeGuest::new(true);
    let local = tempfile::tempdir().unwrap();
    let err = guest
        .rsync
        .pull("no-such-dir", &strings(&["*"]), local.path())
        .unwrap_err();
    let Error::Rsync { action, stderr, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*action, "copy the artifacts out of the guest");
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
fn escapes() {
    assert_eq!(
        rsync_quote(OsStr::new("/a b/it's")),
        OsStr::new(r#"'/a b/it'"'"'s'"#)
    );
    assert_eq!(unescape(br"a\#012b\#c\#1x"), b"a\nb\\#c\\#1x");
    assert_eq!(
        pulled_files(b"created directory x\nvmrun-item cd+++++++++ a/\nvmrun-item >f+++++++++ a/b c\nvmrun-item .L          l\n"),
        vec![PathBuf::from("a/b c"), PathBuf::from("l")]
    );
}
