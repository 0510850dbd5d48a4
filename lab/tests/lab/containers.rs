//! Containers (issue 16), with the container stack of Debian 12 as a user runs it: Podman 4.3
//! with runc (Debian's crun cannot checkpoint) and stock CRIU 3.17, which finds rdmig's plugin in
//! its own directory (`/usr/lib/criu`, the installed package) with no flag from anyone. The
//! containers are given their uverbs device only, as any RDMA container is.
//!
//! Podman's settings for a lab node (storage on the node's /run, cgroups without systemd, runc)
//! are Podman's own configuration files, written into the lab's share: the scenarios' podman
//! commands get them as `CONTAINERS_CONF` / `CONTAINERS_STORAGE_CONF`, `rdmig migrate
//! --container` and the destination's agent as `--containers-conf` / `--containers-storage-conf`.
//!
//! Runs on the suite's lab, whose nodes run the installed package (CRIU finds the plugin
//! there by itself).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};

use serde_json::Value;

use crate::harness::{perftest_calibration, perftest_iterations, share, spans, Ctx, Scenario, LAB_BASE, LAB_NAME, PERFTEST_KEEP_GOING};
use crate::migration::downtime;

pub const SCENARIOS: &[Scenario] = &[
    ("container_rdmig_migrate_podman_server_rolled_back_refused_then_moved", container_rdmig_migrate_podman_server_rolled_back_refused_then_moved),
    (
        "container_rdmig_migrate_podman_one_way_server_killed_recovered_then_pre_checkpointed",
        container_rdmig_migrate_podman_one_way_server_killed_recovered_then_pre_checkpointed,
    ),
];

/// The address the server's container listens on, which moves with it.
const SERVICE_ADDR: &str = "10.0.1.7";
const IMAGE: &str = "localhost/rdmig-perftest:lab";

/// Podman's configuration in the nodes (the lab's share, `/mnt/lab` there).
const CONTAINERS_CONF: &str = "/mnt/lab/podman/containers.conf";
const STORAGE_CONF: &str = "/mnt/lab/podman/storage.conf";

/// Podman in a lab node: its storage on the node's own /run (the host's root is read-only
/// there), cgroups without systemd, file events, runc (Debian's crun cannot checkpoint).
fn write_podman_conf() -> Result<()> {
    let dir = share().join("podman");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("containers.conf"),
        "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"runc\"\ntmp_dir = \"/run/podman/tmp\"\n\n\
         [engine.runtimes]\nrunc = [\"/usr/sbin/runc\"]\n\n[network]\nnetwork_config_dir = \"/run/podman/net\"\n",
    )?;
    std::fs::write(dir.join("storage.conf"), "[storage]\ndriver = \"vfs\"\ngraphroot = \"/run/podman/root\"\nrunroot = \"/run/podman/runroot\"\n")?;
    Ok(())
}

const PODMAN: &[&str] = &["env", "CONTAINERS_CONF=/mnt/lab/podman/containers.conf", "CONTAINERS_STORAGE_CONF=/mnt/lab/podman/storage.conf", "podman"];

/// `podman ARGS` on `node`; an error unless it exits 0; its stdout.
fn podman(c: &Ctx, node: &str, args: &[&str]) -> Result<String> {
    crate::harness::stdout_if_ok(&format!("`podman {}` on {node}", args.join(" ")), podman_output(c, node, 300, args)?)
}

/// `podman ARGS` on `node` within `secs` seconds, whatever its exit code.
fn podman_output(c: &Ctx, node: &str, secs: u32, args: &[&str]) -> Result<std::process::Output> {
    let secs = secs.to_string();
    let mut a = vec!["exec", node, "--timeout", &secs, "--"];
    a.extend_from_slice(PODMAN);
    a.extend_from_slice(args);
    c.rdmig(&a)
}

