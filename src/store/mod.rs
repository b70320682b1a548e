//! Baked images: content-addressed entries under `store/<key>`, immutable once written, and
//! names under `images/<name>`, each a symlink to an entry that a new bake swaps atomically.
//! A run that opened the previous entry keeps using it while a new one takes the name.
//!
//! What uses an entry is recorded by key, not by name ([`references`]): persistent VMs
//! register theirs, live runs hold theirs, and an entry goes only when no name and no holder
//! is left.

mod manifest;
mod references;
pub mod transfer;

pub use manifest::Manifest;
use references::References;
pub use references::{Holder, Reference};

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::name::{ImageName, InvalidName};
use crate::path_error::PathError;
use crate::paths::Home;
use crate::scratch::Scratch;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum Error {
    #[error(transparent)]
    #[diagnostic(transparent)]
    InvalidName(#[from] InvalidName),
    #[error("no baked image named `{name}`")]
    #[diagnostic(help("{}", if known.is_empty() {
        "bake one: vmrun bake --image debian:bookworm --name NAME".to_owned()
    } else {
        format!("baked images: {}", known.join(", "))
    }))]
    NotFound { name: String, known: Vec<String> },
    #[error("image `{name}` is in use by {}", holders.join(", "))]
    #[diagnostic(help(
        "a VM keeps its image until it is deleted (vmrun vm delete NAME); \
         a `vmrun test` run until it ends"
    ))]
    InUse { name: String, holders: Vec<String> },
    #[error("the store has no entry {key} (its image was removed)")]
    NoEntry { key: String },
    #[error("the store entry {} is damaged: {reason}", dir.display())]
    Damaged { dir: PathBuf, reason: String },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Io(#[from] PathError),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        use crate::exit_code::{BAD_INPUT, INTERNAL};
        match self {
            Error::InvalidName(_)
            | Error::NotFound { .. }
            | Error::InUse { .. }
            | Error::NoEntry { .. } => BAD_INPUT,
            Error::Damaged { .. } | Error::Io(_) => INTERNAL,
        }
    }
}

/// One store entry: a provisioned disk layer and what connecting to it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct BakedImage {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl BakedImage {
    pub const DISK: &str = "disk.qcow2";
    /// The guest's SSH host public key, pinned by every connection.
    pub const HOST_KEY: &str = "host_ed25519.pub";
    /// vmrun's private key for the run user (0600).
    pub const CLIENT_KEY: &str = "client_ed25519";
    pub const MANIFEST: &str = "image.json";
    pub const BAKE_LOG: &str = "bake-serial.log";

    pub fn disk(&self) -> PathBuf {
        self.dir.join(Self::DISK)
    }
    pub fn host_key(&self) -> PathBuf {
        self.dir.join(Self::HOST_KEY)
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join(Self::CLIENT_KEY)
    }

    /// Where the guest's SSH is reached through `port` and how it is recognised: the pinned
    /// host key and vmrun's client key.
    pub fn ssh_target(&self, port: u16) -> Result<crate::ssh::Target, PathError> {
        let path = self.host_key();
        let host_key = fs::read_to_string(&path).map_err(PathError::at("read", &path))?;
        Ok(crate::ssh::Target {
            port,
            host_key: host_key.trim().to_owned(),
            client_key: self.client_key(),
        })
    }

    /// Holds this entry for live run `run_id` until the returned reference is dropped or the
    /// process dies: `images rm` refuses to remove it meanwhile. Fails when the entry was
    /// removed since it was opened.
    pub fn hold(&self, run_id: &str) -> Result<Reference, PathError> {
        let store = self.dir.parent().unwrap_or(&self.dir);
        let references = References::new(store);
        let _order = references.shared()?;
        let manifest = self.dir.join(Self::MANIFEST);
        if !manifest.exists() {
            return Err(PathError {
                action: "hold",
                path: manifest,
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        references.hold(&self.manifest.key, run_id)
    }

    fn load(dir: &Path) -> Result<BakedImage, Error> {
        let path = dir.join(Self::MANIFEST);
        let text = fs::read_to_string(&path).map_err(PathError::at("read", &path))?;
        let manifest = serde_json::from_str(&text).map_err(|e| Error::Damaged {
            dir: dir.to_owned(),
            reason: format!("{}: {e}", Self::MANIFEST),
        })?;
        Ok(BakedImage {
            dir: dir.to_owned(),
            manifest,
        })
    }

    /// Bytes the entry takes on disk (its own layer, not the shared source).
    pub fn disk_usage(&self) -> u64 {
        fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.blocks() * 512)
            .sum()
    }
}

/// A name and the entry it points at.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedImage {
    pub name: String,
    pub image: BakedImage,
}

