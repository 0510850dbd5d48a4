//! Restore side: opening the uverbs device an image names. The restore runs as root, so the path
//! from the image is not trusted: it must be `/dev/infiniband/uverbsN`, this system's `uverbsN`
//! must have the image's char device number (sysfs), the open follows no symlink
//! (`openat2` with `RESOLVE_NO_SYMLINKS`, else `O_NOFOLLOW`), and what was opened must be that
//! character device (`fstat`), or nothing of it is used. And rxe's control device, which a
//! container's CRIU borrows from the node's agent ([`open_ctl`]).

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::common::{RestoreError, UVERBS_MAJOR};
use crate::log::info;
use std::path::Path;

use rdmig_rxe::{self as rxe, lend, Ctl, CtlError};

/// Where uverbs devices live, and the prefix of their names.
const DEV_DIR: &str = "/dev/infiniband/";
const DEV_PREFIX: &str = "uverbs";

/// The `N` of a device path `/dev/infiniband/uverbsN` (decimal, no sign or leading zero);
/// anything else is refused.
pub fn uverbs_index(path: &str) -> Result<u32, String> {
    let bad = || format!("device path {path:?} is not /dev/infiniband/uverbsN");
    let n = path.strip_prefix(DEV_DIR).and_then(|r| r.strip_prefix(DEV_PREFIX)).ok_or_else(bad)?;
    if n.is_empty() || n.len() > 6 || !n.bytes().all(|b| b.is_ascii_digit()) || (n.len() > 1 && n.starts_with('0')) {
        return Err(bad());
    }
    n.parse().map_err(|_| bad())
}

/// Checks that a file's `st_mode` and `st_rdev` are those of a uverbs char device
/// `major:minor`.
pub fn check_stat(mode: libc::mode_t, rdev: libc::dev_t, major: u32, minor: u32) -> Result<(), String> {
    if mode & libc::S_IFMT != libc::S_IFCHR {
        return Err(format!("is not a character device (mode {mode:#o})"));
    }
    let (ma, mi) = (libc::major(rdev), libc::minor(rdev));
    if ma != UVERBS_MAJOR {
        return Err(format!("is char device {ma}:{mi}, not a uverbs device (major {UVERBS_MAJOR})"));
    }
    if (ma, mi) != (major, minor) {
        return Err(format!("is char device {ma}:{mi}, the image's was {major}:{minor}"));
    }
    Ok(())
}

