//! vmrun's qcow2 overlays and format sniffer, checked against QEMU's own tools: `qemu-img`
//! (create, check, info, compare) and `qemu-io` (writes and pattern-verified reads).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};
use vmrun::disk::{self, DiskFormat, Overlay, format};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// Runs a QEMU tool, failing the test with its output if it fails.
fn run(program: &str, args: &[&str], dir: &Path) -> Output {
    let path =
        vmrun::tools::find(program).unwrap_or_else(|e| panic!("{e}: the tests need QEMU's tools"));
    let output = Command::new(path)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn qemu_img(dir: &Path, args: &[&str]) -> String {
    String::from_utf8(run("qemu-img", args, dir).stdout).unwrap()
}

/// Runs qemu-io commands on a qcow2 image; a failed pattern check fails the test.
fn qemu_io(image: &Path, commands: &[&str]) {
    let mut args = vec!["-f", "qcow2"];
    for command in commands {
        args.extend(["-c", command]);
    }
    args.push(image.to_str().unwrap());
    let output = run("qemu-io", &args, Path::new("/"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stdout.contains("failed"),
        "qemu-io {commands:?}:\n{stdout}"
    );
}

/// `qemu-img check` exits 0 only with no errors and no leaks (2: corruption, 3: leaks).
fn assert_check_clean(image: &Path) {
    let out = qemu_img(
        Path::new("/"),
        &["check", "-f", "qcow2", image.to_str().unwrap()],
    );
    assert!(out.contains("No errors were found on the image."), "{out}");
    assert!(!out.contains("leaked"), "{out}");
}

/// A string or number field of `qemu-img info --output=json` (one object per line).
fn json_field(json: &str, key: &str) -> Option<String> {
    let rest = &json[json.find(&format!("\"{key}\": "))? + key.len() + 4..];
    let value = rest.split([',', '\n']).next()?.trim();
    Some(value.trim_matches('"').to_owned())
}

fn image_info(image: &Path) -> String {
    qemu_img(
        Path::new("/"),
        &["info", "--output=json", image.to_str().unwrap()],
    )
}

fn create_base(dir: &Path, name: &str, format: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    qemu_img(
        dir,
        &[
            "create",
            "-q",
            "-f",
            format,
            path.to_str().unwrap(),
            &size.to_string(),
        ],
    );
    path
}

fn sha256(path: &Path) -> Vec<u8> {
    Sha256::digest(fs::read(path).unwrap()).to_vec()
}

const SIZES: [u64; 3] = [MIB, GIB + 512, 2 * TIB];

#[test]
fn overlays_over_raw_bases_check_clean_with_the_base_size() {
    for size in SIZES {
        let dir = tempfile::tempdir().unwrap();
        let base = create_base(dir.path(), "base.raw", "raw", size);
        let overlay = Overlay::create(&dir.path().join("overlay.qcow2"), &base).unwrap();
        assert_eq!(overlay.virtual_size(), size);
        assert_check_clean(overlay.path());
        let info = image_info(overlay.path());
        assert_eq!(
            json_field(&info, "virtual-size"),
            Some(size.to_string()),
            "{info}"
        );
    }
}

#[test]
fn overlays_over_qcow2_bases_check_clean_with_the_base_size() {
    for size in SIZES {
        let dir = tempfile::tempdir().unwrap();
        let base = create_base(dir.path(), "base.qcow2", "qcow2", size);
        let overlay = Overlay::create(&dir.path().join("overlay.qcow2"), &base).unwrap();
        assert_eq!(overlay.backing_format(), "qcow2");
        assert_check_clean(overlay.path());
        let info = image_info(overlay.path());
        assert_eq!(
            json_field(&info, "virtual-size"),
            Some(size.to_string()),
            "{info}"
        );
        assert_eq!(
            json_field(&info, "backing-filename-format").as_deref(),
            Some("qcow2")
        );
    }
}

#[test]
fn qemu_img_info_shows_absolute_backing_and_its_format() {
    let dir = tempfile::tempdir().unwrap();
    let base = create_base(dir.path(), "base.raw", "raw", 8 * MIB);
    // A relative, non-canonical base path: the overlay records the canonical absolute one.
    let overlay = Overlay::create(
        &dir.path().join("overlay.qcow2"),
        &dir.path().join("./base.raw"),
    )
    .unwrap();
    let absolute = fs::canonicalize(&base).unwrap();
    let absolute = absolute.to_str().unwrap();
    let info = image_info(overlay.path());
    assert_eq!(
        json_field(&info, "format").as_deref(),
        Some("qcow2"),
        "{info}"
    );
    assert_eq!(
        json_field(&info, "compat").as_deref(),
        Some("1.1"),
        "{info}"
    );
    assert_eq!(
        json_field(&info, "backing-filename").as_deref(),
        Some(absolute),
        "{info}"
    );
    assert_eq!(
        json_field(&info, "full-backing-filename").as_deref(),
        Some(absolute),
        "{info}"
    );
    assert_eq!(
        json_field(&info, "backing-filename-format").as_deref(),
        Some("raw"),
        "{info}"
    );
    assert_eq!(
        json_field(&info, "virtual-size"),
        Some((8 * MIB).to_string()),
        "{info}"
    );
    assert_eq!(
        json_field(&info, "dirty-flag").as_deref(),
        Some("false"),
        "{info}"
    );
}

#[test]
fn writes_land_in_the_overlay_and_the_base_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let base = create_base(dir.path(), "base.raw", "raw", 4 * MIB);
    run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -q -P 0xcd 0 4M",
            base.to_str().unwrap(),
        ],
        dir.path(),
    );
    let base_sha = sha256(&base);

    let overlay = Overlay::create(&dir.path().join("overlay.qcow2"), &base).unwrap();
    let overlay_str = overlay.path().to_str().unwrap();
    qemu_img(
        dir.path(),
        &[
            "compare",
            "-f",
            "qcow2",
            "-F",
            "raw",
            overlay_str,
            base.to_str().unwrap(),
        ],
    );

    qemu_io(overlay.path(), &["write -P 0xab 0 1M"]);
    qemu_io(overlay.path(), &["read -P 0xab 0 1M", "read -P 0xcd 1M 3M"]);
    assert_eq!(sha256(&base), base_sha, "the base changed");
    assert!(
        fs::metadata(overlay.path()).unwrap().len() > MIB,
        "the write did not land in the overlay"
    );
    assert_check_clean(overlay.path());
}

