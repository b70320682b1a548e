//! `vmrun test -- true` end to end: resumed from the warm state (on each network: the default
//! isolated `outbound`, `host` and `none`), booted cold, and the plain
//! shell flow it replaces (tests/bench/shell_flow.sh), on the same baked image in the same
//! run. Prints medians, the per-phase breakdown, the warm state's size and peak memory (of
//! the largest process, QEMU, and of the whole tree: vmrun or the script and all it started).
//! Run with `cargo bench --bench test_run` (RUNS=N, default 3; the image is baked first).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vmrun::paths::Home;

const VMRUN: &str = env!("CARGO_BIN_EXE_vmrun");

struct Sample {
    took: Duration,
    /// Peak resident memory of the largest process in the tree (QEMU), KiB.
    max_rss_kib: i64,
    /// Peak of the whole tree's resident memory added up (vmrun, QEMU, ssh, rsync), KiB,
    /// sampled every [`SAMPLE_EVERY`].
    peak_tree_kib: u64,
    stderr: String,
}

const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// Resident memory of `pid` and all its descendants, KiB; 0 for a process that is gone.
fn tree_rss_kib(pid: u32) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page_kib = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64) / 1024;
    let own = std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        * page_kib;
    // Children are listed under the thread that started them.
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten();
    let children = tasks
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
                .collect::<Vec<_>>()
        });
    own + children.map(tree_rss_kib).sum::<u64>()
}

/// Runs `cmd` to completion, measuring wall time and the peak RSS of it and its children.
fn measure(mut cmd: Command) -> Sample {
    let started = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let pid = child.id() as libc::pid_t;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(tree_rss_kib(pid as u32));
                std::thread::sleep(SAMPLE_EVERY);
            }
            peak
        })
    };
    let mut stderr = child.stderr.take().expect("piped");
    let output = std::thread::spawn(move || {
        let mut err = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut err).ok();
        err
    });
    let mut status = 0;
    // SAFETY: zeroed rusage is valid; wait4 reaps our own child (so `child` is not waited).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    std::mem::forget(child);
    let took = started.elapsed();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak_tree_kib = sampler.join().unwrap();
    let stderr = output.join().unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "failed: {stderr}"
    );
    Sample {
        took,
        max_rss_kib: usage.ru_maxrss,
        peak_tree_kib,
        stderr,
    }
}

fn median(samples: &[Sample]) -> &Sample {
    let mut sorted: Vec<&Sample> = samples.iter().collect();
    sorted.sort_by_key(|s| s.took);
    sorted[sorted.len() / 2]
}

fn vmrun(home: &Path, project: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(VMRUN);
    cmd.args(args).env("VMRUN_HOME", home).current_dir(project);
    cmd
}

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let home = std::env::var_os("VMRUN_TEST_HOME")
        .map(Into::into)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("vmrun-home"));
    let accel = match std::env::var("VMRUN_ACCEL").as_deref() {
        Ok("kvm") => "kvm",
        _ => "tcg",
    };
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("README"), "a small project\n").unwrap();
    let bake = vmrun(
        &home,
        project.path(),
        &["bake", "--image", "debian:bookworm", "--name", "bench"],
    )
    .output()
    .unwrap();
    assert!(
        bake.status.success(),
        "bake: {}",
        String::from_utf8_lossy(&bake.stderr)
    );
    let entry = std::fs::canonicalize(Home::under(&home).images().join("bench")).unwrap();
    let state_bytes = std::fs::metadata(entry.join("warm/state"))
        .map(|m| m.len())
        .unwrap_or(0);

    let mut warm = Vec::new();
    let mut warm_host = Vec::new();
    let mut warm_none = Vec::new();
    let mut cold = Vec::new();
    let mut shell = Vec::new();
    for i in 0..runs {
        // The warm runs on each network, the default `outbound` (isolated), `host` (QEMU's own
        // user networking, as before isolation) and `none`, in an order that turns each round:
        // the first run after the cold boot and the shell flow may find the warm state
        // evicted from the page cache (these machines reclaim idle cache), and that cost must
        // not always fall on the same network.
        for turn in 0..3 {
            let (network, samples) = match (i + turn) % 3 {
                0 => ("outbound", &mut warm),
                1 => ("host", &mut warm_host),
                _ => ("none", &mut warm_none),
            };
            samples.push(measure(vmrun(
                &home,
                project.path(),
                &[
                    "test",
                    "--image",
                    "bench",
                    "--network",
                    network,
                    "--",
                    "true",
                ],
            )));
        }
        cold.push(measure(vmrun(
            &home,
            project.path(),
            &["test", "--image", "bench", "--cold", "--", "true"],
        )));
        let mut flow = Command::new("bash");
        flow.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bench/shell_flow.sh"))
            .arg(&entry)
            .arg(project.path())
            .arg(accel);
        shell.push(measure(flow));
        eprintln!(
            "round {}: warm {:.2}s (host network {:.2}s, none {:.2}s), \
             cold {:.2}s, shell flow {:.2}s",
            i + 1,
            warm[i].took.as_secs_f64(),
            warm_host[i].took.as_secs_f64(),
            warm_none[i].took.as_secs_f64(),
            cold[i].took.as_secs_f64(),
            shell[i].took.as_secs_f64()
        );
    }
    let (w, c, s) = (median(&warm), median(&cold), median(&shell));
    println!(
        "\n`true` in a fresh VM, end to end ({runs} runs each, accel {accel}); warm state {} MiB",
        state_bytes >> 20
    );
    println!(
        "{:<34} {:>10} {:>10} {:>22} {:>22}",
        "", "median", "min", "peak RSS, QEMU (MiB)", "peak RSS, all (MiB)"
    );
    for (name, samples, m) in [
        ("vmrun test (warm)", &warm, w),
        (
            "vmrun test --network host (warm)",
            &warm_host,
            median(&warm_host),
        ),
        (
            "vmrun test --network none (warm)",
            &warm_none,
            median(&warm_none),
        ),
        ("vmrun test --cold", &cold, c),
        ("shell flow", &shell, s),
    ] {
        let min = samples.iter().map(|s| s.took).min().unwrap();
        println!(
            "{:<34} {:>9.2}s {:>9.2}s {:>22} {:>22}",
            name,
            m.took.as_secs_f64(),
            min.as_secs_f64(),
            m.max_rss_kib / 1024,
            m.peak_tree_kib / 1024
        );
    }
    println!(
        "shell flow / warm: {:.1}x",
        s.took.as_secs_f64() / w.took.as_secs_f64()
    );
    println!(
        "isolated network's cost per warm run: {:+.3}s (outbound {:.3}s, host {:.3}s, none {:.3}s)",
        w.took.as_secs_f64() - median(&warm_host).took.as_secs_f64(),
        w.took.as_secs_f64(),
        median(&warm_host).took.as_secs_f64(),
        median(&warm_none).took.as_secs_f64()
    );
    for (name, m) in [("warm", w), ("cold", c)] {
        println!("\nphases of the median {name} run:");
        for line in m
            .stderr
            .lines()
            .filter(|l| !l.starts_with('[') && !l.starts_with("note:"))
        {
            println!("  {line}");
        }
    }
}
