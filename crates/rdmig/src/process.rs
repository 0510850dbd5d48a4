//! Which process a pid names: a pid is reused once its process is gone, so recovery acts on a
//! pid only while it still names the process the journal recorded (same start time).

use std::path::Path;

/// What `/proc/<pid>/stat` says of a process: its state letter and its start time (clock ticks
/// since boot; with the boot it identifies the process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub start_ticks: u64,
}

impl ProcStat {
    /// Stopped (`T`) or traced (`t`).
    pub fn stopped(&self) -> bool {
        matches!(self.state, 'T' | 't')
    }
}

/// Parses a `/proc/<pid>/stat` line: the command may hold spaces and parentheses, so the
/// fields are counted from the last `)`.
pub fn parse_stat(s: &str) -> Option<ProcStat> {
    let rest = &s[s.rfind(')')? + 1..];
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    // After the state: ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime
    // stime cutime cstime priority nice num_threads itrealvalue, then starttime (field 22).
    let start_ticks = f.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_ticks })
}

pub fn stat(pid: i32) -> Option<ProcStat> {
    if pid <= 0 {
        return None;
    }
    parse_stat(&std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?)
}

/// The process `pid` if it is still the one that started at `start_ticks`.
pub fn same(pid: i32, start_ticks: u64) -> Option<ProcStat> {
    stat(pid).filter(|s| s.start_ticks == start_ticks)
}

/// This boot's id: start times compare only within one boot.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The command lines (arguments, `criu` first) of the CRIU processes running here.
fn criu_command_lines() -> Vec<Vec<Vec<u8>>> {
    command_lines_of(b"criu")
}

/// The argument vectors of the processes here whose program is named `prog`.
fn command_lines_of(prog: &[u8]) -> Vec<Vec<Vec<u8>>> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return vec![] };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|cmd| cmd.split(|&b| b == 0).map(<[u8]>::to_vec).collect::<Vec<_>>())
        .filter(|args| args.first().is_some_and(|a| a.rsplit(|&b| b == b'/').next() == Some(prog)))
        .collect()
}

/// Whether a `podman container checkpoint` or `restore` runs here that names one of `words`
/// (a container's name or ID) or a path beneath `dir` (a migration's directory, where its
/// archives are: `restore --import` names no container). Such a run can outlive the `rdmig
/// migrate` or agent that started it; CRIU, which runc starts as `criu swrk`, names nothing.
pub fn podman_works_on(words: &[&str], dir: Option<&Path>) -> bool {
    let under = dir.map(|d| d.as_os_str().as_encoded_bytes());
    command_lines_of(b"podman").iter().any(|args| {
        let has = |w: &str| args.iter().any(|a| a == w.as_bytes());
        (has("checkpoint") || has("restore")) && (words.iter().any(|w| has(w)) || under.is_some_and(|u| args.iter().any(|a| a.starts_with(u))))
    })
}

/// Whether a CRIU process (a dump, a pre-dump) runs on the tree of process `pid` here: its
/// command line is `criu ... -t PID ...` (as rdmig starts it) or `--tree PID`.
pub fn criu_works_on(pid: i32) -> bool {
    let want = pid.to_string();
    criu_command_lines().iter().any(|args| args.windows(2).any(|w| (w[0] == b"-t" || w[0] == b"--tree") && w[1] == want.as_bytes()))
}

/// Whether a CRIU process here has `dir` (or a path beneath it) on its command line: a restore
/// from that directory still running.
pub fn criu_uses(dir: &Path) -> bool {
    let want = dir.as_os_str().as_encoded_bytes();
    criu_command_lines().iter().any(|args| args.iter().any(|a| a.starts_with(want)))
}

