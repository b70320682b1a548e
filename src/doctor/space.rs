//! Free space where vmrun keeps images: a baked image, its source and warm state take a few
//! GiB, and every run's overlay grows with what the guest writes.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::Finding;
use crate::human_size::human_size;
use crate::paths::Home;

const CHECK: &str = "disk space";

/// Below this, a bake of the default image and a few runs may not fit.
const LOW: u64 = 5 << 30;

pub(super) fn check(home: &Home) -> Finding {
    let dir = existing_ancestor(&home.state);
    match free_bytes(&dir) {
        Ok(free) => judge(&home.state, free),
        Err(e) => Finding::warn(
            CHECK,
            format!("cannot tell the free space at {}: {e}", dir.display()),
            "check that the directory is readable",
        ),
    }
}

fn judge(state: &Path, free: u64) -> Finding {
    let detail = format!("{} free for {}", human_size(free), state.display());
    if free < LOW {
        return Finding::warn(
            CHECK,
            format!("only {detail}"),
            format!(
                "free space there, or point VMRUN_HOME at a file system with {} or more",
                human_size(LOW)
            ),
        );
    }
    Finding::ok(CHECK, detail)
}

/// The state directory may not exist yet: its nearest existing ancestor is where it will be.
fn existing_ancestor(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
        .to_owned()
}

/// Bytes an unprivileged user may still write there (statvfs's f_bavail).
fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let path = CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: statvfs is plain numbers; the call fills it or fails.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stat` is writable.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Status;

    #[test]
    fn little_space_warns_and_plenty_is_ok() {
        let low = judge(Path::new("/v/state"), 1 << 30);
        assert_eq!(low.status, Status::Warn);
        assert!(
            low.detail.starts_with("only 1.0 GiB free for /v/state"),
            "{}",
            low.detail
        );
        assert!(low.fix.unwrap().contains("VMRUN_HOME"));
        assert_eq!(judge(Path::new("/v"), 20 << 30).status, Status::Ok);
    }

    #[test]
    fn a_directory_not_made_yet_is_measured_where_it_will_be() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("a/b/c");
        assert_eq!(existing_ancestor(&missing), dir.path());
        assert!(free_bytes(dir.path()).unwrap() > 0);
    }
}
