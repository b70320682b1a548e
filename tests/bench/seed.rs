//! `cargo bench --bench seed`: a typical NoCloud seed (2 KB cloud-config, 100-byte meta-data)
//! made in process, and whole-process `vmrun seed` against `genisoimage`, the tool behind
//! cloud-localds. Prints a table of medians and minimums in microseconds.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vmrun::seed::{SeedIso, Timestamp};

const IN_PROCESS_RUNS: usize = 2000;
const PROCESS_RUNS: usize = 20;

fn main() {
    let user_data = typical_user_data();
    let meta_data = "instance-id: iid-0123456789abcdef\nlocal-hostname: bench-vm\n\
                     public-keys: []\nplatform: nocloud\n";
    let dir = tempfile::tempdir().expect("temporary directory");
    fs::write(dir.path().join("user-data"), &user_data).unwrap();
    fs::write(dir.path().join("meta-data"), meta_data).unwrap();
    let seed = SeedIso::new(user_data.clone())
        .meta_data(meta_data)
        .time(Timestamp::DEFAULT);
    println!(
        "seed: user-data {} bytes, meta-data {} bytes, image {} bytes",
        user_data.len(),
        meta_data.len(),
        seed.to_bytes().unwrap().len()
    );

    let mut rows = vec![
        (
            "SeedIso::to_bytes (in process)",
            IN_PROCESS_RUNS,
            Some(time(IN_PROCESS_RUNS, || drop(seed.to_bytes().unwrap()))),
        ),
        (
            "SeedIso::write_to (in process)",
            IN_PROCESS_RUNS,
            Some(time(IN_PROCESS_RUNS, || {
                seed.write_to(&dir.path().join("in-process.iso")).unwrap()
            })),
        ),
    ];

    let vmrun = Path::new(env!("CARGO_BIN_EXE_vmrun"));
    let vmrun_args = [
        "seed",
        "-o",
        "vmrun.iso",
        "--user-data",
        "user-data",
        "--meta-data",
        "meta-data",
    ];
    rows.push((
        "vmrun seed (whole process)",
        PROCESS_RUNS,
        process_times(vmrun, &vmrun_args, dir.path()),
    ));

    let genisoimage_args = [
        "-output",
        "genisoimage.iso",
        "-volid",
        "cidata",
        "-joliet",
        "-rock",
        "user-data",
        "meta-data",
    ];
    let genisoimage = which::which("genisoimage").ok();
    let genisoimage_times = match &genisoimage {
        Some(path) => process_times(path, &genisoimage_args, dir.path()),
        None => {
            println!("genisoimage not on PATH (apt-get install genisoimage): skipped");
            None
        }
    };
    rows.push((
        "genisoimage -joliet -rock (whole process)",
        PROCESS_RUNS,
        genisoimage_times,
    ));

    println!();
    println!(
        "{:<42} {:>6} {:>12} {:>12}",
        "", "runs", "median µs", "min µs"
    );
    for (name, runs, times) in rows {
        match times {
            Some(mut times) => {
                times.sort();
                let micros = |d: Duration| d.as_secs_f64() * 1e6;
                println!(
                    "{name:<42} {runs:>6} {:>12.1} {:>12.1}",
                    micros(times[times.len() / 2]),
                    micros(times[0])
                );
            }
            None => println!("{name:<42} {runs:>6} {:>12} {:>12}", "skipped", "skipped"),
        }
    }
}

/// Durations of `runs` calls of `f`, after a few untimed ones to warm caches.
fn time(runs: usize, mut f: impl FnMut()) -> Vec<Duration> {
    for _ in 0..10 {
        f();
    }
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect()
}

/// Durations of `PROCESS_RUNS` runs of `program args` in `dir`, or None (said why) when the
/// program is missing or fails.
fn process_times(program: &Path, args: &[&str], dir: &Path) -> Option<Vec<Duration>> {
    if !program.exists() {
        println!("{} not built: skipped", program.display());
        return None;
    }
    let mut failed = None;
    let times = time(PROCESS_RUNS, || {
        let status = Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            failed = Some(status);
        }
    });
    match failed {
        Some(status) => {
            println!("{} failed ({status:?}): skipped", program.display());
            None
        }
        None => Some(times),
    }
}

/// A cloud-config of about 2 KB, shaped like what a bake renders: a user with keys, packages,
/// files and commands.
fn typical_user_data() -> String {
    let key = |name: &str| {
        format!(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{}{} {name}@vmrun",
            "x".repeat(34),
            name.len()
        )
    };
    let mut doc = String::from("#cloud-config\nhostname: bench-vm\nusers:\n  - name: vmrun\n");
    doc += "    sudo: ALL=(ALL) NOPASSWD:ALL\n    shell: /bin/bash\n    ssh_authorized_keys:\n";
    for who in ["ci", "dev", "ops"] {
        doc += &format!("      - {}\n", key(who));
    }
    doc += "ssh_keys:\n  ed25519_private: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n";
    for line in 0..12 {
        doc += &format!(
            "    b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW{line}\n"
        );
    }
    doc += "    -----END OPENSSH PRIVATE KEY-----\n";
    doc += &format!("  ed25519_public: {}\n", key("host"));
    doc += "packages: [rsync, qemu-guest-agent, build-essential, git, curl, ca-certificates]\n";
    doc += "write_files:\n  - path: /etc/vmrun/env\n    permissions: '0644'\n    content: |\n";
    for var in ["CI=true", "LANG=C.UTF-8", "TZ=UTC", "VMRUN=1"] {
        doc += &format!("      {var}\n");
    }
    doc += "runcmd:\n  - [systemctl, enable, --now, qemu-guest-agent]\n  - [mkdir, -p, /work]\n";
    doc += "  - [chown, 'vmrun:vmrun', /work]\n  - [sh, -c, 'echo vmrun ready > /dev/ttyS0']\n";
    doc += "power_state: {mode: poweroff, condition: true}\n";
    doc
}
