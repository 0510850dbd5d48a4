//! Docker (issue 16): the MigrOS artifact's procedure (lab/docker/migros-artifact.sh, the
//! reference's three scripts as plain docker, ssh and scp commands) with Debian 12's Docker
//! (docker.io 20.10, containerd, runc) and stock CRIU 3.17, which loads rdmig's plugin from its
//! own directory: `docker checkpoint create` on the server's node, the checkpoint copied with
//! scp, `docker start --checkpoint` on the node it moves to, and the benchmark finishes.
//!
//! As in the reference, the server moves onto its client's node (two nodes; the server's QP,
//! which only receives, is in RTR): its peer is then on the same rxe device, which took softroce
//! patch 0020. lab/docker/dockerd-in-node.sh says what the lab's Docker does differently from a
//! site's, and lab/docker/migros-artifact.sh how the script differs from the reference.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};

use crate::harness::{perftest_calibration, perftest_iterations, share, Ctx, Scenario};

pub const SCENARIOS: &[Scenario] =
    &[("docker_artifact_ib_send_bw_server_restored_on_its_clients_node", docker_artifact_ib_send_bw_server_restored_on_its_clients_node)];

/// The server container's address, which moves with it.
const SERVICE_ADDR: &str = "10.0.1.7";
/// The lab's scripts and image, as the nodes see the lab share.
const ARTIFACT: &str = "/mnt/lab/docker/migros-artifact.sh";
const DOCKERD: &str = "/mnt/lab/docker/dockerd-in-node.sh";
const IMAGE_TAR: &str = "/mnt/lab/rdmig-perftest.tar";
/// Debian's docker client, whatever else is on PATH.
const DOCKER: &str = "/usr/bin/docker";
/// The reference's two nodes: the server's, and the client's, where the server moves.
const NODES: [&str; 2] = ["node1", "node2"];

/// `argv` on `node` within `secs` seconds, whatever its exit code.
fn exec(c: &Ctx, node: &str, secs: u32, env: &[&str], argv: &[&str]) -> Result<std::process::Output> {
    let secs = secs.to_string();
    let mut a = vec!["exec", node, "--timeout", &secs];
    for e in env {
        a.extend_from_slice(&["--env", e]);
    }
    a.push("--");
    a.extend_from_slice(argv);
    c.rdmig(&a)
}

/// Like `exec`, but an error unless it exits 0 (with what it printed); its stdout.
fn exec_ok(c: &Ctx, node: &str, secs: u32, env: &[&str], argv: &[&str]) -> Result<String> {
    crate::harness::stdout_if_ok(&format!("`{}` on {node}", argv.join(" ")), exec(c, node, secs, env, argv)?)
}

