//! Files that appear whole or not at all: written to a temporary file beside their final
//! path (same directory, so same file system), then renamed into place.

use std::io;
use std::path::Path;

/// A temporary file in `path`'s directory, named with `prefix`, removed if dropped; persist
/// it to `path` when it is complete.
pub fn temp_beside(path: &Path, prefix: &str) -> io::Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    tempfile::Builder::new().prefix(prefix).tempfile_in(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lives_beside_the_target_and_persists_onto_it() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        let temp = temp_beside(&target, ".t-").unwrap();
        assert_eq!(temp.path().parent(), Some(dir.path()));
        assert!(
            temp.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".t-")
        );
        std::fs::write(temp.path(), b"x").unwrap();
        temp.persist(&target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"x");
    }
}
