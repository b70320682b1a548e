//! Bundles written and opened in a temporary directory: what goes in comes out, and each kind
//! of bad bundle is refused, by name, with nothing left written.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::format::BUNDLE;
use super::*;
use crate::framed;
use crate::net::Network;
use crate::qemu::args::Accel;

fn quiet(_: crate::events::Event) {}

fn key() -> SealKey {
    SealKey::from_client_key(b"PRIVATE\n")
}

fn header() -> Header {
    Header {
        run_id: "0a1b2c3d".into(),
        image: ImageRef {
            key: "5e1f".repeat(16),
            name: "base".into(),
        },
        qemu_version: "QEMU emulator version 7.2.0".into(),
        machine: MachineRecord {
            accel: Accel::Tcg,
            cpus: 2,
            memory_mib: 1024,
            boot: BootKind::Warm,
            network: Network::None,
            generation: "6f1c2a9e-0b4d-4c3e-9a7f-2d5e8b1c0a34".into(),
        },
        command: vec!["sh".into(), "-c".into(), "exit 3".into()],
        outcome: "exit 3".into(),
        exit_code: Some(3),
        captured_at: "2026-12-02T07:10:00Z".into(),
        phases: vec![PhaseTime {
            phase: "boot".into(),
            seconds: 1.5,
        }],
        files: vec![],
    }
}

