//! End-to-end scenarios (issue 8): `rdmig migrate` moves an unmodified perftest process between
//! SoftRoCE nodes while its peer keeps running: the CRIU plugin saves and rebuilds the verbs
//! state, the overlay address moves with the process, the peer is paused and resumed, and both
//! sides finish with exactly the iterations they were asked for.

use std::thread;
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use serde_json::Value;

use crate::faults::{agent_log, stopped_probe, when_seen};
use crate::harness::{
    perftest_calibration, perftest_iterations as iterations, proc_state, share, spans, wait_until, Ctx, Scenario, LAB_BASE, LAB_NAME, PERFTEST_KEEP_GOING,
};

pub const SCENARIOS: &[Scenario] = &[
    ("e2e_migrate_ib_send_bw_server_bidirectional_there_and_back", e2e_migrate_ib_send_bw_server_bidirectional_there_and_back),
    ("e2e_migrate_ib_send_bw_server_one_way_rtr", e2e_migrate_ib_send_bw_server_one_way_rtr),
    ("e2e_migrate_ib_send_bw_client", e2e_migrate_ib_send_bw_client),
    ("e2e_migrate_ib_send_bw_four_qps", e2e_migrate_ib_send_bw_four_qps),
    ("e2e_migrate_ib_send_bw_client_onto_its_servers_node", e2e_migrate_ib_send_bw_client_onto_its_servers_node),
    ("e2e_fault_restore_reply_blackholed_then_recover", e2e_fault_restore_reply_blackholed_then_recover),
    ("e2e_fault_source_agent_restarted_with_a_frozen_server", e2e_fault_source_agent_restarted_with_a_frozen_server),
];

/// The address the migrated process's peers use; it moves with the process.
pub(crate) const SERVICE_ADDR: &str = "10.0.1.7";
/// The client's own movable address, for the scenario that moves the client.
pub(crate) const CLIENT_ADDR: &str = "10.0.1.8";

fn gid(c: &Ctx, node: &str, ip: &str) -> Result<String> {
    let bin = c.lab.load()?.rdmig_bin.display().to_string();
    Ok(c.exec_ok(node, &[&bin, "rxe", "gid-index", "--ip", ip])?.trim().to_string())
}

pub(crate) fn spawn(c: &Ctx, node: &str, log: &str, argv: &[&str]) -> Result<i32> {
    let _ = std::fs::remove_file(share().join(log));
    crate::harness::spawn(c, node, Some(&format!("/mnt/lab/{log}")), argv)
}

/// A running ib_send_bw pair: the server listens on SERVICE_ADDR (on `server_node`), the
/// client on `client_node` connects to it.
pub(crate) struct Pair {
    pub server: i32,
    pub client: i32,
    pub iters: u64,
    pub tag: String,
    /// When the traffic was seen flowing: the margins (how long it ran before and after the
    /// migrations) are printed, so that iteration counts can be chosen from measurements.
    pub started: std::time::Instant,
}

fn start_pair(c: &Ctx, server_node: &str, client_node: &str, opts: &[&str], iters: u64, tag: &str) -> Result<Pair> {
    start_pair_from(c, server_node, client_node, None, opts, iters, tag)
}

