//! Dump side: the process behind a file CRIU hands to DUMP_EXT_FILE, and what `/proc` and
//! `/sys` tell about it. CRIU passes its own copy of the fd (drained from the task) and a file
//! id, not the task: the owner is found by comparing the file with every fd of every process
//! (`kcmp`).

use std::fs;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::common::{DumpError, EVENT_LINK};

/// The fds that can hold the files CRIU hands us, (pid, fd, link), gathered once per dump: the tasks
/// are frozen while CRIU dumps them, and every verbs file, event file and rdma_cm file used to
/// scan every fd of every process again (in the lab, tens of ms each).
static CANDIDATES: Mutex<Option<Arc<Vec<Candidate>>>> = Mutex::new(None);

/// An fd of a process: (pid, fd, what its link in `/proc` says).
type Candidate = (i32, i32, PathBuf);

/// Forgets the fds gathered for a dump (at the start and the end of one).
pub fn forget_candidates() {
    *CANDIDATES.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Every (pid, fd) in the system whose open file is the same `struct file` as our `fd`.
fn owners(fd: RawFd) -> Vec<(i32, i32)> {
    let me = std::process::id() as i32;
    let Ok(link) = fs::read_link(format!("/proc/self/fd/{fd}")) else { return vec![] };
    let mut found: Vec<(i32, i32)> = candidates(me)
        .iter()
        .filter(|(_, _, l)| *l == link)
        // SAFETY: kcmp only compares kernel objects; the arguments are plain integers.
        .filter(|(pid, n, _)| unsafe { libc::syscall(libc::SYS_kcmp, me, *pid, 0 /* KCMP_FILE */, fd, *n) } == 0)
        .map(|(pid, n, _)| (*pid, *n))
        .collect();
    found.sort_unstable();
    found
}

/// The gathered fds (see [`CANDIDATES`]): those of the processes this CRIU has seized (their
/// `TracerPid` is ours: the tasks it dumps, which hold every file it hands us), or of every
/// process when none is seized by us (a plugin called otherwise).
fn candidates(me: i32) -> Arc<Vec<Candidate>> {
    let mut cached = CANDIDATES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = &*cached {
        return Arc::clone(c);
    }
    let pids: Vec<i32> = fs::read_dir("/proc")
        .map(|d| d.flatten().filter_map(|p| p.file_name().to_str().and_then(|s| s.parse::<i32>().ok())).filter(|&p| p != me).collect())
        .unwrap_or_default();
    let seized: Vec<i32> = pids.iter().copied().filter(|&p| tracer_pid(p) == Some(me)).collect();
    let scan = if seized.is_empty() { &pids } else { &seized };
    let mut all = vec![];
    for &pid in scan {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for f in fds.flatten() {
            let Some(n) = f.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            // Every fd, whatever its link says: a container's device node can read otherwise
            // than /dev/infiniband/... from here.
            let Ok(l) = fs::read_link(f.path()) else { continue };
            all.push((pid, n, l));
        }
    }
    let all = Arc::new(all);
    *cached = Some(Arc::clone(&all));
    all
}

/// The `TracerPid` of process `pid`; None when it cannot be read.
fn tracer_pid(pid: i32) -> Option<i32> {
    parse_tracer_pid(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn parse_tracer_pid(status: &str) -> Option<i32> {
    status.lines().find_map(|l| l.strip_prefix("TracerPid:"))?.trim().parse().ok()
}

/// Which owner to describe: the first (lowest pid) one. Several owners happen after fork; CRIU
/// restores the sharing itself, the verbs state belongs to the file.
pub fn owner(fd: RawFd, what: &str) -> Result<(i32, i32), DumpError> {
    owners(fd).into_iter().next().ok_or_else(|| DumpError::Unsupported(format!("{what}: no process holding this file was found (kcmp)")))
}

/// The pid of process `pid` in its own pid namespace: the last of `NSpid` in its status (one
/// entry per namespace level, the caller's first), which is `pid` itself outside containers.
pub fn ns_pid(pid: i32) -> Option<i32> {
    parse_ns_pid(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn parse_ns_pid(status: &str) -> Option<i32> {
    let line = status.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok().filter(|p| *p > 0)
}

pub fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim().to_string()).unwrap_or_else(|_| "?".into())
}

/// The file status flags of `fd` (saved with each file).
pub fn fd_flags(fd: RawFd) -> i32 {
    // SAFETY: F_GETFL on a valid fd has no memory effects.
    unsafe { libc::fcntl(fd, libc::F_GETFL) }
}

/// The fds of process `pid` on uverbs files other than the one at its fd `pfd`.
pub fn other_uverbs_fds(pid: i32, pfd: i32) -> Result<Vec<i32>, DumpError> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(DumpError::sys(format!("list /proc/{pid}/fd")))?
        .flatten()
        .filter_map(|f| {
            let n: i32 = f.file_name().to_str()?.parse().ok()?;
            let l = fs::read_link(f.path()).ok()?;
            let s = l.to_str()?.to_string();
            // SAFETY: kcmp compares kernel objects only.
            let same = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, 0, pfd, n) } == 0;
            (s.starts_with("/dev/infiniband/uverbs") && !same).then_some(n)
        })
        .collect())
}

