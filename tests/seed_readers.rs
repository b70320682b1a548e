//! Seed ISOs read back by independent readers, each asked for every file by its plain name
//! (`user-data`, never `user-data;1`): `isoinfo`, `bsdtar` and `xorriso` through Rock Ridge and
//! through Joliet, `7z`, the Linux kernel's iso9660 driver through a loop mount (as root, where
//! the kernel has the driver) with and without `norock`, and `blkid`; the Joliet tree is
//! compared with the one genisoimage and xorriso write for the same files. A small structural
//! parser here checks the invariants no reader checks (descriptor positions, volume size,
//! records within sectors).
//!
//! Every reader but the kernel must be installed: a missing one fails the test and says what
//! to install. The kernel is skipped, with a message saying why, only where mounting is
//! impossible (not root, no loop device, no iso9660 driver).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use proptest::prelude::*;
use tempfile::TempDir;
use vmrun::seed::iso9660::IsoImage;
use vmrun::seed::{SeedIso, Timestamp};

const SECTOR: usize = 2048;

/// File name to contents.
type Files = BTreeMap<String, Vec<u8>>;

// ---------------------------------------------------------------------------------------------
// External readers

/// `program` on PATH, or a failure naming the package that provides it.
fn tool(program: &str) -> PathBuf {
    let package = match program {
        "isoinfo" | "genisoimage" => "genisoimage",
        "xorriso" => "xorriso",
        "bsdtar" => "libarchive-tools",
        "7z" => "p7zip-full",
        "blkid" | "mount" | "umount" => "util-linux",
        _ => "the package that provides it",
    };
    which::which(program).unwrap_or_else(|_| {
        panic!("`{program}` is not on PATH; this test needs it: apt-get install {package}")
    })
}

fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(tool(program)).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout_lines(output: Output) -> Vec<String> {
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// What one reader makes of an image: the names it lists in the root directory, and each
/// expected file looked up by its plain name.
struct Reading {
    listed: Vec<String>,
    found: Files,
}

/// Reads `names` from `dir`, where a reader extracted them; a name it did not extract is left
/// out, so the comparison says which.
fn read_names(dir: &Path, names: &[&str]) -> Files {
    names
        .iter()
        .filter_map(|&name| Some((name.to_owned(), fs::read(dir.join(name)).ok()?)))
        .collect()
}

/// `isoinfo` with `mode` (`-R` or `-J`): the `-f` listing, and `-x /NAME` for each name (`-x`
/// joins the extents of a multi-extent file, which the listing names once per extent).
fn isoinfo(iso: &Path, names: &[&str], mode: &str) -> Reading {
    let mut listed = stdout_lines(run("isoinfo", &[mode, "-f", "-i", path_str(iso)]));
    listed.dedup();
    let listed = listed
        .iter()
        .map(|path| path.strip_prefix('/').unwrap_or(path).to_owned())
        .collect();
    let found = names
        .iter()
        .map(|&name| {
            let path = format!("/{name}");
            let contents = run("isoinfo", &[mode, "-i", path_str(iso), "-x", &path]).stdout;
            (name.to_owned(), contents)
        })
        .collect();
    Reading { listed, found }
}

/// libarchive's `bsdtar`, given `options` (Rock Ridge unless told `iso9660:!rockridge`): `-t`,
/// and `-x` of the names.
fn bsdtar(iso: &Path, names: &[&str], options: &[&str]) -> Reading {
    let list = [options, &["-tf", path_str(iso)]].concat();
    let listed = stdout_lines(run("bsdtar", &list))
        .into_iter()
        .filter(|name| name != "." && name != "./")
        .collect();
    let dir = TempDir::new().unwrap();
    let extract = [
        options,
        &["-xf", path_str(iso), "-C", path_str(dir.path())],
        names,
    ]
    .concat();
    run("bsdtar", &extract);
    Reading {
        listed,
        found: read_names(dir.path(), names),
    }
}

/// `7z l -slt`, and `7z x` of the names.
fn seven_zip(iso: &Path, names: &[&str]) -> Reading {
    let listing = stdout_lines(run("7z", &["l", "-slt", path_str(iso)]));
    // The archive itself is listed first, above the line of dashes.
    let listed = listing
        .iter()
        .skip_while(|line| !line.starts_with("----------"))
        .filter_map(|line| line.strip_prefix("Path = "))
        .map(str::to_owned)
        .collect();
    let dir = TempDir::new().unwrap();
    let out = format!("-o{}", path_str(dir.path()));
    run("7z", &[&["x", "-y", &out, path_str(iso)], names].concat());
    Reading {
        listed,
        found: read_names(dir.path(), names),
    }
}

/// `xorriso`, loading the tree `load` selects: `-find`, and `-extract_l` of `/NAME` for each
/// name (a path it cannot find makes it fail).
fn xorriso(iso: &Path, names: &[&str], load: &[&str]) -> Reading {
    let indev = [load, &["-indev", path_str(iso)]].concat();
    let listed = stdout_lines(run(
        "xorriso",
        &[&indev[..], &["-find", "/", "-type", "f"]].concat(),
    ))
    .iter()
    .map(|line| line.trim_matches('\'').trim_start_matches('/').to_owned())
    .collect();
    let dir = TempDir::new().unwrap();
    let paths: Vec<String> = names.iter().map(|name| format!("/{name}")).collect();
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    let extract = [
        &indev[..],
        &["-osirrox", "on", "-extract_l", "/", path_str(dir.path())],
        &paths,
        &["--"],
    ]
    .concat();
    run("xorriso", &extract);
    Reading {
        listed,
        found: read_names(dir.path(), names),
    }
}

/// `iso` mounted read-only through a loop device by the kernel's iso9660 driver; unmounted
/// when dropped.
struct LoopMount {
    dir: TempDir,
}

impl LoopMount {
    /// Mounts with `-o loop,ro` plus `options`; `Err` says why mounting is impossible on this
    /// machine. Any other failure fails the test.
    fn new(iso: &Path, options: &str) -> Result<LoopMount, String> {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("mounting needs root".into());
        }
        let dir = TempDir::new().unwrap();
        let output = Command::new(tool("mount"))
            .args(["-t", "iso9660", "-o", &format!("loop,ro{options}")])
            .args([iso, dir.path()])
            .output()
            .unwrap();
        if output.status.success() {
            return Ok(LoopMount { dir });
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if stderr.contains("unknown filesystem type")
            && !filesystems.lines().any(|l| l.ends_with("\tiso9660"))
        {
            return Err("the kernel has no iso9660 driver (not in /proc/filesystems)".into());
        }
        if stderr.contains("failed to setup loop device") {
            return Err(format!("no loop device: {}", stderr.trim()));
        }
        panic!(
            "mount -o loop,ro{options} {} failed:\n{stderr}",
            iso.display()
        );
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(self.dir.path()).status();
        if !matches!(status, Ok(s) if s.success()) && !std::thread::panicking() {
            panic!("umount {} failed: {status:?}", self.dir.path().display());
        }
    }
}

/// The kernel's iso9660 driver: Rock Ridge by default, Joliet with `,norock`. `None`, after
/// saying why, where this machine cannot mount.
fn kernel(iso: &Path, names: &[&str], options: &str) -> Option<Reading> {
    let mount = match LoopMount::new(iso, options) {
        Ok(mount) => mount,
        Err(why) => {
            eprintln!("skipping the kernel's iso9660 driver (mount -o loop,ro{options}): {why}");
            return None;
        }
    };
    let listed = fs::read_dir(mount.dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    let found = read_names(mount.dir.path(), names);
    Some(Reading { listed, found })
}

/// Every file `bsdtar` extracts, by the name it gives it.
fn bsdtar_extract_all(iso: &Path) -> Files {
    let dir = TempDir::new().unwrap();
    run(
        "bsdtar",
        &["-xf", path_str(iso), "-C", path_str(dir.path())],
    );
    fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            (name, fs::read(entry.path()).unwrap())
        })
        .collect()
}

