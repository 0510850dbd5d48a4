//! Dump side: the process behind a file CRIU hands to DUMP_EXT_FILE, and what `/proc` and
//! `/sys` tell about it. CRIU passes its own copy of the fd (drained from the task) and a file
//! id, not the task: the owner is found by comparing the file with every fd of every process
//! (`kcmp`).

use std::fs;
use std::os::fd::RawFd;

use crate::common::{DumpError, EVENT_LINK};

/// Every (pid, fd) in the system whose open file is the same `struct file` as our `fd`.
fn owners(fd: RawFd) -> Vec<(i32, i32)> {
    let me = std::process::id() as i32;
    let Ok(link) = fs::read_link(format!("/proc/self/fd/{fd}")) else { return vec![] };
    let mut found = vec![];
    let Ok(procs) = fs::read_dir("/proc") else { return vec![] };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else { continue };
        for f in fds.flatten() {
            let Some(n) = f.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            if fs::read_link(f.path()).ok().as_ref() != Some(&link) {
                continue;
            }
            // SAFETY: kcmp only compares kernel objects; the arguments are plain integers.
            let r = unsafe {
                libc::syscall(libc::SYS_kcmp, me, pid, 0 /* KCMP_FILE */, fd, n)
            };
            if r == 0 {
                found.push((pid, n));
            }
        }
    }
    found.sort_unstable();
    found
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
    fn ns_pid_is_the_innermost_of_nspid() {
        assert_eq!(parse_ns_pid("Name:\tib_send_bw\nPid:\t5678\nNSpid:\t5678\t1\n"), Some(1));
        assert_eq!(parse_ns_pid("Pid:\t42\nNSpid:\t42\n"), Some(42));
        assert_eq!(parse_ns_pid("Pid:\t42\n"), None, "a kernel without NSpid");
        assert_eq!(parse_ns_pid("NSpid:\tx\n"), None);
        assert_eq!(ns_pid(std::process::id() as i32), Some(std::process::id() as i32), "this test runs in the host's namespace");
    }
}