#[test]
fn base_paths_with_spaces_work() {
    let dir = tempfile::tempdir().unwrap();
    let disks = dir.path().join("my disks");
    fs::create_dir(&disks).unwrap();
    let base = create_base(&disks, "base image.raw", "raw", 2 * MIB);
    run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -q -P 0x5a 0 2M",
            base.to_str().unwrap(),
        ],
        dir.path(),
    );
    let overlay = Overlay::create(&disks.join("over lay.qcow2"), &base).unwrap();
    let info = image_info(overlay.path());
    assert_eq!(
        json_field(&info, "backing-filename").as_deref(),
        base.to_str(),
        "{info}"
    );
    qemu_io(
        overlay.path(),
        &[
            "write -P 0x11 1M 64k",
            "read -P 0x5a 0 1M",
            "read -P 0x11 1M 64k",
        ],
    );
    assert_check_clean(overlay.path());
}

fn qcow2_fields(format: &DiskFormat) -> (u32, u64, Option<&Path>, Option<&str>) {
    match format {
        DiskFormat::Qcow2 {
            version,
            virtual_size,
            backing,
            backing_format,
        } => (
            *version,
            *virtual_size,
            backing.as_deref(),
            backing_format.as_deref(),
        ),
        other => panic!("not qcow2: {other:?}"),
    }
}