/// Podman ready on `node`; with the perftest image (built on the host by
/// lab/images/perftest-image.sh) imported if `image`.
fn podman_ready(c: &Ctx, node: &str, image: bool) -> Result<()> {
    // The nodes' init mounts no cgroup file system; runc needs cgroup2.
    c.exec_ok(node, &["sh", "-c", "mountpoint -q /sys/fs/cgroup || mount -t cgroup2 none /sys/fs/cgroup; mkdir -p /run/podman/net /run/podman/tmp"])?;
    if image {
        podman(c, node, &["import", "/mnt/lab/rdmig-perftest.tar", IMAGE])?;
    } else {
        let _ = podman_output(c, node, 120, &["image", "rm", "--force", "--ignore", IMAGE]);
    }
    Ok(())
}

/// Removes the scenario's containers everywhere (ends the test's containers whatever happened).
fn remove_containers(c: &Ctx) {
    for n in ["node1", "node2", "node3"] {
        let _ = podman_output(c, n, 60, &["rm", "-f", "--ignore", "ctr-srv", "ctr-cli"]);
    }
}

/// Sets the nodes up (Podman, the image on `image_on`), runs `body`, says what the containers
/// said if it failed, and removes them.
fn with_containers(c: &Ctx, image_on: &[&str], body: impl FnOnce(&Ctx) -> Result<()>) -> Result<()> {
    for tool in ["podman", "runc"] {
        ensure!(
            std::process::Command::new("sh").args(["-c", &format!("command -v {tool}")]).output()?.status.success(),
            "{tool} is not installed on this host (the nodes run its programs): apt-get install podman runc (scripts/setup.sh does)"
        );
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/images/perftest-image.sh");
    let tar = share().join("rdmig-perftest.tar");
    if !tar.exists() {
        let o = std::process::Command::new(script).arg(&tar).output().with_context(|| format!("run {script}"))?;
        ensure!(o.status.success(), "{script}: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    }
    write_podman_conf()?;
    remove_containers(c);
    for n in ["node1", "node2", "node3"] {
        podman_ready(c, n, image_on.contains(&n))?;
        let _ = c.rdmig(&["addr", "del", n, SERVICE_ADDR]);
    }
    let r = body(c);
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
            let log = c
                .exec_ok(
                    n,
                    &[
                        "sh",
                        "-c",
                        "for f in $(find /run/podman -name restore.log); do echo \"== $f\"; grep -E 'rdmig_criu|Error|rror \\(' $f | tail -n 30; done",
                    ],
                )
                .unwrap_or_default();
            if !log.trim().is_empty() {
                eprintln!("=== {n}: CRIU's restore logs ===\n{log}");
            }
        }
    }
    remove_containers(c);
    for n in ["node1", "node3"] {
        let _ = c.rdmig(&["addr", "del", n, SERVICE_ADDR]);
    }
    r
}

/// An `ib_send_bw` server (`-b`: both ways, if `both_ways`) in container ctr-srv on node1 on
/// SERVICE_ADDR, its client in ctr-cli on node2, `iters` iterations; returns once traffic runs.
fn start_benchmark(c: &Ctx, iters: u64, both_ways: bool) -> Result<()> {
    let gid = |node: &str, ip: &str| -> Result<String> { Ok(c.exec_ok(node, &["/usr/bin/rdmig", "rxe", "gid-index", "--ip", ip])?.trim().to_string()) };
    c.rdmig_ok(&["addr", "add", "node1", SERVICE_ADDR])?;
    let (sg, cg) = (gid("node1", SERVICE_ADDR)?, gid("node2", "10.0.1.12")?);
    let n = iters.to_string();
    // The container gets its uverbs device and nothing else of rdma (its restore borrows rxe's
    // control device from the node's agent); memlock as RDMA needs.
    let run_args = |name: &'static str| -> Vec<&'static str> {
        vec!["run", "-d", "--name", name, "--network", "host", "--device", "/dev/infiniband/uverbs0", "--ulimit", "memlock=-1:-1"]
    };
    let mut a = run_args("ctr-srv");
    a.extend_from_slice(&[IMAGE, "ib_send_bw", PERFTEST_KEEP_GOING, "-d", "rxe0", "-x", &sg, "-s", "4096", "-n", &n]);
    if both_ways {
        a.push("-b");
    }
    podman(c, "node1", &a)?;
    crate::harness::wait_until("ib_send_bw to listen in its container", Duration::from_secs(60), || {
        Ok(!c.exec_ok("node1", &["ss", "-Hltn", "sport = :18515"])?.trim().is_empty())
    })?;
    let mut a = run_args("ctr-cli");
    a.extend_from_slice(&[IMAGE, "ib_send_bw", PERFTEST_KEEP_GOING, "-d", "rxe0", "-x", &cg, "-s", "4096", "-n", &n]);
    if both_ways {
        a.push("-b");
    }
    a.push(SERVICE_ADDR);
    podman(c, "node2", &a)?;
    // The server's pid on node1 (podman inspect takes seconds in the lab, the transfer does not
    // wait).
    // (One way, perftest leaves the server's QP in RTR: it only receives.)
    let pid = server_pid(c, "node1")?;
    crate::harness::wait_until("the transfer to start", Duration::from_secs(60), || {
        let st = c.exec_ok("node1", &["/usr/bin/rdmig", "softroce", "status"])?;
        Ok(st.lines().any(|l| l.starts_with("qp") && l.contains(&format!("pid={pid}")) && (l.contains("state=rts") || l.contains("state=rtr"))))
    })?;
    Ok(())
}

/// The pid of the server's ib_send_bw on `node`.
fn server_pid(c: &Ctx, node: &str) -> Result<i32> {
    c.exec_ok(node, &["pgrep", "-x", "ib_send_bw"])?.trim().parse().with_context(|| format!("the server container's ib_send_bw on {node}"))
}

/// Both containers end by themselves, the server's on `server_node`, with the exact count.
fn benchmark_finishes(c: &Ctx, server_node: &str, iters: u64) -> Result<()> {
    for (node, name) in [(server_node, "ctr-srv"), ("node2", "ctr-cli")] {
        let code = podman(c, node, &["wait", name]).with_context(|| format!("podman wait {name} on {node}"))?;
        let log = podman(c, node, &["logs", name])?;
        perftest_calibration(&format!("{name} on {node}"), &log);
        ensure!(code.trim() == "0", "{name} on {node} exited with {}:\n{log}", code.trim());
        ensure!(perftest_iterations(&log) == Some(iters), "{name} on {node} did not finish its {iters} iterations:\n{log}");
    }
    println!("  both containers finished {iters} iterations, the server's on {server_node}");
    Ok(())
}

/// The state of container `name` on `node` (None: there is none).
fn state(c: &Ctx, node: &str, name: &str) -> Result<Option<String>> {
    let o = podman_output(c, node, 120, &["inspect", "-f", "{{.State.Status}}", name])?;
    Ok(o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string()))
}

