//! Images vmrun must refuse, made by QEMU's own `qemu-img`: one whose data lives in an external
//! file (a stand-in for `/etc/shadow`), one with an incompatible feature bit no QEMU knows, one
//! encrypted with LUKS. `vmrun bake`, `vmrun vm create` and `vmrun test` refuse each with exit
//! code 240 and a message naming the file and the reason, before any VM boots: QEMU is a fake
//! here that logs how it was called. No VM and no systemd, so these take seconds.

mod common;
#[path = "support/http_server.rs"]
mod http_server;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};
use vmrun::exit_code::BAD_INPUT;
use vmrun::paths::Home;
use vmrun::store::{BakedImage, Manifest, Store};

fn run_qemu_img(args: &[&str]) -> Output {
    let program = vmrun::tools::find("qemu-img").expect("the tests need qemu-img (qemu-utils)");
    Command::new(program).args(args).output().unwrap()
}

fn qemu_img(args: &[&str]) -> String {
    let out = run_qemu_img(args);
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A hostile image and the words a refusal of it must contain (besides its path).
struct Hostile {
    path: PathBuf,
    reason: String,
}

/// A qcow2 whose guest data is `host_file`, as `qemu-img` writes it (QEMU sizes that file to
/// the disk, so it is a scratch file here, never a real secret).
fn with_data_file(dir: &Path) -> Hostile {
    let host_file = dir.join("host-secret");
    fs::write(&host_file, "root:$6$hash:19000:0:99999:7:::\n").unwrap();
    let path = dir.join("data-file.qcow2");
    let option = format!("data_file={},data_file_raw=on", path_str(&host_file));
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &option,
        path_str(&path),
        "1M",
    ]);
    let info = qemu_img(&["info", "--output=json", path_str(&path)]);
    assert!(info.contains(path_str(&host_file)), "{info}");
    Hostile {
        path,
        reason: format!(
            "keeps its data in an external file `{}`; vmrun refuses images that read host files",
            host_file.display()
        ),
    }
}

/// A valid qcow2 with incompatible feature bit 9 set (header bytes 72..80, big-endian).
fn with_unknown_feature(dir: &Path) -> Hostile {
    let path = dir.join("feature-bit-9.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", path_str(&path), "1M"]);
    let mut bytes = fs::read(&path).unwrap();
    bytes[78] |= 0x02;
    fs::write(&path, bytes).unwrap();
    // QEMU's reader agrees that this is an incompatible feature (0x200) it does not know.
    let info = run_qemu_img(&["info", path_str(&path)]);
    let stderr = String::from_utf8_lossy(&info.stderr);
    assert!(
        stderr.contains("Unknown incompatible feature: 200"),
        "{stderr}"
    );
    Hostile {
        path,
        reason: "uses qcow2 incompatible feature bit 9, which vmrun does not know".to_owned(),
    }
}

fn with_luks(dir: &Path) -> Hostile {
    let path = dir.join("luks.qcow2");
    let create = [
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        "secret,id=s,data=x",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=s",
        path_str(&path),
        "1M",
    ];
    // qemu-img times PBKDF2 on its thread's CPU clock to choose the iteration count, and
    // gives up ("Unable to get accurate CPU usage") when a busy machine leaves that at 0 ms.
    let stderr = |out: &Output| String::from_utf8_lossy(&out.stderr).into_owned();
    // Seen to fail five times in a row on a busy machine: more tries, a moment apart.
    let created = (0..30)
        .map(|attempt| {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            run_qemu_img(&create)
        })
        .find(|out| !stderr(out).contains("Unable to get accurate CPU usage"))
        .expect("qemu-img never got a CPU time for PBKDF2 in 30 tries");
    assert!(created.status.success(), "{}", stderr(&created));
    Hostile {
        path,
        reason: "is encrypted (LUKS, crypt_method 2); vmrun has no key for it".to_owned(),
    }
}

fn hostile_images(dir: &Path) -> Vec<Hostile> {
    vec![
        with_data_file(dir),
        with_unknown_feature(dir),
        with_luks(dir),
    ]
}

