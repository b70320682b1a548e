//! `vmrun test`: validates arguments and vmrun.yaml once, resolves the image (baking it if
//! vmrun.yaml names a source), then runs the command in fresh VMs and reports.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use crate::bake::{self, BakeRequest};
use crate::cli::TestArgs;
use crate::config::{self, Command, Config, parse_duration};
use crate::error::Error;
use crate::events::{Event, Sink};
use crate::image::source::ImageSource;
use crate::paths::Home;
use crate::qemu::accel::{self, AccelChoice};
use crate::qemu::args::Accel;
use crate::run::{self, PrefixedLines, RunPlan, RunReport, signals};
use crate::store::{BakedImage, Store};
use crate::sync::Destination;
use crate::tools;
use crate::ui::Ui;
use crate::warm::{self, WarmState};

/// How long a bake started by `vmrun test` may take.
const BAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// How many runs, and when to stop scheduling more.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Schedule {
    /// `None`: without end (only with `until_fail`).
    runs: Option<u32>,
    until_fail: bool,
    jobs: u32,
}

pub(super) fn run(args: TestArgs) -> Result<ExitCode, Error> {
    signals::install();
    let cwd = std::env::current_dir().map_err(Error::CurrentDir)?;
    let config = config::load_default(args.config.as_deref(), &cwd)?;
    let command = match (&args.command[..], &config.test.command) {
        ([], Some(command)) => command.clone(),
        ([], None) => {
            return Err(Error::Usage(
                "no command to run: give `-- COMMAND ...` or test.command in vmrun.yaml".into(),
            ));
        }
        (argv, _) => Command::Argv(argv.to_vec()),
    };
    let timeout = match &args.timeout {
        Some(text) => {
            Some(parse_duration(text).map_err(|e| Error::Usage(format!("--timeout: {e}")))?)
        }
        None => config.test.timeout,
    };
    let boot_timeout = parse_duration(&args.boot_timeout)
        .map_err(|e| Error::Usage(format!("--boot-timeout: {e}")))?;
    let schedule = schedule(&args)?;
    let mut env = config.test.env.clone();
    if let Some(spec) = &args.shard {
        let (index, count) =
            parse_shard(spec).map_err(|e| Error::Usage(format!("--shard {spec}: {e}")))?;
        env.insert("VMRUN_SHARD_INDEX".into(), index.to_string());
        env.insert("VMRUN_SHARD_COUNT".into(), count.to_string());
    }
    let project = args
        .project
        .clone()
        .map(|p| cwd.join(p))
        .unwrap_or_else(|| cwd.clone());
    if !project.is_dir() {
        return Err(Error::Usage(format!(
            "--project {}: not a directory",
            project.display()
        )));
    }
    // Everything below the current directory or the project may come from the checkout under
    // test: no symlink there may redirect the artifacts (see sync::Destination). Checked
    // before any VM starts, and again as each run makes its directory.
    let artifacts_dir = Destination::new(&cwd.join(&args.artifacts_dir), &[&cwd, &project]);
    if !config.test.artifacts.is_empty() {
        artifacts_dir.check()?;
    }
    let accel_choice = AccelChoice::from_env()?;
    let home = Home::from_env()?;
    let qemu = tools::find("qemu-system-x86_64")?;

    let ui = Ui::for_stderr();
    let sink = |event| ui.render(event);
    let accel = accel::resolve(accel_choice, &qemu, &home.host_facts(), &sink)?;
    let image = resolve_image(args.image.as_deref(), &config, &home, accel, &qemu, &sink)?;
    let cpus = config.vm.cpus.unwrap_or(image.manifest.cpus);
    let memory_mib = config
        .vm
        .memory
        .map(|m| m.mib())
        .unwrap_or(image.manifest.memory_mib);
    let warm = if args.cold {
        None
    } else {
        warm_state(&image, accel, cpus, memory_mib, &qemu, &sink)?
    };
    let plan = RunPlan {
        cpus,
        memory_mib,
        warm,
        image,
        accel,
        network: args.network.unwrap_or(config.test.network),
        project,
        command,
        env,
        sync: config.test.sync.clone(),
        artifacts: config.test.artifacts.clone(),
        artifacts_dir,
        artifacts_max_size: config.test.artifacts_max_size_or_default(),
        timeout,
        boot_timeout,
        keep: args.keep,
    };
    let reports = run_all(&plan, schedule, &home.runs(), &qemu, &sink);
    eprint!("{}", run::summary_table(&reports));
    Ok(ExitCode::from(exit_code(&reports)))
}

