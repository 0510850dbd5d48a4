//! Every path the agent writes for a peer is resolved beneath that migration's directory by the
//! kernel, not only checked by its spelling: `openat2` with `RESOLVE_BENEATH` (no `..` or
//! absolute path out of it), `RESOLVE_NO_SYMLINKS` (the agent never follows a link, not even one
//! that stays inside) and `RESOLVE_NO_MAGICLINKS` (no `/proc/.../fd` jumps).
//!
//! The only links in a migration directory are CRIU's `<round>/parent -> ../<round>` (made by
//! `PutSymlink`, whose validation allows nothing else, or by the page server); the agent creates
//! them with `symlinkat` in a directory it resolved this way and never walks through them. So a
//! `PutSymlink x -> ../other` cannot exist, and if a link is ever found where a directory or a new
//! file should be, the request fails and nothing is written outside.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// What a directory entry is ([`Confined::list`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Dir,
    File,
    /// A link, a socket...: never followed or read.
    Other,
}

/// A migration's directory, held open; every operation resolves beneath it.
pub struct Confined {
    root: OwnedFd,
    path: PathBuf,
}

fn resolve() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

/// What the kernel's refusals mean here.
fn err(rel: &str, e: Errno) -> io::Error {
    match e {
        Errno::EXDEV | Errno::ELOOP => io::Error::new(io::ErrorKind::PermissionDenied, format!("{rel}: leaves the migration directory or goes through a link")),
        e => io::Error::new(io::Error::from(e).kind(), format!("{rel}: {e}")),
    }
}

/// `rel`'s directory part and last component; `rel` must be relative, without empty components.
fn split(rel: &str) -> io::Result<(&str, &str)> {
    if rel.is_empty() || rel.split('/').any(str::is_empty) {
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("{rel:?}: not a relative path")));
    }
    Ok(match rel.rsplit_once('/') {
        Some((d, n)) => (d, n),
        None => ("", rel),
    })
}

