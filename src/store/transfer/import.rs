//! `images import`: reads an export, writes its files into a store staging directory while
//! checking each against the header, checks the layers as any image from outside is checked,
//! gives them backing names valid in this home, and only then stores the entry and its name.
//! Whatever fails on the way, nothing is stored: the staging directory goes when dropped, a
//! source placed for it is removed again.

use std::fs;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::error::{Error, Fault};
use super::format::{self, Header};
use super::input::{Input, copy_member, expect_end};
use super::member::Member;
use crate::disk::{self, DiskFormat};
use crate::events::{Sink, phase};
use crate::name::ImageName;
use crate::path_error::PathError;
use crate::paths::Home;
use crate::store::{Manifest, Store};
use crate::warm::machine::WarmMachine;

/// Where imported sources go in the home's sources, by their sha256.
const SOURCES_DIR: &str = "imported";
/// The warm layer's backing file, relative to it: the entry's own disk, wherever it is.
const WARM_BACKING: &str = "../disk.qcow2";

/// What an import stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub name: ImageName,
    pub key: String,
    /// The store had the entry already (the same image imported or baked before).
    pub existed: bool,
    pub warm: bool,
}

/// Imports the export read from `input` into `home`, named `name` or the exported name.
pub fn import(
    input: &Input,
    name: Option<ImageName>,
    home: &Home,
    sink: Sink,
) -> Result<Imported, Error> {
    let mut raw = BufReader::with_capacity(super::input::CHUNK, input.open()?);
    format::read_prelude(&mut raw).map_err(|e| input.error(e))?;
    let mut stream = zstd::stream::read::Decoder::with_buffer(raw)
        .map_err(|source| PathError::at("start decompressing", Path::new("-"))(source))?;
    let header = format::read_header(&mut stream).map_err(|e| input.error(e))?;
    let name = match name {
        Some(name) => name,
        None => ImageName::new(&header.name)?,
    };
    let store = Store::new(home);
    let staging = store.staging()?;
    check_space(staging.path(), &header)?;
    let dir = staging.path();
    if header.files.iter().any(|f| f.name.is_warm()) {
        let warm = dir.join(crate::warm::DIR);
        fs::create_dir(&warm).map_err(PathError::at("create", &warm))?;
    }
    phase(sink, &format!("import {}", input.label()), || {
        for entry in &header.files {
            copy_member(&mut stream, input, entry, dir, sink)?;
        }
        expect_end(&mut stream, input)
    })?;

    let manifest = read_manifest(input, dir, &header)?;
    let source = check_layers(input, dir, &header)?;
    if store.entry(&header.key)?.is_some() {
        store.set_name(&name, &header.key)?;
        return Ok(Imported {
            name,
            key: header.key,
            existed: true,
            warm: source.warm,
        });
    }
    let placed = PlacedSource::place(&dir.join(source.member.name()), &home.sources(), &header)?;
    disk::set_backing_name(&dir.join(Member::Disk.name()), &placed.path)
        .map_err(|e| unsafe_layer(input, Member::Disk, e))?;
    let top = match source.warm {
        true => {
            let warm_disk = dir.join(Member::WarmDisk.name());
            disk::set_backing_name(&warm_disk, Path::new(WARM_BACKING))
                .map_err(|e| unsafe_layer(input, Member::WarmDisk, e))?;
            warm_disk
        }
        false => dir.join(Member::Disk.name()),
    };
    // The whole chain as runs will open it, checked once more with its new names.
    let chain = disk::backing_chain(&top).map_err(|e| unsafe_layer(input, Member::Disk, e))?;
    let base = chain.last().map(|entry| fs::canonicalize(&entry.path));
    if chain.len() != 2 + usize::from(source.warm)
        || !matches!(base, Some(Ok(ref base)) if base == &placed.path)
    {
        return Err(input.fault(Fault::Damaged {
            what: "its layers do not stand on one another as an image's do".into(),
        }));
    }
    let image = store.commit(staging, &manifest)?;
    placed.keep();
    store.set_name(&name, &image.manifest.key)?;
    Ok(Imported {
        name,
        key: image.manifest.key,
        existed: false,
        warm: source.warm,
    })
}

fn unsafe_layer(input: &Input, member: Member, source: disk::Error) -> Error {
    Error::UnsafeLayer {
        file: input.label(),
        member: member.name(),
        source,
    }
}

/// Refuses an import whose files cannot fit in the store's file system.
fn check_space(dir: &Path, header: &Header) -> Result<(), Error> {
    let needed = header.total_size();
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|e| PathError::at("measure", dir)(std::io::Error::other(e)))?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a zeroed statvfs to fill.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(PathError::at("measure", dir)(std::io::Error::last_os_error()).into());
    }
    let free = (stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64);
    match needed > free {
        true => Err(Error::NoSpace {
            dir: dir.parent().unwrap_or(dir).to_owned(),
            needed,
            free,
        }),
        false => Ok(()),
    }
}