/// Lets a process left stopped (`--leave-stopped` of a dump or a restore) run again. TCP
/// connections CRIU locked for a dump are unlocked and QPs of the process that the CRIU plugin
/// stopped are resumed first (their peers, paused, continue).
/// Waits (`within` at most) until process `pid`, just sent SIGKILL, has exited: gone, or a
/// zombie, whose files are closed by then.
pub fn wait_exited(pid: i32, within: std::time::Duration) {
    let until = std::time::Instant::now() + within;
    while std::time::Instant::now() < until && stat(pid).is_some_and(|s| !matches!(s.state, 'Z' | 'X')) {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

pub fn resume(pid: i32) -> Result<(), String> {
    // TCP connections a dump with --tcp-established locked work again (nothing for others).
    match crate::tcp_unlock::unlock(pid) {
        Ok(c) if !c.is_empty() => tracing::info!(pid, connections = c.len(), "TCP connections unlocked"),
        Ok(_) => {}
        Err(e) => tracing::warn!(pid, "unlocking the TCP connections: {e}"),
    }
    // rdma_cm files a dump marked moving keep their connections again (before the process runs
    // and may close them).
    clear_rdma_cm_moving(pid);
    let qps = resume_stopped_qps(pid);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGCONT).map_err(|e| format!("SIGCONT {pid}: {e}"))?;
    qps
}

/// Clears the moving mark (`RDMIG_UCMA_IOC_MOVING` 0, `ucma_ckpt_abi.h`) of every rdma_cm file
/// of process `pid`: the plugin's dump marks a file with connected CM IDs moving, so that the
/// source's copy, killed once the destination runs, forgets its connections without
/// disconnecting the peers. A process that stays here (a failed dump, a rollback) must disconnect
/// them as usual again. Each file is reached through `pidfd_getfd(2)`; a failure is a warning,
/// never a reason not to resume. Nothing to do on a host without rdma_ucm.
pub fn clear_rdma_cm_moving(pid: i32) {
    let Some(dev) = rdmig_rxe::ucma::devno() else { return };
    let fds = match char_dev_fds(pid, dev) {
        Ok(f) if f.is_empty() => return,
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(pid, "looking for rdma_cm files to clear their moving mark: {e}");
            return;
        }
    };
    let pidfd = match crate::tcp_unlock::pidfd_open(pid) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(pid, "pidfd_open, to clear the moving mark of the rdma_cm files {fds:?}: {e}");
            return;
        }
    };
    for fd in fds {
        // Only files a dump marked (fdinfo `moving:\t1`): a restored process's files never are.
        let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
        if !rdmig_rxe::ucma::marked_moving(&info) {
            continue;
        }
        let file = match crate::tcp_unlock::pidfd_getfd(&pidfd, fd) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(pid, fd, "pidfd_getfd of an rdma_cm file, to clear its moving mark: {e}");
                continue;
            }
        };
        match rdmig_rxe::ucma::set_moving(std::os::fd::AsRawFd::as_raw_fd(&file), false) {
            Ok(()) => tracing::info!(pid, fd, "rdma_cm file: moving mark cleared, its connections are this process's again"),
            Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {
                tracing::debug!(pid, fd, "rdma_cm file: this rdma_ucm has no moving mark (not rdmig's, or older)")
            }
            Err(e) => tracing::warn!(pid, fd, "rdma_cm file: clearing its moving mark: {e}"),
        }
    }
}

/// The descriptors of process `pid` that are character device `dev` (major, minor), in order.
pub(crate) fn char_dev_fds(pid: i32, dev: (u32, u32)) -> Result<Vec<i32>, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let dir = format!("/proc/{pid}/fd");
    let mut fds = vec![];
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))? {
        let Ok(entry) = entry else { continue };
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        // The file the descriptor holds (stat follows the /proc link to it).
        let Ok(m) = std::fs::metadata(entry.path()) else { continue };
        if m.file_type().is_char_device() && (libc::major(m.rdev()), libc::minor(m.rdev())) == dev {
            fds.push(fd);
        }
    }
    fds.sort_unstable();
    Ok(fds)
}

