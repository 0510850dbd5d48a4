//! Gives a process back the TCP connections CRIU locked for its dump.
//!
//! `criu dump --tcp-established --leave-stopped` leaves each established connection of the
//! process as the restore at the destination needs it: the socket in repair mode (it sends
//! nothing and answers nothing) and a netfilter rule per direction that drops its packets
//! (`-m mark ! --mark 0xc114 ... -j DROP` in the filter table's INPUT and OUTPUT chains; CRIU's
//! default iptables lock). CRIU undoes both only when the dumped process keeps running
//! (`--leave-running`) or at the restore. When a migration rolls back, the stopped source copy
//! runs again: without this its connections stay dead (seen in the lab: perftest's final report
//! exchange failed after a rollback, "Couldn't read reports").
//!
//! The sockets are reached through `pidfd_getfd(2)` (a duplicate of the process's descriptor,
//! Linux 5.6), so nothing of the process is touched but the sockets' repair flag.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;

use tracing::{info, warn};

/// CRIU's mark on the packets it sends itself, which its lock rules let through.
const CRIU_MARK: &str = "0xc114";

/// One TCP connection of the process: its two ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// Takes every established TCP connection of stopped process `pid` that is in repair mode out
/// of it and removes CRIU's lock rules for them; returns those connections (none for a process
/// CRIU did not lock: then nothing is touched). Best effort per
/// connection: what fails is logged and reported, the rest goes on.
pub fn unlock(pid: i32) -> Result<Vec<Conn>, String> {
    let conns = repair_off(pid)?;
    if conns.is_empty() {
        return Ok(conns);
    }
    for (save, tool) in [("iptables-save", "iptables"), ("ip6tables-save", "ip6tables")] {
        let v6 = tool == "ip6tables";
        let mine: Vec<Conn> = conns.iter().copied().filter(|c| c.local.is_ipv6() == v6).collect();
        if mine.is_empty() {
            continue;
        }
        let rules = match Command::new(save).args(["-t", "filter"]).output() {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            Ok(o) => return Err(format!("{save}: {}", String::from_utf8_lossy(&o.stderr).trim())),
            Err(e) => return Err(format!("{save}: {e}")),
        };
        for rule in lock_rules(&rules, &mine) {
            let mut args = vec!["-w".to_string(), "-t".into(), "filter".into(), "-D".into()];
            args.extend(rule.iter().cloned());
            match Command::new(tool).args(&args).output() {
                Ok(o) if o.status.success() => info!(pid, rule = %rule.join(" "), "removed CRIU's lock of a connection"),
                Ok(o) => warn!(pid, rule = %rule.join(" "), "removing CRIU's lock rule: {}", String::from_utf8_lossy(&o.stderr).trim()),
                Err(e) => warn!(pid, "{tool}: {e}"),
            }
        }
    }
    Ok(conns)
}

/// The lock rules (chain and match, without `-A`) in `iptables-save` output that drop packets
/// of one of `conns`, either way.
pub fn lock_rules(save: &str, conns: &[Conn]) -> Vec<Vec<String>> {
    let mut out = vec![];
    for line in save.lines() {
        let Some(rest) = line.strip_prefix("-A ") else { continue };
        let words: Vec<String> = rest.split_whitespace().map(str::to_string).collect();
        if !words.iter().any(|w| w.eq_ignore_ascii_case(CRIU_MARK)) || words.last().map(String::as_str) != Some("DROP") {
            continue;
        }
        let value = |flag: &str| words.windows(2).find(|w| w[0] == flag).map(|w| w[1].clone());
        let (Some(src), Some(dst), Some(sport), Some(dport)) = (value("-s"), value("-d"), value("--sport"), value("--dport")) else {
            continue;
        };
        let host = |a: &str| a.split('/').next().unwrap_or(a).to_string();
        let ends = (host(&src), sport, host(&dst), dport);
        let matches = |from: SocketAddr, to: SocketAddr| ends == (from.ip().to_string(), from.port().to_string(), to.ip().to_string(), to.port().to_string());
        if conns.iter().any(|c| matches(c.local, c.remote) || matches(c.remote, c.local)) {
            out.push(words);
        }
    }
    out
}

/// Turns repair mode off on every established TCP socket of `pid`; their connections.
fn repair_off(pid: i32) -> Result<Vec<Conn>, String> {
    let pidfd = pidfd_open(pid).map_err(|e| format!("pidfd_open {pid}: {e}"))?;
    let dir = format!("/proc/{pid}/fd");
    let mut conns = vec![];
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))? {
        let Ok(entry) = entry else { continue };
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let is_socket = std::fs::read_link(entry.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        if !is_socket {
            continue;
        }
        let sock = match pidfd_getfd(&pidfd, fd) {
            Ok(s) => s,
            Err(e) => {
                warn!(pid, fd, "pidfd_getfd: {e}");
                continue;
            }
        };
        if !established_tcp(&sock) || !in_repair(&sock) {
            continue;
        }
        // An IPv4 or IPv6 TCP socket: std reads its two ends.
        let sock = std::net::TcpStream::from(sock);
        let (Ok(local), Ok(remote)) = (sock.local_addr(), sock.peer_addr()) else { continue };
        let off: libc::c_int = 0; // TCP_REPAIR_OFF
                                  // SAFETY: setsockopt(2) reads an int from a live local; the descriptor is ours.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_REPAIR,
                &off as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            warn!(pid, fd, %local, %remote, "TCP_REPAIR off: {}", std::io::Error::last_os_error());
        } else {
            info!(pid, fd, %local, %remote, "the connection is out of repair mode");
        }
        conns.push(Conn { local, remote });
    }
    Ok(conns)
}

