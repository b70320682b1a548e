//! `vmrun bake`: validates the arguments and vmrun.yaml, then runs the bake engine.

use std::process::ExitCode;
use std::time::Instant;

use crate::bake::{self, BakeRequest};
use crate::cli::BakeArgs;
use crate::config::{self, parse_duration};
use crate::error::Error;
use crate::image::source::ImageSource;
use crate::name::ImageName;
use crate::paths::Home;
use crate::qemu::accel::{self, AccelChoice};
use crate::ui::Ui;
use crate::{signals, tools};

pub(super) fn run(args: BakeArgs) -> Result<ExitCode, Error> {
    signals::install();
    let cwd = std::env::current_dir().map_err(Error::CurrentDir)?;
    let config = config::load_default(args.config.as_deref(), &cwd)?;
    let (spec, sha256) = match (&args.image, &config.image) {
        (Some(image), _) => (image.clone(), args.sha256),
        (None, Some(image)) => (image.source.clone(), args.sha256.or(image.sha256)),
        (None, None) => {
            return Err(Error::Usage(
                "no image to bake: give --image, or `image:` in vmrun.yaml".into(),
            ));
        }
    };
    let source = ImageSource::parse(&spec, sha256).map_err(bake::Error::from)?;
    let name = ImageName::new(&args.name.clone().unwrap_or_else(|| source.default_name()))?;
    let timeout =
        parse_duration(&args.timeout).map_err(|e| Error::Usage(format!("--timeout: {e}")))?;
    let accel_choice = AccelChoice::from_env()?;
    let home = Home::from_env()?;
    let qemu = tools::find("qemu-system-x86_64")?;

    let ui = Ui::for_stderr();
    let sink = |event| ui.render(event);
    let started = Instant::now();
    let accel = accel::resolve(accel_choice, &qemu, &home.host_facts(), &sink)?;
    let request = BakeRequest {
        source,
        name: name.clone(),
        bake: config.bake,
        size: config.vm.size_or_default(),
        accel,
        timeout,
    };
    let baked = bake::bake(&request, &home, &qemu, &sink)?;
    let how = if baked.cached { "reused" } else { "baked" };
    eprintln!(
        "{how} image `{name}` ({}) in {:.1}s",
        &baked.image.manifest.key[..12],
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