#[test]
fn sniff_reads_qemu_img_qcow2_v2_and_v3_and_raw() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    qemu_img(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10",
            "v2.qcow2",
            "3M",
        ],
    );
    qemu_img(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "compat=1.1",
            "v3.qcow2",
            "5M",
        ],
    );
    qemu_img(d, &["create", "-q", "-f", "raw", "disk.raw", "7M"]);
    assert_eq!(
        qcow2_fields(&format::sniff(&d.join("v2.qcow2")).unwrap()),
        (2, 3 * MIB, None, None)
    );
    assert_eq!(
        qcow2_fields(&format::sniff(&d.join("v3.qcow2")).unwrap()),
        (3, 5 * MIB, None, None)
    );
    assert_eq!(
        format::sniff(&d.join("disk.raw")).unwrap(),
        DiskFormat::Raw { size: 7 * MIB }
    );
}

#[test]
fn sniff_reads_backing_files_recorded_by_qemu_img() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    qemu_img(d, &["create", "-q", "-f", "raw", "base.raw", "1M"]);
    // A version 2 image with a relative backing file, as recorded (not resolved).
    qemu_img(
        d,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "compat=0.10",
            "-b",
            "base.raw",
            "-F",
            "raw",
            "v2.qcow2",
        ],
    );
    let v2 = format::sniff(&d.join("v2.qcow2")).unwrap();
    assert_eq!(
        qcow2_fields(&v2),
        (2, MIB, Some(Path::new("base.raw")), Some("raw"))
    );
}

#[test]
fn backing_chain_of_three_made_by_overlay() {
    let dir = tempfile::tempdir().unwrap();
    let base = create_base(dir.path(), "base.raw", "raw", 16 * MIB);
    let middle = Overlay::create(&dir.path().join("middle.qcow2"), &base).unwrap();
    let top = Overlay::create(&dir.path().join("top.qcow2"), middle.path()).unwrap();
    assert_check_clean(top.path());

    let chain = disk::backing_chain(top.path()).unwrap();
    let paths: Vec<&Path> = chain.iter().map(|entry| entry.path.as_path()).collect();
    let canonical = |p: &Path| fs::canonicalize(p).unwrap();
    assert_eq!(
        paths,
        [
            top.path().to_owned(),
            canonical(middle.path()),
            canonical(&base)
        ]
    );
    assert_eq!(
        qcow2_fields(&chain[0].format),
        (3, 16 * MIB, Some(paths[1]), Some("qcow2"))
    );
    assert_eq!(
        qcow2_fields(&chain[1].format),
        (3, 16 * MIB, Some(paths[2]), Some("raw"))
    );
    assert_eq!(chain[2].format, DiskFormat::Raw { size: 16 * MIB });
    let info = qemu_img(
        dir.path(),
        &["info", "--backing-chain", top.path().to_str().unwrap()],
    );
    assert_eq!(info.matches("image: ").count(), 3, "{info}");
}

#[test]
fn relative_backing_from_qemu_img_resolves_against_the_overlay_directory() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    fs::create_dir(&images).unwrap();
    qemu_img(&images, &["create", "-q", "-f", "raw", "base.raw", "1M"]);
    qemu_img(
        &images,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.raw",
            "-F",
            "raw",
            "top.qcow2",
        ],
    );
    // Followed from another working directory than the images'.
    let chain = disk::backing_chain(&images.join("top.qcow2")).unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(
        qcow2_fields(&chain[0].format).2,
        Some(Path::new("base.raw"))
    );
    assert_eq!(chain[1].path, images.join("base.raw"));
    assert_eq!(chain[1].format, DiskFormat::Raw { size: MIB });
}

