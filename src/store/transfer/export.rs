//! `images export`: an image's files, found from its store entry and its disk's backing
//! chain, hashed, then written after the header into one zstd stream, to a file (whole or
//! not at all) or to standard output.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use super::error::Error;
use super::format::{self, FileEntry, Header};
use super::member::Member;
use crate::atomic_file::{Existing, NewFile};
use crate::disk::{self, DiskFormat};
use crate::events::{Sink, phase};
use crate::framed;
use crate::name::ImageName;
use crate::sha256::Sha256;
use crate::store::{BakedImage, Store};
use crate::warm::WarmState;

/// Where an export goes: a file, or standard output (`-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout,
    File(PathBuf),
}

impl Output {
    pub fn parse(arg: &Path) -> Output {
        match arg.as_os_str() == "-" {
            true => Output::Stdout,
            false => Output::File(arg.to_owned()),
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exported {
    pub key: String,
    /// Bytes of the image's files, before compression.
    pub bytes: u64,
    pub warm: bool,
}

/// Writes the image `name` of `store` to `output`.
pub fn export(
    store: &Store,
    name: &ImageName,
    output: &Output,
    sink: Sink,
) -> Result<Exported, Error> {
    if *output == Output::Stdout && io::stdout().is_terminal() {
        return Err(Error::Terminal);
    }
    let image = store.get(name)?;
    let files = members(&image, name)?;
    let header = phase(sink, "hash the image's files", || {
        let files = files
            .iter()
            .map(|(member, path)| {
                let (size, sha256) = framed::hash(path)?;
                Ok(FileEntry {
                    name: *member,
                    size,
                    sha256,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok::<_, Error>(Header {
            key: image.manifest.key.clone(),
            name: name.as_str().to_owned(),
            files,
        })
    })?;
    phase(sink, "compress the image", || match output {
        Output::Stdout => write(
            &mut io::stdout().lock(),
            &header,
            &files,
            Path::new("-"),
            sink,
        ),
        Output::File(path) => {
            let mut new = NewFile::beside(path)?;
            write(new.file(), &header, &files, path, sink)?;
            new.commit(path, Existing::Replace)?;
            Ok(())
        }
    })?;
    Ok(Exported {
        key: header.key.clone(),
        bytes: header.total_size(),
        warm: files.iter().any(|(m, _)| m.is_warm()),
    })
}

/// The entry's files and its source, each as the member it becomes, in [`Member::ALL`]'s
/// order. The disk chain must be the one a bake makes: the warm layer (if any) on the
/// entry's disk, on a standalone source.
fn members(image: &BakedImage, name: &ImageName) -> Result<Vec<(Member, PathBuf)>, Error> {
    let not_exportable = |reason: String| Error::NotExportable {
        name: name.as_str().to_owned(),
        reason,
    };
    let warm = WarmState::load(&image.dir).map_err(|e| not_exportable(e.to_string()))?;
    let top = warm.as_ref().map_or(image.disk(), |w| w.disk.clone());
    let chain = disk::backing_chain(&top)?;
    let layers = 2 + usize::from(warm.is_some());
    if chain.len() != layers {
        return Err(not_exportable(format!(
            "its disk chain has {} layers, not {layers} (the warm layer, the baked disk and \
             a source without a backing file)",
            chain.len()
        )));
    }
    let source = &chain[layers - 1];
    let source_member = match source.format {
        DiskFormat::Qcow2 { .. } => Member::SourceQcow2,
        DiskFormat::Raw { .. } => Member::SourceRaw,
    };
    let mut files = vec![
        (Member::Manifest, image.dir.join(BakedImage::MANIFEST)),
        (Member::HostKey, image.host_key()),
        (Member::ClientKey, image.client_key()),
        (Member::Disk, chain[layers - 2].path.clone()),
        (source_member, source.path.clone()),
    ];
    if let Some(warm) = warm {
        files.push((
            Member::WarmMachine,
            image.dir.join(Member::WarmMachine.name()),
        ));
        files.push((Member::WarmDisk, warm.disk));
        files.push((Member::WarmState, warm.state));
        if warm.ram.exists() {
            files.push((Member::WarmRam, warm.ram));
        }
    }
    files.sort_by_key(|(member, _)| *member);
    Ok(files)
}

/// Writes the prelude, then the header and the files through zstd, to `out` (named `to`).
fn write(
    out: &mut dyn Write,
    header: &Header,
    files: &[(Member, PathBuf)],
    to: &Path,
    sink: Sink,
) -> Result<(), Error> {
    let json = serde_json::to_vec(header).expect("header serializes");
    let sizes: Vec<(u64, &Path)> = header
        .files
        .iter()
        .zip(files)
        .map(|(entry, (_, path))| (entry.size, path.as_path()))
        .collect();
    framed::write(
        out,
        &format::EXPORT,
        (&json, Sha256::of(&json).bytes()),
        &sizes,
        to,
        sink,
    )?;
    Ok(())
}
