//! QP state dump/restore and pause/resume scenarios (softroce part 2, issue 4), with
//! rdmig-qpmig: a peer on node1 and a mover that starts on node2 on the movable overlay address
//! 10.0.1.8, is stopped and dumped mid-transfer, and continues on node3 after the address moved
//! there.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use serde_json::Value;

use crate::harness::{Ctx, Scenario, LAB_BASE, LAB_NAME};

pub const SCENARIOS: &[Scenario] = &[
    ("qp_rc_pair_migrates_mid_transfer", qp_rc_pair_migrates_mid_transfer),
    ("qp_peer_paused_longer_than_its_retry_window", qp_peer_paused_longer_than_its_retry_window),
    ("qp_resume_from_rtr", qp_resume_from_rtr),
    ("qp_resume_survives_a_lost_resume", qp_resume_survives_a_lost_resume),
    ("qp_silent_peer_reaches_the_new_node", qp_silent_peer_reaches_the_new_node),
];

const MOVING_ADDR: &str = "10.0.1.8";
const PEER_ADDR: &str = "10.0.1.11";

fn lab_share() -> PathBuf {
    PathBuf::from(LAB_BASE).join(LAB_NAME).join("shared")
}

fn qpmig_bin(c: &Ctx) -> String {
    c.lab_tool("rdmig-qpmig")
}

fn gid_index(c: &Ctx, node: &str, addr: &str) -> Result<String> {
    let rdmig = c.lab.load()?.rdmig_bin.display().to_string();
    Ok(c.exec_ok(node, &[&rdmig, "rxe", "gid-index", "--ip", addr])?.trim().to_string())
}

#[derive(Default)]
struct Case {
    name: &'static str,
    port: u16,
    count: u64,
    stop_after: u64,
    /// Seconds between the stop and the restore.
    gap: u64,
    peer_args: Vec<String>,
    resume_args: Vec<String>,
}

struct Outcome {
    peer: Value,
    first: Value,
    second: Value,
}

fn wait_file(name: &str, timeout: Duration) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    let path = lab_share().join(name);
    loop {
        if let Ok(b) = std::fs::read(&path) {
            if let Some(line) = String::from_utf8_lossy(&b).lines().find(|l| l.starts_with('{')) {
                return serde_json::from_str(line).with_context(|| format!("{name}: {line}"));
            }
        }
        let err = std::fs::read_to_string(lab_share().join(format!("{name}.err"))).unwrap_or_default();
        ensure!(Instant::now() < deadline, "no report {name} after {timeout:?}; its stderr:\n{err}");
        thread::sleep(Duration::from_millis(500));
    }
}

fn parse(what: &str, out: &str) -> Result<Value> {
    let line = out.lines().find(|l| l.starts_with('{')).with_context(|| format!("{what} printed no report: {out:?}"))?;
    Ok(serde_json::from_str(line)?)
}

