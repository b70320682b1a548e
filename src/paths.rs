//! Where vmrun keeps its state. `VMRUN_HOME` puts everything under one directory (tests, CI);
//! otherwise the XDG base directories split it into cache, state and runtime parts.

use std::path::{Path, PathBuf};

/// The directories vmrun uses, resolved once at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// Facts about the host worth remembering: safe to delete, found out again on demand.
    pub cache: PathBuf,
    /// Source and baked images, persistent VMs: deleting loses work.
    pub state: PathBuf,
    /// Run directories, sockets, locks: gone at reboot.
    pub runtime: PathBuf,
}

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("cannot find a home for vmrun's files: neither VMRUN_HOME nor HOME is set")]
#[diagnostic(help("set VMRUN_HOME to a directory vmrun may write to"))]
pub struct NoHome;

impl Home {
    /// From the process environment.
    pub fn from_env() -> Result<Home, NoHome> {
        Home::from_vars(|name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
    }

    fn from_vars(var: impl Fn(&str) -> Option<PathBuf>) -> Result<Home, NoHome> {
        if let Some(root) = var("VMRUN_HOME") {
            return Ok(Home::under(&root));
        }
        let home = var("HOME").ok_or(NoHome)?;
        let cache = var("XDG_CACHE_HOME").unwrap_or_else(|| home.join(".cache"));
        let state = var("XDG_STATE_HOME").unwrap_or_else(|| home.join(".local/state"));
        // Without XDG_RUNTIME_DIR (no login session, e.g. CI), runtime files live in state.
        let runtime = var("XDG_RUNTIME_DIR")
            .map(|d| d.join("vmrun"))
            .unwrap_or_else(|| state.join("vmrun/run"));
        Ok(Home {
            cache: cache.join("vmrun"),
            state: state.join("vmrun"),
            runtime,
        })
    }

    /// Everything under one root directory.
    pub fn under(root: &Path) -> Home {
        Home {
            cache: root.join("cache"),
            state: root.join("state"),
            runtime: root.join("run"),
        }
    }

    /// Source images fetched, built or imported, by content. Baked images use them as
    /// backing files, so they live with the state, not the cache.
    pub fn sources(&self) -> PathBuf {
        self.state.join("sources")
    }

    /// Baked images by key (content-addressed, immutable once written).
    pub fn store(&self) -> PathBuf {
        self.state.join("store")
    }

    /// Image names: each a symlink to a store entry, replaced atomically by a new bake.
    pub fn images(&self) -> PathBuf {
        self.state.join("images")
    }

    /// Persistent VMs, one directory each.
    pub fn vms(&self) -> PathBuf {
        self.state.join("vms")
    }

    /// Live test runs, one directory each (see `run::reap_orphans`).
    pub fn runs(&self) -> PathBuf {
        self.runtime.join("runs")
    }

    /// Per-host facts worth remembering (e.g. whether KVM works here).
    pub fn host_facts(&self) -> PathBuf {
        self.cache.join("host")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Home, NoHome> {
        let map: HashMap<String, PathBuf> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
            .collect();
        Home::from_vars(|name| map.get(name).cloned())
    }

    #[test]
    fn vmrun_home_wins() {
        let home = from(&[
            ("VMRUN_HOME", "/v"),
            ("HOME", "/h"),
            ("XDG_RUNTIME_DIR", "/run/user/1"),
        ])
        .unwrap();
        assert_eq!(home, Home::under(Path::new("/v")));
        assert_eq!(home.images(), Path::new("/v/state/images"));
    }

    #[test]
    fn xdg_directories() {
        let home = from(&[
            ("HOME", "/h"),
            ("XDG_CACHE_HOME", "/c"),
            ("XDG_RUNTIME_DIR", "/run/user/1"),
        ])
        .unwrap();
        assert_eq!(home.cache, Path::new("/c/vmrun"));
        assert_eq!(home.state, Path::new("/h/.local/state/vmrun"));
        assert_eq!(home.runtime, Path::new("/run/user/1/vmrun"));
    }

    #[test]
    fn no_runtime_dir_falls_back_to_state() {
        let home = from(&[("HOME", "/h")]).unwrap();
        assert_eq!(home.runtime, Path::new("/h/.local/state/vmrun/run"));
    }

    #[test]
    fn nothing_set_is_an_error() {
        assert!(from(&[]).is_err());
    }
}
