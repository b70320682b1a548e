//! Opening a bundle: its header alone (to show it, or to find the image whose key seals it),
//! and its files, written out only once the seal is checked.

use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use super::error::{Error, Fault};
use super::format::BUNDLE;
use super::header::Header;
use super::seal::SealKey;
use crate::events::Sink;
use crate::framed::{self, CHUNK, Reading};

/// A bundle's header as read, with the bytes the seal covers and the seal, not yet checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Sealed {
    pub header: Header,
    pub json: Vec<u8>,
    pub seal: [u8; 32],
    /// The bundle it was read from, and its size in bytes.
    pub path: PathBuf,
    pub bundle_bytes: u64,
}

impl Sealed {
    /// Whether the header was sealed with `key`.
    pub fn verify(&self, key: &SealKey) -> Result<(), Error> {
        match key.matches(&self.json, &self.seal) {
            true => Ok(()),
            false => Err(Error::Invalid {
                file: label(&self.path),
                fault: Fault::Seal {
                    key: self.header.image.key.clone(),
                },
            }),
        }
    }
}

/// Reads and checks the header of the bundle `path`, and no more of it.
pub fn read_header(path: &Path) -> Result<Sealed, Error> {
    let file = label(path);
    open(path)
        .and_then(|(mut stream, bytes)| read_sealed(&mut stream, path, bytes))
        .map_err(|e| Error::reading(&file, e))
}

/// Writes the files of the bundle `path`, sealed with `key`, into `dir` as `disk.qcow2` and
/// `state` (new files, never through a link, private), each checked against its size and
/// digest as it is written, then checks nothing follows. Nothing is written before the seal
/// is checked; on any error, what was written is removed.
pub fn extract(path: &Path, key: &SealKey, dir: &Path, sink: Sink) -> Result<Header, Error> {
    let file = label(path);
    let (mut stream, bytes) = open(path).map_err(|e| Error::reading(&file, e))?;
    let sealed = read_sealed(&mut stream, path, bytes).map_err(|e| Error::reading(&file, e))?;
    sealed.verify(key)?;
    let mut written = Written(Vec::new());
    for entry in &sealed.header.files {
        written.0.push(dir.join(entry.name.name()));
        framed::copy_member(&mut stream, entry, dir, sink).map_err(|e| {
            // A file that could not be created is not ours to remove.
            if matches!(&e, Reading::Output(o) if o.action == "create") {
                written.0.pop();
            }
            Error::reading(&file, e)
        })?;
    }
    framed::expect_end(&mut stream).map_err(|e| Error::reading(&file, e))?;
    written.0.clear();
    Ok(sealed.header)
}

/// Files an extraction wrote, removed when dropped unless it succeeded.
struct Written(Vec<PathBuf>);

impl Drop for Written {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = fs::remove_file(path);
        }
    }
}

fn label(path: &Path) -> String {
    format!("`{}`", path.display())
}

/// The bundle's decompressed stream, after its prelude, and the bundle's size.
fn open(path: &Path) -> Result<(impl Read, u64), Reading> {
    let file = File::open(path).map_err(Reading::Io)?;
    let bytes = file.metadata().map_err(Reading::Io)?.len();
    let mut raw = BufReader::with_capacity(CHUNK, file);
    BUNDLE.read_prelude(&mut raw)?;
    let stream = zstd::stream::read::Decoder::with_buffer(raw).map_err(framed::from_stream)?;
    Ok((stream, bytes))
}

fn read_sealed(stream: &mut impl Read, path: &Path, bundle_bytes: u64) -> Result<Sealed, Reading> {
    let raw = BUNDLE.read_header(stream)?;
    let header: Header = framed::parse(&raw.json)?;
    header.check()?;
    Ok(Sealed {
        header,
        json: raw.json,
        seal: raw.trailer,
        path: path.to_owned(),
        bundle_bytes,
    })
}
