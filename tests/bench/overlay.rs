//! How long making an overlay takes: vmrun's in-process writer against a whole
//! `qemu-img create` process. Run with `cargo bench --bench overlay`; prints a table.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vmrun::disk::{Overlay, backing_chain, format};

const IN_PROCESS_RUNS: usize = 200;
const PROCESS_RUNS: usize = 20;

/// Times `runs` calls of `f(i)`, returning (median, min).
fn time(runs: usize, mut f: impl FnMut(usize)) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..runs)
        .map(|i| {
            let start = Instant::now();
            f(i);
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[runs / 2], times[0])
}

fn show(d: Duration) -> String {
    match d.as_secs_f64() {
        s if s >= 1e-3 => format!("{:.2} ms", s * 1e3),
        s => format!("{:.1} µs", s * 1e6),
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let base = dir.path().join("base.raw");
    fs::File::create(&base)
        .and_then(|f| f.set_len(1 << 30))
        .expect("sparse 1 GiB base");
    let qemu_img = vmrun::tools::find("qemu-img").expect("qemu-img (apt-get install qemu-utils)");

    let overlay = |kind: &str, i: usize| dir.path().join(format!("{kind}-{i}.qcow2"));
    let mut rows = Vec::new();

    let (median, min) = time(IN_PROCESS_RUNS, |i| {
        Overlay::create(&overlay("vmrun", i), &base).expect("Overlay::create");
    });
    rows.push(("Overlay::create (in-process)", IN_PROCESS_RUNS, median, min));

    let top = overlay("vmrun", 0);
    let (median, min) = time(IN_PROCESS_RUNS, |_| {
        format::sniff(&top).expect("sniff");
    });
    rows.push((
        "format::sniff of an overlay (in-process)",
        IN_PROCESS_RUNS,
        median,
        min,
    ));

    let (median, min) = time(IN_PROCESS_RUNS, |_| {
        backing_chain(&top).expect("backing_chain");
    });
    rows.push((
        "backing_chain of an overlay (in-process)",
        IN_PROCESS_RUNS,
        median,
        min,
    ));

    let (median, min) = time(PROCESS_RUNS, |i| {
        let status = Command::new(&qemu_img)
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&base)
            .arg(overlay("qemu-img", i))
            .status()
            .expect("run qemu-img");
        assert!(status.success(), "qemu-img create failed");
    });
    rows.push((
        "qemu-img create -f qcow2 -b BASE -F raw",
        PROCESS_RUNS,
        median,
        min,
    ));

    check_same_size(&overlay("vmrun", 0), &overlay("qemu-img", 0));
    println!(
        "{:<42} {:>5} {:>10} {:>10}",
        "operation (1 GiB raw base)", "runs", "median", "min"
    );
    for (name, runs, median, min) in rows {
        println!(
            "{name:<42} {runs:>5} {:>10} {:>10}",
            show(median),
            show(min)
        );
    }
}

/// Guards the comparison: both tools must have made an overlay of the same disk.
fn check_same_size(ours: &Path, theirs: &Path) {
    let size = |p: &Path| format::sniff(p).expect("sniff").virtual_size();
    assert_eq!(
        size(ours),
        size(theirs),
        "the two overlays differ in virtual size"
    );
}
