//! rdma_cm scenarios (issue 19): processes that hold `/dev/infiniband/rdma_cm` (librdmacm's
//! event channel): rdma-core's `ucmatose`, and perftest's `-R` mode, which connects its control and
//! data QPs through the RDMA connection manager.
//!
//! CM IDs move with their numbers, recreated by the CRIU plugin through our rdma_ucm: idle,
//! bound and listening ones (patch 23), and connected ones, whose IB CM state is recreated
//! without a handshake (patches 26-30), so that the peer's later disconnect still reaches them.
//! Events the process had not read yet are queued again.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

use crate::e2e::{clear_addrs, finish, migrate, migrate_run, prepare, spawn, Pair, CLIENT_ADDR, SERVICE_ADDR};
use crate::harness::{wait_until, Ctx, Scenario, PERFTEST_KEEP_GOING};

pub const SCENARIOS: &[Scenario] = &[
    ("rdmacm_listening_ucmatose_server_moves_then_serves_its_clients", rdmacm_listening_ucmatose_server_moves_then_serves_its_clients),
    ("rdmacm_connected_ucmatose_server_moves_mid_run_then_disconnects", rdmacm_connected_ucmatose_server_moves_mid_run_then_disconnects),
    ("rdmacm_connected_ib_send_bw_server_moves_mid_run", rdmacm_connected_ib_send_bw_server_moves_mid_run),
    ("rdmacm_connected_ib_write_bw_server_moves_mid_run", rdmacm_connected_ib_write_bw_server_moves_mid_run),
    ("rdmacm_connected_ib_send_bw_client_moves_mid_run", rdmacm_connected_ib_send_bw_client_moves_mid_run),
    ("rdmacm_connected_ucmatose_rolled_back_still_tells_its_peer_when_killed", rdmacm_connected_ucmatose_rolled_back_still_tells_its_peer_when_killed),
    (
        "rdmacm_connected_ucmatose_client_killed_after_the_move_disconnects_the_server",
        rdmacm_connected_ucmatose_client_killed_after_the_move_disconnects_the_server,
    ),
    ("rdmacm_riostream_server_moves_mid_run", rdmacm_riostream_server_moves_mid_run),
];

/// perftest's port: its control and data connections both listen there.
const PORT: &str = "18515";
/// ucmatose's (its default).
const UCMATOSE_PORT: &str = "7471";

/// The CM IDs of `pid` that `node`'s kernel holds, each as the words of its line in iproute2's
/// `rdma resource show cm_id` (from the kernel's restrack: what the kernel holds, not what the
/// process thinks).
fn cm_ids(c: &Ctx, node: &str, pid: i32) -> Result<Vec<Vec<String>>> {
    let out = c.exec_ok(node, &["rdma", "resource", "show", "cm_id"])?;
    let pid = pid.to_string();
    Ok(out
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|w| w.windows(2).any(|p| p[0] == "pid" && p[1] == pid))
        .collect())
}

/// Whether `node`'s kernel lists a CM ID of `pid` listening on `port`.
fn listens(c: &Ctx, node: &str, pid: i32, port: &str) -> Result<bool> {
    let port = format!(":{port}");
    Ok(cm_ids(c, node, pid)?.iter().any(|w| w.iter().any(|x| x == "LISTEN") && w.iter().any(|x| x.ends_with(&port))))
}

