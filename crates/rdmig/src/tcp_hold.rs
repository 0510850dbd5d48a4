//! Holds the TCP connections of a restored copy until its source commits.
//!
//! With `--tcp-established` CRIU restores the copy's connections and, at the end of its restore,
//! lets them go: from then on the destination's kernel answers the peer for the copy although
//! the copy itself stays stopped until the commit. A peer's segment that arrives then is
//! acknowledged here; if the migration is then aborted (the source resumes its own copy) that
//! data is lost to the source, and killing the copy sends the peer a reset or a FIN for a
//! connection that lives on at the source (seen in the lab: after an aborted restore the
//! ib_send_bw client died without a word, and the server waited for it for good).
//!
//! So while a copy waits here, every TCP packet to or from the moved address is dropped, in the
//! filter table's INPUT and OUTPUT chains, one rule each, tagged with the migration's id
//! (`-m comment`): nothing is answered and nothing is sent, as at the source, whose connections
//! CRIU's own lock holds. The peer retransmits into whichever side the migration ends on. The
//! rules go at the commit (before the copy runs) and at an abort (after the copy is killed and the
//! address is gone). Other traffic (RDMA over UDP, the agents' channel) is untouched.

use std::net::Ipv4Addr;
use std::process::Command;

use tracing::info;

/// The rules' tag, which names the migration.
fn tag(id: &str) -> String {
    format!("rdmig-hold:{id}")
}

/// The two rules for `addr` (chain, then the match), as `iptables -I/-D` takes them.
pub fn rules(id: &str, addr: Ipv4Addr) -> [Vec<String>; 2] {
    let a = addr.to_string();
    let rule = |chain: &str, dir: &str| -> Vec<String> {
        [chain, dir, &a, "-p", "tcp", "-m", "comment", "--comment", &tag(id), "-j", "DROP"].iter().map(|s| s.to_string()).collect()
    };
    [rule("INPUT", "-d"), rule("OUTPUT", "-s")]
}

/// Drops every TCP packet to and from `addr` until [`release`]: both rules in one
/// `iptables-restore` transaction (both or neither; one program run, as it costs inside the
/// blackout).
pub fn hold(id: &str, addr: Ipv4Addr) -> Result<(), String> {
    restore(&transaction("-I", &rules(id, addr)))?;
    info!(id, %addr, "holding the TCP connections of the moved address until the commit");
    Ok(())
}

/// Removes the rules [`hold`] put in for migration `id` and `addr` (every copy, if a retry left
/// two); nothing to remove is not an error. Returns how many went.
pub fn release(id: &str, addr: Ipv4Addr) -> usize {
    let both = rules(id, addr);
    // The usual case in one transaction; it fails as a whole when a rule is missing, and then
    // each rule goes on its own, as often as it is there.
    let mut removed = match restore(&transaction("-D", &both)) {
        Ok(()) => 2,
        Err(_) => 0,
    };
    for rule in &both {
        for _ in 0..8 {
            match restore(&transaction("-D", std::slice::from_ref(rule))) {
                Ok(()) => removed += 1,
                Err(_) => break,
            }
        }
    }
    if removed > 0 {
        info!(id, %addr, removed, "released the TCP connections of the moved address");
    }
    removed
}

/// An `iptables-restore --noflush` input that applies `op` (-I or -D) to each rule of the
/// filter table.
pub fn transaction(op: &str, rules: &[Vec<String>]) -> String {
    let mut t = String::from("*filter\n");
    for r in rules {
        t.push_str(op);
        t.push(' ');
        t.push_str(&r.join(" "));
        t.push('\n');
    }
    t.push_str("COMMIT\n");
    t
}

fn restore(input: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("iptables-restore (needed to hold the moved address's TCP connections): {e}"))?;
    let written = child.stdin.take().map(|mut i| i.write_all(input.as_bytes()));
    let o = child.wait_with_output().map_err(|e| format!("iptables-restore: {e}"))?;
    match written {
        Some(Ok(())) if o.status.success() => Ok(()),
        Some(Err(e)) => Err(format!("iptables-restore: writing its input: {e}")),
        _ => Err(format!("iptables-restore ({}): {}", input.trim().replace('\n', "; "), String::from_utf8_lossy(&o.stderr).trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn filter_rules() -> String {
        let o = Command::new("iptables-save").args(["-t", "filter"]).output().expect("iptables-save (setup.sh installs iptables)");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn sh(cmd: &str) {
        let st = Command::new("sh").args(["-c", cmd]).status().unwrap();
        assert!(st.success(), "{cmd}: {st}");
    }

    /// Real rules on real packets, in a network namespace of the test's own (root, as the
    /// suite runs): a connection to the held address goes nowhere, and works once released.
    #[test]
    fn a_held_address_answers_nothing_until_released() {
        std::thread::spawn(|| {
            // The commands this thread runs inherit its namespace.
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET): the suite runs as root");
            sh("ip link set lo up && ip addr add 10.0.1.7/32 dev lo");
            let addr: Ipv4Addr = "10.0.1.7".parse().unwrap();
            let l = std::net::TcpListener::bind((addr, 0)).unwrap();
            let to = l.local_addr().unwrap();
            let id = "m-0123456789abcdef";
            hold(id, addr).unwrap();
            assert_eq!(filter_rules().matches("rdmig-hold:m-0123456789abcdef").count(), 2, "{}", filter_rules());
            let e = std::net::TcpStream::connect_timeout(&to, Duration::from_millis(1500)).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
            // Twice held (a retried restore), released once: both copies go.
            hold(id, addr).unwrap();
            assert_eq!(release(id, addr), 4);
            assert!(!filter_rules().contains("rdmig-hold"), "{}", filter_rules());
            assert_eq!(release(id, addr), 0, "nothing left to release is no error");
            std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("released: the connection is accepted");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn one_rule_each_way_tagged_with_the_migration() {
        let [i, o] = rules("m-0123456789abcdef", "10.0.1.7".parse().unwrap());
        assert_eq!(i.join(" "), "INPUT -d 10.0.1.7 -p tcp -m comment --comment rdmig-hold:m-0123456789abcdef -j DROP");
        assert_eq!(o.join(" "), "OUTPUT -s 10.0.1.7 -p tcp -m comment --comment rdmig-hold:m-0123456789abcdef -j DROP");
        assert_eq!(transaction("-D", &[i]), "*filter\n-D INPUT -d 10.0.1.7 -p tcp -m comment --comment rdmig-hold:m-0123456789abcdef -j DROP\nCOMMIT\n");
    }
}