/// A directory with a disk and a state (with a run of zeros), and a bundle of them.
struct Fixture {
    dir: tempfile::TempDir,
    bundle: PathBuf,
    disk: Vec<u8>,
    state: Vec<u8>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let disk: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    let mut state = vec![0u8; 3 << 20];
    state[5] = 1;
    state[(3 << 20) - 1] = 2;
    fs::write(dir.path().join("in-disk"), &disk).unwrap();
    fs::write(dir.path().join("in-state"), &state).unwrap();
    let bundle = dir.path().join("0a1b2c3d.vmrun");
    let bytes = write(
        &bundle,
        &header(),
        &dir.path().join("in-disk"),
        &dir.path().join("in-state"),
        &key(),
        &quiet,
    )
    .unwrap();
    assert_eq!(bytes, fs::metadata(&bundle).unwrap().len());
    Fixture {
        dir,
        bundle,
        disk,
        state,
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Extracts `bytes` as a bundle; returns the error's message, checking nothing was left.
fn refused(bytes: &[u8], key: &SealKey) -> String {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bad.vmrun");
    fs::write(&bundle, bytes).unwrap();
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let err = extract(&bundle, key, &out, &quiet).unwrap_err();
    assert_eq!(names_in(&out), Vec::<String>::new(), "{err}");
    assert_eq!(err.exit_code(), crate::exit_code::BAD_INPUT, "{err}");
    let message = err.to_string();
    assert!(
        message.contains("bad.vmrun` cannot be opened: "),
        "{message}"
    );
    message
}

/// A bundle of the same files whose header is `change`d, sealed with `key`.
fn resealed(bytes: &[u8], key: &SealKey, change: impl Fn(&mut Header)) -> Vec<u8> {
    rewritten(bytes, key, |json| {
        let mut header: Header = serde_json::from_str(json).unwrap();
        change(&mut header);
        serde_json::to_string(&header).unwrap()
    })
}

/// A bundle of the same files whose header's JSON is `change`d, sealed with `key`.
fn rewritten(bytes: &[u8], key: &SealKey, change: impl Fn(&str) -> String) -> Vec<u8> {
    let mut inner = Vec::new();
    zstd::stream::read::Decoder::new(&bytes[12..])
        .unwrap()
        .read_to_end(&mut inner)
        .unwrap();
    let mut reader = &inner[..];
    let raw = BUNDLE.read_header(&mut reader).unwrap();
    let json = change(std::str::from_utf8(&raw.json).unwrap());
    let mut out = Vec::new();
    BUNDLE.write_prelude(&mut out).unwrap();
    let mut encoder = zstd::stream::write::Encoder::new(&mut out, 1).unwrap();
    let seal = key.seal(json.as_bytes());
    BUNDLE
        .write_header(&mut encoder, json.as_bytes(), &seal)
        .unwrap();
    encoder.write_all(reader).unwrap();
    encoder.finish().unwrap();
    out
}

#[test]
fn what_is_written_reads_back_and_extracts() {
    let f = fixture();
    let sealed = read_header(&f.bundle).unwrap();
    let mut expected = header();
    expected.files = sealed.header.files.clone();
    assert_eq!(sealed.header, expected);
    assert_eq!(sealed.header.files[0].size, f.disk.len() as u64);
    assert_eq!(sealed.header.files[1].size, f.state.len() as u64);
    sealed.verify(&key()).unwrap();
    let out = f.dir.path().join("out");
    fs::create_dir(&out).unwrap();
    assert_eq!(extract(&f.bundle, &key(), &out, &quiet).unwrap(), expected);
    assert_eq!(fs::read(out.join("disk.qcow2")).unwrap(), f.disk);
    assert_eq!(fs::read(out.join("state")).unwrap(), f.state);
    let mode = fs::metadata(out.join("state")).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    // Only the bundle is left beside it: no temporary file.
    assert_eq!(
        names_in(f.dir.path()),
        ["0a1b2c3d.vmrun", "in-disk", "in-state", "out"]
    );
    // A second extraction does not replace what is there, and leaves it.
    let err = extract(&f.bundle, &key(), &out, &quiet).unwrap_err();
    assert!(err.to_string().contains("cannot create"), "{err}");
    assert_eq!(fs::read(out.join("disk.qcow2")).unwrap(), f.disk);

    let text = info_text(&sealed, Verified::Yes);
    for part in [
        "0a1b2c3d",
        "base (5e1f",
        "tcg, 2 cpus, 1024 MiB",
        "'sh' '-c' 'exit 3'",
        "2026-12-02T07:10:00Z",
        "boot 1.5s",
        "verified",
    ] {
        assert!(text.contains(part), "{part} not in {text}");
    }
    let json = info_json(&sealed, Verified::ImageMissing);
    assert_eq!(json["seal"], "image missing");
    assert_eq!(json["bundle_bytes"], sealed.bundle_bytes);
    assert_eq!(json["machine"]["boot"], "warm");
}

#[test]
fn flipped_cut_and_extended_bundles_are_refused() {
    let f = fixture();
    let bytes = fs::read(&f.bundle).unwrap();
    for at in [0, 9, 11, 14, 30, 60, bytes.len() / 2, bytes.len() - 5] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x40;
        refused(&flipped, &key());
    }
    for cut in [0, 5, 11, 20, bytes.len() / 2, bytes.len() - 1] {
        let err = refused(&bytes[..cut], &key());
        assert!(err.contains("cut short"), "cut at {cut}: {err}");
    }
    let mut longer = bytes.clone();
    longer.extend(b"more");
    refused(&longer, &key());
    let err = refused(b"VMRUNIMG\0\0\0\x01", &key());
    assert!(err.contains("it is not a vmrun bundle (it does not start with `VMRUNBDL`)"));
    let mut newer = bytes.clone();
    newer[11] = 2;
    let err = refused(&newer, &key());
    assert!(err.contains("format version 2; this vmrun reads versions 1 to 1"));
}

#[test]
fn a_changed_header_or_another_images_key_breaks_the_seal() {
    let f = fixture();
    let bytes = fs::read(&f.bundle).unwrap();
    let other = SealKey::from_client_key(b"ANOTHER\n");
    let changed = resealed(&bytes, &other, |h| h.outcome = "exit 0".into());
    let err = refused(&changed, &key());
    assert!(
        err.contains(&format!(
            "its seal does not match: it was changed after it was written, or it was made \
             for another image than the one stored under key {}",
            "5e1f".repeat(16)
        )),
        "{err}"
    );
    let err = refused(&bytes, &other);
    assert!(err.contains("its seal does not match"), "{err}");
    // Sealed right, but a file's digest is not its content's.
    let wrong = resealed(&bytes, &key(), |h| {
        h.files[1].sha256 = crate::sha256::Sha256::of("")
    });
    let err = refused(&wrong, &key());
    assert!(err.contains("`state` does not match its sha256"), "{err}");
}

/// A change to a header, for a table of them.
type Change = dyn Fn(&mut Header);

#[test]
fn headers_out_of_bounds_are_refused_by_field() {
    let f = fixture();
    let bytes = fs::read(&f.bundle).unwrap();
    let check = |change: &dyn Fn(&mut Header)| refused(&resealed(&bytes, &key(), change), &key());
    let cases: [(&Change, &str); 12] = [
        (
            &|h| h.run_id = "0A1B2C3D".into(),
            "run_id `0A1B2C3D` is not 8",
        ),
        (&|h| h.run_id = "../../x".into(), "run_id `../../x`"),
        (
            &|h| h.image.key = "../etc".into(),
            "image.key `../etc` is not 64",
        ),
        (&|h| h.image.name = "x\ny".into(), "image.name `x\\ny`"),
        (&|h| h.machine.cpus = 0, "machine.cpus `0` is not 1 to 64"),
        (&|h| h.machine.memory_mib = 1, "machine.memory_mib `1`"),
        (
            &|h| h.captured_at = "yesterday".into(),
            "captured_at `yesterday`",
        ),
        (
            &|h| h.outcome = "\x1b]0;hi\x07".into(),
            r"outcome `\u{1b}]0;hi\u{7}`",
        ),
        (
            &|h| h.phases[0].seconds = -1.0,
            "phases `-1` is not a finite",
        ),
        (&|h| h.files.truncate(1), "files `disk.qcow2` is not"),
        (&|h| h.files.swap(0, 1), "files `state, disk.qcow2` is not"),
        (
            &|h| h.files.push(h.files[0].clone()),
            "it lists `disk.qcow2` twice",
        ),
    ];
    for (change, expected) in cases {
        let err = check(change);
        assert!(err.contains("its header is invalid"), "{err}");
        assert!(err.contains(expected), "{expected} not in {err}");
    }
    let err = check(&|h| h.files[1].size = (1 << 40) + 1);
    assert!(
        err.contains("`state` is 1099511627777 bytes, more than"),
        "{err}"
    );
    let long = "x".repeat(300);
    let err = check(&|h| h.qemu_version = long.clone());
    assert!(err.contains(&format!("qemu_version `{}`", "x".repeat(80))));
    assert!(!err.contains(&"x".repeat(81)), "{err}");
}

#[test]
fn unknown_members_and_fields_are_refused() {
    let f = fixture();
    let bytes = fs::read(&f.bundle).unwrap();
    let renamed = |from: &str, to: &str| {
        refused(
            &rewritten(&bytes, &key(), |json| json.replace(from, to)),
            &key(),
        )
    };
    let err = renamed("\"state\"", "\"../x\"");
    assert!(
        err.contains("`../x` is not a file a bundle may hold"),
        "{err}"
    );
    let err = renamed("\"outcome\"", "\"outcomes\"");
    assert!(err.contains("unknown field `outcomes`"), "{err}");
}

#[test]
fn reading_the_header_does_not_read_the_files() {
    let f = fixture();
    // A disk that does not compress, so that most of the bundle is its bytes.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let disk = f.dir.path().join("noise");
    fs::write(&disk, noise).unwrap();
    let state = f.dir.path().join("in-state");
    write(&f.bundle, &header(), &disk, &state, &key(), &quiet).unwrap();
    let bytes = fs::read(&f.bundle).unwrap();
    // The files' compressed bytes cut off: the header still reads.
    let cut = f.dir.path().join("cut.vmrun");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let sealed = read_header(&cut).unwrap();
    sealed.verify(&key()).unwrap();
    let err = read_header(&f.dir.path().join("none.vmrun")).unwrap_err();
    assert_eq!(err.exit_code(), crate::exit_code::INTERNAL);
}

/// A small valid bundle's bytes, made once for the properties below.
fn small_bundle() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("d"), b"disk").unwrap();
    fs::write(dir.path().join("s"), [0u8; 100]).unwrap();
    let bundle = dir.path().join("b.vmrun");
    let d = dir.path().join("d");
    let s = dir.path().join("s");
    write(&bundle, &header(), &d, &s, &key(), &quiet).unwrap();
    fs::read(&bundle).unwrap()
}