fn schedule(args: &TestArgs) -> Result<Schedule, Error> {
    if args.repeat == Some(0) {
        return Err(Error::Usage("--repeat must be at least 1".into()));
    }
    if args.jobs == 0 {
        return Err(Error::Usage("--jobs must be at least 1".into()));
    }
    let runs = match (args.repeat, args.until_fail) {
        (Some(n), _) => Some(n),
        (None, true) => None,
        (None, false) => Some(1),
    };
    Ok(Schedule {
        runs,
        until_fail: args.until_fail,
        jobs: args.jobs,
    })
}

/// `K/N` with 1 <= K <= N.
fn parse_shard(spec: &str) -> Result<(u32, u32), String> {
    let (k, n) = spec.split_once('/').ok_or("expected K/N, e.g. 2/4")?;
    let k: u32 = k
        .trim()
        .parse()
        .map_err(|_| format!("`{k}` is not a shard number"))?;
    let n: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("`{n}` is not a shard count"))?;
    if n == 0 || k == 0 || k > n {
        return Err(format!(
            "shard {k} of {n} does not exist (shards are 1 to N)"
        ));
    }
    Ok((k, n))
}

/// The image named by `--image`, or vmrun.yaml's `image:`: a baked image's name, or a
/// source that is baked first (a cache hit after the first time).
fn resolve_image(
    explicit: Option<&str>,
    config: &Config,
    home: &Home,
    accel: Accel,
    qemu: &Path,
    sink: Sink,
) -> Result<BakedImage, Error> {
    let store = Store::new(home);
    if let Some(name) = explicit {
        return Ok(store.get(name)?);
    }
    let Some(spec) = &config.image else {
        return Err(Error::Usage(
            "no image: give --image NAME (see `vmrun images`) or `image:` in vmrun.yaml".into(),
        ));
    };
    if let Ok(image) = store.get(&spec.source) {
        return Ok(image);
    }
    let source = ImageSource::parse(&spec.source, spec.sha256).map_err(bake::Error::from)?;
    let request = BakeRequest {
        name: source.default_name(),
        source,
        bake: config.bake.clone(),
        cpus: config.vm.cpus_or_default(),
        memory_mib: config.vm.memory_mib_or_default(),
        accel,
        timeout: BAKE_TIMEOUT,
    };
    Ok(bake::bake(&request, home, qemu, sink)?.image)
}

/// The image's warm state if this run can resume it; otherwise says in one line why it boots.
fn warm_state(
    image: &BakedImage,
    accel: Accel,
    cpus: u32,
    memory_mib: u64,
    qemu: &Path,
    sink: Sink,
) -> Result<Option<WarmState>, Error> {
    let Some(warm) = WarmState::load(&image.dir)? else {
        sink(Event::Notice(
            "booting cold: the image has no warm state (bake it again with this vmrun to add one)"
                .into(),
        ));
        return Ok(None);
    };
    match warm
        .machine
        .check(&warm::qemu_version(qemu)?, accel, cpus, memory_mib)
    {
        Ok(()) => Ok(Some(warm)),
        Err(mismatch) => {
            sink(Event::Notice(format!(
                "booting cold: the warm state does not fit: {mismatch}"
            )));
            Ok(None)
        }
    }
}