/// Parses a sysfs `dev` file ("major:minor\n").
pub fn parse_devno(text: &str) -> Option<(u32, u32)> {
    let (a, b) = text.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// `struct open_how` of openat2(2) (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const _: () = assert!(std::mem::size_of::<OpenHow>() == 24);

/// Opens `path` read-write without following any symlink and checks with `fstat` that it is
/// uverbs char device `major:minor`.
pub fn open_checked(path: &str, major: u32, minor: u32) -> Result<OwnedFd, RestoreError> {
    open_device(path, |mode, rdev| check_stat(mode, rdev, major, minor))
}

/// Opens device `path` read-write without following any symlink, and gives `check` the
/// `st_mode` and `st_rdev` of what was opened (`fstat`): the file, or the reason `check` gives.
pub fn open_device(path: &str, check: impl FnOnce(libc::mode_t, libc::dev_t) -> Result<(), String>) -> Result<OwnedFd, RestoreError> {
    let cpath = CString::new(path).map_err(|_| RestoreError::Refused(format!("device path {path:?} holds a NUL byte")))?;
    let flags = libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NOCTTY;
    let how = OpenHow { flags: flags as u64, mode: 0, resolve: libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS };
    // SAFETY: openat2 with a NUL-terminated path and a correctly sized `struct open_how`; the
    // result is owned right below.
    let mut raw =
        unsafe { libc::syscall(libc::SYS_openat2, libc::AT_FDCWD, cpath.as_ptr(), &how as *const OpenHow, std::mem::size_of::<OpenHow>()) } as libc::c_int;
    if raw < 0 && matches!(std::io::Error::last_os_error().raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) {
        // A kernel before 5.6, or a seccomp filter that refuses openat2: O_NOFOLLOW still refuses
        // a symlink as the last component, and fstat below checks what was opened.
        // SAFETY: open with a NUL-terminated path.
        raw = unsafe { libc::open(cpath.as_ptr(), flags) };
    }
    if raw < 0 {
        let e = std::io::Error::last_os_error();
        let why = if e.raw_os_error() == Some(libc::ELOOP) { " (a symlink: refused)" } else { "" };
        return Err(RestoreError::Sys { what: format!("open {path}{why}"), source: e });
    }
    // SAFETY: raw is a fresh descriptor nobody else owns.
    let file = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: fstat into an owned, zeroed buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and stat buffer.
    if unsafe { libc::fstat(file.as_raw_fd(), &mut st) } != 0 {
        return Err(RestoreError::sys(format!("fstat {path}"))(std::io::Error::last_os_error()));
    }
    check(st.st_mode, st.st_rdev).map_err(|e| RestoreError::Refused(format!("{path} {e}")))?;
    Ok(file)
}

/// Opens the uverbs device of a saved context: `path` must be `/dev/infiniband/uverbsN`, this
/// system's `uverbsN` must be char device `major:minor` (the image's) of rxe device `ibdev`, and
/// the file opened must be that device.
pub fn open_uverbs(path: &str, major: u32, minor: u32, ibdev: &str) -> Result<OwnedFd, RestoreError> {
    let n = uverbs_index(path).map_err(RestoreError::Refused)?;
    let sys = format!("/sys/class/infiniband_verbs/{DEV_PREFIX}{n}");
    let devno = fs::read_to_string(format!("{sys}/dev")).map_err(RestoreError::sys(format!("read {sys}/dev (is {path} a uverbs device here?)")))?;
    match parse_devno(&devno) {
        Some(d) if d == (major, minor) => {}
        Some((ma, mi)) => return Err(RestoreError::Refused(format!("{path} is char device {ma}:{mi} on this system, the image's was {major}:{minor}"))),
        None => return Err(RestoreError::Refused(format!("{sys}/dev: unreadable device number {devno:?}"))),
    }
    let dev = fs::read_to_string(format!("{sys}/ibdev")).map_err(RestoreError::sys(format!("read {sys}/ibdev")))?;
    if dev.trim() != ibdev {
        return Err(RestoreError::Refused(format!("{path} is the uverbs device of {} on this system, the image's was {ibdev}", dev.trim())));
    }
    open_checked(path, major, minor)
}

/// rxe's control device: `/dev/rxe_ctl`, or, where CRIU cannot open it (inside a container's
/// device cgroup and mount namespace), the one the node's agent lends
/// ([`rdmig_rxe::lend`]). CRIU's master reaches the agent's socket by its path; a restored
/// task, inside the container's mount namespace, through CRIU's image directory descriptor
/// (`image_dir`), which CRIU keeps open in the task and which was opened in the host's mount
/// namespace: going up from it (`..`) leads to the host's root, since the task's own root is
/// not on that way to stop the walk.
pub fn open_ctl(image_dir: Option<RawFd>) -> Result<Ctl, RestoreError> {
    let err = |e: CtlError| RestoreError::sys::<CtlError>(format!("open {}", rxe::CTL_DEV))(e);
    let cannot = match Ctl::open() {
        Ok(c) => return Ok(c),
        // Missing from the container's /dev, or refused by its device cgroup.
        Err(e @ CtlError::NotLoaded) => e,
        Err(CtlError::Open(e)) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => CtlError::Open(e),
        Err(e) => return Err(err(e)),
    };
    // By path first (CRIU's master and anything else in the node's mount namespace), then, from
    // a task already inside the container's mount namespace, up from CRIU's image directory
    // (opened in the node's namespace) to the node's root.
    let borrowed = lend::borrow(Path::new(lend::LEND_SOCKET)).or_else(|why| match image_dir {
        None => Err(why),
        Some(dir) => root_above(&format!("/proc/self/fd/{dir}"))
            .and_then(|(root, _)| lend::borrow(&Path::new(&root).join(lend::LEND_SOCKET.trim_start_matches('/'))))
            .map_err(|up| format!("{why}; {up} (through CRIU's image directory, from inside the container)")),
    });
    match borrowed {
        Ok(c) => {
            info!("borrowed {} from this node's rdmig agent ({cannot})", rxe::CTL_DEV);
            Ok(c)
        }
        Err(why) => Err(RestoreError::Refused(format!("{cannot}; nor could it be borrowed from this node's rdmig agent: {why}"))),
    }
}

/// The most `..` steps [`root_above`] takes (a path has fewer components than this).
const MAX_UP: usize = 256;

/// `start` followed by as many `/..` as lead to the root of its tree (where `..` is the
/// directory itself), and that number.
pub fn root_above(start: &str) -> Result<(String, usize), String> {
    use std::os::unix::fs::MetadataExt;
    let mut dir = start.to_string();
    let mut here = fs::metadata(&dir).map_err(|e| format!("{dir}: {e}"))?;
    for up in 0..=MAX_UP {
        let parent = format!("{dir}/..");
        let p = fs::metadata(&parent).map_err(|e| format!("{parent}: {e}"))?;
        if (p.dev(), p.ino()) == (here.dev(), here.ino()) {
            return Ok((dir, up));
        }
        (dir, here) = (parent, p);
    }
    Err(format!("no root within {MAX_UP} levels above {start}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_up_from_a_directory_ends_at_the_root_of_its_tree() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("a/b/c");
        fs::create_dir_all(&deep).unwrap();
        let (root, up) = root_above(deep.to_str().unwrap()).unwrap();
        let (r, slash) = (fs::metadata(&root).unwrap(), fs::metadata("/").unwrap());
        assert_eq!((r.dev(), r.ino()), (slash.dev(), slash.ino()), "{root}");
        assert_eq!(up, deep.components().count() - 1, "one `..` per component below /");
        // And from a descriptor's magic link, as the restore uses it.
        let f = fs::File::open(&deep).unwrap();
        let (root, _) = root_above(&format!("/proc/self/fd/{}", f.as_raw_fd())).unwrap();
        let r = fs::metadata(&root).unwrap();
        assert_eq!((r.dev(), r.ino()), (slash.dev(), slash.ino()), "{root}");
        assert!(root_above("/nonexistent/x").unwrap_err().contains("/nonexistent/x"));
    }

    #[test]
    fn only_uverbs_paths_are_accepted() {
        assert_eq!(uverbs_index("/dev/infiniband/uverbs0"), Ok(0));
        assert_eq!(uverbs_index("/dev/infiniband/uverbs12"), Ok(12));
        for p in [
            "/dev/infiniband/uverbs",
            "/dev/infiniband/uverbs01",
            "/dev/infiniband/uverbs-1",
            "/dev/infiniband/uverbs+1",
            "/dev/infiniband/uverbs0/../../sda",
            "/dev/infiniband/../sda",
            "/dev/infiniband/rdma_cm",
            "/dev/infiniband//uverbs0",
            "dev/infiniband/uverbs0",
            "/tmp/uverbs0",
            "/dev/infiniband/uverbs99999999999",
            "/dev/infiniband/uverbs0\0",
        ] {
            assert!(uverbs_index(p).unwrap_err().contains("is not /dev/infiniband/uverbsN"), "{p:?}");
        }
    }

    #[test]
    fn stat_must_be_the_images_uverbs_char_device() {
        let chr = libc::S_IFCHR | 0o600;
        assert_eq!(check_stat(chr, libc::makedev(231, 192), 231, 192), Ok(()));
        assert!(check_stat(libc::S_IFREG | 0o600, libc::makedev(231, 192), 231, 192).unwrap_err().contains("not a character device"));
        assert!(check_stat(libc::S_IFBLK | 0o600, libc::makedev(231, 192), 231, 192).unwrap_err().contains("not a character device"));
        assert!(check_stat(chr, libc::makedev(1, 3), 1, 3).unwrap_err().contains("not a uverbs device"));
        assert!(check_stat(chr, libc::makedev(231, 193), 231, 192).unwrap_err().contains("the image's was 231:192"));
        assert_eq!(parse_devno("231:192\n"), Some((231, 192)));
        assert_eq!(parse_devno("231"), None);
        assert_eq!(parse_devno("a:b"), None);
    }

    #[test]
    fn open_follows_no_symlink_and_checks_what_it_opened() {
        let d = tempfile::tempdir().unwrap();
        let link = d.path().join("uverbs0");
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
        let e = open_checked(link.to_str().unwrap(), 1, 3).unwrap_err().to_string();
        assert!(e.contains("a symlink: refused"), "{e}");
        // A symlinked directory on the way is refused too (openat2 RESOLVE_NO_SYMLINKS).
        std::os::unix::fs::symlink("/dev", d.path().join("dev")).unwrap();
        let e = open_checked(d.path().join("dev/null").to_str().unwrap(), 1, 3).unwrap_err().to_string();
        assert!(e.contains("a symlink: refused"), "{e}");
        let e = open_checked("/dev/null", 1, 3).unwrap_err().to_string();
        assert!(e.contains("not a uverbs device"), "{e}");
        let f = d.path().join("plain");
        std::fs::write(&f, b"x").unwrap();
        let e = open_checked(f.to_str().unwrap(), 231, 192).unwrap_err().to_string();
        assert!(e.contains("not a character device"), "{e}");
        assert!(open_uverbs("/dev/sda", 231, 192, "rxe0").unwrap_err().to_string().contains("is not /dev/infiniband/uverbsN"));
    }
}