/// The rxe device (`rxe0`) behind uverbs device `path` (`/dev/infiniband/uverbsN`).
pub fn ibdev_of(path: &str) -> Result<String, DumpError> {
    let uv = path.rsplit('/').next().unwrap_or("");
    fs::read_to_string(format!("/sys/class/infiniband_verbs/{uv}/ibdev"))
        .map(|s| s.trim().to_string())
        .map_err(DumpError::sys(format!("read /sys/class/infiniband_verbs/{uv}/ibdev")))
}

/// The process's infiniband event fds, lowest first.
pub fn event_fds(pid: i32) -> Result<Vec<i32>, DumpError> {
    let mut event_fds: Vec<i32> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(DumpError::sys(format!("list /proc/{pid}/fd")))?
        .flatten()
        .filter_map(|f| {
            let n: i32 = f.file_name().to_str()?.parse().ok()?;
            (fs::read_link(f.path()).ok()?.as_os_str() == EVENT_LINK).then_some(n)
        })
        .collect();
    event_fds.sort_unstable();
    Ok(event_fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracer_is_read_from_the_status() {
        assert_eq!(parse_tracer_pid("Name:\tx\nTracerPid:\t4242\nUid:\t0\n"), Some(4242));
        assert_eq!(parse_tracer_pid("TracerPid:\t0\n"), Some(0));
        assert_eq!(parse_tracer_pid("Name:\tx\n"), None);
        assert_eq!(parse_tracer_pid("TracerPid:\tx\n"), None);
    }

    #[test]
    fn our_own_fds_are_found_by_their_file() {
        // Outside CRIU nobody is seized by this test: every process is scanned, and another
        // process holding our pipe is found by kcmp (this one is left out by design).
        forget_candidates();
        let (r, _w) = std::io::pipe().unwrap();
        let child = Killed(std::process::Command::new("sleep").arg("5").stdin(r.try_clone().unwrap()).spawn().unwrap());
        let found = owners(std::os::fd::AsRawFd::as_raw_fd(&r));
        forget_candidates();
        assert!(found.contains(&(child.0.id() as i32, 0)), "{found:?}");
    }

    /// A child killed and reaped when the test ends, passed or not.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn ns_pid_is_the_innermost_of_nspid() {
        assert_eq!(parse_ns_pid("Name:\tib_send_bw\nPid:\t5678\nNSpid:\t5678\t1\n"), Some(1));
        assert_eq!(parse_ns_pid("Pid:\t42\nNSpid:\t42\n"), Some(42));
        assert_eq!(parse_ns_pid("Pid:\t42\n"), None, "a kernel without NSpid");
        assert_eq!(parse_ns_pid("NSpid:\tx\n"), None);
        assert_eq!(ns_pid(std::process::id() as i32), Some(std::process::id() as i32), "this test runs in the host's namespace");
    }
}
