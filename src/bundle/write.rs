//! Writing a bundle: the two files hashed, the header sealed, all written through zstd to a
//! temporary file beside the bundle's path and renamed, so a bundle under its name is whole.

use std::path::Path;

use super::error::Error;
use super::format::{BUNDLE, Member};
use super::header::{FileEntry, Header};
use super::seal::SealKey;
use crate::atomic_file::{Existing, NewFile};
use crate::events::Sink;
use crate::framed;

/// Writes the bundle `path` of `header` (whose `files` are filled in here) and the files
/// `disk` and `state`, sealed with `key`. Returns the bundle's size in bytes.
pub fn write(
    path: &Path,
    header: &Header,
    disk: &Path,
    state: &Path,
    key: &SealKey,
    sink: Sink,
) -> Result<u64, Error> {
    let paths = [disk, state];
    let mut header = header.clone();
    header.files = Member::ALL
        .into_iter()
        .zip(paths)
        .map(|(name, path)| {
            let (size, sha256) = framed::hash(path)?;
            Ok(FileEntry { name, size, sha256 })
        })
        .collect::<Result<_, Error>>()?;
    header.check().map_err(|fault| Error::Invalid {
        file: format!("`{}`", path.display()),
        fault,
    })?;
    let json = serde_json::to_vec(&header).expect("header serializes");
    let files: Vec<(u64, &Path)> = header.files.iter().map(|f| f.size).zip(paths).collect();
    let mut new = NewFile::beside(path)?;
    framed::write(
        new.file(),
        &BUNDLE,
        (&json, &key.seal(&json)),
        &files,
        path,
        sink,
    )?;
    let bytes = new
        .file()
        .metadata()
        .map_err(crate::path_error::PathError::at("write", path))?
        .len();
    new.commit(path, Existing::Replace)?;
    Ok(bytes)
}