/// The prefix of a bake's directory in the store until it is committed.
const STAGING: &str = ".staging-";

pub struct Store {
    entries: PathBuf,
    names: PathBuf,
    references: References,
}

impl Store {
    pub fn new(home: &Home) -> Store {
        Store {
            entries: home.store(),
            names: home.images(),
            references: References::new(&home.store()),
        }
    }

    /// The entry stored under `key`, if a bake made it.
    pub fn entry(&self, key: &str) -> Result<Option<BakedImage>, Error> {
        let dir = self.entries.join(key);
        if !dir.join(BakedImage::MANIFEST).exists() {
            return Ok(None);
        }
        BakedImage::load(&dir).map(Some)
    }

    /// A private directory inside the store to build an entry in (same file system, so
    /// [`Store::commit`] is a rename). Removed if dropped uncommitted, and by the next
    /// vmrun call if this one is killed (see [`Store::reap`]): a failed bake leaves nothing.
    pub fn staging(&self) -> Result<Scratch, Error> {
        Ok(Scratch::new_in(&self.entries, STAGING)?)
    }

    /// Removes staging directories that bakes of killed vmruns left; their names.
    pub fn reap(&self) -> Vec<String> {
        crate::scratch::reap(&self.entries, STAGING)
    }

    /// Writes the manifest into `staging` and moves it to `store/<key>`. If a concurrent
    /// bake of the same inputs got there first, its entry is kept and this one dropped.
    pub fn commit(&self, staging: Scratch, manifest: &Manifest) -> Result<BakedImage, Error> {
        let manifest_path = staging.path().join(BakedImage::MANIFEST);
        let json = serde_json::to_string_pretty(manifest).expect("manifest serializes");
        fs::write(&manifest_path, json + "\n").map_err(PathError::at("write", &manifest_path))?;
        let dir = self.entries.join(&manifest.key);
        if let Err(e) = staging.persist(&dir)
            && !dir.join(BakedImage::MANIFEST).exists()
        {
            return Err(Error::Io(e));
        }
        BakedImage::load(&dir)
    }

    /// Points `name` at the entry `key`, replacing what it pointed at in one rename.
    pub fn set_name(&self, name: &ImageName, key: &str) -> Result<(), Error> {
        let name = name.as_str();
        let _order = self.references.shared()?;
        self.require_entry(key)?;
        crate::path_error::create_private_dir(&self.names)?;
        let link = self.names.join(name);
        let temp = self.names.join(format!(".{name}.{}", std::process::id()));
        let _ = fs::remove_file(&temp);
        let target = Path::new("../store").join(key);
        std::os::unix::fs::symlink(&target, &temp).map_err(PathError::at("create", &temp))?;
        Ok(fs::rename(&temp, &link).map_err(PathError::at("replace", &link))?)
    }

