//! `images export`: an image's files, found from its store entry and its disk's backing
//! chain, hashed, then written after the header into one zstd stream, to a file (whole or
//! not at all) or to standard output.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use super::error::Error;
use super::format::{self, FileEntry, Header};
use super::input::CHUNK;
use super::member::Member;
use crate::atomic_file::{Existing, NewFile};
use crate::disk::{self, DiskFormat};
use crate::events::{Event, Sink, phase};
use crate::name::ImageName;
use crate::path_error::PathError;
use crate::sha256::Sha256;
use crate::store::{BakedImage, Store};
use crate::warm::WarmState;

/// zstd's level, measured on the default image (730 MiB of files, 2 threads): level 1 gave
/// 254 MB in 11.9 s, level 3 232 MB in 15.0 s, level 6 219 MB in 37.9 s. Level 3 is 9%
/// smaller for a few seconds more; beyond it, 5% less costs two and a half times as long.
const LEVEL: i32 = 3;

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
                let (size, sha256) = hash(path)?;
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

/// The size and sha256 of the file at `path`.
fn hash(path: &Path) -> Result<(u64, Sha256), Error> {
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let size = File::open(path)
        .and_then(|mut file| io::copy(&mut file, &mut hasher))
        .map_err(PathError::at("read", path))?;
    Ok((size, Sha256::finish(hasher)))
}

/// Writes the prelude, then the header and the files through zstd, to `out` (named `to`).
fn write(
    out: &mut dyn Write,
    header: &Header,
    files: &[(Member, PathBuf)],
    to: &Path,
    sink: Sink,
) -> Result<(), Error> {
    let write_error = |e| PathError::at("write", to)(e);
    format::write_prelude(out).map_err(write_error)?;
    let mut encoder = zstd::stream::write::Encoder::new(out, LEVEL).map_err(write_error)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    encoder.multithread(threads).map_err(write_error)?;
    encoder.include_checksum(true).map_err(write_error)?;
    format::write_header(&mut encoder, header).map_err(write_error)?;
    let total = header.total_size();
    let mut done = 0;
    let mut buf = vec![0u8; CHUNK];
    for (entry, (_, path)) in header.files.iter().zip(files) {
        // Exactly the size hashed: the file must not have changed since.
        let mut file = File::open(path)
            .map_err(PathError::at("read", path))?
            .take(entry.size);
        let mut copied = 0;
        loop {
            let n = file.read(&mut buf).map_err(PathError::at("read", path))?;
            if n == 0 {
                break;
            }
            encoder.write_all(&buf[..n]).map_err(write_error)?;
            copied += n as u64;
            done += n as u64;
            sink(Event::Bytes {
                done,
                total: Some(total),
            });
        }
        if copied != entry.size {
            return Err(PathError::at("read", path)(io::Error::other(
                "it changed while it was exported",
            ))
            .into());
        }
    }
    encoder
        .finish()
        .and_then(|out| out.flush())
        .map_err(write_error)?;
    Ok(())
}