/// `rdmig migrate --container ctr-srv [EXTRA]` from node1 to node3; its exit code and report.
fn migrate_container(c: &Ctx, extra: &[&str]) -> Result<(i32, Value)> {
    let mut a = vec![
        "--name",
        LAB_NAME,
        "--dir",
        LAB_BASE,
        "on",
        "node1",
        "--to-node",
        "node3",
        "--",
        "migrate",
        "--container",
        "ctr-srv",
        "--json",
        "--tcp-established",
        "--move-addr",
        SERVICE_ADDR,
        // The archive is small (some 100 KiB): no transport probes.
        "--transport",
        "tcp",
        "--containers-conf",
        CONTAINERS_CONF,
        "--containers-storage-conf",
        STORAGE_CONF,
    ];
    a.extend_from_slice(extra);
    let t0 = Instant::now();
    let o = std::process::Command::new(&c.bin).args(a).output()?;
    let code = o.status.code().unwrap_or(-1);
    let r: Value = serde_json::from_slice(&o.stdout)
        .with_context(|| format!("migrate printed no report (exit {code}):\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))?;
    let outcome = r["outcome"]["outcome"].as_str().unwrap_or("?");
    println!("  `rdmig migrate --container` took {:.1} s: exit {code}, {outcome}; {}", t0.elapsed().as_secs_f64(), spans(&r));
    Ok((code, r))
}

/// An `ib_send_bw -b` server in Podman container ctr-srv on node1 (its client in a container on
/// node2) is moved with `rdmig migrate --container` three times while the benchmark runs:
/// - to node3, where a container named ctr-srv turns up while node1's is being checkpointed:
///   the checks passed, the checkpoint is taken and sent, the destination refuses to restore
///   it, and the migration rolls back: the container runs on node1 again, restored from its
///   checkpoint, its address back, and node3's ctr-srv is left alone;
/// - to node3 again: refused by the checks (that name is taken there), the container untouched
///   (the same process runs);
/// - to node3 once that container is gone: migrated, the stopped copy on node1 removed.
///
/// Both containers finish with the exact iteration count.
fn container_rdmig_migrate_podman_server_rolled_back_refused_then_moved(c: &Ctx) -> Result<()> {
    // The destination's agent restores with the lab's Podman configuration.
    let flags = [format!("--containers-conf={CONTAINERS_CONF}"), format!("--containers-storage-conf={STORAGE_CONF}")];
    let _agent = crate::faults::AgentFlags::set(c, "node3", &flags.iter().map(String::as_str).collect::<Vec<_>>())?;
    with_containers(c, &["node1", "node2", "node3"], rdmig_migrate_podman)
}

fn rdmig_migrate_podman(c: &Ctx) -> Result<()> {
    // The server is stopped twice, for some 10 s each (its client gives up after 120 s without
    // a message). The last stop came about 60 s into the traffic, which ran some 2000
    // iterations a second both ways (2026-12-05; 900 to 2800 as the host is loaded, and the
    // migrations slow down with it): 120000 were over by then, 250000 leave a margin of 2.
    let iters = 250_000u64;
    start_benchmark(c, iters, true)?;

    // The migration begins at node3 once its checks passed; the checkpoint (some 50 s) follows.
    let begun = || crate::faults::agent_log("node3").matches("migration begins").count();
    let before = begun();
    let (code, r) = std::thread::scope(|s| -> Result<(i32, Value)> {
        let m = s.spawn(|| migrate_container(c, &[]));
        crate::harness::wait_until("the migration to begin at node3", Duration::from_secs(300), || Ok(begun() > before || m.is_finished()))?;
        podman(c, "node3", &["create", "--name", "ctr-srv", IMAGE, "true"])?;
        m.join().map_err(|_| anyhow::anyhow!("the migration's thread panicked"))?
    })?;
    let reason = r["outcome"]["reason"].as_str().unwrap_or_default();
    ensure!(code == 3 && r["outcome"]["outcome"] == "rolled_back", "ctr-srv made at node3 during the checkpoint: exit {code}, {}", r["outcome"]);
    ensure!(reason.contains("a container named ctr-srv exists here already") && !reason.contains("; and "), "the rollback's reason: {reason}");
    ensure!(r["container"] == "ctr-srv", "the report names no container: {}", r["container"]);
    ensure!(state(c, "node1", "ctr-srv")?.as_deref() == Some("running"), "after the rollback ctr-srv on node1 is not running");
    ensure!(state(c, "node3", "ctr-srv")?.as_deref() == Some("created"), "the rollback touched node3's own ctr-srv");
    ensure!(state(c, "node2", "ctr-cli")?.as_deref() == Some("running"), "the client's container stopped");
    ensure!(c.exec_ok("node1", &["ip", "-4", "-o", "addr"])?.contains(&format!("{SERVICE_ADDR}/")), "{SERVICE_ADDR} did not come back to node1");
    println!("  rolled back: ctr-srv runs on node1 again ({reason})");

    let pid = server_pid(c, "node1")?;
    let (code, r) = migrate_container(c, &[])?;
    let reason = r["outcome"]["reason"].as_str().unwrap_or_default();
    ensure!(code == 2 && r["outcome"]["outcome"] == "refused", "to node3 with a ctr-srv there: exit {code}, {}", r["outcome"]);
    ensure!(reason.contains("a container named ctr-srv exists here already"), "the refusal's reason: {reason}");
    ensure!(server_pid(c, "node1")? == pid, "the refused migration touched the server's process");
    println!("  refused: {reason}");
    podman(c, "node3", &["rm", "ctr-srv"])?;

    let (code, r) = migrate_container(c, &[])?;
    let moved = Instant::now();
    ensure!(code == 0 && r["outcome"]["outcome"] == "migrated", "to node3: exit {code}, {}", r["outcome"]);
    ensure!(r["strategy"] == "stop-and-copy" && r["final_bytes"].as_u64().unwrap_or(0) > 0, "report: {} {}", r["strategy"], r["final_bytes"]);
    ensure!(state(c, "node1", "ctr-srv")?.is_none(), "the stopped ctr-srv is left on node1");
    ensure!(state(c, "node3", "ctr-srv")?.as_deref() == Some("running"), "ctr-srv does not run on node3");
    println!("  migrated: {}, archive {:.0} KiB", downtime(&r)?, r["final_bytes"].as_f64().unwrap_or(0.0) / 1024.0);
    // CRIU, inside the container's device cgroup at node3, could not open /dev/rxe_ctl and
    // borrowed the node agent's.
    let agent = crate::faults::agent_log("node3");
    ensure!(agent.contains("lent /dev/rxe_ctl to CRIU (criu)"), "node3's agent lent CRIU no control device:\n{}", tail(&agent, 20));
    benchmark_finishes(c, "node3", iters)?;
    // The margin its count left (what a smaller count would save, and risk).
    println!("  the benchmark ended {:.0} s after the last move", moved.elapsed().as_secs_f64());
    Ok(())
}

/// An `ib_send_bw` server without `-b` (it only receives: its QP stays in RTR) in container
/// ctr-srv on node1, its client in a container on node2, moved to node3 twice while the
/// benchmark runs:
/// - `rdmig migrate --container` is SIGKILLed during its checkpoint (the freeze): Podman goes
///   on and leaves the container checkpointed, not running. `rdmig recover` on node1 waits for
///   Podman, tells node3 to abort, and restores the container on node1 from its checkpoint;
/// - `--strategy precopy`: Podman pre-checkpoints it while it runs (that archive sent
///   meanwhile), then checkpoints it `--with-previous`, and node3's agent restores both
///   archives (`--import-previous`). That agent is killed after the restore, before the commit
///   (`rdmig migrate` held meanwhile); its next one takes the running container up from its
///   journal and the source commits it there.
///
/// Both containers finish with the exact iteration count.
fn container_rdmig_migrate_podman_one_way_server_killed_recovered_then_pre_checkpointed(c: &Ctx) -> Result<()> {
    let flags = [format!("--containers-conf={CONTAINERS_CONF}"), format!("--containers-storage-conf={STORAGE_CONF}")];
    let _agent = crate::faults::AgentFlags::set(c, "node3", &flags.iter().map(String::as_str).collect::<Vec<_>>())?;
    with_containers(c, &["node1", "node2", "node3"], |c| {
        // The server is stopped for some 20 s each time, and the two moves, the recovery and the
        // agent's restart take some 120 s; one way ran some 2500 iterations a second around one
        // move (2026-12-06): 400000 leave a margin near 1.5.
        let iters = 400_000u64;
        start_benchmark(c, iters, false)?;
        killed_during_the_checkpoint_then_recovered(c)?;

        let before = crate::faults::agent_log("node3").matches("pre_checkpoint=true").count();
        let holder = hold_the_commit_while_node3s_agent_restarts(c);
        let res = migrate_container(c, &["--strategy", "precopy"]);
        let moved = Instant::now();
        holder.join().map_err(|_| anyhow::anyhow!("the holding thread panicked"))??;
        let (code, r) = res?;
        ensure!(code == 0 && r["outcome"]["outcome"] == "migrated", "to node3: exit {code}, {}", r["outcome"]);
        ensure!(r["strategy"] == "precopy", "report: strategy {}", r["strategy"]);
        let rounds = r["rounds"].as_array().cloned().unwrap_or_default();
        ensure!(rounds.len() == 1 && rounds[0]["bytes"].as_u64().unwrap_or(0) > 0, "one pre-checkpoint round with its archive: {rounds:?}");
        ensure!(r["final_bytes"].as_u64().unwrap_or(0) > 0, "no final archive: {}", r["final_bytes"]);
        ensure!(state(c, "node1", "ctr-srv")?.is_none(), "the stopped ctr-srv is left on node1");
        ensure!(state(c, "node3", "ctr-srv")?.as_deref() == Some("running"), "ctr-srv does not run on node3");
        let log = crate::faults::agent_log("node3");
        ensure!(log.matches("pre_checkpoint=true").count() > before, "node3's agent did not restore with the pre-checkpoint:\n{}", tail(&log, 20));
        ensure!(log.contains("taken up from the journal"), "node3's new agent did not take the restored container up:\n{}", tail(&log, 20));
        println!(
            "  migrated with a pre-checkpoint: pre-checkpoint archive {:.0} KiB (sent while it ran), final archive {:.0} KiB, {}",
            rounds[0]["bytes"].as_f64().unwrap_or(0.0) / 1024.0,
            r["final_bytes"].as_f64().unwrap_or(0.0) / 1024.0,
            downtime(&r)?
        );
        benchmark_finishes(c, "node3", iters)?;
        println!("  the benchmark ended {:.0} s after the last move", moved.elapsed().as_secs_f64());
        Ok(())
    })
}

/// While `rdmig migrate --container ctr-srv` moves it to node3: once Podman restores it there,
/// the migration at node1 is held (SIGSTOP) until the restore has ended, node3's agent has been
/// SIGKILLed and its next one listens; then it goes on. The source has lost the restore's
/// reply, asks node3's new agent, which took the running container up from its journal, and
/// commits it there.
fn hold_the_commit_while_node3s_agent_restarts(c: &Ctx) -> std::thread::JoinHandle<Result<()>> {
    let bin = c.bin.clone();
    std::thread::spawn(move || -> Result<()> {
        let sh = |node: &str, script: &str| -> Result<String> {
            let o = crate::harness::lab_exec(&bin, node).args(["sh", "-c", script]).output()?;
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let every = Duration::from_millis(100);
        // `[r]`, `[m]`: the patterns do not match the shell that runs pgrep or pkill.
        let (restore, migrate_run) = ("'container [r]estore --import'", "'[m]igrate --container ctr-srv'");
        crate::harness::wait_until_every("Podman to restore ctr-srv at node3", Duration::from_secs(300), every, || {
            Ok(!sh("node3", &format!("pgrep -f {restore} || true"))?.is_empty())
        })?;
        ensure!(sh("node1", &format!("pkill -STOP -f {migrate_run} && echo held"))? == "held", "no `rdmig migrate` to hold at node1");
        // From here on `rdmig migrate` is let go whatever happens.
        let restarted = (|| -> Result<()> {
            crate::harness::wait_until_every("Podman's restore at node3 to end", Duration::from_secs(180), every, || {
                Ok(sh("node3", &format!("pgrep -f {restore} || true"))?.is_empty())
            })?;
            crate::faults::kill_agent_until_back(&bin, "node3", Duration::from_secs(120))
        })();
        let resumed = sh("node1", &format!("pkill -CONT -f {migrate_run} && echo resumed"));
        restarted?;
        ensure!(resumed? == "resumed", "`rdmig migrate` at node1 could not be continued");
        println!("  node3's agent was killed after Podman restored ctr-srv there, `rdmig migrate` held until it was back");
        Ok(())
    })
}

/// `rdmig migrate --container ctr-srv` to node3, SIGKILLed once Podman's (final) checkpoint
/// runs; then `rdmig recover` on node1 brings the container back there, and node3 holds none.
fn killed_during_the_checkpoint_then_recovered(c: &Ctx) -> Result<()> {
    // The final checkpoint's archive is on Podman's command line; `[t]`: not the probe's own.
    let probe = "pgrep -f 'final/container-checkpoin[t].tar' || true".to_string();
    let act = ["pkill", "-KILL", "-f", "rdmig migrate"].map(String::from).to_vec();
    let killer = crate::faults::when_seen(c, "node1", probe, "node1", act, Duration::from_secs(180), Duration::from_millis(200));
    let res = migrate_container(c, &["--strategy", "stop-and-copy"]);
    ensure!(killer.join().map_err(|_| anyhow::anyhow!("the killer thread panicked"))??, "the checkpoint was never seen, so rdmig migrate was not killed");
    ensure!(res.is_err(), "rdmig migrate finished with a report although it was killed: {:?}", res.ok());
    // Podman outlives the run that started it.
    crate::harness::wait_until("Podman's checkpoint on node1 to end", Duration::from_secs(180), || {
        Ok(c.exec_ok("node1", &["sh", "-c", "pgrep -f 'container checkpoin[t]' || true"])?.trim().is_empty())
    })?;
    let st = state(c, "node1", "ctr-srv")?;
    println!("  rdmig migrate killed during the checkpoint; ctr-srv on node1 is {st:?}");

    // The agent's periodic check may be recovering the same migration right now: it holds the
    // migration's lock meanwhile, and `rdmig recover` answers "busy" (exit 5). Asked again once
    // that recovery is over, it finds the migration ended.
    let t = Instant::now();
    let (mut code, mut out) = crate::faults::on(c, "node1", &["recover", "--json"])?;
    while code == 5 && out.contains("\"busy\"") && t.elapsed() < Duration::from_secs(90) {
        println!("  rdmig recover: busy ({}), asking again", out.trim().replace('\n', " "));
        std::thread::sleep(Duration::from_secs(2));
        (code, out) = crate::faults::on(c, "node1", &["recover", "--json"])?;
    }
    println!("  rdmig recover (exit {code}, {:.1} s): {}", t.elapsed().as_secs_f64(), out.trim().replace('\n', " "));
    ensure!(code == 0, "rdmig recover exit {code}: {out}");
    let done: Vec<Value> = serde_json::from_str(&out).with_context(|| format!("recover printed {out:?}"))?;
    // The agent's periodic check may have come first; either way the journal ends it.
    ensure!(done.iter().all(|r| r["outcome"] == "resumed"), "recovery did not restore the container here: {out}");
    ensure!(state(c, "node1", "ctr-srv")?.as_deref() == Some("running"), "after recovery ctr-srv on node1 is not running");
    ensure!(state(c, "node3", "ctr-srv")?.is_none(), "a ctr-srv is on node3 after recovery");
    ensure!(c.exec_ok("node1", &["ip", "-4", "-o", "addr"])?.contains(&format!("{SERVICE_ADDR}/")), "{SERVICE_ADDR} is not on node1 after recovery");
    crate::faults::no_migration_in_flight(c, "node1")?;
    println!("  recovered: ctr-srv runs on node1 again, node3 holds nothing");
    Ok(())
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
