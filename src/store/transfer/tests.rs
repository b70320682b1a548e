//! Export and import of a small image made without a VM: what goes in comes out in another
//! home, standing on that home's files; and each kind of bad file is refused with nothing
//! stored.

use std::fs;
use std::io::{Read, Write};

use super::format::{self, Header};
use super::member::Member;
use super::*;
use crate::disk::{Overlay, backing_chain};
use crate::name::ImageName;
use crate::paths::Home;
use crate::store::{BakedImage, Manifest, Store};
use crate::warm::WarmState;

const KEY: &str = "5e1f0000000000000000000000000000000000000000000000000000000000aa";

fn quiet(_: crate::events::Event) {}

fn name(name: &str) -> ImageName {
    ImageName::new(name).unwrap()
}

/// A baked image as a bake lays it out: a raw source, the baked layer on it, a warm layer
/// on that, a saved state, keys and the manifest.
fn bake(home: &Home) {
    let sources = home.sources().join("debian");
    fs::create_dir_all(&sources).unwrap();
    let source = sources.join("base.raw");
    let mut disk = vec![0u8; 1 << 20];
    disk[510..512].copy_from_slice(&[0x55, 0xAA]);
    fs::write(&source, disk).unwrap();
    let store = Store::new(home);
    let staging = store.staging().unwrap();
    Overlay::create(&staging.path().join(BakedImage::DISK), &source).unwrap();
    fs::write(
        staging.path().join(BakedImage::HOST_KEY),
        "ssh-ed25519 AAAA host\n",
    )
    .unwrap();
    fs::write(staging.path().join(BakedImage::CLIENT_KEY), "PRIVATE\n").unwrap();
    let manifest = Manifest {
        key: KEY.into(),
        source: "debian:bookworm".into(),
        source_digest: "d".into(),
        created: 1,
        cpus: 2,
        memory_mib: 1024,
        vmrun_version: "0.1.0".into(),
    };
    let image = store.commit(staging, &manifest).unwrap();
    let warm = image.dir.join(crate::warm::DIR);
    fs::create_dir(&warm).unwrap();
    Overlay::create(&warm.join("disk.qcow2"), &image.disk()).unwrap();
    let state: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(warm.join("state"), state).unwrap();
    let machine = r#"{"format": 1, "qemu_version": "QEMU emulator version 7.2", "accel": "tcg",
        "cpus": 2, "memory_mib": 1024, "args": [], "state_bytes": 300000}"#;
    fs::write(warm.join("machine.json"), machine).unwrap();
    store.set_name(&name("base"), KEY).unwrap();
}

/// A home with the image baked, and the file it exports to.
fn exported() -> (tempfile::TempDir, Vec<u8>) {
    let from = tempfile::tempdir().unwrap();
    let home = Home::under(from.path());
    bake(&home);
    let file = from.path().join("base.vmimg");
    let out = export(
        &Store::new(&home),
        &name("base"),
        &Output::File(file.clone()),
        &quiet,
    );
    assert_eq!(out.unwrap().key, KEY);
    let bytes = fs::read(&file).unwrap();
    (from, bytes)
}

fn import_bytes(bytes: &[u8], home: &Home) -> Result<Imported, Error> {
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), bytes).unwrap();
    import(&Input::File(file.path().to_owned()), None, home, &quiet)
}

