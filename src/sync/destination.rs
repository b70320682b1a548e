//! Where artifacts land on the host. The default, `vmrun-artifacts/`, lies inside the project
//! checkout, which in CI is the pull request under test: a committed symlink
//! `vmrun-artifacts -> ~/.ssh` would send the guest's files wherever it points, since
//! `create_dir_all` and rsync (as receiver) both follow a symlinked destination.
//!
//! So every directory on the way from the checkout to the destination must be a real
//! directory (or not exist yet, and then vmrun makes it); a symlink is refused with an error
//! that names it. Refusing is simple to explain and to check; the alternative, writing
//! through descriptors opened with `O_NOFOLLOW`, would mean receiving the files ourselves
//! instead of rsync. Inside the destination nothing needs checking: rsync replaces a link it
//! finds where a file or directory comes (it never writes through one), and it never makes
//! links, devices or special files there (see `options`).

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use super::Error;

/// A directory for artifacts, as the part the user vouches for and the part below it that
/// may come from the checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    trusted: PathBuf,
    below: PathBuf,
}

impl Destination {
    /// `dir` (absolute) below the outermost of `roots` that holds it: everything under the
    /// current directory or the project may have come from the checkout. A `dir` outside
    /// them all was named by the user, links and all; only `dir` itself is then checked.
    pub fn new(dir: &Path, roots: &[&Path]) -> Destination {
        let root = roots
            .iter()
            .filter(|root| dir.starts_with(root))
            .min_by_key(|root| root.components().count());
        let (trusted, below) = match (root, dir.parent(), dir.file_name()) {
            (Some(root), _, _) => (root.to_path_buf(), dir.strip_prefix(root).unwrap_or(dir)),
            (None, Some(parent), Some(name)) => (parent.to_path_buf(), Path::new(name)),
            (None, _, _) => (dir.to_path_buf(), Path::new("")),
        };
        Destination {
            trusted,
            below: below.to_path_buf(),
        }
    }

    /// A subdirectory, e.g. one per run when repeating.
    pub fn join(&self, name: &str) -> Destination {
        Destination {
            trusted: self.trusted.clone(),
            below: self.below.join(name),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.trusted.join(&self.below)
    }

    /// Refuses a symlink or non-directory below the trusted part among what exists so far,
    /// without making anything: for checking a destination before a run starts.
    pub fn check(&self) -> Result<(), Error> {
        self.walk(false).map(drop)
    }

    /// Makes the directory, refusing a symlink or non-directory anywhere below the trusted
    /// part; returns its path.
    pub fn prepare(&self) -> Result<PathBuf, Error> {
        fs::create_dir_all(&self.trusted).map_err(create_error(&self.trusted))?;
        self.walk(true)
    }

    /// Goes down from the trusted part one component at a time, never through a symlink;
    /// a missing directory is made when `create`, else the walk ends there.
    fn walk(&self, create: bool) -> Result<PathBuf, Error> {
        let mut path = self.trusted.clone();
        for component in self.below.components() {
            match component {
                Component::Normal(name) => path.push(name),
                Component::ParentDir => path.push(".."),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => continue,
            }
            match fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.is_symlink() => {
                    return Err(Error::DestinationSymlink {
                        link: path,
                        destination: self.path(),
                    });
                }
                Ok(_) => {
                    return Err(Error::DestinationNotADirectory {
                        path,
                        destination: self.path(),
                    });
                }
                Err(e) if e.kind() == ErrorKind::NotFound && !create => break,
                Err(e) if e.kind() == ErrorKind::NotFound => fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&path)
                    .map_err(create_error(&path))?,
                Err(e) => return Err(create_error(&path)(e)),
            }
        }
        Ok(self.path())
    }
}

fn create_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::CreateDir { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn checked_from_the_outermost_root_that_holds_it() {
        let (cwd, project) = (Path::new("/ci"), Path::new("/ci/checkout"));
        let inside = Destination::new(Path::new("/ci/checkout/vmrun-artifacts"), &[cwd, project]);
        assert_eq!(
            inside,
            Destination {
                trusted: "/ci".into(),
                below: "checkout/vmrun-artifacts".into()
            }
        );
        let elsewhere = Destination::new(Path::new("/srv/out/a"), &[cwd, project]);
        assert_eq!(
            elsewhere,
            Destination {
                trusted: "/srv/out".into(),
                below: "a".into()
            }
        );
        assert_eq!(
            elsewhere.join("run-1").path(),
            Path::new("/srv/out/a/run-1")
        );
    }

    #[test]
    fn makes_missing_directories_and_accepts_real_ones() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("real")).unwrap();
        let dir = root.path().join("real/new/deeper");
        let destination = Destination::new(&dir, &[root.path()]);
        assert_eq!(destination.prepare().unwrap(), dir);
        assert!(dir.is_dir());
        // Again, now that it exists.
        assert_eq!(destination.prepare().unwrap(), dir);
    }

    #[test]
    fn check_makes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let destination = Destination::new(&root.path().join("a/b"), &[root.path()]);
        destination.check().unwrap();
        assert!(!root.path().join("a").exists());
    }

    #[test]
    fn a_symlink_on_the_way_is_refused_and_nothing_is_made_behind_it() {
        let root = tempfile::tempdir().unwrap();
        let target = tempfile::tempdir().unwrap();
        symlink(target.path(), root.path().join("vmrun-artifacts")).unwrap();
        for dir in ["vmrun-artifacts", "vmrun-artifacts/run-1"] {
            let destination = Destination::new(&root.path().join(dir), &[root.path()]);
            assert!(matches!(
                destination.check(),
                Err(Error::DestinationSymlink { .. })
            ));
            let err = destination.prepare().unwrap_err();
            let Error::DestinationSymlink { link, .. } = &err else {
                panic!("{err:?}")
            };
            assert_eq!(link, &root.path().join("vmrun-artifacts"));
            assert!(
                err.to_string()
                    .contains(&root.path().join(dir).display().to_string())
            );
        }
        assert_eq!(fs::read_dir(target.path()).unwrap().count(), 0);

        // A link to a directory above a dangling one, and a file in the way.
        symlink("/nonexistent", root.path().join("dangling")).unwrap();
        let err = Destination::new(&root.path().join("dangling"), &[root.path()])
            .prepare()
            .unwrap_err();
        assert!(matches!(err, Error::DestinationSymlink { .. }), "{err:?}");
        fs::write(root.path().join("file"), "").unwrap();
        let err = Destination::new(&root.path().join("file/x"), &[root.path()])
            .prepare()
            .unwrap_err();
        assert!(
            matches!(err, Error::DestinationNotADirectory { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_destination_outside_the_roots_may_sit_below_a_link_but_not_be_one() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let linked_parent = elsewhere.path().join("parent");
        symlink(root.path(), &linked_parent).unwrap();
        let dir = linked_parent.join("out");
        let project = Path::new("/nonexistent-project");
        assert_eq!(Destination::new(&dir, &[project]).prepare().unwrap(), dir);
        assert!(root.path().join("out").is_dir());
        let err = Destination::new(&linked_parent, &[project])
            .prepare()
            .unwrap_err();
        assert!(matches!(err, Error::DestinationSymlink { .. }), "{err:?}");
    }
}
