//! Host-side plumbing: running host commands, the lab's network namespace, and sockets inside it.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use tracing::debug;

use super::plan::{LabPlan, UNDERLAY_HOST, UNDERLAY_MTU};
use super::LabError;

/// Runs a host command, returning its stdout; a failure carries the command line and stderr.
pub fn run(prog: &str, args: &[&str]) -> Result<String, LabError> {
    debug!(cmd = %format!("{prog} {}", args.join(" ")), "run");
    let out = Command::new(prog).args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            LabError::Missing { what: prog.to_string(), fix: "run scripts/setup.sh to install the lab's packages".into() }
        } else {
            LabError::io(format!("cannot run {prog}"), e)
        }
    })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: format!("{prog} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn netns_path(ns: &str) -> PathBuf {
    Path::new("/run/netns").join(ns)
}

pub fn netns_exists(ns: &str) -> bool {
    netns_path(ns).exists()
}

/// Creates the lab's network namespace: a bridge for the underlay with the host's address on it,
/// and one tap device per node. Nothing in it is connected to the host's own network.
pub fn create_netns(ns: &str, plan: &LabPlan) -> Result<(), LabError> {
    if netns_exists(ns) {
        return Err(LabError::InUse(format!(
            "network namespace {ns} already exists; `rdmig lab down` removes a lab's namespace, \
             or pick another lab name with --name"
        )));
    }
    run("ip", &["netns", "add", ns])?;
    let result = (|| {
        let mtu = UNDERLAY_MTU.to_string();
        let host = format!("{UNDERLAY_HOST}/24");
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        run("ip", &["-n", ns, "link", "add", "rdmbr0", "type", "bridge"])?;
        for node in &plan.nodes {
            run("ip", &["-n", ns, "tuntap", "add", &node.tap, "mode", "tap"])?;
            run("ip", &["-n", ns, "link", "set", &node.tap, "mtu", &mtu, "master", "rdmbr0", "up"])?;
        }
        run("ip", &["-n", ns, "link", "set", "rdmbr0", "mtu", &mtu, "up"])?;
        run("ip", &["-n", ns, "addr", "add", &host, "dev", "rdmbr0"])?;
        Ok(())
    })();
    if result.is_err() {
        let _ = delete_netns(ns);
    }
    result
}

/// Deletes the namespace; its bridge and taps go with it. Deleting an absent one is not an error.
pub fn delete_netns(ns: &str) -> Result<(), LabError> {
    if !netns_exists(ns) {
        return Ok(());
    }
    run("ip", &["netns", "delete", ns]).map(|_| ())
}

/// Names of the network devices in the namespace (for leak checks and status).
pub fn netns_links(ns: &str) -> Result<Vec<String>, LabError> {
    let out = run("ip", &["-n", ns, "-o", "link", "show"])?;
    Ok(out.lines().filter_map(|l| l.split(':').nth(1)).map(|s| s.trim().split('@').next().unwrap_or("").to_string()).collect())
}

pub fn open_netns(ns: &str) -> Result<File, LabError> {
    File::open(netns_path(ns)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            LabError::Invalid(format!("the lab's network namespace {ns} is gone; run `rdmig lab down` then `rdmig lab up`"))
        } else {
            LabError::io(format!("open network namespace {ns}"), e)
        }
    })
}

/// Connects to `addr` from inside namespace `ns`. The socket is made by a short-lived thread that
/// switched its own network namespace, so the rest of the process stays where it was; a socket
/// keeps the namespace it was created in.
pub fn connect_in_netns(ns: &str, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let nsfile = open_netns(ns).map_err(std::io::Error::other)?;
    std::thread::spawn(move || {
        setns(nsfile.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        TcpStream::connect_timeout(&addr, timeout)
    })
    .join()
    .map_err(|_| std::io::Error::other("connect thread panicked"))?
}