/// Whether `bytes` open as a bundle of the files [`small_bundle`] holds. What does not open
/// leaves nothing written; what opens is those files (a flipped bit zstd does not read, such
/// as one in its window size, changes nothing).
fn try_open(bytes: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("p.vmrun");
    fs::write(&bundle, bytes).unwrap();
    let _ = read_header(&bundle);
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    let opened = extract(&bundle, &key(), &out, &quiet).is_ok();
    match opened {
        true => {
            assert_eq!(fs::read(out.join("disk.qcow2")).unwrap(), b"disk");
            assert_eq!(fs::read(out.join("state")).unwrap(), [0u8; 100]);
        }
        false => assert_eq!(names_in(&out), Vec::<String>::new()),
    }
    opened
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the bytes, opening them never panics, and they do not open.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut with_magic = framed_prelude();
        with_magic.extend(&bytes);
        prop_assert!(!try_open(&bytes));
        prop_assert!(!try_open(&with_magic));
    }

    /// A bundle with a byte flipped is refused without a panic, or opens as it was; one cut
    /// short is refused.
    #[test]
    fn mangled_bundles_never_panic(
        at in any::<prop::sample::Index>(),
        flip in 1u8..,
        cut in any::<prop::sample::Index>(),
    ) {
        let good = small_bundle();
        let mut flipped = good.clone();
        let i = at.index(flipped.len());
        flipped[i] ^= flip;
        try_open(&flipped);
        prop_assert!(!try_open(&good[..cut.index(good.len())]));
    }
}

fn framed_prelude() -> Vec<u8> {
    let mut out = Vec::new();
    BUNDLE.write_prelude(&mut out).unwrap();
    out
}

#[test]
fn framed_kinds_do_not_read_each_other() {
    let mut export = Vec::new();
    crate::store::transfer::format::EXPORT
        .write_prelude(&mut export)
        .unwrap();
    let err = BUNDLE.read_prelude(&mut &export[..]).unwrap_err();
    assert!(matches!(err, framed::Reading::Fault(Fault::NotABundle)));
}
