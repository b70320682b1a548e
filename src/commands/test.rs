//! `vmrun test`: turns the arguments and vmrun.yaml, validated once, into a run plan and a
//! schedule; `run` does the rest.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use crate::bake;
use crate::cli::TestArgs;
use crate::config::{self, Command, parse_duration};
use crate::error::Error;
use crate::events::Event;
use crate::name::ImageName;
use crate::paths::Home;
use crate::qemu::accel::{self, AccelChoice};
use crate::report::{ReportFiles, Suite};
use crate::run::schedule::{self, Schedule};
use crate::run::{self, Boot, RunPlan};
use crate::shard::{self, Shard};
use crate::store::Store;
use crate::sync::Destination;
use crate::ui::Ui;
use crate::{signals, tools, warm};

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
    let report_files = ReportFiles {
        junit: args.junit.clone(),
        json: args.json_report.clone(),
        step_summary: std::env::var_os("GITHUB_STEP_SUMMARY")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
    };
    report_files
        .check()
        .map_err(|(flag, why)| Error::Usage(format!("{flag}: {why}")))?;
    let mut env = config.test.env.clone();
    let shard = args.shard.as_deref().map(shard).transpose()?;
    if let Some((shard, _)) = &shard {
        env.extend(shard.env());
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
    if let Some((shard, Some(source))) = &shard {
        sink(Event::Notice(format!(
            "--shard auto: shard {shard}, from {source}"
        )));
    }
    let accel = accel::resolve(accel_choice, &qemu, &home.host_facts(), &sink)?;
    let (image, image_label) = match (args.image.as_deref(), &config.image) {
        (Some(name), _) => (Store::new(&home).get(&ImageName::new(name)?)?, name),
        (None, Some(spec)) => (
            bake::on_demand::image(spec, &config, &home, accel, &qemu, &sink)?,
            spec.source.as_str(),
        ),
        (None, None) => {
            return Err(Error::Usage(
                "no image: give --image NAME (see `vmrun images`) or `image:` in vmrun.yaml".into(),
            ));
        }
    };
    let capture = match args.capture_failures {
        Some(dir) => {
            run::capture::prepare(&dir)?;
            Some(run::capture::Capture {
                dir,
                image_name: image_label.to_owned(),
            })
        }
        None => None,
    };
    let size = config.vm.size_or(image.manifest.size());
    let boot = if args.cold {
        Boot::Cold
    } else {
        match warm::fitting(&image.dir, &qemu, accel, size)? {
            Ok(warm) => Boot::Resume(warm),
            Err(why) => {
                sink(Event::Notice(format!("booting cold: {why}")));
                Boot::Cold
            }
        }
    };
    let plan = RunPlan {
        size,
        boot,
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
        capture,
    };
    let started = (SystemTime::now(), Instant::now());
    let mut reports = schedule::run_all(&plan, schedule, &home.runs(), &qemu, &sink);
    reports.sort_by_key(|r| r.index);
    eprint!("{}", run::summary_table(&reports));
    let mut exit_code = schedule::exit_code(&reports);
    let suite = Suite {
        image: image_label,
        shard: shard.map(|(shard, _)| shard),
        started: started
            .0
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        elapsed: started.1.elapsed(),
        runs: &reports,
        exit_code,
        interrupted: signals::received().is_some(),
    };
    for failed in report_files.write(&suite) {
        eprintln!("{:?}", miette::Report::new(failed));
        // The runs passed, but what CI reads of them is missing.
        if exit_code == 0 {
            exit_code = crate::exit_code::INTERNAL;
        }
    }
    Ok(ExitCode::from(exit_code))
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

/// `--shard K/N`, or `auto`: the CI system's, with where it came from.
fn shard(spec: &str) -> Result<(Shard, Option<String>), Error> {
    let usage = |e| Error::Usage(format!("--shard {spec}: {e}"));
    if spec == "auto" {
        let var = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        let found = shard::from_ci(var).map_err(usage)?;
        return Ok((found.shard, Some(found.source)));
    }
    Ok((Shard::parse(spec).map_err(usage)?, None))
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
        assert_eq!(shard("2/4").unwrap(), (Shard::new(2, 4).unwrap(), None));
        let Err(Error::Usage(message)) = shard("5/4") else {
            panic!("shard 5 of 4")
        };
        assert!(message.starts_with("--shard 5/4: shard 5 of 4 does not exist"));
    }
}
