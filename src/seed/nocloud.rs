//! The NoCloud seed: the four files cloud-init's NoCloud datasource reads from a volume
//! labelled `cidata`.

use std::borrow::Cow;
use std::io::{BufWriter, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::Error;
use super::iso9660::{IsoImage, Timestamp};
use crate::atomic_file::{Existing, NewFile};
use crate::path_error::PathError;

/// The volume label cloud-init's NoCloud datasource looks for.
const VOLUME_ID: &str = "cidata";

/// A cloud-init NoCloud seed ISO, like `cloud-localds` makes.
///
/// ```no_run
/// # fn main() -> Result<(), vmrun::seed::Error> {
/// vmrun::seed::SeedIso::new("#cloud-config\n")
///     .meta_data("instance-id: iid-1\n")
///     .write_to("seed.iso".as_ref())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct SeedIso {
    user_data: Vec<u8>,
    meta_data: Option<Vec<u8>>,
    network_config: Option<Vec<u8>>,
    vendor_data: Option<Vec<u8>>,
    time: Option<Timestamp>,
}

impl SeedIso {
    /// A seed holding `user_data`. Without [`SeedIso::meta_data`], it gets a meta-data with an
    /// instance-id derived from the inputs and `local-hostname: vmrun`.
    pub fn new(user_data: impl Into<Vec<u8>>) -> Self {
        SeedIso {
            user_data: user_data.into(),
            meta_data: None,
            network_config: None,
            vendor_data: None,
            time: None,
        }
    }

    pub fn meta_data(mut self, meta_data: impl Into<Vec<u8>>) -> Self {
        self.meta_data = Some(meta_data.into());
        self
    }

    pub fn network_config(mut self, network_config: impl Into<Vec<u8>>) -> Self {
        self.network_config = Some(network_config.into());
        self
    }

    pub fn vendor_data(mut self, vendor_data: impl Into<Vec<u8>>) -> Self {
        self.vendor_data = Some(vendor_data.into());
        self
    }

    /// The time recorded in the image. Default: [`Timestamp::from_env`] (SOURCE_DATE_EPOCH,
    /// else 2000-01-01), read when the image is made.
    pub fn time(mut self, time: Timestamp) -> Self {
        self.time = Some(time);
        self
    }

    /// The image. Fails only on a malformed SOURCE_DATE_EPOCH.
    pub fn to_bytes(&self) -> Result<Vec<u8>, Error> {
        let meta_data = self.rendered_meta_data();
        Ok(self.image(&meta_data)?.to_bytes())
    }

    /// Writes the image to `path` atomically: into a temporary file beside it, then renamed
    /// over it. The file has mode 0600, since user-data often carries keys.
    pub fn write_to(&self, path: &Path) -> Result<(), Error> {
        let meta_data = self.rendered_meta_data();
        let image = self.image(&meta_data)?;
        // Named by the output, not by the directory or temporary file that failed: that is the
        // path the user gave.
        let write_error = |e: PathError| Error::WriteOutput {
            path: path.to_owned(),
            source: e.source,
        };
        let mut new = NewFile::beside(path).map_err(write_error)?;
        let mut out = BufWriter::new(new.file());
        image
            .write(&mut out)
            .and_then(|()| out.flush())
            .map_err(|source| Error::WriteOutput {
                path: path.to_owned(),
                source,
            })?;
        drop(out);
        new.commit(path, Existing::Replace).map_err(write_error)
    }

    fn image<'s>(&'s self, meta_data: &'s [u8]) -> Result<IsoImage<'s>, Error> {
        let mut image = IsoImage::new(VOLUME_ID)?;
        image.time(match self.time {
            Some(time) => time,
            None => Timestamp::from_env()?,
        });
        image
            .add_file("user-data", &self.user_data)?
            .add_file("meta-data", meta_data)?;
        if let Some(network_config) = &self.network_config {
            image.add_file("network-config", network_config)?;
        }
        if let Some(vendor_data) = &self.vendor_data {
            image.add_file("vendor-data", vendor_data)?;
        }
        Ok(image)
    }

    /// The given meta-data, or one whose instance-id changes whenever the other inputs do, so
    /// cloud-init treats a changed seed as a new instance.
    fn rendered_meta_data(&self) -> Cow<'_, [u8]> {
        if let Some(meta_data) = &self.meta_data {
            return Cow::Borrowed(meta_data);
        }
        let mut hash = Sha256::new();
        for (name, contents) in [
            ("user-data", Some(&self.user_data)),
            ("network-config", self.network_config.as_ref()),
            ("vendor-data", self.vendor_data.as_ref()),
        ] {
            // Length-prefixed, so moving bytes between files changes the hash.
            hash.update(name);
            hash.update([u8::from(contents.is_some())]);
            if let Some(contents) = contents {
                hash.update((contents.len() as u64).to_le_bytes());
                hash.update(contents);
            }
        }
        let digest = hash.finalize();
        let hex = crate::hex::encode(&digest[..8]);
        Cow::Owned(format!("instance-id: iid-{hex}\nlocal-hostname: vmrun\n").into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> SeedIso {
        SeedIso::new("#cloud-config\n").time(Timestamp::DEFAULT)
    }

    fn meta(seed: &SeedIso) -> String {
        String::from_utf8(seed.rendered_meta_data().into_owned()).unwrap()
    }

    #[test]
    fn given_meta_data_is_used_verbatim() {
        assert_eq!(
            meta(&seed().meta_data("instance-id: x\n")),
            "instance-id: x\n"
        );
    }

    #[test]
    fn rendered_instance_id_follows_every_other_input() {
        let base = meta(&seed());
        assert!(
            base.starts_with("instance-id: iid-") && base.ends_with("\nlocal-hostname: vmrun\n"),
            "{base}"
        );
        assert_eq!(
            base.len(),
            "instance-id: iid-\nlocal-hostname: vmrun\n".len() + 16
        );
        let variants = [
            meta(&SeedIso::new("#cloud-config\n\n")),
            meta(&seed().network_config("")),
            meta(&seed().vendor_data("")),
            meta(&seed().network_config("a").vendor_data("")),
            meta(&seed().network_config("").vendor_data("a")),
        ];
        for (i, variant) in variants.iter().enumerate() {
            assert_ne!(*variant, base, "variant {i}");
            assert!(
                variants[i + 1..].iter().all(|other| other != variant),
                "variant {i}"
            );
        }
        assert_eq!(meta(&seed()), base);
    }

    #[test]
    fn image_depends_only_on_inputs_and_time() {
        let bytes = seed().to_bytes().unwrap();
        assert_eq!(bytes, seed().to_bytes().unwrap());
        let later = seed().time(Timestamp::from_unix(1_700_000_000).unwrap());
        assert_ne!(bytes, later.to_bytes().unwrap());
    }
}
