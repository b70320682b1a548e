//! Capturing a failed run and opening it again: `vmrun test --capture-failures DIR -- false`
//! against the same run without capturing (what the capture adds, which vmrun prints), the
//! bundle's size, and `vmrun open BUNDLE -- true` end to end, against a warm `vmrun test --
//! true` in the same round. Prints medians (and the range) of RUNS rounds (default 3).
//! Run with `cargo bench --bench capture` (the image is baked first, in VMRUN_TEST_HOME).

use std::process::{Command, Output};
use std::time::{Duration, Instant};

#[path = "support.rs"]
mod support;

use support::vmrun;

fn timed(mut cmd: Command) -> (Duration, Output) {
    let started = Instant::now();
    let out = cmd.output().unwrap();
    (started.elapsed(), out)
}

/// The capture's own time, as vmrun reports it: "captured: PATH (N MiB, T s)".
fn capture_seconds(stderr: &str) -> f64 {
    let line = stderr
        .lines()
        .rfind(|l| l.contains(" captured: "))
        .unwrap_or_else(|| panic!("no capture reported:\n{stderr}"));
    let inside = &line[line.rfind('(').unwrap() + 1..line.rfind("s)").unwrap()];
    inside.rsplit(", ").next().unwrap().parse().unwrap()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn show(name: &str, values: &mut [f64], unit: &str) {
    let median = median(values);
    println!(
        "{name:<44} median {median:>8.2} {unit}  (min {:.2}, max {:.2})",
        values[0],
        values[values.len() - 1]
    );
}

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let home = support::home();
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("README"), "a small project\n").unwrap();
    support::bake_bench_image(&home, project.path());

    let (mut failing, mut capturing, mut captures, mut sizes, mut opens, mut warm) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let (took, out) = timed(vmrun(
            &home,
            project.path(),
            &["test", "--image", "bench", "--", "false"],
        ));
        assert_eq!(out.status.code(), Some(1));
        failing.push(took.as_secs_f64());

        let into = tempfile::tempdir().unwrap();
        let mut cmd = vmrun(&home, project.path(), &["test", "--image", "bench"]);
        cmd.arg("--capture-failures")
            .arg(into.path())
            .args(["--", "false"]);
        let (took, out) = timed(cmd);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        capturing.push(took.as_secs_f64());
        captures.push(capture_seconds(&stderr));
        let bundle = std::fs::read_dir(into.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        sizes.push(std::fs::metadata(&bundle).unwrap().len() as f64 / (1 << 20) as f64);

        let mut cmd = vmrun(&home, project.path(), &["open"]);
        cmd.arg(&bundle).args(["--", "true"]);
        let (took, out) = timed(cmd);
        assert!(
            out.status.success(),
            "open: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        opens.push(took.as_secs_f64());

        let (took, out) = timed(vmrun(
            &home,
            project.path(),
            &["test", "--image", "bench", "--", "true"],
        ));
        assert!(out.status.success());
        warm.push(took.as_secs_f64());
    }
    println!("{runs} rounds, image `bench` (1 GiB guest)");
    show("vmrun test -- false", &mut failing, "s");
    show(
        "vmrun test --capture-failures DIR -- false",
        &mut capturing,
        "s",
    );
    show(
        "  of which the capture (as vmrun reports it)",
        &mut captures,
        "s",
    );
    show("bundle size", &mut sizes, "MiB");
    show("vmrun open BUNDLE -- true", &mut opens, "s");
    show("vmrun test -- true (warm)", &mut warm, "s");
}