/// The staged `image.json`, which must be a manifest with the header's key; and the warm
/// machine record, which must be one.
fn read_manifest(input: &Input, dir: &Path, header: &Header) -> Result<Manifest, Error> {
    let damaged = |member: Member, e: &dyn std::fmt::Display| {
        input.fault(Fault::Damaged {
            what: format!("`{member}` is not what vmrun writes there: {e}"),
        })
    };
    let text = read_small(dir, Member::Manifest)?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| damaged(Member::Manifest, &e))?;
    if manifest.key != header.key {
        return Err(input.fault(Fault::Key {
            header: header.key.clone(),
            manifest: manifest.key.chars().take(80).collect(),
        }));
    }
    if header.files.iter().any(|f| f.name == Member::WarmMachine) {
        let text = read_small(dir, Member::WarmMachine)?;
        serde_json::from_slice::<WarmMachine>(&text)
            .map_err(|e| damaged(Member::WarmMachine, &e))?;
    }
    Ok(manifest)
}

/// A member the header bounded to [`Member::max_size`] (small), read whole.
fn read_small(dir: &Path, member: Member) -> Result<Vec<u8>, Error> {
    let path = dir.join(member.name());
    let mut text = Vec::new();
    fs::File::open(&path)
        .and_then(|f| f.take(member.max_size()).read_to_end(&mut text))
        .map_err(PathError::at("read", &path))?;
    Ok(text)
}

/// What the layers are: which source member, and whether a warm layer stands on the disk.
struct Layers {
    member: Member,
    warm: bool,
}

/// Checks each staged layer as an image from outside: the source standalone, raw or qcow2;
/// the baked disk and the warm disk qcow2 layers recording a backing file of the right format.
/// Every qcow2 layer passes the sniffer's checks (no external data file, no encryption, no
/// unknown incompatible feature).
fn check_layers(input: &Input, dir: &Path, header: &Header) -> Result<Layers, Error> {
    let has = |m: Member| header.files.iter().any(|f| f.name == m);
    let member = match has(Member::SourceQcow2) {
        true => Member::SourceQcow2,
        false => Member::SourceRaw,
    };
    let warm = has(Member::WarmDisk);
    let wrong = |m: Member, what: String| {
        input.fault(Fault::Damaged {
            what: format!("`{m}` {what}"),
        })
    };
    let source = match member {
        Member::SourceQcow2 => {
            disk::sniff(&dir.join(member.name())).map_err(|e| unsafe_layer(input, member, e))?
        }
        _ => DiskFormat::Raw { size: 0 },
    };
    match &source {
        DiskFormat::Qcow2 {
            backing: Some(_), ..
        } => {
            return Err(wrong(member, "has a backing file of its own".into()));
        }
        DiskFormat::Raw { .. } if member == Member::SourceQcow2 => {
            return Err(wrong(member, "is not a qcow2 image".into()));
        }
        _ => {}
    }
    let mut layers = vec![(Member::Disk, source.name())];
    if warm {
        layers.push((Member::WarmDisk, "qcow2"));
    }
    for (layer, below) in layers {
        match disk::sniff(&dir.join(layer.name())).map_err(|e| unsafe_layer(input, layer, e))? {
            DiskFormat::Qcow2 {
                backing: Some(_),
                backing_format: Some(format),
                ..
            } if format == below => {}
            _ => {
                return Err(wrong(
                    layer,
                    format!("is not a qcow2 layer over a {below} image"),
                ));
            }
        }
    }
    Ok(Layers { member, warm })
}

/// The import's source, in the home's sources under its digest. Removed again when dropped
/// before [`PlacedSource::keep`], if this import put it there.
struct PlacedSource {
    path: PathBuf,
    ours: bool,
}

impl PlacedSource {
    /// Moves the staged source `staged` into `sources/imported/<sha256>.<format>`, or drops
    /// it when an earlier import or bake put the same file there.
    fn place(staged: &Path, sources: &Path, header: &Header) -> Result<PlacedSource, Error> {
        let entry = header
            .files
            .iter()
            .find(|f| f.name.is_source())
            .expect("the header was checked to hold a source");
        let format = match entry.name {
            Member::SourceRaw => "raw",
            _ => "qcow2",
        };
        let dir = sources.join(SOURCES_DIR);
        fs::create_dir_all(&dir).map_err(PathError::at("create", &dir))?;
        let dir = fs::canonicalize(&dir).map_err(PathError::at("resolve", &dir))?;
        let path = dir.join(format!("{}.{format}", entry.sha256));
        // A link, unlike a rename, never replaces a file another import relies on.
        let ours = match fs::hard_link(staged, &path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(PathError::at("create", &path)(e).into()),
        };
        fs::remove_file(staged).map_err(PathError::at("remove", staged))?;
        Ok(PlacedSource { path, ours })
    }

    fn keep(mut self) {
        self.ours = false;
    }
}

impl Drop for PlacedSource {
    fn drop(&mut self) {
        if self.ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}