    pub fn get(&self, name: &ImageName) -> Result<BakedImage, Error> {
        let name = name.as_str();
        let link = self.names.join(name);
        match fs::read_link(&link) {
            Ok(_) => {
                BakedImage::load(&fs::canonicalize(&link).map_err(PathError::at("resolve", &link))?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NotFound {
                name: name.to_owned(),
                known: self.list()?.into_iter().map(|n| n.name).collect(),
            }),
            Err(e) => Err(Error::Io(PathError {
                action: "read",
                path: link,
                source: e,
            })),
        }
    }

    /// Every named image, sorted by name.
    pub fn list(&self) -> Result<Vec<NamedImage>, Error> {
        let entries = match fs::read_dir(&self.names) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::Io(PathError {
                    action: "read",
                    path: self.names.clone(),
                    source: e,
                }));
            }
        };
        let mut images = Vec::new();
        for entry in entries {
            let entry = entry.map_err(PathError::at("read", &self.names))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let dir =
                fs::canonicalize(entry.path()).map_err(PathError::at("resolve", &entry.path()))?;
            images.push(NamedImage {
                name,
                image: BakedImage::load(&dir)?,
            });
        }
        images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(images)
    }

    /// Removes the name, and its entry when no other name points at it. Refused while a VM
    /// or a live run holds the entry the name points at (an entry the name pointed at before
    /// a later bake is not the name's: it stays while held, see [`Store::release`]).
    pub fn remove(&self, image_name: &ImageName) -> Result<(), Error> {
        let name = image_name.as_str();
        // Resolved under the order: a bake cannot move the name meanwhile.
        let _order = self.references.exclusive()?;
        let image = self.get(image_name)?;
        let key = &image.manifest.key;
        let holders = self.references.holders(key)?;
        if !holders.is_empty() {
            return Err(Error::InUse {
                name: name.to_owned(),
                holders: holders.iter().map(Holder::to_string).collect(),
            });
        }
        let link = self.names.join(name);
        fs::remove_file(&link).map_err(PathError::at("remove", &link))?;
        self.remove_if_unused(key, &image.dir)
    }

    /// Registers a persistent holder of entry `key` (a VM at create); again is harmless.
    /// Fails when the entry is gone.
    pub fn register(&self, key: &str, holder: &Holder) -> Result<(), Error> {
        let _order = self.references.shared()?;
        self.require_entry(key)?;
        Ok(self.references.add(key, holder)?)
    }

    /// Ends `holder`'s registration (a VM at delete). An entry left with no name and no
    /// holder is removed: it was an earlier bake of a name that has moved on, kept only for
    /// its holders.
    pub fn release(&self, key: &str, holder: &Holder) -> Result<(), Error> {
        let _order = self.references.exclusive()?;
        self.references.remove(key, holder)?;
        if !self.references.holders(key)?.is_empty() || !self.names_of(key)?.is_empty() {
            return Ok(());
        }
        self.remove_if_unused(key, &self.entries.join(key))
    }

    /// Removes entry `key` (in `dir`) unless a name points at it; the caller holds the
    /// exclusive order and found no holders.
    fn remove_if_unused(&self, key: &str, dir: &Path) -> Result<(), Error> {
        if !self.names_of(key)?.is_empty() {
            return Ok(());
        }
        match fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(PathError::at("remove", dir)(e).into());
            }
            _ => {}
        }
        self.references.forget(key);
        Ok(())
    }

    fn require_entry(&self, key: &str) -> Result<(), Error> {
        match self.entries.join(key).join(BakedImage::MANIFEST).exists() {
            true => Ok(()),
            false => Err(Error::NoEntry {
                key: key.to_owned(),
            }),
        }
    }

    /// The names pointing at entry `key`.
    fn names_of(&self, key: &str) -> Result<Vec<String>, Error> {
        let entries = match fs::read_dir(&self.names) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(PathError::at("read", &self.names)(e).into()),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(PathError::at("read", &self.names))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let target =
                fs::read_link(entry.path()).map_err(PathError::at("read", &entry.path()))?;
            if target.file_name().is_some_and(|k| k == key) {
                names.push(name);
            }
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_name(name: &str) -> crate::name::ImageName {
        crate::name::ImageName::new(name).unwrap()
    }

    fn manifest(key: &str) -> Manifest {
        Manifest {
            key: key.into(),
            source: "debian:bookworm".into(),
            source_digest: "d".into(),
            created: 1,
            cpus: 2,
            memory_mib: 1024,
            vmrun_version: "0.1.0".into(),
        }
    }

    fn stored(store: &Store, key: &str) -> BakedImage {
        let staging = store.staging().unwrap();
        fs::write(staging.path().join(BakedImage::DISK), key).unwrap();
        store.commit(staging, &manifest(key)).unwrap()
    }

    #[test]
    fn a_name_moves_to_a_new_entry_while_the_old_entry_stays_readable() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::new(&Home::under(home.path()));
        let old = stored(&store, "k1");
        store.set_name(&image_name("base"), "k1").unwrap();
        assert_eq!(store.get(&image_name("base")).unwrap().manifest.key, "k1");
        let new = stored(&store, "k2");
        store.set_name(&image_name("base"), "k2").unwrap();
        assert_eq!(store.get(&image_name("base")).unwrap(), new);
        assert_eq!(
            fs::read_to_string(old.disk()).unwrap(),
            "k1",
            "old entry still there for running users"
        );
        assert_eq!(store.entry("k1").unwrap().unwrap(), old);
        assert!(store.entry("k3").unwrap().is_none());
        let names: Vec<String> = store.list().unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["base"]);
    }

    #[test]
    fn store_and_names_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let h = Home::under(home.path());
        let store = Store::new(&h);
        stored(&store, "k1");
        store.set_name(&image_name("x"), "k1").unwrap();
        for dir in [h.store(), h.images()] {
            assert_eq!(
                fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
                0o700,
                "{}",
                dir.display()
            );
        }
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::new(&Home::under(home.path()));
        stored(&store, "k1");
        store.set_name(&image_name("base"), "k1").unwrap();
        let err = store.get(&image_name("nope")).unwrap_err();
        assert!(
            matches!(&err, Error::NotFound { known, .. } if known == &["base"]),
            "{err:?}"
        );
        assert!(
            crate::name::ImageName::new("../x").is_err(),
            "a path is no image name"
        );
    }

    #[test]
    fn remove_keeps_entries_other_names_use() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::new(&Home::under(home.path()));
        let entry = stored(&store, "k1");
        store.set_name(&image_name("a"), "k1").unwrap();
        store.set_name(&image_name("b"), "k1").unwrap();
        store.remove(&image_name("a")).unwrap();
        assert!(entry.dir.exists(), "b still uses it");
        store.remove(&image_name("b")).unwrap();
        assert!(!entry.dir.exists());
        assert!(store.list().unwrap().is_empty());
    }

    fn vm(name: &str) -> Holder {
        Holder::Vm(name.into())
    }

    #[test]
    fn remove_is_refused_while_a_vm_or_run_holds_the_key_under_any_name() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::new(&Home::under(home.path()));
        let entry = stored(&store, "k1");
        store.set_name(&image_name("a"), "k1").unwrap();
        store.set_name(&image_name("alias"), "k1").unwrap();
        store.register("k1", &vm("db")).unwrap();
        let run = store.get(&image_name("a")).unwrap().hold("r1").unwrap();
        let err = store.remove(&image_name("alias")).unwrap_err();
        assert!(
            matches!(&err, Error::InUse { holders, .. } if holders == &["VM `db`", "run `r1`"]),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "image `alias` is in use by VM `db`, run `r1`"
        );
        store.release("k1", &vm("db")).unwrap();
        assert!(entry.dir.exists(), "named, and held by the run");
        assert!(matches!(
            store.remove(&image_name("a")),
            Err(Error::InUse { .. })
        ));
        drop(run);
        store.remove(&image_name("a")).unwrap();
        store.remove(&image_name("alias")).unwrap();
        assert!(!entry.dir.exists());
    }

    /// `base` baked again: the VM made from the first bake keeps standing on it.
    #[test]
    fn a_repointed_name_goes_but_the_entry_a_vm_holds_stays_until_the_vm_goes() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::new(&Home::under(home.path()));
        let old = stored(&store, "k1");
        store.set_name(&image_name("base"), "k1").unwrap();
        store.register("k1", &vm("db")).unwrap();
        let new = stored(&store, "k2");
        store.set_name(&image_name("base"), "k2").unwrap();
        store.remove(&image_name("base")).unwrap();
        assert!(!new.dir.exists(), "nothing held the new bake");
        assert!(old.dir.exists(), "the VM stands on the old one");
        assert!(store.list().unwrap().is_empty());
        store.release("k1", &vm("db")).unwrap();
        assert!(!old.dir.exists(), "no name and no holder left");
    }

    #[test]
    fn releasing_keeps_named_entries_and_entries_held_by_others() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::new(&Home::under(home.path()));
        let entry = stored(&store, "k1");
        store.set_name(&image_name("base"), "k1").unwrap();
        store.register("k1", &vm("a")).unwrap();
        store.register("k1", &vm("a")).unwrap();
        store.register("k1", &vm("b")).unwrap();
        store.release("k1", &vm("a")).unwrap();
        store.release("k1", &vm("b")).unwrap();
        assert!(entry.dir.exists(), "still named");
        store.register("k1", &vm("c")).unwrap();
        store.set_name(&image_name("base"), "k1").unwrap();
        fs::remove_file(home.path().join("state/images/base")).unwrap();
        store.register("k1", &vm("d")).unwrap();
        store.release("k1", &vm("c")).unwrap();
        assert!(entry.dir.exists(), "d still holds it");
        store.release("k1", &vm("d")).unwrap();
        assert!(!entry.dir.exists());
    }

    #[test]
    fn nothing_holds_or_is_named_after_a_removed_entry() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::new(&Home::under(home.path()));
        let entry = stored(&store, "k1");
        store.set_name(&image_name("base"), "k1").unwrap();
        store.remove(&image_name("base")).unwrap();
        assert!(matches!(
            store.register("k1", &vm("db")),
            Err(Error::NoEntry { .. })
        ));
        assert!(matches!(
            store.set_name(&image_name("base"), "k1"),
            Err(Error::NoEntry { .. })
        ));
        let err = entry.hold("r1").unwrap_err();
        assert_eq!(err.source.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn the_ssh_target_pins_the_stored_host_key() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::new(&Home::under(home.path()));
        let entry = stored(&store, "k1");
        fs::write(entry.host_key(), "ssh-ed25519 AAAA vmrun\n").unwrap();
        let target = entry.ssh_target(2222).unwrap();
        assert_eq!(target.host_key, "ssh-ed25519 AAAA vmrun");
        assert_eq!((target.port, target.client_key), (2222, entry.client_key()));
    }

    #[test]
    fn failed_staging_leaves_nothing() {
        let home = tempfile::tempdir().unwrap();
        let h = Home::under(home.path());
        let store = Store::new(&h);
        let staging = store.staging().unwrap();
        fs::write(staging.path().join("disk.qcow2"), "x").unwrap();
        drop(staging);
        assert_eq!(fs::read_dir(h.store()).unwrap().count(), 0);
    }
}
