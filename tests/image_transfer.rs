//! Images that travel, against a real VM: the shared test image exported, imported into an
//! empty home, and run there warm at once, without a bake; and damaged exports refused with
//! nothing stored.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use vmrun::paths::Home;
use vmrun::store::transfer::format;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn vmrun(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(common::VMRUN);
    cmd.args(args).env("VMRUN_HOME", home);
    cmd
}

/// A new, empty home (and a project directory) under target/tmp: short socket paths, and
/// room for a few hundred MiB.
fn empty_home() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// The shared test image, exported once per test process.
fn exported() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let image = common::baked_image();
        let dir = Box::leak(Box::new(empty_home()));
        let file = dir.path().join("test-base.vmimg");
        let out = vmrun(&common::test_home(), &["images", "export", image, "-o"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "export failed: {}", text(&out.stderr));
        file
    })
}

/// Imports `bytes` through standard input into `home`.
fn import_stdin(home: &Path, bytes: &[u8], name: &str) -> Output {
    let mut child = vmrun(home, &["images", "import", "-", "--name", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A refused import stops reading: a broken pipe then is expected.
    let _ = stdin.write_all(bytes);
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn assert_nothing_stored(root: &Path) {
    let home = Home::under(root);
    for dir in [home.store(), home.images(), home.sources()] {
        let left: Vec<_> = std::fs::read_dir(&dir)
            .map(|entries| entries.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{} holds {left:?}", dir.display());
    }
}

#[test]
fn an_imported_image_runs_warm_at_once_in_a_home_that_never_baked() {
    let home = empty_home();
    let out = vmrun(home.path(), &["images", "import", "--name", "moved"])
        .arg(exported())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "import failed: {err}");
    assert!(
        err.contains("imported image `moved`") && err.contains("with its warm state"),
        "{err}"
    );

    let project = tempfile::tempdir().unwrap();
    let out = vmrun(home.path(), &["test", "--image", "moved", "--", "true"])
        .current_dir(project.path())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "the run failed: {err}");
    assert!(!err.contains("booting cold"), "did not resume: {err}");
    assert!(
        !err.to_lowercase().contains("bake"),
        "a bake happened: {err}"
    );
    let sources = Home::under(home.path()).sources();
    let made: Vec<_> = std::fs::read_dir(&sources)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        made,
        ["imported"],
        "only the imported source is there, no built one"
    );
}

#[test]
fn cut_flipped_and_rekeyed_exports_are_refused_with_nothing_stored() {
    let bytes = std::fs::read(exported()).unwrap();
    let refused = |bytes: &[u8], what: &str| {
        let home = empty_home();
        let out = import_stdin(home.path(), bytes, "broken");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(240), "{what}: {err}");
        assert!(
            err.contains("standard input cannot be imported"),
            "{what}: {err}"
        );
        assert_nothing_stored(home.path());
        err
    };
    let err = refused(&bytes[..bytes.len() * 2 / 3], "truncated");
    assert!(err.contains("cut short"), "{err}");

    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x10;
    refused(&flipped, "a flipped byte");

    let err = refused(&rekeyed(&bytes, &"0".repeat(64)), "another key");
    assert!(
        err.contains("its header says key") && err.contains(&"0".repeat(64)),
        "{err}"
    );
}

/// `bytes` with the key in the header changed, the header's digest made to match it: the
/// files say one image, the header another.
fn rekeyed(bytes: &[u8], key: &str) -> Vec<u8> {
    let mut inner = zstd::stream::read::Decoder::new(&bytes[12..]).unwrap();
    let mut header = format::read_header(&mut inner).ok().unwrap();
    header.key = key.to_owned();
    let mut out = Vec::new();
    format::write_prelude(&mut out).unwrap();
    let mut encoder = zstd::stream::write::Encoder::new(&mut out, 1).unwrap();
    format::write_header(&mut encoder, &header).unwrap();
    let mut rest = Vec::new();
    inner.read_to_end(&mut rest).unwrap();
    encoder.write_all(&rest).unwrap();
    encoder.finish().unwrap();
    out
}