/// Every directory an import could write to is empty, or was never made.
fn assert_nothing_stored(home: &Home) {
    for dir in [home.store(), home.images(), home.sources()] {
        let left: Vec<_> = fs::read_dir(&dir)
            .map(|entries| entries.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{} holds {left:?}", dir.display());
    }
}

/// The export's decompressed contents after the prelude.
fn decompressed(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(&bytes[12..])
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// An export whose header is `change`d and whose files are the same, written consistently
/// (the header's digest matches it): what a careless or hostile tool could make.
fn with_header(bytes: &[u8], change: impl Fn(&mut Header)) -> Vec<u8> {
    let inner = decompressed(bytes);
    let mut reader = &inner[..];
    let mut header = format::read_header(&mut reader).ok().unwrap();
    change(&mut header);
    let mut out = Vec::new();
    format::write_prelude(&mut out).unwrap();
    let mut encoder = zstd::stream::write::Encoder::new(&mut out, 1).unwrap();
    format::write_header(&mut encoder, &header).unwrap();
    encoder.write_all(reader).unwrap();
    encoder.finish().unwrap();
    out
}

#[test]
fn an_import_stands_on_the_new_homes_files_and_keeps_the_warm_state() {
    let (from, bytes) = exported();
    let to = tempfile::tempdir().unwrap();
    let home = Home::under(to.path());
    let imported = import_bytes(&bytes, &home).unwrap();
    assert_eq!(
        (imported.name.as_str(), imported.key.as_str()),
        ("base", KEY)
    );
    assert!(imported.warm && !imported.existed);

    let image = Store::new(&home).get(&name("base")).unwrap();
    let warm = WarmState::load(&image.dir).unwrap().unwrap();
    let chain = backing_chain(&warm.disk).unwrap();
    assert_eq!(chain.len(), 3);
    assert_eq!(chain[1].path, image.dir.join("warm/../disk.qcow2"));
    assert!(
        chain[2].path.starts_with(home.sources().join("imported")),
        "{chain:?}"
    );
    let old = Home::under(from.path()).store().join(KEY);
    for file in [
        "warm/state",
        "warm/machine.json",
        "host_ed25519.pub",
        "client_ed25519",
    ] {
        assert_eq!(
            fs::read(image.dir.join(file)).unwrap(),
            fs::read(old.join(file)).unwrap()
        );
    }
    let mode = fs::metadata(image.client_key()).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // Again, under another name: the entry is there, only the name is new.
    let file = to.path().join("again.vmimg");
    fs::write(&file, &bytes).unwrap();
    let again = import(&Input::File(file), Some(name("copy")), &home, &quiet).unwrap();
    assert!(again.existed);
    assert_eq!(Store::new(&home).list().unwrap().len(), 2);
}

#[test]
fn cut_flipped_and_rekeyed_files_are_refused_with_nothing_stored() {
    let (_from, bytes) = exported();
    let refused = |bytes: &[u8]| {
        let to = tempfile::tempdir().unwrap();
        let home = Home::under(to.path());
        let err = import_bytes(bytes, &home).unwrap_err();
        assert_nothing_stored(&home);
        assert_eq!(err.exit_code(), crate::exit_code::BAD_INPUT, "{err}");
        err.to_string()
    };
    for cut in [5, 11, 20, bytes.len() / 2, bytes.len() - 1] {
        let err = refused(&bytes[..cut]);
        assert!(err.contains("cut short"), "cut at {cut}: {err}");
    }
    for at in [
        0,
        9,
        11,
        30,
        bytes.len() / 3,
        bytes.len() / 2,
        bytes.len() - 10,
    ] {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x40;
        let err = refused(&flipped);
        assert!(
            err.contains("cannot be imported: "),
            "flipped at {at}: {err}"
        );
    }
    let err = refused(&with_header(&bytes, |h| h.key = "b".repeat(64)));
    assert!(
        err.contains(&format!("its header says key {}", "b".repeat(64))),
        "{err}"
    );
    assert!(err.contains(&format!("its image.json says {KEY}")), "{err}");
    let err = refused(&with_header(&bytes, |h| {
        h.files[0].sha256 = crate::sha256::Sha256::of("")
    }));
    assert!(
        err.contains("`image.json` does not match its sha256"),
        "{err}"
    );

    let mut newer = bytes.clone();
    newer[11] = 2;
    let err = refused(&newer);
    assert!(
        err.contains("it is format version 2; this vmrun reads versions 1 to 1"),
        "{err}"
    );
    let err = refused(b"QFI\xfb not an export at all");
    assert!(err.contains("is not a vmrun image export"), "{err}");
    let mut trailing = bytes.clone();
    trailing.extend(b"more");
    refused(&trailing);
}

#[test]
fn a_layer_that_would_read_a_host_file_is_refused_with_nothing_stored() {
    let from = tempfile::tempdir().unwrap();
    let home = Home::under(from.path());
    bake(&home);
    // The baked layer claims an external data file (incompatible feature bit 2).
    let disk = home.store().join(KEY).join(BakedImage::DISK);
    let mut bytes = fs::read(&disk).unwrap();
    bytes[79] |= 1 << 2;
    fs::write(&disk, bytes).unwrap();
    let file = from.path().join("evil.vmimg");
    let exported = export(
        &Store::new(&home),
        &name("base"),
        &Output::File(file.clone()),
        &quiet,
    );
    assert!(exported.is_err(), "the exporter's own checks refuse it");
    // Made by another tool: the same files, a consistent header.
    let bytes = fake_export(&home);
    let to = tempfile::tempdir().unwrap();
    let to = Home::under(to.path());
    let err = import_bytes(&bytes, &to).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::UnsafeLayer {
                member: "disk.qcow2",
                ..
            }
        ),
        "{err:?}"
    );
    assert_nothing_stored(&to);
}

/// An export of `home`'s image written without the exporter's chain checks.
fn fake_export(home: &Home) -> Vec<u8> {
    let entry = home.store().join(KEY);
    let files = [
        (Member::Manifest, entry.join("image.json")),
        (Member::HostKey, entry.join("host_ed25519.pub")),
        (Member::ClientKey, entry.join("client_ed25519")),
        (Member::Disk, entry.join("disk.qcow2")),
        (Member::SourceRaw, home.sources().join("debian/base.raw")),
    ];
    let contents: Vec<Vec<u8>> = files.iter().map(|(_, p)| fs::read(p).unwrap()).collect();
    let header = Header {
        key: KEY.into(),
        name: "evil".into(),
        files: files
            .iter()
            .zip(&contents)
            .map(|((member, _), bytes)| format::FileEntry {
                name: *member,
                size: bytes.len() as u64,
                sha256: crate::sha256::Sha256::of(bytes),
            })
            .collect(),
    };
    let mut out = Vec::new();
    format::write_prelude(&mut out).unwrap();
    let mut encoder = zstd::stream::write::Encoder::new(&mut out, 1).unwrap();
    format::write_header(&mut encoder, &header).unwrap();
    contents.iter().for_each(|c| encoder.write_all(c).unwrap());
    encoder.finish().unwrap();
    out
}

#[test]
fn an_export_to_a_file_is_whole_or_absent() {
    let from = tempfile::tempdir().unwrap();
    let home = Home::under(from.path());
    let file = from.path().join("none.vmimg");
    let err = export(
        &Store::new(&home),
        &name("nope"),
        &Output::File(file.clone()),
        &quiet,
    );
    assert!(matches!(
        err,
        Err(Error::Store(crate::store::Error::NotFound { .. }))
    ));
    assert!(!file.exists());
}