/// What `isoinfo -d` and `blkid` say about the volume.
fn assert_identified_as_cidata(iso: &Path) {
    let info = String::from_utf8(run("isoinfo", &["-d", "-i", path_str(iso)]).stdout).unwrap();
    for line in [
        "Volume id: cidata\n",
        "Logical block size is: 2048\n",
        "Joliet with UCS level 3 found",
        "Rock Ridge signatures version 1 found",
    ] {
        assert!(info.contains(line), "isoinfo -d lacks {line:?}:\n{info}");
    }
    let blkid =
        String::from_utf8(run("blkid", &["-p", "-o", "export", path_str(iso)]).stdout).unwrap();
    for line in ["LABEL=cidata", "TYPE=iso9660"] {
        assert!(
            blkid.lines().any(|l| l == line),
            "blkid lacks {line}:\n{blkid}"
        );
    }
}

/// Every reader lists exactly the names of `expected` and, asked for each by its plain name,
/// reads its contents.
fn assert_every_reader_sees(iso: &Path, expected: &Files) {
    assert_identified_as_cidata(iso);
    let names: Vec<&str> = expected.keys().map(String::as_str).collect();
    let names = &names[..];
    let load_joliet = ["-rockridge", "off", "-joliet", "on"];
    for (reader, reading) in [
        ("isoinfo -R", Some(isoinfo(iso, names, "-R"))),
        ("isoinfo -J", Some(isoinfo(iso, names, "-J"))),
        ("bsdtar", Some(bsdtar(iso, names, &[]))),
        (
            "bsdtar --options iso9660:!rockridge",
            Some(bsdtar(iso, names, &["--options", "iso9660:!rockridge"])),
        ),
        ("7z", Some(seven_zip(iso, names))),
        ("xorriso", Some(xorriso(iso, names, &[]))),
        (
            "xorriso -rockridge off -joliet on",
            Some(xorriso(iso, names, &load_joliet)),
        ),
        ("mount -o loop,ro", kernel(iso, names, "")),
        ("mount -o loop,ro,norock", kernel(iso, names, ",norock")),
    ] {
        let Some(Reading { mut listed, found }) = reading else {
            continue;
        };
        assert_same_files(reader, &found, expected);
        listed.sort();
        assert_eq!(listed, names, "{reader} lists other names");
    }
}