/// The same; with `client_addr` the client uses that movable address (for RDMA, and for TCP
/// through a host route to the server), so that it can move too.
fn start_pair_from(c: &Ctx, server_node: &str, client_node: &str, client_addr: Option<&str>, opts: &[&str], iters: u64, tag: &str) -> Result<Pair> {
    prepare(c, server_node)?;
    let client_ip = match client_addr {
        Some(a) => {
            c.rdmig_ok(&["addr", "add", client_node, a])?;
            c.exec_ok(client_node, &["ip", "route", "replace", &format!("{SERVICE_ADDR}/32"), "dev", "vxlan0", "src", a])?;
            a.to_string()
        }
        None => c.lab.load()?.plan.node(client_node)?.overlay_ip.to_string(),
    };
    let (sg, cg) = (gid(c, server_node, SERVICE_ADDR)?, gid(c, client_node, &client_ip)?);
    let n = iters.to_string();
    let mut s = vec!["ib_send_bw", PERFTEST_KEEP_GOING, "-d", "rxe0", "-x", &sg, "-s", "4096", "-n", &n];
    s.extend_from_slice(opts);
    let server = spawn(c, server_node, &format!("{tag}-server.log"), &s)?;
    wait_until("ib_send_bw to listen", Duration::from_secs(30), || Ok(!c.exec_ok(server_node, &["ss", "-Hltn", "sport = :18515"])?.trim().is_empty()))?;
    let mut cl = vec!["ib_send_bw", PERFTEST_KEEP_GOING, "-d", "rxe0", "-x", &cg, "-s", "4096", "-n", &n];
    cl.extend_from_slice(opts);
    cl.push(SERVICE_ADDR);
    let client = spawn(c, client_node, &format!("{tag}-client.log"), &cl)?;
    let tool = c.lab_tool("rdmig");
    wait_until("the transfer to start", Duration::from_secs(60), || {
        let st = c.exec_ok(server_node, &[&tool, "softroce", "status"])?;
        Ok(st.lines().any(|l| l.starts_with("qp") && l.contains(&format!("pid={server}")) && (l.contains("state=rts") || l.contains("state=rtr"))))
    })?;
    let started = std::time::Instant::now();
    thread::sleep(Duration::from_secs(2));
    Ok(Pair { server, client, iters, tag: tag.to_string(), started })
}

/// A clean lab for a scenario: no perftest left from a failed one (it would hold QP numbers), no
/// moved address, the number cursors where the agents put them, and the service address on
/// `server_node`.
pub(crate) fn prepare(c: &Ctx, server_node: &str) -> Result<()> {
    for n in ["node1", "node2", "node3"] {
        let _ = c.rdmig(&["exec", n, "--", "pkill", "-9", "-x", "ib_send_bw|ib_write_bw|ucmatose"]);
    }
    clear_addrs(c);
    reset_cursors(c)?;
    c.rdmig_ok(&["addr", "add", server_node, SERVICE_ADDR])?;
    Ok(())
}