/// Resumes the stopped QPs of process `pid` (none for processes without verbs state).
fn resume_stopped_qps(pid: i32) -> Result<(), String> {
    let Ok(recs) = rdmig_rxe::status::read() else {
        return Ok(());
    };
    let qps: Vec<(String, u32)> = recs
        .iter()
        .filter(|r| r.kind == "qp" && r.fields.get("pid").is_some_and(|p| *p == pid.to_string()))
        .filter_map(|r| Some((r.fields.get("dev")?.clone(), r.fields.get("qpn")?.parse().ok()?)))
        .collect();
    if qps.is_empty() {
        return Ok(());
    }
    let ctl = rdmig_rxe::Ctl::open().map_err(|e| format!("resume the QPs of {pid}: {e}"))?;
    let mut errs = vec![];
    for (dev, qpn) in qps {
        match ctl.qp_query(&dev, qpn) {
            Ok(st) if st.state & rdmig_rxe::QP_S_STOPPED != 0 => match resume_qp(&ctl, &dev, qpn) {
                Ok(()) => tracing::info!(pid, qpn, "resumed the stopped QP"),
                Err(e) => errs.push(format!("QP {qpn}: {e}")),
            },
            Ok(_) => {}
            Err(e) => errs.push(format!("QP {qpn}: {e}")),
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("resuming the stopped QPs of {pid}: {}", errs.join("; ")))
    }
}

/// How long a QP may wait for its source address to reach the device's GID table: the kernel
/// adds the entry shortly after the address (a rollback puts the address back just before it
/// resumes the QPs).
const GID_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Resumes one stopped QP, waiting while its source address is not in the GID table yet.
fn resume_qp(ctl: &rdmig_rxe::Ctl, dev: &str, qpn: u32) -> Result<(), rdmig_rxe::CtlError> {
    let until = std::time::Instant::now() + GID_WAIT;
    loop {
        match ctl.qp_resume(dev, qpn, 0) {
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) && std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            r => return r.map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process whose program is named `podman` (tail, renamed, following /dev/null; after
    /// `--` the other arguments are files it cannot open), run as a `podman container restore
    /// --import`.
    #[test]
    fn a_podman_restore_is_found_by_the_archive_beneath_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("m-1/final/container-checkpoint.tar");
        let script = format!("exec -a podman tail -f -- /dev/null container restore --import {} 2>/dev/null", archive.display());
        let mut p = std::process::Command::new("bash").args(["-c", &script]).spawn().unwrap();
        let seen = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            podman_works_on(&["srv"], Some(&dir.path().join("m-1")))
        });
        let other_dir = podman_works_on(&["srv"], Some(&dir.path().join("m-2")));
        let by_name = podman_works_on(&["srv", "0123"], None);
        p.kill().unwrap();
        let _ = p.wait();
        assert!(seen, "a podman restore of an archive beneath the directory was not seen");
        assert!(!other_dir && !by_name, "another migration's directory ({other_dir}) or a name it does not carry ({by_name})");
    }

    #[test]
    fn finds_the_descriptors_of_a_char_device() {
        use std::os::fd::AsRawFd;
        let null = std::fs::File::open("/dev/null").unwrap();
        let zero = std::fs::File::open("/dev/zero").unwrap();
        let regular = tempfile::tempfile().unwrap();
        let me = std::process::id() as i32;
        let fds = char_dev_fds(me, (1, 3)).unwrap();
        assert!(fds.contains(&null.as_raw_fd()), "{fds:?}");
        assert!(!fds.contains(&zero.as_raw_fd()) && !fds.contains(&regular.as_raw_fd()), "{fds:?}");
        assert!(char_dev_fds(me, (1, 5)).unwrap().contains(&zero.as_raw_fd()));
        assert!(char_dev_fds(-1, (1, 3)).unwrap_err().starts_with("/proc/-1/fd: "));
        // A process with no rdma_cm file (or a host without rdma_ucm): nothing done, no failure.
        clear_rdma_cm_moving(me);
    }

    #[test]
    fn parses_a_command_with_spaces_and_parentheses() {
        let line = "1234 (a) b (c)) T 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 98765 1000 10 18446744073709551615";
        assert_eq!(parse_stat(line), Some(ProcStat { state: 'T', start_ticks: 98765 }));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) R 1 2"), None);
    }

    #[test]
    fn knows_its_own_process_and_not_a_reused_pid() {
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        assert!(!s.stopped());
        assert!(same(me, s.start_ticks).is_some());
        assert!(same(me, s.start_ticks + 1).is_none());
        assert!(stat(0).is_none() && stat(-1).is_none());
    }
}