fn assert_same_files(reader: &str, actual: &Files, expected: &Files) {
    let names = |files: &Files| files.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(actual), names(expected), "{reader} finds other names");
    for (name, contents) in expected {
        // Not assert_eq!: a 64 MiB diff is no help.
        assert!(
            actual[name] == *contents,
            "{reader}: {name} differs ({} bytes, expected {})",
            actual[name].len(),
            contents.len()
        );
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Structural parser: the invariants, and a reader of its own for both trees

/// Both trees as this parser reads them, and the root directories' sizes in sectors.
struct Parsed {
    rock_ridge: Files,
    joliet: Files,
    primary_root_sectors: usize,
}

fn both32(field: &[u8]) -> u32 {
    let le = u32::from_le_bytes(field[..4].try_into().unwrap());
    assert_eq!(
        le,
        u32::from_be_bytes(field[4..8].try_into().unwrap()),
        "both-endian halves differ"
    );
    le
}

fn both16(field: &[u8]) -> u16 {
    let le = u16::from_le_bytes(field[..2].try_into().unwrap());
    assert_eq!(
        le,
        u16::from_be_bytes(field[2..4].try_into().unwrap()),
        "both-endian halves differ"
    );
    le
}

fn sector(image: &[u8], n: usize) -> &[u8] {
    &image[n * SECTOR..(n + 1) * SECTOR]
}

fn parse(image: &[u8]) -> Parsed {
    assert_eq!(image.len() % SECTOR, 0);
    assert!(
        image[..16 * SECTOR].iter().all(|&b| b == 0),
        "system area is not zeros"
    );
    let (pvd, svd) = (sector(image, 16), sector(image, 17));
    assert_eq!(&pvd[..7], b"\x01CD001\x01");
    assert_eq!(&svd[..7], b"\x02CD001\x01");
    assert_eq!(
        &sector(image, 18)[..7],
        b"\xffCD001\x01",
        "no terminator after the two descriptors"
    );
    assert_eq!(&svd[88..91], b"%/E");
    assert_eq!(&pvd[40..72], format!("{:<32}", "cidata").as_bytes());
    assert!(
        pvd[8..72].iter().chain(&pvd[190..813]).all(|&b| b != 0),
        "NUL in a character field"
    );
    for vd in [pvd, svd] {
        assert_eq!(
            both32(&vd[80..88]) as usize,
            image.len() / SECTOR,
            "volume space size"
        );
        assert_eq!(both16(&vd[128..132]), 2048);
        let root = &vd[156..190];
        let root_extent = both32(&root[2..10]);
        let table_len = both32(&vd[132..140]) as usize;
        let l_table = &sector(
            image,
            u32::from_le_bytes(vd[140..144].try_into().unwrap()) as usize,
        )[..table_len];
        let m_table = &sector(
            image,
            u32::from_be_bytes(vd[148..152].try_into().unwrap()) as usize,
        )[..table_len];
        assert_eq!(
            u32::from_le_bytes(l_table[2..6].try_into().unwrap()),
            root_extent
        );
        assert_eq!(
            u32::from_be_bytes(m_table[2..6].try_into().unwrap()),
            root_extent
        );
    }

    let primary = directory(image, &pvd[156..190]);
    let self_system_use = system_use(primary[0]);
    assert_eq!(
        &self_system_use[..7],
        b"SP\x07\x01\xbe\xef\x00",
        "root \".\" does not start with SP"
    );
    let ce = susp_entries(self_system_use)
        .find(|e| &e[..2] == b"CE")
        .expect("no CE for the ER entry");
    let er_at = both32(&ce[4..12]) as usize * SECTOR + both32(&ce[12..20]) as usize;
    assert_eq!(&image[er_at..er_at + 2], b"ER");
    assert_eq!(&image[er_at + 8..er_at + 18], b"RRIP_1991A");

    let rock_ridge = files(image, &primary[2..], |record| {
        let identifier = std::str::from_utf8(identifier(record)).unwrap();
        let (base, ext) = identifier
            .strip_suffix(";1")
            .unwrap()
            .split_once('.')
            .unwrap();
        let d = |s: &str, max| {
            s.len() <= max
                && s.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        };
        assert!(
            d(base, 8) && d(ext, 3),
            "{identifier} is not a level-1 identifier"
        );
        let nm = susp_entries(system_use(record))
            .find(|e| &e[..2] == b"NM")
            .expect("no NM");
        String::from_utf8(nm[5..].to_vec()).unwrap()
    });
    let joliet_records = directory(image, &svd[156..190]);
    let joliet_identifiers: Vec<&[u8]> = joliet_records[2..]
        .iter()
        .map(|record| identifier(record))
        .collect();
    assert!(
        joliet_identifiers.is_sorted(),
        "Joliet names are not in UCS-2 order"
    );
    let joliet = files(image, &joliet_records[2..], |record| {
        let units: Vec<u16> = identifier(record)
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        let name = String::from_utf16(&units).unwrap();
        assert!(
            units.len() <= 64 && !name.contains(';'),
            "{name:?}: Joliet names are at most 64 characters, without a version"
        );
        name
    });
    Parsed {
        rock_ridge,
        joliet,
        primary_root_sectors: both32(&pvd[156 + 10..156 + 18]) as usize / SECTOR,
    }
}

/// The records of the directory that `record` points to, checking none crosses a sector.
fn directory<'i>(image: &'i [u8], record: &[u8]) -> Vec<&'i [u8]> {
    let (start, len) = (
        both32(&record[2..10]) as usize * SECTOR,
        both32(&record[10..18]) as usize,
    );
    assert_eq!(len % SECTOR, 0);
    let bytes = &image[start..start + len];
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let len = usize::from(bytes[pos]);
        if len == 0 {
            pos = (pos + 1).next_multiple_of(SECTOR);
            continue;
        }
        assert!(
            pos % SECTOR + len <= SECTOR,
            "record at {pos} crosses a sector boundary"
        );
        assert!(len >= 34 && len % 2 == 0, "bad record length {len}");
        records.push(&bytes[pos..pos + len]);
        pos += len;
    }
    assert_eq!(identifier(records[0]), [0]);
    assert_eq!(identifier(records[1]), [1]);
    records
}