impl Confined {
    /// The migration directory `dir` itself (not a link).
    pub fn open(dir: &Path) -> io::Result<Self> {
        let fd = nix::fcntl::open(dir, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("{}: {e}", dir.display())))?;
        Ok(Self { root: fd, path: dir.to_path_buf() })
    }

    fn open_dir(&self, rel: &str) -> io::Result<OwnedFd> {
        let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).resolve(resolve());
        openat2(self.root.as_fd(), if rel.is_empty() { "." } else { rel }, how).map_err(|e| err(rel, e))
    }

    /// Directory `rel` (created with its parents as needed), as a descriptor.
    fn mkdirs(&self, rel: &str) -> io::Result<OwnedFd> {
        if !rel.is_empty() {
            split(rel)?;
        }
        let mut done = String::new();
        for comp in rel.split('/').filter(|c| !c.is_empty()) {
            let parent = self.open_dir(&done)?;
            match nix::sys::stat::mkdirat(parent.as_fd(), comp, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(err(rel, e)),
            }
            if !done.is_empty() {
                done.push('/');
            }
            done.push_str(comp);
        }
        self.open_dir(&done)
    }

    /// Directory `rel`, created as needed, for a tool that writes there by path (CRIU's page
    /// server, scp): a real directory beneath this one, no link on the way.
    pub fn dir(&self, rel: &str) -> io::Result<PathBuf> {
        split(rel)?;
        self.mkdirs(rel)?;
        Ok(self.path.join(rel))
    }

    /// A new file `rel` (mode 0600; its directory created as needed); an existing file or link
    /// of that name is an error.
    pub fn create_new(&self, rel: &str) -> io::Result<File> {
        let (d, name) = split(rel)?;
        let parent = self.mkdirs(d)?;
        let how = OpenHow::new()
            .flags(OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .mode(Mode::from_bits_truncate(0o600))
            .resolve(resolve());
        openat2(parent.as_fd(), name, how).map(File::from).map_err(|e| err(rel, e))
    }

    /// Existing file `rel`, for reading (a link there is an error, not followed).
    pub fn open_read(&self, rel: &str) -> io::Result<File> {
        split(rel)?;
        let how = OpenHow::new().flags(OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).resolve(resolve());
        openat2(self.root.as_fd(), rel, how).map(File::from).map_err(|e| err(rel, e))
    }

    /// The entries of directory `rel` ("" for this one): each name with whether it is a
    /// directory, a regular file or something else (a link is "something else", never followed).
    pub fn list(&self, rel: &str) -> io::Result<Vec<(String, Kind)>> {
        let how = OpenHow::new().flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).resolve(resolve());
        let fd = openat2(self.root.as_fd(), if rel.is_empty() { "." } else { rel }, how).map_err(|e| err(rel, e))?;
        let mut dir = nix::dir::Dir::from_fd(fd).map_err(|e| err(rel, e))?;
        let mut out = vec![];
        for e in dir.iter() {
            let e = e.map_err(|e| err(rel, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let kind = match e.file_type() {
                Some(nix::dir::Type::Directory) => Kind::Dir,
                Some(nix::dir::Type::File) => Kind::File,
                Some(_) => Kind::Other,
                // Not told by this filesystem: asked without following a link.
                None => {
                    let full = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
                    match std::fs::symlink_metadata(self.path.join(&full)) {
                        Ok(m) if m.file_type().is_dir() => Kind::Dir,
                        Ok(m) if m.file_type().is_file() => Kind::File,
                        _ => Kind::Other,
                    }
                }
            };
            out.push((name, kind));
        }
        out.sort();
        Ok(out)
    }

    /// Removes file `rel` (a failed transfer's partial file).
    pub fn remove(&self, rel: &str) -> io::Result<()> {
        let (d, name) = split(rel)?;
        let parent = self.open_dir(d)?;
        nix::unistd::unlinkat(parent.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir).map_err(|e| err(rel, e))
    }

    /// CRIU's link `<dir>/parent` -> `target` (the directory created as needed; no other link
    /// is made). Where it exists already, `Ok(false)` if it is that same link, else an error.
    pub fn symlink(&self, target: &str, rel: &str) -> io::Result<bool> {
        let (d, name) = split(rel)?;
        if d.is_empty() || name != "parent" {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("{rel}: the only links made are <dir>/parent")));
        }
        let parent = self.mkdirs(d)?;
        match nix::unistd::symlinkat(target, parent.as_fd(), name) {
            Ok(()) => Ok(true),
            Err(Errno::EEXIST) => match nix::fcntl::readlinkat(parent.as_fd(), name) {
                Ok(t) if t == target => Ok(false),
                _ => Err(err(rel, Errno::EEXIST)),
            },
            Err(e) => Err(err(rel, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A work directory with two migrations and the agent's own plugin directory.
    fn work() -> (tempfile::TempDir, Confined) {
        let w = tempfile::tempdir().unwrap();
        for d in ["m-1", "m-2", "criu-plugins"] {
            std::fs::create_dir(w.path().join(d)).unwrap();
        }
        let c = Confined::open(&w.path().join("m-1")).unwrap();
        (w, c)
    }

    fn outside(w: &tempfile::TempDir) -> Vec<String> {
        let mut v = vec![];
        for d in ["m-2", "criu-plugins"] {
            for e in std::fs::read_dir(w.path().join(d)).unwrap() {
                v.push(format!("{d}/{}", e.unwrap().file_name().to_string_lossy()));
            }
        }
        v
    }

    #[test]
    fn files_and_links_land_beneath() {
        let (w, c) = work();
        c.create_new("pre-1/pages-1.img").unwrap().write_all(b"pages").unwrap();
        assert_eq!(std::fs::read(w.path().join("m-1/pre-1/pages-1.img")).unwrap(), b"pages");
        assert!(c.create_new("pre-1/pages-1.img").is_err(), "an existing file was replaced");
        assert!(c.symlink("../pre-1", "final/parent").unwrap());
        assert!(!c.symlink("../pre-1", "final/parent").unwrap(), "the same link again is fine");
        assert!(c.symlink("../pre-2", "final/parent").is_err(), "another link of that name");
        assert_eq!(c.dir("final").unwrap(), w.path().join("m-1/final"));
        c.remove("pre-1/pages-1.img").unwrap();
        assert!(!w.path().join("m-1/pre-1/pages-1.img").exists());
    }

    /// `PutSymlink x -> ../m-2` then `PutFile x/f` (and the same at the plugins): refused, and
    /// nothing is written outside.
    #[test]
    fn a_link_out_cannot_be_written_through() {
        let (w, c) = work();
        for target in ["../m-2", "../criu-plugins", "/tmp", "."] {
            let _ = std::fs::remove_file(w.path().join("m-1/x"));
            std::os::unix::fs::symlink(target, w.path().join("m-1/x")).unwrap();
            let e = c.create_new("x/f").unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{target}: {e}");
            assert!(c.create_new("x/librdmig_criu.so").is_err());
            assert!(c.dir("x").is_err(), "{target}: a link was handed out as a directory");
            assert!(c.symlink("../pre-1", "x/parent").is_err());
            // Writing onto the link itself neither follows nor replaces it.
            assert!(c.create_new("x").is_err());
        }
        // A link inside that stays inside is not walked through either.
        std::fs::create_dir(w.path().join("m-1/pre-1")).unwrap();
        assert!(c.symlink("../pre-1", "final/parent").unwrap());
        assert!(c.create_new("final/parent/f").is_err());
        assert!(outside(&w).is_empty(), "written outside: {:?}", outside(&w));
    }

    #[test]
    fn dot_dot_and_absolute_paths_are_refused() {
        let (w, c) = work();
        for bad in ["../m-2/f", "a/../../m-2/f", "/tmp/f", "../criu-plugins/x.so", "", "a//f", "a/"] {
            assert!(c.create_new(bad).is_err(), "{bad}");
        }
        assert!(c.dir("/tmp").is_err() && c.dir("").is_err());
        assert!(!w.path().join("m-1/tmp").exists(), "an absolute path was taken as a relative one");
        assert!(c.dir("../m-2").is_err());
        assert!(c.symlink("x", "../m-2/parent").is_err());
        assert!(c.symlink("../m-2", "x").is_err() && c.symlink("../m-2", "d/x").is_err(), "a link other than <dir>/parent");
        assert!(outside(&w).is_empty(), "written outside: {:?}", outside(&w));
    }

    #[test]
    fn the_migration_directory_itself_must_not_be_a_link() {
        let w = tempfile::tempdir().unwrap();
        std::fs::create_dir(w.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", w.path().join("m-3")).unwrap();
        assert!(Confined::open(&w.path().join("m-3")).is_err());
    }
}