/// Both sides' output so far, for a failure's message.
fn logs(tag: &str) -> String {
    ["server", "client"]
        .iter()
        .map(|who| {
            let f = crate::harness::share().join(format!("{tag}-{who}.log"));
            format!("--- {who} ({}):\n{}", f.display(), std::fs::read_to_string(&f).unwrap_or_else(|e| e.to_string()))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How many CM IDs of `pid` `node`'s kernel holds connected (state CONNECT).
fn connected(c: &Ctx, node: &str, pid: i32) -> Result<usize> {
    Ok(cm_ids(c, node, pid)?.iter().filter(|w| w.iter().any(|x| x == "CONNECT")).count())
}

fn perftest_argv<'a>(tool: &'a str, iters: &'a str) -> Vec<&'a str> {
    vec![tool, PERFTEST_KEEP_GOING, "-R", "-d", "rxe0", "-s", "4096", "-n", iters]
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

/// A `ucmatose` server on node1 (the lab prepared, with the service address) and its client on
/// node2 streaming to each other over 2 connections, once both are connected at the server.
/// Measured without a move (2026-12-07): 10000 messages of 32 KiB each way take some 75 s,
/// several times what a move takes to its freeze.
fn ucmatose_streaming(c: &Ctx, tag: &str) -> Result<(i32, i32)> {
    prepare(c, "node1")?;
    let args = ["-p", UCMATOSE_PORT, "-c", "2", "-C", "10000", "-S", "32768"];
    let mut s = vec!["ucmatose"];
    s.extend_from_slice(&args);
    let server = spawn(c, "node1", &format!("{tag}-server.log"), &s)?;
    wait_until("ucmatose to listen", Duration::from_secs(60), || listens(c, "node1", server, UCMATOSE_PORT))?;
    let mut cl = vec!["ucmatose", "-s", SERVICE_ADDR];
    cl.extend_from_slice(&args);
    let client = spawn(c, "node2", &format!("{tag}-client.log"), &cl)?;
    wait_until("both connections", Duration::from_secs(60), || Ok(connected(c, "node1", server)? >= 2))?;
    Ok((server, client))
}

/// `ucmatose` with two connections moves to node3 while it streams messages to its client on
/// node2: its rdma_cm file then holds a listening ID and two connected ones (passive: created
/// by the client's requests), their QPs busy. After the move both sides finish every message on
/// every connection, then the server disconnects: its DREQs leave from the IB CM IDs recreated
/// at node3, the client sees both connections end and answers, and the server sees its
/// disconnects complete. The client, whose rdma_cm watches the server's address, also sees that
/// address change MAC mid-run without its connections being reported unreachable (patch 30).
/// Both sides return status 0.
fn rdmacm_connected_ucmatose_server_moves_mid_run_then_disconnects(c: &Ctx) -> Result<()> {
    let tag = "rdmacm-ucmatose-mid";
    let (server, client) = ucmatose_streaming(c, tag)?;
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    migrate(c, server, "node1", "node3", Some(SERVICE_ADDR), &[])?;
    ensure!(
        connected(c, "node3", server)? >= 2,
        "node3's kernel holds no connected CM IDs of the restored server: {}",
        c.exec_ok("node3", &["rdma", "resource", "show", "cm_id"])?
    );
    let moved = started.elapsed();
    for (node, pid) in [("node2", client), ("node3", server)] {
        crate::harness::wait_gone(c, node, pid, Duration::from_secs(300))
            .with_context(|| format!("{}\nnode3's CM IDs:\n{}", logs(tag), c.exec_ok("node3", &["rdma", "resource", "show", "cm_id"]).unwrap_or_default()))?;
    }
    for who in ["server", "client"] {
        let out = std::fs::read_to_string(crate::harness::share().join(format!("{tag}-{who}.log")))?;
        let lower = out.to_lowercase();
        ensure!(
            out.lines().any(|l| l.trim() == "return status 0")
                && (who == "client" || out.contains("disconnected"))
                && !lower.contains("fail")
                && !lower.contains("error"),
            "ucmatose {who} did not end well:\n{out}"
        );
    }
    println!(
        "  2 connections x 10000 messages of 32 KiB each way, then disconnected: both sides returned 0 ({:.0} s after the move started, {:.0} s in all)",
        moved.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    clear_addrs(c);
    Ok(())
}

/// perftest over rdma_cm (`-R`), the server (`tool`) moving from node1 to node3 mid-run, with
/// the client on node2 (from `client_addr`, a movable address, when the client moves instead).
fn perftest_rdmacm(c: &Ctx, tool: &str, tag: &str, iters: u64, client_addr: Option<&str>) -> Result<Pair> {
    prepare(c, "node1")?;
    if let Some(a) = client_addr {
        c.rdmig_ok(&["addr", "add", "node2", a])?;
        // rdma_resolve_addr() takes the route's source address: the movable one.
        c.exec_ok("node2", &["ip", "route", "replace", &format!("{SERVICE_ADDR}/32"), "dev", "vxlan0", "src", a])?;
    }
    let n = iters.to_string();
    // perftest -R connects twice: its control QP, then, after a handshake over it, the data QP,
    // to a listening ID the server makes after the handshake. Its client gives up at the first
    // reject (its retry reuses IDs it has destroyed), and under emulation the client's second
    // request sometimes comes before the server listens again (REJ 8, no listener; seen with no
    // migration anywhere near). That race is perftest's: the pair is started again, at most
    // three times, before anything is migrated. The migration starts once both connections
    // are up and the data QP runs, since a freeze between the two would lose the same race.
    let rdmig = c.lab_tool("rdmig");
    let mut attempt = 1;
    let (server, client) = loop {
        let server = spawn(c, "node1", &format!("{tag}-server.log"), &perftest_argv(tool, &n))?;
        wait_until(&format!("{tool} -R to listen"), Duration::from_secs(60), || listens(c, "node1", server, PORT))?;
        let mut cl = perftest_argv(tool, &n);
        cl.push(SERVICE_ADDR);
        let client = spawn(c, "node2", &format!("{tag}-client.log"), &cl)?;
        let mut client_gone = false;
        wait_until("the data transfer to start", Duration::from_secs(60), || {
            client_gone = crate::harness::proc_state(c, "node2", client)?.is_none();
            let st = c.exec_ok("node1", &[&rdmig, "softroce", "status"])?;
            let running =
                st.lines().filter(|l| l.starts_with("qp") && l.contains(&format!("pid={server} ")) && (l.contains("state=rts") || l.contains("state=rtr")));
            Ok(client_gone || (running.count() >= 2 && connected(c, "node1", server)? >= 2))
        })
        .with_context(|| format!("{}\nnode1's CM IDs:\n{}", logs(tag), c.exec_ok("node1", &["rdma", "resource", "show", "cm_id"]).unwrap_or_default()))?;
        if !client_gone {
            break (server, client);
        }
        let out = logs(tag);
        ensure!(attempt < 3 && out.contains("RDMA_CM_EVENT_REJECTED"), "the {tool} client ended before its transfer started (attempt {attempt}):\n{out}");
        println!(
            "  attempt {attempt}: the {tool} client's data connection was rejected before the server listened again (perftest's race); starting the pair again"
        );
        let _ = c.rdmig(&["exec", "node1", "--", "kill", "-9", &server.to_string()]);
        crate::harness::wait_gone(c, "node1", server, Duration::from_secs(30))?;
        attempt += 1;
    };
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    Ok(Pair { server, client, iters, tag: tag.into(), started })
}

/// `ib_send_bw -R`: the server's control and data connections (connected CM IDs, passive) and
/// the ESTABLISHED event of the control one, which perftest never reads, move with it; the
/// client keeps sending; both sides finish exactly.
fn rdmacm_connected_ib_send_bw_server_moves_mid_run(c: &Ctx) -> Result<()> {
    // Measured without a move (2026-12-07): ib_write_bw -R ran 300000 iterations in 178 s; the
    // first runs of this scenario print the margins (see `finish`).
    let p = perftest_rdmacm(c, "ib_send_bw", "rdmacm-send", 150_000, None)?;
    migrate(c, p.server, "node1", "node3", Some(SERVICE_ADDR), &[])?;
    ensure!(connected(c, "node3", p.server)? >= 2, "node3 holds no connected CM IDs of the restored server");
    finish(c, &p, "node3", "node2")
}

/// `ib_write_bw -R`: the client writes into the server's memory by RDMA WRITE while the server
/// moves; both sides finish exactly.
fn rdmacm_connected_ib_write_bw_server_moves_mid_run(c: &Ctx) -> Result<()> {
    // Measured without a move (2026-12-07): 300000 took 178 s.
    let p = perftest_rdmacm(c, "ib_write_bw", "rdmacm-write", 150_000, None)?;
    migrate(c, p.server, "node1", "node3", Some(SERVICE_ADDR), &[])?;
    ensure!(connected(c, "node3", p.server)? >= 2, "node3 holds no connected CM IDs of the restored server");
    finish(c, &p, "node3", "node2")
}

/// The client moves instead (node2 to node3, with its address): its CM IDs are active ones,
/// which hold their bound ports, recreated bound at node3.
fn rdmacm_connected_ib_send_bw_client_moves_mid_run(c: &Ctx) -> Result<()> {
    let p = perftest_rdmacm(c, "ib_send_bw", "rdmacm-client", 150_000, Some(CLIENT_ADDR))?;
    migrate(c, p.client, "node2", "node3", Some(CLIENT_ADDR), &[])?;
    ensure!(connected(c, "node3", p.client)? >= 2, "node3 holds no connected CM IDs of the restored client");
    finish(c, &p, "node1", "node3")
}

/// A migration of a connected `ucmatose` server that fails after its dump: node3's agent is
/// stopped right after the freeze, so `rdmig migrate` gives up at its deadline and the server
/// runs at node1 again. The dump had marked its rdma_cm file moving (so that a source copy killed
/// after a move forgets its connections without a DREQ); the rollback must clear that mark, or
/// the process, which stays here, could no longer tell its peer when it goes. So the server's
/// files show no mark after the rollback, and when it is then killed its client's connections
/// end (the DREQs of its destroyed IDs reach node2: the client's CM IDs leave CONNECT).
fn rdmacm_connected_ucmatose_rolled_back_still_tells_its_peer_when_killed(c: &Ctx) -> Result<()> {
    use crate::faults::{stop_agent_at_freeze, AGENT};
    // The checks take 4-10 s here, then the freeze; the deadline passes while node3's agent is
    // stopped.
    const DEADLINE: &str = "30";
    let tag = "rdmacm-ucmatose-back";
    let (server, client) = ucmatose_streaming(c, tag)?;
    let stopper = stop_agent_at_freeze(c, "node1", server, "node3");
    let res = migrate_run(c, server, "node1", "node3", Some(SERVICE_ADDR), &["--deadline", DEADLINE]);
    let stopped = stopper.join().map_err(|_| anyhow::anyhow!("stopper thread panicked"))?;
    c.exec_ok("node3", &["pkill", "-CONT", "-f", AGENT])?;
    ensure!(stopped?, "the freeze was never seen at node1, so node3's agent was not stopped");
    let (code, r) = res?;
    ensure!(code == 3 && r["outcome"]["outcome"] == "rolled_back", "expected a rollback: exit {code}, {}", r["outcome"]);
    println!("  rolled back: {}", r["outcome"]["reason"].as_str().unwrap_or_default().lines().next().unwrap_or_default());
    ensure!(crate::harness::proc_state(c, "node1", server)?.is_some_and(|s| !s.starts_with('T')), "the server does not run at node1 after the rollback");
    let marked = c.exec_ok("node1", &["sh", "-c", &format!("grep -l '^moving:' /proc/{server}/fdinfo/* || true")])?;
    ensure!(marked.trim().is_empty(), "rdma_cm files of the server are still marked moving after the rollback: {marked}");
    ensure!(connected(c, "node2", client)? >= 2, "the client's connections did not survive the rollback");
    c.exec_ok("node1", &["kill", "-9", &server.to_string()])?;
    wait_until("the client's connections to end", Duration::from_secs(60), || Ok(connected(c, "node2", client)? == 0))
        .with_context(|| c.exec_ok("node2", &["rdma", "resource", "show", "cm_id"]).unwrap_or_default())?;
    println!("  the server, killed after the rollback, disconnected its client");
    let _ = c.rdmig(&["exec", "node2", "--", "kill", "-9", &client.to_string()]);
    clear_addrs(c);
    Ok(())
}

/// The client goes first after the server moved: a `ucmatose` server moves to node3 with its two
/// connections, then its client on node2 is killed mid-transfer. The client's kernel destroys its
/// IDs and sends their DREQs to the moved address: they reach the IB CM IDs recreated at node3,
/// whose connections end (their CM IDs leave CONNECT), so the peer's disconnect tears the moved
/// endpoint down as it would have at the source.
fn rdmacm_connected_ucmatose_client_killed_after_the_move_disconnects_the_server(c: &Ctx) -> Result<()> {
    let tag = "rdmacm-ucmatose-cli-gone";
    let (server, client) = ucmatose_streaming(c, tag)?;
    migrate(c, server, "node1", "node3", Some(SERVICE_ADDR), &[])?;
    ensure!(connected(c, "node3", server)? >= 2, "node3 holds no connected CM IDs of the restored server");
    c.exec_ok("node2", &["kill", "-9", &client.to_string()])?;
    wait_until("the moved server's connections to end", Duration::from_secs(60), || Ok(connected(c, "node3", server)? == 0))
        .with_context(|| c.exec_ok("node3", &["rdma", "resource", "show", "cm_id"]).unwrap_or_default())?;
    println!("  the client, killed after the move, disconnected the moved server's 2 connections");
    let _ = c.rdmig(&["exec", "node3", "--", "kill", "-9", &server.to_string()]);
    clear_addrs(c);
    Ok(())
}

/// rsockets (librdmacm's sockets over RDMA): a `riostream` server, whose rsocket's data moves
/// by RDMA WRITEs into registered buffers (riomap) with credits in shared memory, moves to node3
/// mid-run; every transfer is verified (`-T v`) on both sides, which both end with status 0.
fn rdmacm_riostream_server_moves_mid_run(c: &Ctx) -> Result<()> {
    prepare(c, "node1")?;
    let tag = "rdmacm-riostream";
    let args = ["-p", "7472", "-S", "32768", "-C", "10", "-I", "2000", "-T", "v"];
    let mut s = vec!["riostream"];
    s.extend_from_slice(&args);
    let server = spawn(c, "node1", &format!("{tag}-server.log"), &s)?;
    wait_until("riostream to listen", Duration::from_secs(60), || listens(c, "node1", server, "7472"))?;
    let mut cl = vec!["riostream", "-s", SERVICE_ADDR];
    cl.extend_from_slice(&args);
    let client = spawn(c, "node2", &format!("{tag}-client.log"), &cl)?;
    wait_until("the connection", Duration::from_secs(60), || Ok(connected(c, "node1", server)? >= 1))?;
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    ensure!(crate::harness::proc_state(c, "node2", client)?.is_some(), "riostream's client ended before the move:\n{}", logs(tag));
    migrate(c, server, "node1", "node3", Some(SERVICE_ADDR), &[])?;
    let moved = started.elapsed();
    for (node, pid) in [("node2", client), ("node3", server)] {
        crate::harness::wait_gone(c, node, pid, Duration::from_secs(300)).with_context(|| logs(tag))?;
    }
    for who in ["server", "client"] {
        let out = std::fs::read_to_string(crate::harness::share().join(format!("{tag}-{who}.log")))?;
        // Its result line ("custom 32k 10 2k 1.2g ...": size, transfers, iterations, then the
        // totals) comes only after the last transfer; any failure is a perror() line
        // ("riowrite: ...") or a verify_buf() complaint.
        let result = out.lines().any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.windows(3).any(|x| x == ["32k", "10", "2k"])
        });
        let lower = out.to_lowercase();
        ensure!(result && !lower.contains("fail") && !lower.contains("error") && !out.contains(": "), "riostream {who} did not end well:\n{out}");
    }
    println!("  every transfer verified on both sides ({:.0} s after the move started, {:.0} s in all)", moved.as_secs_f64(), started.elapsed().as_secs_f64());
    clear_addrs(c);
    Ok(())
}