/// A VMRUN_HOME, an empty working directory, a fake QEMU first on PATH, and no systemd
/// user manager (an empty XDG_RUNTIME_DIR).
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let sandbox = Sandbox {
            dir: tempfile::tempdir().unwrap(),
        };
        for sub in ["home", "cwd", "bin", "config", "images"] {
            fs::create_dir(sandbox.path(sub)).unwrap();
        }
        fs::create_dir(sandbox.path("xdg")).unwrap();
        fs::set_permissions(sandbox.path("xdg"), fs::Permissions::from_mode(0o700)).unwrap();
        let qemu = sandbox.path("bin/qemu-system-x86_64");
        let script = format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\n\
             [ \"$1\" = --version ] && echo 'QEMU emulator version 7.2.22' && exit 0\nexit 1\n",
            path_str(&sandbox.path("qemu-calls"))
        );
        fs::write(&qemu, script).unwrap();
        fs::set_permissions(&qemu, fs::Permissions::from_mode(0o755)).unwrap();
        sandbox
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn home(&self) -> Home {
        Home::under(&self.path("home"))
    }

    fn vmrun(&self, args: &[&str]) -> Output {
        let path = std::env::join_paths(std::iter::once(self.path("bin")).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .unwrap();
        Command::new(common::VMRUN)
            .args(args)
            .current_dir(self.path("cwd"))
            .env("PATH", path)
            .env("VMRUN_HOME", self.path("home"))
            .env("VMRUN_ACCEL", "tcg")
            .env("XDG_RUNTIME_DIR", self.path("xdg"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .output()
            .unwrap()
    }

    /// Fails the test if the fake QEMU was asked to start a machine (anything with a drive).
    fn assert_no_vm_booted(&self) {
        let calls = fs::read_to_string(self.path("qemu-calls")).unwrap_or_default();
        assert!(!calls.contains("-drive"), "QEMU was started: {calls}");
    }
}

/// miette wraps long messages at 80 columns, anywhere (also inside paths): compare without
/// whitespace or its gutter.
fn squashed(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace() && *c != '│')
        .collect()
}

fn assert_refused(out: &Output, image: &Path, reason: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(BAD_INPUT.into()), "{stderr}");
    let expected = format!("`{}` {reason}", image.display());
    assert!(
        squashed(&stderr).contains(&squashed(&expected)),
        "expected `{expected}` in:\n{stderr}"
    );
}

