//! The image `vmrun test` runs on when vmrun.yaml's `image:` names a source: found in the
//! store under its name, else baked first (and from then on found).

use std::path::Path;
use std::time::Duration;

use super::{BakeRequest, Error, bake};
use crate::config::{Config, ImageSpec};
use crate::events::Sink;
use crate::image::source::ImageSource;
use crate::name::ImageName;
use crate::paths::Home;
use crate::qemu::args::Accel;
use crate::store::{BakedImage, Store};

/// How long a bake started by `vmrun test` may take.
const TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// `spec`'s baked image, baking it with `config`'s `bake:` and `vm:` sections if the store
/// does not have it yet.
pub fn image(
    spec: &ImageSpec,
    config: &Config,
    home: &Home,
    accel: Accel,
    qemu: &Path,
    sink: Sink,
) -> Result<BakedImage, Error> {
    // `image:` may name an image baked before.
    let store = Store::new(home);
    if let Some(image) = ImageName::new(&spec.source)
        .ok()
        .and_then(|n| store.get(&n).ok())
    {
        return Ok(image);
    }
    let source = ImageSource::parse(&spec.source, spec.sha256)?;
    let request = BakeRequest {
        name: ImageName::new(&source.default_name()).map_err(crate::store::Error::from)?,
        source,
        bake: config.bake.clone(),
        size: config.vm.size_or_default(),
        accel,
        timeout: TIMEOUT,
    };
    Ok(bake(&request, home, qemu, sink)?.image)
}