/// An IPv4 or IPv6 TCP socket in the ESTABLISHED state (the ones CRIU locks).
fn established_tcp(sock: &OwnedFd) -> bool {
    let fd = sock.as_raw_fd();
    let mut proto: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into a live local and updates `len`.
    if unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL, &mut proto as *mut _ as *mut libc::c_void, &mut len) } != 0
        || proto != libc::IPPROTO_TCP
    {
        return false;
    }
    // SAFETY: tcp_info is plain integers, for which all-zero bytes are a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: as above, into an owned tcp_info.
    if unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, &mut info as *mut _ as *mut libc::c_void, &mut len) } != 0 {
        return false;
    }
    // TCP_ESTABLISHED is 1 in the kernel's tcp_states.h.
    info.tcpi_state == 1
}

/// Whether the socket is in repair mode (CRIU's lock; a socket of a running program never is).
fn in_repair(sock: &OwnedFd) -> bool {
    let mut on: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into a live local and updates `len`.
    let r = unsafe { libc::getsockopt(sock.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_REPAIR, &mut on as *mut _ as *mut libc::c_void, &mut len) };
    r == 0 && on != 0
}

pub(crate) fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created for us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

pub(crate) fn pidfd_getfd(pidfd: &OwnedFd, fd: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd(2) duplicates descriptor `fd` of the process into ours, or fails.
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor of ours, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(dup as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(l: &str, r: &str) -> Conn {
        Conn { local: l.parse().unwrap(), remote: r.parse().unwrap() }
    }

    /// Rules as iptables-save prints CRIU's lock: both directions of the process's connection
    /// go, another connection's lock and other rules stay.
    #[test]
    fn finds_the_lock_rules_of_the_connections_either_way() {
        let save = "\
# Generated by iptables-save
*filter
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -s 10.0.1.12/32 -d 10.0.1.7/32 -p tcp -m mark ! --mark 0xc114 -m tcp --sport 45678 --dport 18515 -j DROP
-A OUTPUT -s 10.0.1.7/32 -d 10.0.1.12/32 -p tcp -m mark ! --mark 0xc114 -m tcp --sport 18515 --dport 45678 -j DROP
-A INPUT -s 10.0.1.13/32 -d 10.0.1.7/32 -p tcp -m mark ! --mark 0xc114 -m tcp --sport 45679 --dport 18515 -j DROP
-A INPUT -s 10.0.1.12/32 -d 10.0.1.7/32 -p tcp -m tcp --sport 45678 --dport 18515 -j DROP
-A INPUT -p tcp -m tcp --dport 7800 -j DROP
COMMIT
";
        let rules = lock_rules(save, &[conn("10.0.1.7:18515", "10.0.1.12:45678")]);
        assert_eq!(rules.len(), 2, "{rules:?}");
        assert_eq!(rules[0][0], "INPUT");
        assert_eq!(rules[1][0], "OUTPUT");
        assert_eq!(rules[1].join(" "), "OUTPUT -s 10.0.1.7/32 -d 10.0.1.12/32 -p tcp -m mark ! --mark 0xc114 -m tcp --sport 18515 --dport 45678 -j DROP");
        assert!(lock_rules(save, &[]).is_empty());
    }

    /// A process with a connection in repair mode (as CRIU leaves it) gets it back: the same
    /// socket sends again once unlocked.
    #[test]
    fn takes_a_connection_of_this_process_out_of_repair_mode() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut b, _) = l.accept().unwrap();
        let on: libc::c_int = 1;
        // SAFETY: setsockopt(2) on our own socket, reading an int from a live local.
        let r = unsafe { libc::setsockopt(a.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_REPAIR, &on as *const _ as *const libc::c_void, 4) };
        if r != 0 {
            // Repair mode needs CAP_NET_ADMIN: nothing to test without it.
            eprintln!("TCP_REPAIR needs CAP_NET_ADMIN here: {}", std::io::Error::last_os_error());
            return;
        }
        let conns = repair_off(std::process::id() as i32).unwrap();
        assert!(conns.contains(&Conn { local: a.local_addr().unwrap(), remote: a.peer_addr().unwrap() }), "{conns:?}");
        a.write_all(b"back").unwrap();
        let mut got = [0u8; 4];
        b.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"back");
    }
}
