//! Containers (issue 16), with the container stack of Debian 12 as a user runs it: Podman 4.3
//! with runc (Debian's crun cannot checkpoint) and stock CRIU 3.17, which finds rdmig's plugin in
//! its own directory (`/usr/lib/criu`, the installed package) with no flag from anyone. The
//! containers are given their uverbs device only, as any RDMA container is.
//!
//! Runs on the lab the installed-package scenario brought up, after it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};

use crate::harness::{perftest_iterations, Ctx, Scenario, LAB_BASE, LAB_NAME};

pub const SCENARIOS: &[Scenario] =
    &[("container_podman_ib_send_bw_server_restored_on_another_node", container_podman_ib_send_bw_server_restored_on_another_node)];

/// The address the server's container listens on, which moves with it.
const SERVICE_ADDR: &str = "10.0.1.7";
const IMAGE: &str = "localhost/rdmig-perftest:lab";

fn share() -> PathBuf {
    PathBuf::from(LAB_BASE).join(LAB_NAME).join("shared")
}

/// Podman in a lab node: its storage on the node's own /run (the host's root is read-only
/// there), cgroups without systemd, and runc.
const PODMAN: &[&str] = &[
    "podman",
    "--root",
    "/run/podman/root",
    "--runroot",
    "/run/podman/runroot",
    "--storage-driver",
    "vfs",
    "--cgroup-manager",
    "cgroupfs",
    "--events-backend",
    "file",
    "--runtime",
    "/usr/sbin/runc",
    "--network-config-dir",
    "/run/podman/net",
    "--tmpdir",
    "/run/podman/tmp",
];