fn docker_artifact_ib_send_bw_server_restored_on_its_clients_node(c: &Ctx) -> Result<()> {
    for prog in ["/usr/sbin/dockerd", "/usr/bin/containerd", "/usr/bin/docker", "/usr/sbin/runc"] {
        ensure!(
            Path::new(prog).is_file(),
            "{prog} is not installed on this host (the nodes run its programs): apt-get install docker.io runc (scripts/setup.sh does)"
        );
    }
    // The scripts and the image go into the lab share, where every node finds them.
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = share().join("docker");
    std::fs::create_dir_all(&dir)?;
    for f in ["dockerd-in-node.sh", "migros-artifact.sh"] {
        std::fs::copy(here.join("docker").join(f), dir.join(f)).with_context(|| format!("copy lab/docker/{f} into the lab share"))?;
    }
    let script = here.join("images/perftest-image.sh");
    let o = std::process::Command::new(&script).arg(share().join("rdmig-perftest.tar")).output().with_context(|| format!("run {}", script.display()))?;
    ensure!(o.status.success(), "{}: {}{}", script.display(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    // Docker on both nodes, side by side (each takes about 20 s in the lab).
    std::thread::scope(|s| -> Result<()> {
        let started: Vec<_> = NODES.iter().map(|n| s.spawn(move || exec_ok(c, n, 300, &[], &[DOCKERD, IMAGE_TAR]))).collect();
        for (n, h) in NODES.iter().zip(started) {
            let said = h.join().expect("no panic")?;
            println!("  {n}: {}", said.trim());
        }
        Ok(())
    })?;
    remove_containers(c);
    for n in NODES {
        let _ = c.rdmig(&["addr", "del", n, SERVICE_ADDR]);
    }
    let r = run(c);
    if r.is_err() {
        report(c);
    }
    remove_containers(c);
    for n in NODES {
        let _ = c.rdmig(&["addr", "del", n, SERVICE_ADDR]);
    }
    r
}

fn run(c: &Ctx) -> Result<()> {
    let gid = |node: &str, ip: &str| -> Result<String> { Ok(c.exec_ok(node, &["/usr/bin/rdmig", "rxe", "gid-index", "--ip", ip])?.trim().to_string()) };
    c.rdmig_ok(&["addr", "add", "node1", SERVICE_ADDR])?;
    let (sg, cg) = (gid("node1", SERVICE_ADDR)?, gid("node2", "10.0.1.12")?);
    // Docker takes seconds before CRIU freezes the container (as Podman does): 120000 messages
    // (about 140 s in the lab) leave the checkpoint in the middle of the transfer.
    let iters = 120_000u64;
    let n = iters.to_string();
    exec_ok(c, "node1", 120, &[], &[ARTIFACT, "server", &sg, &n])?;
    crate::harness::wait_until("ib_send_bw to listen in cont-moving", Duration::from_secs(60), || {
        Ok(!c.exec_ok("node1", &["ss", "-Hltn", "sport = :18515"])?.trim().is_empty())
    })?;
    exec_ok(c, "node2", 120, &[], &[ARTIFACT, "client", &cg, &n, SERVICE_ADDR])?;
    // The client's QP reaches RTS once both sides exchanged their QP numbers; the server's,
    // which only receives, stays in RTR.
    let client: i32 = c.exec_ok("node2", &["pgrep", "-x", "ib_send_bw"])?.trim().parse().context("the client container's ib_send_bw on node2")?;
    crate::harness::wait_until("the transfer to start", Duration::from_secs(60), || {
        let st = c.exec_ok("node2", &["/usr/bin/rdmig", "softroce", "status"])?;
        Ok(st.lines().any(|l| l.starts_with("qp") && l.contains(&format!("pid={client}")) && l.contains("state=rts")))
    })?;

    // The reference's migration script, run on the client's node, where the server moves; ssh
    // and scp reach the server's node with the lab's keys.
    let ssh = format!("SSH_CONFIG={}", rdmig_lab::ssh::node_ssh_config());
    let t0 = Instant::now();
    exec_ok(c, "node2", 400, &[&ssh], &[ARTIFACT, "checkpoint", "10.99.0.1", &n]).context("the checkpoint half of the migration script")?;
    let checkpointed = t0.elapsed();
    let left = exec_ok(c, "node1", 60, &[], &[DOCKER, "ps", "-a", "--format", "{{.Names}}"])?;
    ensure!(!left.lines().any(|l| l == "cont-moving"), "cont-moving is still on node1 after the script removed it:\n{left}");
    // Swarm's overlay network would carry the container's address along; the lab moves it.
    c.rdmig_ok(&["addr", "move", SERVICE_ADDR, "--to", "node2"])?;
    let t1 = Instant::now();
    exec_ok(c, "node2", 300, &[], &[ARTIFACT, "restore"]).context("docker start --checkpoint on node2")?;
    println!("  checkpoint, scp and removal {checkpointed:.1?}, docker start --checkpoint {:.1?}", t1.elapsed());
    let log = restore_log(c, "node2");
    ensure!(log.contains("QP(s) resumed"), "CRIU's restore on node2 resumed no QP:\n{log}");

    for (node, name) in [("node2", "cont-moving"), ("node2", "cont-static")] {
        let code = exec_ok(c, node, 400, &[], &[DOCKER, "wait", name]).with_context(|| format!("docker wait {name} on {node}"))?;
        let out = exec(c, node, 60, &[], &[DOCKER, "logs", name])?;
        let out = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        perftest_calibration(&format!("{name} on {node}"), &out);
        ensure!(code.trim() == "0", "{name} on {node} exited with {}:\n{out}", code.trim());
        ensure!(perftest_iterations(&out) == Some(iters), "{name} on {node} did not finish its {iters} iterations:\n{out}");
    }
    println!("  both containers finished {iters} iterations, the server's restored beside its client on node2");
    Ok(())
}

/// rdmig's plugin's lines and CRIU's errors from the newest restore.log containerd kept on `node`.
fn restore_log(c: &Ctx, node: &str) -> String {
    let sh = "f=$(ls -t $(find /run/docker-lab /run/containerd -name restore.log 2>/dev/null) 2>/dev/null | head -n1); [ -n \"$f\" ] && grep -E 'rdmig_criu|Error' \"$f\" | tail -n 40";
    exec(c, node, 60, &[], &["sh", "-c", sh]).map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default()
}

/// What Docker and CRIU said, for a failure's report.
fn report(c: &Ctx) {
    for n in NODES {
        if let Ok(o) = exec(c, n, 60, &[], &[DOCKER, "ps", "-a"]) {
            eprintln!("=== {n}: docker ps -a ===\n{}", String::from_utf8_lossy(&o.stdout));
        }
        for name in ["cont-moving", "cont-static"] {
            if let Ok(o) = exec(c, n, 60, &[], &["sh", "-c", &format!("{DOCKER} logs {name} 2>&1 | tail -n 30")]) {
                eprintln!("=== {n}: docker logs {name} ===\n{}", String::from_utf8_lossy(&o.stdout));
            }
        }
        if let Ok(o) = exec(c, n, 60, &[], &["sh", "-c", "grep -v module=grpc /run/docker-lab/dockerd.log | tail -n 20"]) {
            eprintln!("=== {n}: dockerd.log ===\n{}", String::from_utf8_lossy(&o.stdout));
        }
        eprintln!("=== {n}: CRIU restore.log ===\n{}", restore_log(c, n));
    }
}

/// Removes the scenario's containers everywhere.
fn remove_containers(c: &Ctx) {
    for n in NODES {
        let _ = exec(c, n, 60, &[], &["sh", "-c", &format!("{DOCKER} rm --force cont-moving cont-static > /dev/null 2>&1")]);
    }
}
