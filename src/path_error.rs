//! The one I/O error every module reports (what vmrun was doing, and to which path), and
//! the private directories it keeps keys and sockets in.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("cannot {action} {}", path.display())]
pub struct PathError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl PathError {
    /// For `map_err`: `fs::read(p).map_err(PathError::at("read", p))?`.
    pub fn at(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PathError {
        let path = path.to_owned();
        move |source| PathError {
            action,
            path,
            source,
        }
    }
}

/// Creates `dir` and its parents, readable by its owner only (it holds keys or sockets), and
/// makes an existing one so.
pub fn create_private_dir(dir: &Path) -> Result<(), PathError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(PathError::at("create", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(PathError::at("set permissions of", dir))
}
