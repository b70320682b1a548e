//! The one I/O error every module reports: what vmrun was doing, and to which path.

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
        move |source| PathError { action, path, source }
    }
}