fn identifier(record: &[u8]) -> &[u8] {
    &record[33..33 + usize::from(record[32])]
}

fn system_use(record: &[u8]) -> &[u8] {
    let id_len = usize::from(record[32]);
    &record[33 + id_len + usize::from(id_len % 2 == 0)..]
}

fn susp_entries(mut area: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if area.len() < 4 || area[2] == 0 {
            return None;
        }
        let (entry, rest) = area.split_at(usize::from(area[2]));
        area = rest;
        Some(entry)
    })
}

/// File records (after "." and "..") to contents, joining multi-extent files.
fn files(image: &[u8], records: &[&[u8]], name_of: impl Fn(&[u8]) -> String) -> Files {
    let mut files = Files::new();
    let mut pending = Vec::new();
    for record in records {
        let (extent, len) = (
            both32(&record[2..10]) as usize,
            both32(&record[10..18]) as usize,
        );
        assert!(
            len == 0 || (extent + len.div_ceil(SECTOR)) * SECTOR <= image.len(),
            "extent beyond the volume"
        );
        pending.extend_from_slice(&image[extent * SECTOR..extent * SECTOR + len]);
        if record[25] & 0x80 == 0 {
            let previous = files.insert(name_of(record), std::mem::take(&mut pending));
            assert!(previous.is_none(), "a name occurs twice");
        } else {
            assert_eq!(len % SECTOR, 0, "a non-final extent is not whole sectors");
        }
    }
    assert!(
        pending.is_empty(),
        "the last record is flagged as continued"
    );
    files
}

// ---------------------------------------------------------------------------------------------
// Fixtures

/// Deterministic bytes that differ from sector to sector (xorshift).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `files` (in order) as a `cidata` image; returns the directory holding `seed.iso`.
fn write_image(files: &Files, max_extent: Option<u32>) -> (TempDir, PathBuf, Vec<u8>) {
    let mut image = IsoImage::new("cidata").unwrap();
    for (name, contents) in files {
        image.add_file(name, contents).unwrap();
    }
    if let Some(bytes) = max_extent {
        image.max_extent_size(bytes);
    }
    let bytes = image.to_bytes();
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("seed.iso");
    fs::write(&path, &bytes).unwrap();
    (dir, path, bytes)
}

fn check_everything(files: &Files, max_extent: Option<u32>) -> Parsed {
    let (_dir, iso, bytes) = write_image(files, max_extent);
    let parsed = parse(&bytes);
    assert_same_files("structural parser, Rock Ridge", &parsed.rock_ridge, files);
    assert_same_files("structural parser, Joliet", &parsed.joliet, files);
    assert_every_reader_sees(&iso, files);
    parsed
}

// ---------------------------------------------------------------------------------------------
// The NoCloud seed