/// Runs one migration: peer on node1, mover on node2 (stopped after `stop_after` messages), the
/// moving address moved to node3, mover resumed there.
fn run(c: &Ctx, k: &Case) -> Result<Outcome> {
    for n in ["node1", "node2", "node3"] {
        let _ = c.rdmig(&["addr", "del", n, MOVING_ADDR]);
    }
    c.rdmig_ok(&["addr", "add", "node2", MOVING_ADDR])?;
    let bin = qpmig_bin(c);
    let peer_gid = gid_index(c, "node1", PEER_ADDR)?;
    let first_gid = gid_index(c, "node2", MOVING_ADDR)?;
    let listen = format!("{PEER_ADDR}:{}", k.port);
    let count = k.count.to_string();
    let peer_report = format!("qp-{}-peer.json", k.name);
    let state = format!("/mnt/lab/qp-{}.state", k.name);
    let _ = std::fs::remove_file(lab_share().join(&peer_report));

    let mut peer = format!("exec {bin} peer --listen {listen} --gid-index {peer_gid} --count {count}");
    for a in &k.peer_args {
        peer.push(' ');
        peer.push_str(a);
    }
    peer.push_str(&format!(" > /mnt/lab/{peer_report} 2> /mnt/lab/{peer_report}.err"));
    c.rdmig_ok(&["spawn", "node1", "--", "sh", "-c", &peer])?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.exec_ok("node1", &["ss", "-Hltn", &format!("sport = :{}", k.port)])?.trim().is_empty() {
        ensure!(Instant::now() < deadline, "the peer does not listen on node1");
        thread::sleep(Duration::from_millis(300));
    }

    let stop_after = k.stop_after.to_string();
    let out = c.exec_ok(
        "node2",
        &[&bin, "mover", "--connect", &listen, "--gid-index", &first_gid, "--count", &count, "--stop-after", &stop_after, "--state", &state],
    )?;
    let first = parse("mover (node2)", &out)?;
    ensure!(first["ok"] == true && first["life"] == 1, "first life: {first}");
    let stopped_at = Instant::now();

    c.rdmig_ok(&["addr", "move", MOVING_ADDR, "--to", "node3"])?;
    let second_gid = gid_index(c, "node3", MOVING_ADDR)?;
    let left = Duration::from_secs(k.gap).saturating_sub(stopped_at.elapsed());
    thread::sleep(left);

    let mut argv: Vec<&str> = vec![&bin, "mover", "--resume", &state, "--gid-index", &second_gid];
    argv.extend(k.resume_args.iter().map(String::as_str));
    let o = c.rdmig(&[&["exec", "node3", "--timeout", "300", "--"][..], &argv[..]].concat())?;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let second = parse("mover (node3)", &format!("{out}\n{}", String::from_utf8_lossy(&o.stderr)))
        .with_context(|| format!("stderr: {}", String::from_utf8_lossy(&o.stderr)))?;
    let peer = wait_file(&peer_report, Duration::from_secs(120))?;
    ensure!(o.status.success() && second["ok"] == true, "second life failed: {second}\n{}", String::from_utf8_lossy(&o.stderr));
    ensure!(peer["ok"] == true, "peer failed: {peer}");
    // Both directions complete, nothing lost, duplicated, corrupted or failed.
    for (who, r) in [("peer", &peer), ("mover", &second)] {
        ensure!(r["sent"] == k.count && r["received"] == k.count && r["bad"] == 0 && r["wc_errors"] == 0, "{who}: {r}");
    }
    ensure!(second["qpn"] == first["qpn"], "the QP number changed: {first} -> {second}");
    ensure!(peer["mig"]["resumes_rcvd"].as_u64().unwrap_or(0) >= 1, "the peer saw no RESUME: {peer}");
    ensure!(second["mig"]["resume_acks"].as_u64().unwrap_or(0) >= 1, "RESUME never acknowledged: {second}");
    c.rdmig_ok(&["addr", "del", "node3", MOVING_ADDR])?;
    Ok(Outcome { peer, first, second })
}

fn qp_rc_pair_migrates_mid_transfer(c: &Ctx) -> Result<()> {
    let o = run(c, &Case { name: "live", port: 9201, count: 2000, stop_after: 600, gap: 1, ..Default::default() })?;
    ensure!(o.first["sent"].as_u64().unwrap_or(0) > 0 && o.first["received"].as_u64().unwrap_or(0) > 0, "nothing moved before the stop: {}", o.first);
    Ok(())
}

/// Retry window of the peer: timeout 16 (268 ms) and 2 retries, under a second; paused for 12 s.
fn qp_peer_paused_longer_than_its_retry_window(c: &Ctx) -> Result<()> {
    let o = run(
        c,
        &Case {
            name: "pause",
            port: 9202,
            count: 1500,
            stop_after: 500,
            gap: 12,
            peer_args: vec!["--timeout".into(), "16".into(), "--retry-cnt".into(), "2".into()],
            ..Default::default()
        },
    )?;
    ensure!(o.peer["mig"]["pauses_rcvd"].as_u64().unwrap_or(0) >= 1, "the peer was never paused: {}", o.peer);
    Ok(())
}

fn qp_resume_from_rtr(c: &Ctx) -> Result<()> {
    let o = run(
        c,
        &Case { name: "rtr", port: 9203, count: 1500, stop_after: 500, gap: 1, resume_args: vec!["--rtr-secs".into(), "4".into()], ..Default::default() },
    )?;
    ensure!(o.second["life"] == 2, "{}", o.second);
    Ok(())
}

fn qp_resume_survives_a_lost_resume(c: &Ctx) -> Result<()> {
    let o = run(
        c,
        &Case { name: "lost", port: 9204, count: 1500, stop_after: 500, gap: 1, resume_args: vec!["--drop-first-resume".into()], ..Default::default() },
    )?;
    ensure!(o.second["mig"]["resumes_sent"].as_u64().unwrap_or(0) >= 2, "the dropped RESUME was not retried: {}", o.second);
    Ok(())
}

/// The peer sends nothing until it has 700 messages, i.e. only after the mover stopped at 500.
fn qp_silent_peer_reaches_the_new_node(c: &Ctx) -> Result<()> {
    let o = run(
        c,
        &Case { name: "silent", port: 9205, count: 1500, stop_after: 500, gap: 1, peer_args: vec!["--send-after".into(), "700".into()], ..Default::default() },
    )?;
    ensure!(o.first["received"] == 0, "the peer was not silent before the migration: {}", o.first);
    Ok(())
}