/// `podman ARGS` on `node`; an error unless it exits 0; its stdout.
fn podman(c: &Ctx, node: &str, args: &[&str]) -> Result<String> {
    let o = podman_output(c, node, 300, args)?;
    ensure!(
        o.status.success(),
        "`podman {}` on {node} failed ({}):\n{}{}",
        args.join(" "),
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `podman ARGS` on `node` within `secs` seconds, whatever its exit code.
fn podman_output(c: &Ctx, node: &str, secs: u32, args: &[&str]) -> Result<std::process::Output> {
    let secs = secs.to_string();
    let mut a = vec!["exec", node, "--timeout", &secs, "--"];
    a.extend_from_slice(PODMAN);
    a.extend_from_slice(args);
    c.rdmig(&a)
}

/// Podman ready on `node`, with the perftest image (built on the host by
/// lab/images/perftest-image.sh) imported.
fn podman_ready(c: &Ctx, node: &str) -> Result<()> {
    // The nodes' init mounts no cgroup file system; runc needs cgroup2.
    c.exec_ok(node, &["sh", "-c", "mountpoint -q /sys/fs/cgroup || mount -t cgroup2 none /sys/fs/cgroup; mkdir -p /run/podman/net /run/podman/tmp"])?;
    podman(c, node, &["import", "/mnt/lab/rdmig-perftest.tar", IMAGE])?;
    Ok(())
}

/// Removes the scenario's containers everywhere (ends the test's containers whatever happened).
fn remove_containers(c: &Ctx) {
    for n in ["node1", "node2", "node3"] {
        let _ = podman_output(c, n, 60, &["rm", "-f", "--ignore", "ctr-srv", "ctr-cli"]);
    }
}

/// An `ib_send_bw -b` server in a container on node1, on an address of its own, and its client in
/// a container on node2. Mid-run the server's container is checkpointed with
/// `podman container checkpoint --export --tcp-established` (the container stops), its address
/// moves to node3, and `podman container restore --import` starts it there from the archive;
/// the client's container keeps running throughout. Both finish with the exact iteration count.
fn container_podman_ib_send_bw_server_restored_on_another_node(c: &Ctx) -> Result<()> {
    for tool in ["podman", "runc"] {
        ensure!(
            std::process::Command::new("sh").args(["-c", &format!("command -v {tool}")]).output()?.status.success(),
            "{tool} is not installed on this host (the nodes run its programs): apt-get install podman runc (scripts/setup.sh does)"
        );
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/images/perftest-image.sh");
    let tar = share().join("rdmig-perftest.tar");
    let o = std::process::Command::new(script).arg(&tar).output().with_context(|| format!("run {script}"))?;
    ensure!(o.status.success(), "{script}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    remove_containers(c);
    for n in ["node1", "node2", "node3"] {
        podman_ready(c, n)?;
        let _ = c.rdmig(&["addr", "del", n, SERVICE_ADDR]);
    }
    let r = run(c);
    if r.is_err() {
        // What the containers said, for the failure's report.
        for n in ["node1", "node2", "node3"] {
            if let Ok(o) = podman_output(c, n, 60, &["ps", "-a"]) {
                eprintln!("=== {n}: podman ps -a ===\n{}", String::from_utf8_lossy(&o.stdout));
            }
            for name in ["ctr-srv", "ctr-cli"] {
                if let Ok(o) = podman_output(c, n, 60, &["logs", name]) {
                    if o.status.success() {
                        eprintln!(
                            "=== {n}: podman logs {name} ===\n{}{}",
                            tail(&String::from_utf8_lossy(&o.stdout), 30),
                            tail(&String::from_utf8_lossy(&o.stderr), 30)
                        );
                    }
                }
            }
        }
    }
    remove_containers(c);
    let _ = c.rdmig(&["addr", "del", "node3", SERVICE_ADDR]);
    let _ = c.rdmig(&["addr", "del", "node1", SERVICE_ADDR]);
    r
}

fn run(c: &Ctx) -> Result<()> {
    let gid = |node: &str, ip: &str| -> Result<String> { Ok(c.exec_ok(node, &["/usr/bin/rdmig", "rxe", "gid-index", "--ip", ip])?.trim().to_string()) };
    c.rdmig_ok(&["addr", "add", "node1", SERVICE_ADDR])?;
    let (sg, cg) = (gid("node1", SERVICE_ADDR)?, gid("node2", "10.0.1.12")?);
    // The checkpoint is asked for as soon as the traffic runs; Podman takes seconds before CRIU
    // freezes the container, and 60000 messages each way (about 30 s in the lab) were over
    // before it did. 120000 leave a margin.
    let iters = 120_000u64;
    let n = iters.to_string();
    // The container gets its uverbs device and nothing else of rdma (its restore borrows rxe's
    // control device from the node's agent); memlock as RDMA needs.
    let run_args = |name: &'static str| -> Vec<&'static str> {
        vec!["run", "-d", "--name", name, "--network", "host", "--device", "/dev/infiniband/uverbs0", "--ulimit", "memlock=-1:-1"]
    };
    let mut a = run_args("ctr-srv");
    a.extend_from_slice(&[IMAGE, "ib_send_bw", "-d", "rxe0", "-x", &sg, "-s", "4096", "-n", &n, "-b"]);
    podman(c, "node1", &a)?;
    crate::harness::wait_until("ib_send_bw to listen in its container", Duration::from_secs(60), || {
        Ok(!c.exec_ok("node1", &["ss", "-Hltn", "sport = :18515"])?.trim().is_empty())
    })?;
    let mut a = run_args("ctr-cli");
    a.extend_from_slice(&[IMAGE, "ib_send_bw", "-d", "rxe0", "-x", &cg, "-s", "4096", "-n", &n, "-b", SERVICE_ADDR]);
    podman(c, "node2", &a)?;
    // The server's pid on node1 (podman inspect takes seconds in the lab, the transfer does not
    // wait).
    let pid: i32 = c.exec_ok("node1", &["pgrep", "-x", "ib_send_bw"])?.trim().parse().context("the server container's ib_send_bw on node1")?;
    crate::harness::wait_until("the transfer to start", Duration::from_secs(60), || {
        let st = c.exec_ok("node1", &["/usr/bin/rdmig", "softroce", "status"])?;
        Ok(st.lines().any(|l| l.starts_with("qp") && l.contains(&format!("pid={pid}")) && l.contains("state=rts")))
    })?;

    let t0 = Instant::now();
    podman(c, "node1", &["container", "checkpoint", "--export", "/mnt/lab/ctr-srv.tar.gz", "--tcp-established", "ctr-srv"])
        .context("podman container checkpoint of the server's container")?;
    let checkpoint = t0.elapsed();
    let st = podman(c, "node1", &["inspect", "-f", "{{.State.Status}}", "ctr-srv"])?;
    ensure!(st.trim() == "exited", "after the checkpoint the server's container on node1 is {st:?}, not exited");
    c.rdmig_ok(&["addr", "move", SERVICE_ADDR, "--to", "node3"])?;
    let t1 = Instant::now();
    let restored = podman(c, "node3", &["container", "restore", "--import", "/mnt/lab/ctr-srv.tar.gz", "--tcp-established"]);
    let log = c.exec_ok("node3", &["sh", "-c", "cat $(find /run/podman -name restore.log | head -n1)"]).unwrap_or_default();
    restored.with_context(|| {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("rdmig_criu") || l.contains("Error") || l.contains("rror (")).collect();
        format!("podman container restore of the server's container on node3; CRIU's restore.log says:\n{}", tail(&lines.join("\n"), 40))
    })?;
    println!("  podman checkpoint on node1 {checkpoint:.1?}, restore on node3 {:.1?}", t1.elapsed());

    for (node, name) in [("node3", "ctr-srv"), ("node2", "ctr-cli")] {
        let code = podman(c, node, &["wait", name]).with_context(|| format!("podman wait {name} on {node}"))?;
        let log = podman(c, node, &["logs", name])?;
        ensure!(code.trim() == "0", "{name} on {node} exited with {}:\n{log}", code.trim());
        ensure!(perftest_iterations(&log) == Some(iters), "{name} on {node} did not finish its {iters} iterations:\n{log}");
    }
    println!("  both containers finished {iters} iterations, the server's on node3");
    // CRIU, inside the container's device cgroup, could not open /dev/rxe_ctl and borrowed the
    // node agent's.
    let agent = crate::faults::agent_log("node3");
    ensure!(agent.contains("lent /dev/rxe_ctl to CRIU (criu)"), "node3's agent lent CRIU no control device:\n{}", tail(&agent, 20));
    println!("  CRIU on node3 borrowed /dev/rxe_ctl from the node's agent");
    Ok(())
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