#[test]
fn nocloud_seed_round_trips_through_every_reader() {
    let user_data = b"#cloud-config\npackages: [rsync]\n".to_vec();
    let seed = SeedIso::new(user_data.clone())
        .meta_data("instance-id: iid-test\n")
        .network_config("version: 2\n")
        .vendor_data("#cloud-config\n{}\n")
        .time(Timestamp::DEFAULT);
    let dir = TempDir::new().unwrap();
    let iso = dir.path().join("seed.iso");
    seed.write_to(&iso).unwrap();
    let expected: Files = [
        ("user-data", user_data),
        ("meta-data", b"instance-id: iid-test\n".to_vec()),
        ("network-config", b"version: 2\n".to_vec()),
        ("vendor-data", b"#cloud-config\n{}\n".to_vec()),
    ]
    .into_iter()
    .map(|(n, c)| (n.to_owned(), c))
    .collect();
    assert_every_reader_sees(&iso, &expected);
    let bytes = fs::read(&iso).unwrap();
    assert_eq!(parse(&bytes).rock_ridge, expected);
    assert_eq!(
        bytes,
        seed.to_bytes().unwrap(),
        "write_to and to_bytes differ"
    );
}

#[test]
fn default_meta_data_names_the_instance_and_host() {
    let bytes = SeedIso::new("#cloud-config\n")
        .time(Timestamp::DEFAULT)
        .to_bytes()
        .unwrap();
    let meta_data = String::from_utf8(parse(&bytes).rock_ridge["meta-data"].clone()).unwrap();
    let (id_line, rest) = meta_data.split_once('\n').unwrap();
    let hex = id_line.strip_prefix("instance-id: iid-").unwrap();
    assert!(
        hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id_line}"
    );
    assert_eq!(rest, "local-hostname: vmrun\n");
}

// ---------------------------------------------------------------------------------------------
// The writer's edge cases

#[test]
fn edge_case_sizes_round_trip_through_every_reader() {
    let mut files = Files::new();
    for (i, size) in [0, 0, 1, 2047, 2048, 2049, 4095, 4096, 4097, 3 * 2048]
        .into_iter()
        .enumerate()
    {
        files.insert(format!("size-{size}-{i}"), noise(size, i as u64));
    }
    files.insert("user-data".into(), Vec::new());
    check_everything(&files, None);
}

#[test]
fn two_hundred_files_span_several_directory_sectors() {
    let files: Files = (0..200)
        .map(|i| (format!("file-{i:03}"), noise(i * 37, i as u64)))
        .collect();
    let parsed = check_everything(&files, None);
    assert!(
        parsed.primary_root_sectors >= 5,
        "root directory has {} sectors",
        parsed.primary_root_sectors
    );
}

#[test]
fn a_64_mib_file_round_trips_through_every_reader() {
    let files: Files = [
        ("big".to_owned(), noise(64 << 20, 1)),
        ("meta-data".to_owned(), b"instance-id: iid-big\n".to_vec()),
        ("z-after-big".to_owned(), noise(2049, 2)),
    ]
    .into_iter()
    .collect();
    check_everything(&files, None);
}

/// Files above the extent limit (4 GiB - 2 KiB) become multi-extent files; a small limit
/// exercises that path with a 64 MiB file.
#[test]
fn multi_extent_files_round_trip() {
    let files: Files = [
        ("big".to_owned(), noise(64 << 20, 3)),
        ("odd-size".to_owned(), noise((5 << 20) + 7, 4)),
        ("user-data".to_owned(), b"#cloud-config\n".to_vec()),
    ]
    .into_iter()
    .collect();
    check_everything(&files, Some(1 << 20));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random file sets, sizes clustered around sector boundaries, through the structural
    /// parser and bsdtar.
    #[test]
    fn random_file_sets_round_trip_through_bsdtar(
        files in prop::collection::btree_map(
            "[a-z0-9-]{1,40}",
            prop_oneof![
                Just(0usize),
                2040usize..2056,
                4090usize..4100,
                0usize..10_000,
            ].prop_flat_map(|len| prop::collection::vec(any::<u8>(), len)),
            1..40,
        )
    ) {
        let (_dir, iso, bytes) = write_image(&files, None);
        let parsed = parse(&bytes);
        prop_assert_eq!(&parsed.rock_ridge, &files);
        prop_assert_eq!(&parsed.joliet, &files);
        prop_assert_eq!(&bsdtar_extract_all(&iso), &files);
    }
}