/// Runs the schedule, `jobs` at a time; with `until_fail`, no new run starts after a failure.
fn run_all(
    plan: &RunPlan,
    schedule: Schedule,
    runs_dir: &Path,
    qemu: &Path,
    sink: Sink,
) -> Vec<RunReport> {
    let reports = Mutex::new(Vec::new());
    let next = Mutex::new(0u32);
    let repeating = schedule.runs != Some(1);
    let parallel = schedule.jobs > 1;
    let stdout = Arc::new(Mutex::new(std::io::stdout()));
    let stderr = Arc::new(Mutex::new(std::io::stderr()));
    let should_continue = |reports: &Mutex<Vec<RunReport>>| {
        signals::received().is_none()
            && !(schedule.until_fail
                && reports
                    .lock()
                    .expect("not poisoned")
                    .iter()
                    .any(|r: &RunReport| !r.outcome().passed()))
    };
    // Each worker spawns its runs' QEMUs itself, so they die with it (PR_SET_PDEATHSIG).
    std::thread::scope(|scope| {
        for _ in 0..schedule.jobs {
            scope.spawn(|| {
                loop {
                    let index = {
                        let mut next = next.lock().expect("not poisoned");
                        if schedule.runs.is_some_and(|n| *next >= n) || !should_continue(&reports) {
                            return;
                        }
                        *next += 1;
                        *next
                    };
                    let id = run_id();
                    let mut run_plan = plan.clone();
                    if repeating {
                        run_plan.artifacts_dir =
                            plan.artifacts_dir.join(&format!("run-{index}-{id}"));
                    }
                    let report = if parallel {
                        let mut out = PrefixedLines::new(&id, stdout.clone());
                        let mut err = PrefixedLines::new(&id, stderr.clone());
                        run::run_once(&run_plan, &id, runs_dir, qemu, &mut out, &mut err, sink)
                    } else {
                        let mut out = std::io::stdout();
                        let mut err = std::io::stderr();
                        run::run_once(&run_plan, &id, runs_dir, qemu, &mut out, &mut err, sink)
                    };
                    if let Some(report_text) = report.outcome().error_report() {
                        let _ = writeln!(std::io::stderr(), "run {id} failed:\n{report_text}");
                    }
                    reports.lock().expect("not poisoned").push(report);
                }
            });
        }
    });
    reports.into_inner().expect("not poisoned")
}

/// vmrun's exit code: an interruption's, else the first failed run's, else 0.
fn exit_code(reports: &[RunReport]) -> u8 {
    if let Some(signal) = signals::received() {
        return signals::exit_code(signal);
    }
    reports
        .iter()
        .map(|r| r.outcome().exit_code())
        .find(|&c| c != 0)
        .unwrap_or(0)
}

/// A short id for a run, unique among live runs: 8 random hex digits.
fn run_id() -> String {
    crate::random::hex(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> TestArgs {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([&["vmrun", "test"], args].concat()).unwrap();
        let crate::cli::Command::Test(args) = cli.command else {
            unreachable!("parsed a test command")
        };
        args
    }

    #[test]
    fn schedules() {
        let one = schedule(&parsed(&[])).unwrap();
        assert_eq!(
            one,
            Schedule {
                runs: Some(1),
                until_fail: false,
                jobs: 1
            }
        );
        let endless = schedule(&parsed(&["--until-fail"])).unwrap();
        assert_eq!(
            endless,
            Schedule {
                runs: None,
                until_fail: true,
                jobs: 1
            }
        );
        let bounded = schedule(&parsed(&["--until-fail", "--repeat", "5", "--jobs", "2"])).unwrap();
        assert_eq!(
            bounded,
            Schedule {
                runs: Some(5),
                until_fail: true,
                jobs: 2
            }
        );
        assert!(schedule(&parsed(&["--repeat", "0"])).is_err());
        assert!(schedule(&parsed(&["--jobs", "0"])).is_err());
    }

    #[test]
    fn shards() {
        assert_eq!(parse_shard("2/4"), Ok((2, 4)));
        assert_eq!(parse_shard("1/1"), Ok((1, 1)));
        assert!(parse_shard("0/4").is_err());
        assert!(parse_shard("5/4").is_err());
        assert!(parse_shard("2").is_err());
        assert!(parse_shard("a/4").unwrap_err().contains("`a`"));
    }
}