/// `rdmig-lab on FROM --to-node TO -- migrate PID --json` with the flags an RDMA process with a TCP side
/// channel on a movable address needs; its exit code and report, whatever the outcome.
pub(crate) fn migrate_run(c: &Ctx, pid: i32, from: &str, to: &str, move_addr: Option<&str>, extra: &[&str]) -> Result<(i32, Value)> {
    let p = pid.to_string();
    let mut a = vec!["--name", LAB_NAME, "--dir", LAB_BASE, "on", from, "--to-node", to, "--", "migrate", &p, "--json", "--tcp-established"];
    if let Some(m) = move_addr {
        a.extend(["--move-addr", m]);
    }
    a.extend_from_slice(extra);
    // A developer's view of where a migration's time goes: RDMIG_LAB_MIGRATE_LOG=debug (or any
    // `rdmig --log` filter) prints its log after its report line.
    let log = std::env::var("RDMIG_LAB_MIGRATE_LOG").ok();
    if let Some(l) = &log {
        a.extend(["--log", l]);
    }
    let t0 = std::time::Instant::now();
    let o = std::process::Command::new(&c.bin).args(&a).output()?;
    let code = o.status.code().unwrap_or(-1);
    let r: Value = serde_json::from_slice(&o.stdout)
        .with_context(|| format!("migrate printed no report (exit {code}):\n{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))?;
    println!("  `rdmig migrate` {from} -> {to} took {:.1} s: {}", t0.elapsed().as_secs_f64(), spans(&r));
    if log.is_some() {
        println!("{}", String::from_utf8_lossy(&o.stderr));
    }
    Ok((code, r))
}

/// [`migrate_run`], checked for success: the process runs at `to` only.
pub(crate) fn migrate(c: &Ctx, pid: i32, from: &str, to: &str, move_addr: Option<&str>, extra: &[&str]) -> Result<Value> {
    let (code, r) = migrate_run(c, pid, from, to, move_addr, extra)?;
    ensure!(code == 0 && r["outcome"]["outcome"] == "migrated", "migration {from} -> {to}: exit {code}, {}", r["outcome"]);
    ensure!(proc_state(c, from, pid)?.is_none(), "the source copy still exists on {from}");
    ensure!(proc_state(c, to, pid)?.is_some(), "pid {pid} does not run on {to}");
    println!(
        "  {from} -> {to}: downtime {:.0} ms, {} pre-copy round(s), {:.1} MiB at the freeze",
        r["summary"]["downtime_ns"].as_f64().unwrap_or(f64::NAN) / 1e6,
        r["rounds"].as_array().map(|a| a.len()).unwrap_or(0),
        r["final_bytes"].as_f64().unwrap_or(0.0) / (1 << 20) as f64
    );
    // What the process's cycle counter does across the move (perftest times itself with it).
    ensure!(r["tsc"].is_object(), "the report has no TSC change: {}", r["tsc"]);
    println!(
        "  its TSC: step {} ms, rate {} -> {} kHz",
        r["tsc"]["step_ns"].as_i64().unwrap_or(0) / 1_000_000,
        r["tsc"]["source_khz"],
        r["tsc"]["destination_khz"]
    );
    Ok(r)
}

/// Waits for both sides on their nodes and checks the exact iteration count and no error.
pub(crate) fn finish(c: &Ctx, p: &Pair, server_node: &str, client_node: &str) -> Result<()> {
    for (node, pid) in [(server_node, p.server), (client_node, p.client)] {
        crate::harness::wait_gone(c, node, pid, Duration::from_secs(400))?;
    }
    let so = std::fs::read_to_string(share().join(format!("{}-server.log", p.tag)))?;
    let co = std::fs::read_to_string(share().join(format!("{}-client.log", p.tag)))?;
    for (who, out) in [("server", &so), ("client", &co)] {
        perftest_calibration(who, out);
        ensure!(iterations(out) == Some(p.iters), "{who} did not finish {} iterations:\n{out}", p.iters);
        ensure!(!out.to_lowercase().contains("error") && !out.contains("Couldn't"), "{who} reported an error:\n{out}");
    }
    println!("  both sides finished {} iterations, {:.0} s after the traffic was seen flowing", p.iters, p.started.elapsed().as_secs_f64());
    clear_addrs(c);
    Ok(())
}

/// Earlier scenarios write the MigrOS sysctls by hand (into the shared manual zone): put every
/// node's allocation cursor back at the start of its own block, where its agent put it.
fn reset_cursors(c: &Ctx) -> Result<()> {
    use rdmig::agent::numbers::NumberRange;
    use rdmig_rxe::Obj;
    let bin = c.lab_tool("rdmig");
    for i in 1..=3u32 {
        let r = NumberRange { node: i, nodes: 3 };
        let q = (r.block(Obj::Qp).0 - Obj::Qp.range().0).to_string();
        let m = (r.block(Obj::Mr).0 - Obj::Mr.range().0).to_string();
        c.exec_ok(&format!("node{i}"), &[&bin, "softroce", "sysctl", "--last-qpn", &q, "--last-mrn", &m])?;
    }
    Ok(())
}

pub(crate) fn clear_addrs(c: &Ctx) {
    for n in ["node1", "node2", "node3"] {
        for a in [SERVICE_ADDR, CLIENT_ADDR] {
            let _ = c.rdmig(&["addr", "del", n, a]);
        }
        let _ = c.rdmig(&["exec", n, "--", "ip", "route", "del", &format!("{SERVICE_ADDR}/32")]);
    }
}

/// The README's scenario: `ib_send_bw -b` server on 10.0.1.7 moves from node1 to node3 mid-run
/// with pre-copy rounds and its pages streamed, then back to node1 with the defaults: the same
/// process migrates twice, each time its peer is paused and resumed.
fn e2e_migrate_ib_send_bw_server_bidirectional_there_and_back(c: &Ctx) -> Result<()> {
    // Measured (f14, 2026-12-06, the checks keeping what earlier migrations learnt): the first
    // move (three rounds) took 13 s, the second 19 s, and 130000 messages each way went on for
    // 75 s: 100000 (some 58 s) leave 1.6x the 35 s the two moves and the pause between take.
    let p = start_pair(c, "node1", "node2", &["-b"], 100_000, "e2e-b")?;
    // ib_send_bw's memory is below the convergence threshold, so rdmig would skip pre-copy:
    // force rounds here, so the plugin's pre-dump and the driver's dirty log take part.
    // Pages streamed too (pre-dumps and the final dump of a process with verbs state).
    let r = migrate(c, p.server, "node1", "node3", Some(SERVICE_ADDR), &["--converge-mib", "0", "--page-stream"])?;
    ensure!(r["rounds"].as_array().is_some_and(|a| !a.is_empty()), "no pre-copy round ran: {}", r["stop_reason"]);
    ensure!(r["pages_streamed"] == true, "pages were not streamed");
    // Some traffic between the two moves.
    thread::sleep(Duration::from_secs(3));
    migrate(c, p.server, "node3", "node1", Some(SERVICE_ADDR), &[])?;
    finish(c, &p, "node1", "node2")
}

/// Without -b the server only receives: its QP is in RTR when it moves (MigrOS needed -b).
fn e2e_migrate_ib_send_bw_server_one_way_rtr(c: &Ctx) -> Result<()> {
    // Measured: `rdmig migrate` done 18 s into the traffic (2026-12-04, loaded machine; 16 s in
    // f10, 2026-12-05); 11.5 s once the checks kept the CPU check and the transport probe from
    // the earlier migrations to node3 (2026-12-06). The traffic runs 0.38 (f10) to 0.5 ms per
    // message: 55000 leave 1.7x or more.
    let p = start_pair(c, "node1", "node2", &[], 55_000, "e2e-rtr")?;
    // An earlier migration from node1 to node3's agent (in the suite: the one there and back,
    // or one before it, within --probe-max-age's hour) left its transport probe: this one takes
    // the path it chose after a short probe.
    let probed = c.exec_ok("node1", &["cat", "/tmp/rdmig-migrate/known/probes.json"]).is_ok_and(|k| k.contains("\"10.99.0.3:7800 "));
    let r = migrate(c, p.server, "node1", "node3", Some(SERVICE_ADDR), &[])?;
    let reason = r["transport"]["reason"].as_str().unwrap_or_default();
    ensure!(!probed || reason.contains(" s ago"), "a probe towards node3 was kept, but the transport's reason is {reason:?}");
    // The default skips pre-copy for a process this small, and says so.
    ensure!(r["stop_reason"].as_str().is_some_and(|s| s.starts_with("nothing to pre-copy")), "stop reason: {}", r["stop_reason"]);
    // The CRIU plugin's share of the final dump and of the restore (MigrRDMA's DumpRDMA and
    // RestoreRDMA) is in the spans: more than nothing, and within its span.
    for (phase, at_source) in [("final_dump", true), ("restore", false)] {
        let (span_ms, rdma_ms) =
            plugin_share(&r, phase, at_source).with_context(|| format!("no {phase} span with the plugin's time in {}", r["summary"]["spans"]))?;
        ensure!(rdma_ms > 0.0 && rdma_ms <= span_ms, "{phase}: the plugin's {rdma_ms} ms against the span's {span_ms} ms");
        println!("  {phase}: {span_ms:.0} ms, of it the plugin's verbs work {rdma_ms:.1} ms");
    }
    finish(c, &p, "node3", "node2")
}

/// A span's duration and the CRIU plugin's share of it (its `rdma_us` attribute), in ms; the
/// span on the source's node or on the other one.
fn plugin_share(r: &Value, phase: &str, at_source: bool) -> Option<(f64, f64)> {
    let s = crate::harness::span(r, phase, at_source)?;
    Some((s["duration_ns"].as_f64()? / 1e6, s["attrs"][rdmig::timeline::RDMA_US].as_f64()? / 1e3))
}

/// The client moves instead, with its own address.
fn e2e_migrate_ib_send_bw_client(c: &Ctx) -> Result<()> {
    // Measured: migrate done 19 s in (31 s with TLS, 2026-12-05; 18.6 s in f14, 2026-12-06);
    // 100000 messages lasted 57 s in f14: 65000 (some 37 s) leave 2x.
    let p = start_pair_from(c, "node1", "node2", Some(CLIENT_ADDR), &["-b"], 65_000, "e2e-cli")?;
    migrate(c, p.client, "node2", "node3", Some(CLIENT_ADDR), &[])?;
    finish(c, &p, "node1", "node3")
}

/// Four QPs per side (`-q 4`).
fn e2e_migrate_ib_send_bw_four_qps(c: &Ctx) -> Result<()> {
    // perftest's -n is per QP and it reports the total.
    // Measured (f10, 2026-12-05): with three pre-copy rounds `rdmig migrate` was done 32 s in,
    // and 4 x 22500 messages each way lasted 77 s. The checks now keep the CPU check and the
    // transport probe of earlier migrations to node3 (some 16 s less, 2026-12-06). In f15 its
    // check took 18 s, the probe apparently measured afresh (then kept for 10 minutes; an hour
    // since): migrate took 34 s and 4 x 11000 lasted 44 s, too close; 4 x 12000 with a kept
    // probe (some 20 s) leave 2.4x.
    let mut p = start_pair(c, "node1", "node2", &["-b", "-q", "4"], 12_000, "e2e-q4")?;
    p.iters *= 4;
    let r = migrate(c, p.server, "node1", "node3", Some(SERVICE_ADDR), &["--converge-mib", "0"])?;
    ensure!(r["rounds"].as_array().is_some_and(|a| !a.is_empty()), "no pre-copy round ran: {}", r["stop_reason"]);
    finish(c, &p, "node3", "node2")
}

/// The client (its QP in RTS, the one that sends) moves onto its server's node, with its own
/// address: both QPs then share one rxe device and reach each other over loopback, with the GIDs
/// of the overlay addresses they had before, so the server's QP must learn the client's new MAC
/// from the RESUME though the address is the same (patch 0020; without it the packets went
/// through the IP stack to what had become a local address, and were lost). The other way round,
/// an `ib_send_bw` server restored beside its client, is the Docker scenario (lab/tests/lab/docker.rs).
fn e2e_migrate_ib_send_bw_client_onto_its_servers_node(c: &Ctx) -> Result<()> {
    // Measured (2026-12-05): with 80000 messages migrate took 24 s with 7.5 s of downtime, both
    // sides done 33 s in, but traffic can run at 3000 messages a second or more and a migration
    // took 24 to 43 s in these runs: with 200000, migrate 25 s, done 57 s in. In f14
    // (2026-12-06) migrate took 12.9 s and 200000 lasted 49 s: 150000 (some 37 s) leave 2.8x.
    let p = start_pair_from(c, "node1", "node2", Some(CLIENT_ADDR), &[], 150_000, "e2e-onto-srv")?;
    migrate(c, p.client, "node2", "node1", Some(CLIENT_ADDR), &[])?;
    finish(c, &p, "node1", "node1")
}

/// Issue 15's fault with perftest: the control channel to the destination agent is blackholed
/// (iptables DROP on its port at node3) while CRIU restores an `ib_send_bw -b` server there. The
/// restore's answer never comes: `rdmig migrate` ends in doubt within its `--deadline`, the
/// source copy stopped, the restored copy held (stopped, QPs stopped, its TCP connection answering
/// nobody: tcp_hold; without that the client died when node3 dropped its copy). With the channel
/// back, `rdmig recover` on node1 has the destination drop its copy (it never ran) and resumes
/// the source (address back, perftest's TCP connection out of CRIU's lock, QPs resumed with
/// their source GID found again (patch 0016), SIGCONT); or, when the cut came after the commit
/// was sent, has the destination commit and removes the source copy. The peer, paused all
/// along, resumes with the one copy that runs, and both sides finish their exact iteration
/// counts and exchange their reports.
fn e2e_fault_restore_reply_blackholed_then_recover(c: &Ctx) -> Result<()> {
    let p = start_pair(c, "node1", "node2", &["-b"], 60_000, "e2e-hole")?;
    // CRIU gives the restored process its pid early in the restore: then the channel is cut.
    let rule = "iptables -I INPUT -p tcp --dport 7800 -j DROP && iptables -I OUTPUT -p tcp --sport 7800 -j DROP";
    let probe = format!("ps -o stat= -p {} || true", p.server);
    let cut = vec!["sh".to_string(), "-c".to_string(), rule.to_string()];
    let holer = when_seen(c, "node3", probe, "node3", cut, Duration::from_secs(180), Duration::from_millis(20));
    let pid = p.server.to_string();
    // The deadline must leave room for what comes before the restore (with TLS the checks alone
    // took 22 s in the lab; a transport probe another 15, so TCP is named): at 60 s it passed
    // during the transfer once, and the run rolled back without ever restoring.
    let a = ["--name", LAB_NAME, "--dir", LAB_BASE, "on", "node1", "--to-node", "node3", "--", "migrate", &pid, "--json", "--tcp-established"];
    let o = std::process::Command::new(&c.bin).args(a).args(["--move-addr", SERVICE_ADDR, "--transport", "tcp", "--deadline", "90"]).output()?;
    let holed = holer.join().map_err(|_| anyhow::anyhow!("blackhole thread panicked"))?;
    let unhole = "iptables -D INPUT -p tcp --dport 7800 -j DROP; iptables -D OUTPUT -p tcp --sport 7800 -j DROP; true";
    c.exec_ok("node3", &["sh", "-c", unhole])?;
    let code = o.status.code().unwrap_or(-1);
    ensure!(
        holed?,
        "the restore at node3 was never seen, so the channel was not blackholed; rdmig migrate exited {code}:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let r: Value =
        serde_json::from_slice(&o.stdout).with_context(|| format!("migrate printed no report (exit {code}): {}", String::from_utf8_lossy(&o.stderr)))?;
    println!("  rdmig migrate: exit {code}, {} {}", r["outcome"]["outcome"], r["outcome"]["reason"]);
    ensure!(code == 4 && r["outcome"]["outcome"] == "in_doubt", "expected in doubt: exit {code}, {}", r["outcome"]);
    let st = proc_state(c, "node1", p.server)?.context("the source copy is gone")?;
    if !st.starts_with('T') {
        // Only node1's agent (its periodic recovery) may have let it run by now.
        let id = r["id"].as_str().unwrap_or("");
        let ev = node1_events(c, id)?;
        ensure!(ev.contains("\"phase\":\"recover\""), "the source copy runs although nothing recovered it ({st}): {ev}");
        println!("  node1's agent recovered it first");
    }
    if let Some(st) = proc_state(c, "node3", p.server)? {
        ensure!(st.starts_with('T'), "the uncommitted copy at node3 runs ({st})");
    }

    // Exit 5 means "not yet, try again": node1's agent may be recovering the same migration
    // at that moment (its periodic recovery holds the process's migration lock).
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let recovered = loop {
        let out = c.rdmig(&["on", "node1", "--", "recover", "--json"])?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        println!("  rdmig recover (exit {:?}): {}", out.status.code(), text.trim().replace('\n', " "));
        if out.status.code() == Some(5) && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_secs(3));
            continue;
        }
        ensure!(out.status.success(), "rdmig recover failed: {text}{}", String::from_utf8_lossy(&out.stderr));
        break text;
    };
    // Which way recovery goes depends on where the cut fell, and both ways are right: cut
    // before the commit was sent, the destination drops its copy and the source resumes; cut
    // after it (the restore's answer got through first, the commit's did not), the destination
    // may have committed, so recovery commits there and removes the source copy (f20 of
    // 2026-12-06). Either way exactly one copy runs and the benchmark finishes.
    let forward =
        serde_json::from_str::<Value>(&recovered).ok().and_then(|v| v.as_array().cloned()).unwrap_or_default().iter().any(|m| m["outcome"] == "migrated")
            || events_say_migrated(c, r["id"].as_str().unwrap_or(""))?;
    let (runs_on, gone_from) = if forward { ("node3", "node1") } else { ("node1", "node3") };
    println!("  recovery {}: the copy at {runs_on} runs", if forward { "finished the move" } else { "resumed the source" });
    let st = proc_state(c, runs_on, p.server)?.with_context(|| format!("no copy at {runs_on} after recovery"))?;
    ensure!(!st.starts_with('T'), "the copy at {runs_on} is still stopped after recovery ({st})");
    ensure!(proc_state(c, gone_from, p.server)?.is_none(), "a copy is left at {gone_from}");
    let done = finish(c, &p, runs_on, "node2");
    if done.is_err() {
        // For the reader of a failure: the moved address and the QPs of both sides.
        let tool = c.lab_tool("rdmig");
        for n in ["node1", "node2", "node3"] {
            let neigh =
                c.exec_ok(n, &["sh", "-c", &format!("ip -4 neigh show {SERVICE_ADDR}; ip -4 -o addr show | grep -c {SERVICE_ADDR}")]).unwrap_or_default();
            println!("  {n}: neighbour/address of {SERVICE_ADDR}: {}", neigh.trim().replace('\n', " | "));
            let st = c.exec_ok(n, &[&tool, "softroce", "status"]).unwrap_or_default();
            for q in st.lines().filter(|l| l.starts_with("qp")).filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("qpn="))) {
                if let Ok(o) = c.exec_ok(n, &[&tool, "softroce", "qp-state", q]) {
                    println!("  {n} QP {q}: {}", o.trim().replace('\n', " "));
                }
            }
        }
    }
    done
}