// ---------------------------------------------------------------------------------------------
// The Joliet tree as the common tools write it

/// The Joliet root directory's file records with what depends on where and when an image was
/// made (extent location, recording time) left out: length, extended attribute length, data
/// length, flags, unit size, gap, volume sequence number and identifier, in recorded order.
fn joliet_file_records(image: &[u8]) -> Vec<Vec<u8>> {
    let svd = sector(image, 17);
    assert_eq!(
        &svd[..7],
        b"\x02CD001\x01",
        "no supplementary descriptor in sector 17"
    );
    assert_eq!(&svd[88..91], b"%/E");
    directory(image, &svd[156..190])[2..]
        .iter()
        .map(|record| [&record[..2], &record[10..18], &record[25..]].concat())
        .collect()
}

/// vmrun's Joliet tree matches `genisoimage -J -r` and `xorriso -as mkisofs -J -r` record for
/// record: names without a `;1` version, in the same order, of the same lengths.
#[test]
fn joliet_tree_is_the_one_genisoimage_and_xorriso_write() {
    let mut files: Files = ["user-data", "meta-data", "network-config", "vendor-data"]
        .into_iter()
        .chain([
            "a",
            "a-b",
            "a.b",
            "Z",
            "x.",
            ".profile",
            "é€",
            &"L".repeat(64),
        ])
        .enumerate()
        .map(|(i, name)| (name.to_owned(), noise(i * 700, i as u64)))
        .collect();
    files.insert("empty".into(), Vec::new());
    let (dir, _iso, ours) = write_image(&files, None);
    let input = dir.path().join("in");
    fs::create_dir(&input).unwrap();
    for (name, contents) in &files {
        fs::write(input.join(name), contents).unwrap();
    }
    let common = [
        "-quiet",
        "-input-charset",
        "utf-8",
        "-J",
        "-r",
        "-V",
        "cidata",
    ];
    let theirs = [
        ("genisoimage", &["genisoimage"][..]),
        ("xorriso -as mkisofs", &["xorriso", "-as", "mkisofs"][..]),
    ];
    let expected = joliet_file_records(&ours);
    assert_eq!(expected.len(), files.len());
    for (maker, command) in theirs {
        let out = dir.path().join("theirs.iso");
        let args = [
            &command[1..],
            &common,
            &["-o", path_str(&out), path_str(&input)],
        ]
        .concat();
        run(command[0], &args);
        let records = joliet_file_records(&fs::read(&out).unwrap());
        let names = |records: &[Vec<u8>]| -> Vec<String> {
            records
                .iter()
                .map(|r| {
                    let units: Vec<u16> = r[18..18 + usize::from(r[17])]
                        .chunks(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect();
                    String::from_utf16_lossy(&units)
                })
                .collect()
        };
        assert_eq!(
            names(&expected),
            names(&records),
            "{maker} names or orders otherwise"
        );
        assert_eq!(expected, records, "{maker} writes other Joliet records");
    }
}

// ---------------------------------------------------------------------------------------------
// `vmrun seed`, the cloud-localds drop-in

fn vmrun_seed(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmrun"))
        .arg("seed")
        .args(args)
        .current_dir(dir)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap()
}

fn seed_inputs() -> TempDir {
    let dir = TempDir::new().unwrap();
    fs::write(
        dir.path().join("user-data"),
        "#cloud-config\nhostname: box\n",
    )
    .unwrap();
    fs::write(dir.path().join("meta-data"), "instance-id: iid-cli\n").unwrap();
    fs::write(dir.path().join("net.yaml"), "version: 2\nethernets: {}\n").unwrap();
    dir
}

#[test]
fn cli_output_is_byte_identical_across_runs() {
    let dir = seed_inputs();
    let args = |out| {
        [
            "-o",
            out,
            "--user-data",
            "user-data",
            "--meta-data",
            "meta-data",
            "--network-config",
            "net.yaml",
        ]
    };
    for out in ["a.iso", "b.iso"] {
        let output = vmrun_seed(dir.path(), &args(out));
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let a = fs::read(dir.path().join("a.iso")).unwrap();
    assert!(
        a == fs::read(dir.path().join("b.iso")).unwrap(),
        "two runs differ"
    );
    let expected: Files = [
        ("user-data", "#cloud-config\nhostname: box\n"),
        ("meta-data", "instance-id: iid-cli\n"),
        ("network-config", "version: 2\nethernets: {}\n"),
    ]
    .into_iter()
    .map(|(n, c)| (n.to_owned(), c.as_bytes().to_vec()))
    .collect();
    assert_every_reader_sees(&dir.path().join("a.iso"), &expected);
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        5,
        "temporary files left behind: {leftovers:?}"
    );
}

#[test]
fn cli_default_meta_data_follows_the_user_data() {
    let dir = seed_inputs();
    let seed = |out| vmrun_seed(dir.path(), &["-o", out, "--user-data", "user-data"]);
    assert!(seed("a.iso").status.success());
    fs::write(
        dir.path().join("user-data"),
        "#cloud-config\nhostname: other\n",
    )
    .unwrap();
    assert!(seed("b.iso").status.success());
    let meta = |iso: &str| {
        bsdtar_extract_all(&dir.path().join(iso))
            .remove("meta-data")
            .unwrap()
    };
    assert_ne!(
        meta("a.iso"),
        meta("b.iso"),
        "instance-id does not follow the user-data"
    );
}

#[test]
fn cli_names_a_missing_input_file() {
    let dir = seed_inputs();
    let output = vmrun_seed(
        dir.path(),
        &[
            "-o",
            "out.iso",
            "--user-data",
            "user-data",
            "--vendor-data",
            "no-such-vendor-data",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(240), "{stderr}");
    assert!(stderr.contains("no-such-vendor-data"), "{stderr}");
    assert!(!dir.path().join("out.iso").exists());
}

#[test]
fn cli_names_an_unwritable_output() {
    let dir = seed_inputs();
    let output = vmrun_seed(
        dir.path(),
        &["-o", "no-such-dir/out.iso", "--user-data", "user-data"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(244), "{stderr}");
    assert!(stderr.contains("no-such-dir/out.iso"), "{stderr}");
}

#[test]
fn cli_honours_source_date_epoch() {
    let dir = seed_inputs();
    let seed = |epoch: &str| {
        Command::new(env!("CARGO_BIN_EXE_vmrun"))
            .args(["seed", "-o", "out.iso", "--user-data", "user-data"])
            .current_dir(dir.path())
            .env("SOURCE_DATE_EPOCH", epoch)
            .output()
            .unwrap()
    };
    assert!(seed("1700000000").status.success());
    let iso = dir.path().join("out.iso");
    let info =
        String::from_utf8(run("isoinfo", &["-R", "-l", "-i", path_str(&iso)]).stdout).unwrap();
    assert!(info.contains("Nov 14 2023"), "{info}");

    for bad in ["yesterday", "-5", "1.5", ""] {
        let output = seed(bad);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(240), "{bad:?}: {stderr}");
        assert!(stderr.contains("SOURCE_DATE_EPOCH"), "{stderr}");
    }
}