#[test]
fn sniff_names_unusable_files_in_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("junk.img"), b"this is not a disk image\n").unwrap();
    fs::write(d.join("empty.img"), b"").unwrap();
    let cases = [
        ("junk.img", "is not a disk image"),
        ("empty.img", "is empty"),
        ("missing.img", "does not exist"),
    ];
    for (name, message) in cases {
        let err = format::sniff(&d.join(name)).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{}` {message}", d.join(name).display())),
            "{err}"
        );
    }
}

#[test]
fn sniff_names_other_image_formats_and_how_to_convert_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let formats = [
        (
            "vmdk",
            "is a VMDK image; convert it with qemu-img convert -O qcow2",
        ),
        ("vhdx", "is a VHDX image"),
        ("vdi", "is a VDI image"),
        ("vpc", "is a VHD (vpc) image"),
        ("qed", "is a QED image"),
        ("qcow", "is a qcow (version 1) image"),
        ("parallels", "is a Parallels image"),
    ];
    for (qemu_format, message) in formats {
        let name = format!("disk.{qemu_format}");
        qemu_img(d, &["create", "-q", "-f", qemu_format, &name, "1M"]);
        let err = format::sniff(&d.join(&name)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("{}` {message}", d.join(&name).display())),
            "{text}"
        );
        assert_eq!(err.exit_code(), vmrun::exit_code::BAD_INPUT);
    }
    // A fixed-size VHD is raw data with a footer at the end.
    qemu_img(
        d,
        &[
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            "subformat=fixed",
            "fixed.vpc",
            "1M",
        ],
    );
    let err = format::sniff(&d.join("fixed.vpc")).unwrap_err().to_string();
    assert!(err.contains("is a VHD (vpc) image"), "{err}");
}

#[test]
fn overlay_over_an_unusable_base_names_it_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    qemu_img(d, &["create", "-q", "-f", "vmdk", "base.vmdk", "1M"]);
    let err = Overlay::create(&d.join("overlay.qcow2"), &d.join("base.vmdk")).unwrap_err();
    assert!(
        err.to_string().contains("base.vmdk` is a VMDK image"),
        "{err}"
    );
    let err = Overlay::create(&d.join("overlay.qcow2"), &d.join("nowhere.raw")).unwrap_err();
    assert!(
        err.to_string().contains("nowhere.raw` does not exist"),
        "{err}"
    );
    assert!(!d.join("overlay.qcow2").exists());
    assert_eq!(
        fs::read_dir(d).unwrap().count(),
        1,
        "a temporary file was left behind"
    );
}

#[test]
fn grown_overlay_reads_zeros_past_the_base() {
    let dir = tempfile::tempdir().unwrap();
    let base = create_base(dir.path(), "base.raw", "raw", MIB);
    run(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-c",
            "write -q -P 0x77 0 1M",
            base.to_str().unwrap(),
        ],
        dir.path(),
    );
    let overlay =
        Overlay::create_with_size(&dir.path().join("grown.qcow2"), &base, 10 * GIB).unwrap();
    let info = image_info(overlay.path());
    assert_eq!(
        json_field(&info, "virtual-size"),
        Some((10 * GIB).to_string()),
        "{info}"
    );
    qemu_io(
        overlay.path(),
        &[
            "read -P 0x77 0 1M",
            "read -P 0 1M 1M",
            "write -P 0x33 9G 1M",
            "read -P 0x33 9G 1M",
        ],
    );
    assert_check_clean(overlay.path());
}

#[test]
fn the_largest_overlay_is_one_qemu_opens() {
    let dir = tempfile::tempdir().unwrap();
    let base = create_base(dir.path(), "base.raw", "raw", MIB);
    let largest = 2 * 1024 * TIB;
    let overlay =
        Overlay::create_with_size(&dir.path().join("huge.qcow2"), &base, largest).unwrap();
    assert_check_clean(overlay.path());
    let info = image_info(overlay.path());
    assert_eq!(
        json_field(&info, "virtual-size"),
        Some(largest.to_string()),
        "{info}"
    );
    let err = Overlay::create_with_size(&dir.path().join("too big.qcow2"), &base, largest + 512)
        .unwrap_err();
    assert!(err.to_string().contains("too big.qcow2"), "{err}");
}
