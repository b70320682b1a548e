//! How long `vmrun bake --image debian:bookworm` takes from a built Debian source (the boot
//! and cloud-init provisioning), and how long the same bake takes again (a store hit).
//! Run with `cargo bench --bench bake` (BAKE_RUNS=N for more cold bakes; default 3).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vmrun::image::debian::DebianImage;
use vmrun::paths::Home;

const VMRUN: &str = env!("CARGO_BIN_EXE_vmrun");
const HIT_RUNS: usize = 20;

fn bake(home: &Path) -> Duration {
    let started = Instant::now();
    let out = Command::new(VMRUN)
        .args(["bake", "--image", "debian:bookworm", "--name", "bench"])
        .env("VMRUN_HOME", home)
        .current_dir(home)
        .output()
        .expect("vmrun runs");
    assert!(
        out.status.success(),
        "bake failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("BAKE_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let shared = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vmrun-home");
    let debian = Home::under(&shared).sources().join("debian");
    DebianImage::bookworm()
        .ensure_cached(&debian, &|e| eprintln!("{e:?}"))
        .expect("Debian source");

    let mut cold = Vec::new();
    let mut hits = Vec::new();
    for run in 0..runs {
        // A fresh home each time, sharing only the built Debian source: every bake boots.
        let home = tempfile::tempdir().expect("temporary home");
        let sources = Home::under(home.path()).sources();
        std::fs::create_dir_all(&sources).unwrap();
        std::os::unix::fs::symlink(&debian, sources.join("debian")).unwrap();
        let took = bake(home.path());
        eprintln!("cold bake {}: {:.1} s", run + 1, took.as_secs_f64());
        cold.push(took);
        if run == 0 {
            hits = (0..HIT_RUNS).map(|_| bake(home.path())).collect();
        }
    }
    println!("\nvmrun bake --image debian:bookworm (source already built), accel from VMRUN_ACCEL");
    println!("{:<40} {:>5} {:>12} {:>12}", "", "runs", "median", "min");
    println!(
        "{:<40} {:>5} {:>10.1} s {:>10.1} s",
        "cold bake (boot, cloud-init, poweroff)",
        cold.len(),
        median(cold.clone()).as_secs_f64(),
        cold.iter().min().unwrap().as_secs_f64()
    );
    println!(
        "{:<40} {:>5} {:>9.1} ms {:>9.1} ms",
        "same bake again (store hit)",
        hits.len(),
        median(hits.clone()).as_secs_f64() * 1e3,
        hits.iter().min().unwrap().as_secs_f64() * 1e3
    );
}
