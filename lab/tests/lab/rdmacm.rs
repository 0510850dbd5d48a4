//! rdma_cm scenarios (issue 19): processes that hold `/dev/infiniband/rdma_cm` (librdmacm's
//! event channel): rdma-core's `ucmatose`, and perftest's `-R` mode, which connects its control and
//! data QPs through the RDMA connection manager.
//!
//! What moves today: CM IDs that are not connected (idle, bound, listening), recreated by the
//! CRIU plugin with the numbers the process knows, through our rdma_ucm (patch 22). A process
//! with a connected CM ID is refused at the dump with the reason, and keeps running where it was.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

use crate::e2e::{clear_addrs, finish, migrate, migrate_run, prepare, spawn, Pair, SERVICE_ADDR};
use crate::harness::{wait_until, Ctx, Scenario, PERFTEST_KEEP_GOING};

pub const SCENARIOS: &[Scenario] = &[
    ("rdmacm_listening_ucmatose_server_moves_then_serves_its_clients", rdmacm_listening_ucmatose_server_moves_then_serves_its_clients),
    ("rdmacm_connected_ib_send_bw_server_is_refused_and_keeps_running", rdmacm_connected_ib_send_bw_server_is_refused_and_keeps_running),
];

/// perftest's port: its control and data connections both listen there.
const PORT: &str = "18515";
/// ucmatose's (its default).
const UCMATOSE_PORT: &str = "7471";

/// Whether `node`'s kernel lists a CM ID of `pid` listening on `port` (iproute2's
/// `rdma resource show cm_id`, from the kernel's restrack: it shows what the kernel holds, not
/// what the process thinks).
fn listens(c: &Ctx, node: &str, pid: i32, port: &str) -> Result<bool> {
    let out = c.exec_ok(node, &["rdma", "resource", "show", "cm_id"])?;
    let pid = pid.to_string();
    Ok(out.lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.contains(&"LISTEN") && w.iter().any(|x| x.ends_with(&format!(":{port}"))) && w.windows(2).any(|p| p[0] == "pid" && p[1] == pid)
    }))
}

fn server_argv(iters: &str) -> Vec<&str> {
    vec!["ib_send_bw", PERFTEST_KEEP_GOING, "-R", "-d", "rxe0", "-s", "4096", "-n", iters]
}

/// A `ucmatose` server (rdma-core's test of librdmacm) waits for its clients on node1: its
/// rdma_cm file holds one listening ID, bound to the wildcard address. It moves to node3 with
/// the service address, and only then does its client on node2 open its connections, to the
/// moved server: the listening ID was recreated at node3 with its number and user context, so
/// each connect request reaches the process as an event of the ID librdmacm knows, and
/// librdmacm finds node3's rxe0 under the GUID the process knew (node1's). Both sides send and
/// receive every message on every connection, disconnect, and end with status 0.
fn rdmacm_listening_ucmatose_server_moves_then_serves_its_clients(c: &Ctx) -> Result<()> {
    prepare(c, "node1")?;
    let tag = "rdmacm-ucmatose";
    let args = ["-p", UCMATOSE_PORT, "-c", "4", "-C", "200", "-S", "4096"];
    let mut s = vec!["ucmatose"];
    s.extend_from_slice(&args);
    let server = spawn(c, "node1", &format!("{tag}-server.log"), &s)?;
    wait_until("ucmatose to listen", Duration::from_secs(60), || listens(c, "node1", server, UCMATOSE_PORT))?;
    let r = migrate(c, server, "node1", "node3", Some(SERVICE_ADDR), &[])?;
    ensure!(
        listens(c, "node3", server, UCMATOSE_PORT)?,
        "the restored server at node3 has no listening CM ID: {}",
        c.exec_ok("node3", &["rdma", "resource", "show", "cm_id"])?
    );
    println!("  listening server moved: downtime {:.0} ms", r["summary"]["downtime_ns"].as_f64().unwrap_or(f64::NAN) / 1e6);
    let mut cl = vec!["ucmatose", "-s", SERVICE_ADDR];
    cl.extend_from_slice(&args);
    let client = spawn(c, "node2", &format!("{tag}-client.log"), &cl)?;
    for (node, pid) in [("node3", server), ("node2", client)] {
        crate::harness::wait_gone(c, node, pid, Duration::from_secs(300))?;
    }
    for who in ["server", "client"] {
        let out = std::fs::read_to_string(crate::harness::share().join(format!("{tag}-{who}.log")))?;
        let lower = out.to_lowercase();
        ensure!(
            out.lines().any(|l| l.trim() == "return status 0") && !lower.contains("fail") && !lower.contains("error"),
            "ucmatose {who} did not end well:\n{out}"
        );
    }
    println!("  4 connections x 200 messages each way after the server moved; both sides returned 0");
    clear_addrs(c);
    Ok(())
}

/// Mid-run, both of the server's connections (perftest's control and data QPs) are connected
/// CM IDs, which rdmig cannot move yet: the dump is refused with the reason, the migration
/// rolls back, and both sides still finish exactly.
fn rdmacm_connected_ib_send_bw_server_is_refused_and_keeps_running(c: &Ctx) -> Result<()> {
    prepare(c, "node1")?;
    // Measured: ... (to be filled from the first runs).
    let n = 80_000u64;
    let iters = n.to_string();
    let tag = "rdmacm-connected";
    let server = spawn(c, "node1", &format!("{tag}-server.log"), &server_argv(&iters))?;
    wait_until("ib_send_bw -R to listen", Duration::from_secs(60), || listens(c, "node1", server, PORT))?;
    let mut cl = server_argv(&iters);
    cl.push(SERVICE_ADDR);
    let client = spawn(c, "node2", &format!("{tag}-client.log"), &cl)?;
    // perftest -R connects twice: its control QP, then, after a handshake over it, the data QP.
    // A freeze between the two makes the client's data connection find no listener, and its
    // client gives up at the first reject (its retry reuses IDs it has destroyed): so the
    // migration starts once both QPs run.
    let tool = c.lab_tool("rdmig");
    wait_until("the data transfer to start", Duration::from_secs(60), || {
        let st = c.exec_ok("node1", &[&tool, "softroce", "status"])?;
        let running =
            st.lines().filter(|l| l.starts_with("qp") && l.contains(&format!("pid={server} ")) && (l.contains("state=rts") || l.contains("state=rtr")));
        Ok(running.count() >= 2)
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let p = Pair { server, client, iters: n, tag: tag.into(), started: Instant::now() };
    let (code, r) = migrate_run(c, server, "node1", "node3", Some(SERVICE_ADDR), &[])?;
    let reason = r["outcome"]["reason"].as_str().unwrap_or_default();
    ensure!(code == 3 && r["outcome"]["outcome"] == "rolled_back", "expected the dump to be refused and rolled back: exit {code}, {}", r["outcome"]);
    ensure!(reason.contains("connected"), "the refusal does not say that a CM ID is connected: {reason}");
    ensure!(crate::harness::proc_state(c, "node1", server)?.is_some_and(|s| !s.starts_with('T')), "the server does not run at node1 after the rollback");
    println!("  refused as it should be: {}", reason.lines().find(|l| l.contains("connected")).unwrap_or(reason));
    finish(c, &p, "node1", "node2")
}