#[test]
fn bake_refuses_each_hostile_image_before_any_vm_boots() {
    let sandbox = Sandbox::new();
    for hostile in hostile_images(&sandbox.path("images")) {
        let out = sandbox.vmrun(&["bake", "--image", path_str(&hostile.path)]);
        assert_refused(&out, &hostile.path, &hostile.reason);
    }
    sandbox.assert_no_vm_booted();
    assert_eq!(
        files_under(&sandbox.path("home")),
        Vec::<PathBuf>::new(),
        "nothing was imported or baked"
    );
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn bake_refuses_each_hostile_image_downloaded_from_a_url() {
    let sandbox = Sandbox::new();
    for hostile in hostile_images(&sandbox.path("images")) {
        let server = http_server::Server::start(fs::read(&hostile.path).unwrap());
        let url = server.url("/cloud.qcow2");
        let out = sandbox.vmrun(&["bake", "--image", &url]);
        // Named as the file it was downloaded to, under vmrun's sources.
        let downloads = sandbox.home().sources().join("downloads");
        let stderr = squashed(&String::from_utf8_lossy(&out.stderr));
        let downloaded = stderr
            .split('`')
            .find(|quoted| quoted.starts_with(path_str(&downloads)))
            .unwrap_or_else(|| panic!("no file under {downloads:?} named in {stderr}"));
        assert_refused(&out, Path::new(downloaded), &hostile.reason);
    }
    sandbox.assert_no_vm_booted();
}

/// The control for the tests above: a harmless image does reach the fake QEMU, so its silence
/// there means the refusal came first.
#[test]
fn a_harmless_image_gets_as_far_as_starting_qemu() {
    let sandbox = Sandbox::new();
    let disk = sandbox.path("images/plain.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", path_str(&disk), "1M"]);
    let out = sandbox.vmrun(&["bake", "--image", path_str(&disk)]);
    assert!(!out.status.success());
    let calls = fs::read_to_string(sandbox.path("qemu-calls")).unwrap_or_default();
    assert!(
        calls.contains("-drive"),
        "QEMU was not started: {calls}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Puts a store entry named `name` whose disk is `disk`, as if a bake had made it and someone
/// changed it afterwards.
fn tampered_store_entry(sandbox: &Sandbox, name: &str, disk: impl FnOnce(&Path)) {
    let store = Store::new(&sandbox.home());
    let staging = store.staging().unwrap();
    disk(&staging.path().join(BakedImage::DISK));
    // What a bake leaves beside the disk; no one connects with them here.
    fs::write(
        staging.path().join(BakedImage::HOST_KEY),
        "ssh-ed25519 AAAA vmrun-guest\n",
    )
    .unwrap();
    fs::write(staging.path().join(BakedImage::CLIENT_KEY), "not a key\n").unwrap();
    let key: String = Sha256::digest(name)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let manifest = Manifest {
        key: key.clone(),
        source: "tampered".to_owned(),
        source_digest: "0".repeat(64),
        created: 0,
        cpus: 1,
        memory_mib: 512,
        vmrun_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    store.commit(staging, &manifest).unwrap();
    store
        .set_name(&vmrun::name::ImageName::new(name).unwrap(), &key)
        .unwrap();
}

#[test]
fn vm_create_and_test_refuse_a_store_entry_changed_to_reach_a_hostile_image() {
    let sandbox = Sandbox::new();
    for (i, hostile) in hostile_images(&sandbox.path("images"))
        .into_iter()
        .enumerate()
    {
        // The entry's own disk is the hostile image...
        let own = format!("own-{i}");
        tampered_store_entry(&sandbox, &own, |disk| {
            fs::copy(&hostile.path, disk).unwrap();
        });
        let entry_disk = Store::new(&sandbox.home())
            .get(&vmrun::name::ImageName::new(&own).unwrap())
            .unwrap()
            .disk();
        let out = sandbox.vmrun(&["vm", "create", "victim", "--image", &own]);
        assert_refused(&out, &entry_disk, &hostile.reason);

        // ...or a harmless layer over it, as when the source under a baked image is replaced.
        let under = format!("under-{i}");
        tampered_store_entry(&sandbox, &under, |disk| {
            let backing = path_str(&hostile.path);
            let disk = path_str(disk);
            qemu_img(&[
                "create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", "qcow2", disk, "1M",
            ]);
        });
        let out = sandbox.vmrun(&["vm", "create", "victim", "--image", &under]);
        assert_refused(&out, &hostile.path, &hostile.reason);
        let out = sandbox.vmrun(&["test", "--image", &under, "--", "true"]);
        assert_refused(&out, &hostile.path, &hostile.reason);
    }
    sandbox.assert_no_vm_booted();
    assert!(
        !sandbox.home().vms().join("victim").exists(),
        "no VM was made"
    );
    assert!(
        !sandbox.path("config/systemd").exists(),
        "no unit was written"
    );
}

/// QEMU never guesses a format: every layer of a chain of overlays vmrun writes records its
/// backing file's format, as QEMU's own reader sees it.
#[test]
fn every_overlay_in_a_chain_records_its_backing_format() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.raw");
    qemu_img(&["create", "-q", "-f", "raw", path_str(&base), "4M"]);
    let mut top = base;
    for layer in 0..3 {
        let overlay = dir.path().join(format!("layer-{layer}.qcow2"));
        vmrun::disk::Overlay::create(&overlay, &top).unwrap();
        top = overlay;
    }
    let info = qemu_img(&["info", "--backing-chain", "--output=json", path_str(&top)]);
    let chain: Vec<serde_json::Value> = serde_json::from_str(&info).unwrap();
    assert_eq!(chain.len(), 4, "{info}");
    for pair in chain.windows(2) {
        let (image, backing) = (&pair[0], &pair[1]);
        assert_eq!(image["backing-filename"], backing["filename"], "{info}");
        assert_eq!(
            image["backing-filename-format"], backing["format"],
            "{} records no format, or the wrong one: {info}",
            image["filename"]
        );
    }
    assert_eq!(chain[3]["format"], "raw");
}
