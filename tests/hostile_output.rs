//! A guest that floods vmrun with output, through a real guest: a line that never ends under
//! `--jobs`, a serial console written to without pause, escape sequences on the console.
//! vmrun's memory and the console log on disk stay bounded, and guest text in vmrun's own
//! messages cannot drive the terminal.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vmrun::paths::Home;

/// One test at a time: each boots VMs, and the machine has two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn vmrun(project: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(common::VMRUN);
    cmd.args(args)
        .current_dir(project)
        .env("VMRUN_HOME", common::test_home());
    cmd
}

/// The largest resident set `pid` reached (VmHWM), sampled until it exits, in KiB.
fn peak_kib(pid: u32) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        while let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let hwm = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok());
            match hwm {
                Some(kib) => peak = peak.max(kib),
                None => break, // a zombie: it has exited
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

#[test]
fn a_line_without_end_goes_out_in_prefixed_pieces_and_vmrun_holds_none_of_it() {
    let _one = one_at_a_time();
    let image = common::baked_image();
    let project = tempfile::tempdir().unwrap();
    const BYTES: usize = 24_000_000;
    let script = format!("head -c {BYTES} /dev/zero | tr '\\0' x");
    let child = vmrun(
        project.path(),
        &[
            "test", "--image", image, "--jobs", "2", "--repeat", "2", "--", "sh", "-c", &script,
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let peak = peak_kib(child.id());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");

    // Each run's pieces, put back together: `[id] ` starts a line, `[id]+ ` continues it.
    let mut runs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut pieces = 0;
    for line in out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let text = std::str::from_utf8(line).unwrap();
        let (prefix, body) = text.split_once(' ').unwrap();
        let id = prefix
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches("]+");
        assert!(body.len() <= 64 * 1024, "a piece of {} bytes", body.len());
        assert!(
            body.bytes().all(|b| b == b'x'),
            "only the guest's bytes in a piece"
        );
        let joined = runs.entry(id.to_owned()).or_default();
        assert_eq!(
            prefix.ends_with("]+"),
            !joined.is_empty(),
            "only the first piece of the line starts it"
        );
        joined.extend_from_slice(body.as_bytes());
        pieces += 1;
    }
    assert_eq!(
        runs.len(),
        2,
        "two runs at a time, each prefixed: {:?}",
        runs.keys()
    );
    assert!(
        runs.values().all(|bytes| bytes.len() == BYTES),
        "every byte arrived"
    );
    assert!(pieces >= 2 * BYTES / (64 * 1024), "{pieces} pieces");

    // Holding a whole line would have taken 2 x 24 MB (and more while the buffers grew).
    let peak = peak.join().unwrap();
    assert!(peak < 40 * 1024, "vmrun peaked at {peak} KiB");
}

/// A run whose command is still going, and its stderr lines.
struct LiveRun {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl LiveRun {
    fn start(mut cmd: Command) -> LiveRun {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        LiveRun {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    fn wait_for(&mut self, what: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line.clone());
            if line.contains(what) {
                return line;
            }
        }
        panic!(
            "no `{what}` within {within:?}; so far:\n{}",
            self.seen.join("\n")
        );
    }
}

#[test]
fn a_flooded_serial_console_keeps_its_head_and_tail_within_the_cap() {
    let _one = one_at_a_time();
    let image = common::baked_image();
    let project = tempfile::tempdir().unwrap();
    // 8 MB is past the cap (1 MiB head, 4-5 MiB tail); an emulated UART takes ~30 s for it.
    const BYTES: u64 = 8_000_000;
    let script = format!(
        "sudo sh -c 'echo flood-start > /dev/ttyS0; \
         head -c {BYTES} /dev/zero | tr \"\\0\" x > /dev/ttyS0; \
         echo flood-end > /dev/ttyS0'; \
         echo flooded; sleep 120"
    );
    let mut run = LiveRun::start(vmrun(
        project.path(),
        &[
            "test",
            "--image",
            image,
            "--timeout",
            "5m",
            "--",
            "sh",
            "-c",
            &script,
        ],
    ));
    let id = common::run_id(&run.wait_for("] run ", Duration::from_secs(120))).unwrap();
    run.wait_for("flooded", Duration::from_secs(300));
    let log_path: PathBuf = Home::under(&common::test_home())
        .runs()
        .join(&id)
        .join("serial.log");
    // The console reader may be a moment behind the guest.
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read(&log_path).unwrap();
        if log.ends_with(b"flood-end\r\n") || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // SAFETY: SIGINT to the vmrun this test started: it tears the run down.
    unsafe { libc::kill(run.child.id() as i32, libc::SIGINT) };
    run.child.wait().unwrap();

    let cap = (1 << 20) + (5 << 20) + 200;
    assert!(log.len() <= cap, "the log holds {} bytes", log.len());
    let head = &log[..1 << 20];
    assert!(
        head.windows(11).any(|w| w == b"flood-start"),
        "the head is kept: {:?}",
        String::from_utf8_lossy(&head[..200])
    );
    assert!(
        log.ends_with(b"xflood-end\r\n"),
        "the tail is kept: {:?}",
        String::from_utf8_lossy(&log[log.len() - 50..])
    );
    let text = String::from_utf8_lossy(&log);
    let marker = text
        .lines()
        .find(|l| l.starts_with("[vmrun: "))
        .expect("a marker line");
    let dropped: u64 = marker["[vmrun: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        marker.ends_with(
            "bytes of the console left out here; the log keeps its first and last bytes]"
        ),
        "{marker}"
    );
    let kept = log.len() as u64 - marker.len() as u64 - 2;
    assert!(
        kept + dropped >= BYTES,
        "kept {kept} + left out {dropped} bytes account for the flood"
    );
}

#[test]
fn escape_sequences_on_the_console_reach_a_failed_bake_s_message_made_visible() {
    let _one = one_at_a_time();
    common::guest_image();
    let project = tempfile::tempdir().unwrap();
    // A provisioning step that prints an OSC (retitle the terminal) and a C1 CSI, leaves a
    // process printing them on the console until the guest powers off, then fails: the
    // failed module's own lines, which the error shows, hold them.
    let config = format!(
        "bake:\n  run:\n    - |\n      echo {token}\n      \
         printf \"hostile \\033]0;pwned\\007 \\302\\233 2J end\\n\"\n      \
         setsid sh -c 'while :; do \
         printf \"hostile \\033]0;pwned\\007 \\302\\233 2J end\\n\" > /dev/ttyS0; \
         sleep 0.2; done' </dev/null >/dev/null 2>&1 &\n      exit 1\n",
        token = common::unique_token()
    );
    std::fs::write(project.path().join("vmrun.yaml"), config).unwrap();
    let out = vmrun(
        project.path(),
        &[
            "bake",
            "--image",
            "debian:bookworm",
            "--name",
            "hostile-bake",
        ],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(vmrun::exit_code::IMAGE_FAILED as i32),
        "{err}"
    );
    assert!(
        err.contains("cloud-init failed while provisioning"),
        "{err}"
    );
    assert!(
        err.contains("hostile \\x1b]0;pwned\\x07 \\u{9b} 2J end"),
        "the console line, made visible: {err}"
    );
    assert!(
        !err.contains("\x1b]0;pwned") && !err.contains('\u{9b}') && !err.contains('\x07'),
        "raw: {err:?}"
    );
}