/// node1's journal events of migration `id`, one JSON object a line.
fn node1_events(c: &Ctx, id: &str) -> Result<String> {
    let ev = c.rdmig(&["on", "node1", "--", "events", "--json", "--migration", id])?;
    Ok(String::from_utf8_lossy(&ev.stdout).into_owned())
}

/// Whether node1's journal says a recovery of migration `id` finished the move (node1's agent
/// may have recovered it before `rdmig recover` ran, which then has nothing left to do).
fn events_say_migrated(c: &Ctx, id: &str) -> Result<bool> {
    Ok(node1_events(c, id)?.lines().any(|l| l.contains("\"phase\":\"recover\"") && l.contains("\"outcome\":\"migrated\"")))
}

/// Issue 15's leftovers after an agent restart: `rdmig migrate` and the source's agent are both
/// killed (SIGKILL) as soon as the `ib_send_bw -b` server is frozen. CRIU's dump ends and leaves
/// it stopped with its QPs stopped in rxe, its address gone and its peer paused: nobody is left
/// who knows. The agent's supervisor restarts it; from its journal alone (no `rdmig recover`)
/// the new agent finds the source migration whose `rdmig migrate` is gone, has the destination
/// drop what it received, and resumes the server (address back, TCP connection out of CRIU's
/// lock, QPs resumed, SIGCONT); both sides finish their exact iteration counts.
fn e2e_fault_source_agent_restarted_with_a_frozen_server(c: &Ctx) -> Result<()> {
    let p = start_pair(c, "node1", "node2", &["-b"], 60_000, "e2e-agent")?;
    let log_before = agent_log("node1").len();
    // (The patterns' brackets keep the shell's own command line from matching.)
    let act = ["sh", "-c", "pkill -KILL -f '[r]dmig migrate'; pkill -KILL -f '[r]dmig agent --listen'"].map(String::from).to_vec();
    let killer = when_seen(c, "node1", stopped_probe(p.server), "node1", act, Duration::from_secs(180), Duration::from_millis(20));
    let pid = p.server.to_string();
    let a = ["--name", LAB_NAME, "--dir", LAB_BASE, "on", "node1", "--to-node", "node3", "--", "migrate", &pid, "--json", "--tcp-established"];
    let o = std::process::Command::new(&c.bin).args(a).args(["--move-addr", SERVICE_ADDR, "--transport", "tcp", "--strategy", "stop-and-copy"]).output()?;
    ensure!(killer.join().map_err(|_| anyhow::anyhow!("killer thread panicked"))??, "the freeze was never seen, so nothing was killed");
    ensure!(!o.status.success(), "rdmig migrate finished although it was killed: {}", String::from_utf8_lossy(&o.stdout));
    wait_until("CRIU's dump at node1 to end", Duration::from_secs(120), || Ok(c.exec_ok("node1", &["sh", "-c", "pgrep -x criu || true"])?.trim().is_empty()))?;
    println!("  after the kills the server is {:?} at node1", proc_state(c, "node1", p.server)?);

    // The restarted agent recovers it at start-up, or on its next round if CRIU was still busy.
    wait_until("node1's restarted agent to resume the server", Duration::from_secs(150), || {
        Ok(proc_state(c, "node1", p.server)?.is_some_and(|st| !st.starts_with(['T', 't'])))
    })?;
    // The agent logs the recovery once its resume returned, a moment after the SIGCONT that the
    // state above shows (f38 read the log in between once).
    let mut log = String::new();
    let _ = wait_until("node1's restarted agent to log the recovery", Duration::from_secs(15), || {
        log = agent_log("node1").get(log_before..).unwrap_or_default().to_string();
        Ok(log.lines().any(|l| l.contains("source recovery") && l.contains("Resumed")))
    });
    ensure!(log.contains("agent listening"), "node1's agent was not restarted:\n{log}");
    let recovered = log.lines().find(|l| l.contains("source recovery") && l.contains("Resumed")).map(str::to_string);
    println!("  {}", recovered.as_deref().unwrap_or("(no recovery line)"));
    ensure!(recovered.is_some(), "node1's restarted agent did not say it resumed the server:\n{log}");
    ensure!(proc_state(c, "node3", p.server)?.is_none(), "a copy runs at node3 too");
    finish(c, &p, "node1", "node2")
}
