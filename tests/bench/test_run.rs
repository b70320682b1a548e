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

#[path = "support.rs"]
mod support;

use support::vmrun;

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

/// `pid` and all its descendants.
fn tree(pid: u32) -> Vec<u32> {
    // Children are listed under the thread that started them.
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten();
    let children: Vec<u32> = tasks
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    std::iter::once(pid)
        .chain(children.into_iter().flat_map(tree))
        .collect()
}

/// Resident memory of `pid` and all its descendants, KiB (0 for processes that are gone).
fn tree_rss_kib(pid: u32) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page_kib = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64) / 1024;
    let rss = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/statm"))
            .ok()
            .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    tree(pid).into_iter().map(rss).sum::<u64>() * page_kib
}

/// The proportional set sizes (PSS, KiB) of the QEMU processes under `pid`: each page shared
/// by N processes counts 1/N in each, so their sum is what they take together.
fn qemu_pss_kib(pid: u32) -> Vec<u64> {
    let is_qemu = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.starts_with("qemu-system"))
    };
    let pss = |pid: u32| {
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    tree(pid)
        .into_iter()
        .filter(is_qemu)
        .filter_map(pss)
        .collect()
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

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let home = support::home();
    let accel = match std::env::var("VMRUN_ACCEL").as_deref() {
        Ok("kvm") => "kvm",
        _ => "tcg",
    };
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("README"), "a small project\n").unwrap();
    support::bake_bench_image(&home, project.path());
    let entry = std::fs::canonicalize(Home::under(&home).images().join("bench")).unwrap();
    let on_disk = |file: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(entry.join("warm").join(file)).map_or(0, |m| m.blocks() * 512)
    };
    let (ram_bytes, state_bytes) = (on_disk("ram"), on_disk("state"));

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
        "\n`true` in a fresh VM, end to end ({runs} runs each, accel {accel}); warm state on \
         disk {} MiB (RAM file {} MiB, device state {} KiB)",
        (ram_bytes + state_bytes) >> 20,
        ram_bytes >> 20,
        state_bytes >> 10
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
    clones_at_once(&home, project.path());
    let series = measure(vmrun(
        &home,
        project.path(),
        &["test", "--image", "bench", "--repeat", "20", "--", "true"],
    ));
    println!(
        "\n`vmrun test --repeat 20 -- true` (warm): {:.2}s in all, {:.2}s a run",
        series.took.as_secs_f64(),
        series.took.as_secs_f64() / 20.0
    );
    vm_create(&home, project.path(), runs);
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

/// `--jobs 3 --repeat 3 -- sleep 20`: the QEMU processes' summed PSS while all three run
/// (sampled every half second; the highest sum is printed).
fn clones_at_once(home: &Path, project: &Path) {
    let mut child = vmrun(
        home,
        project,
        &[
            "test", "--image", "bench", "--jobs", "3", "--repeat", "3", "--", "sleep", "20",
        ],
    )
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("starts");
    let mut peak: Vec<u64> = Vec::new();
    while child.try_wait().expect("waits").is_none() {
        let pss = qemu_pss_kib(child.id());
        if pss.len() == 3 && pss.iter().sum::<u64>() > peak.iter().sum() {
            peak = pss;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let each: Vec<String> = peak.iter().map(|k| format!("{}", k >> 10)).collect();
    println!(
        "\n`--jobs 3 --repeat 3 -- sleep 20` (warm, 1 GiB guests): the three QEMU processes' \
         summed PSS {} MiB at its highest ({} MiB each)",
        peak.iter().sum::<u64>() >> 10,
        each.join(" + ")
    );
}

/// `vmrun vm create` until the guest answers SSH, then `vm delete`; needs a systemd user
/// manager (skipped, saying so, without one).
fn vm_create(home: &Path, project: &Path, runs: usize) {
    let mut took = Vec::new();
    for _ in 0..runs {
        let name = "bench-vm";
        let create = measure_status(vmrun(
            home,
            project,
            &["vm", "create", name, "--image", "bench"],
        ));
        let deleted = vmrun(home, project, &["vm", "delete", name]).output();
        match (create, deleted) {
            (Ok(t), Ok(out)) if out.status.success() => took.push(t),
            (Err(why), _) => {
                println!("\n`vmrun vm create` skipped: {why}");
                return;
            }
            (_, out) => panic!("vm delete: {out:?}"),
        }
    }
    took.sort();
    println!(
        "\n`vmrun vm create NAME --image bench` to SSH ready ({runs} runs): median {:.2}s",
        took[took.len() / 2].as_secs_f64()
    );
}

fn measure_status(mut cmd: Command) -> Result<Duration, String> {
    let started = Instant::now();
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let said = err.lines().rfind(|l| !l.trim().is_empty());
        return Err(said.unwrap_or("it failed without a word").trim().to_owned());
    }
    Ok(started.elapsed())
}
