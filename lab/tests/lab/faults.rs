//! Fault scenarios (issue 15): a real migration broken at a real point. Whatever fails, the
//! process must end up running exactly once with its memory intact, and nothing may wait
//! forever.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use serde_json::Value;

use crate::harness::{lab_exec, proc_state, wait_until, wait_until_every, Ctx, Scenario, LAB_BASE, LAB_NAME};
use crate::migration::{downtime, kill, migrate, phases, start_workload, verify_workload};

pub const SCENARIOS: &[Scenario] = &[
    ("fault_destination_agent_stopped_after_the_freeze", fault_destination_agent_stopped_after_the_freeze),
    ("fault_two_concurrent_migrations_of_one_process", fault_two_concurrent_migrations_of_one_process),
    ("fault_migrate_killed_after_the_freeze_then_recover", fault_migrate_killed_after_the_freeze_then_recover),
    ("fault_destination_disk_full", fault_destination_disk_full),
    ("fault_destination_agent_killed_during_restore", fault_destination_agent_killed_during_restore),
    ("fault_destination_agent_killed_after_the_restore_before_the_commit", fault_destination_agent_killed_after_the_restore_before_the_commit),
    ("fault_image_byte_flipped_on_the_destination_disk", fault_image_byte_flipped_on_the_destination_disk),
    ("fault_destination_agent_killed_during_precopy", fault_destination_agent_killed_during_precopy),
];

pub(crate) const AGENT: &str = "rdmig agent --listen";

pub(crate) fn agent_log(node: &str) -> String {
    std::fs::read_to_string(PathBuf::from(LAB_BASE).join(LAB_NAME).join(node).join("share/migration-agent.log")).unwrap_or_default()
}

/// Whether the agent on `node` still holds images of migration `id`.
fn holds_images(c: &Ctx, node: &str, id: &str) -> Result<bool> {
    Ok(c.exec_ok(node, &["sh", "-c", &format!("test -e /tmp/rdmig-agent/{id} && echo yes || true")])?.trim() == "yes")
}

/// In a thread: runs the shell command `probe` on `watch` every `every` until it prints
/// something, then runs `act` on `act_on`. Its result says whether that happened within `within`.
/// (The migration under test runs meanwhile, in the calling thread.)
///
/// When both are one node, the loop runs inside it: a probe from here costs a `rdmig lab exec`
/// round trip each time (some hundred milliseconds on a loaded host), and a window that lasts
/// about that long, a round or a restore, could pass unseen or be acted on too late.
pub(crate) fn when_seen(
    c: &Ctx,
    watch: &'static str,
    probe: String,
    act_on: &'static str,
    act: Vec<String>,
    within: Duration,
    every: Duration,
) -> thread::JoinHandle<Result<bool>> {
    let bin = c.bin.clone();
    thread::spawn(move || -> Result<bool> {
        if watch == act_on {
            let o = lab_exec(&bin, watch).args(["sh", "-c", &watch_in_node(&probe, &act, within, every)]).output()?;
            let out = String::from_utf8_lossy(&o.stdout);
            if !out.lines().any(|l| l == SEEN) {
                return Ok(false);
            }
            ensure!(o.status.success(), "`{}` on {act_on} failed ({}): {}", act.join(" "), o.status, String::from_utf8_lossy(&o.stderr).trim());
            return Ok(true);
        }
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let o = lab_exec(&bin, watch).args(["sh", "-c", &probe]).output()?;
            if !String::from_utf8_lossy(&o.stdout).trim().is_empty() {
                let st = lab_exec(&bin, act_on).args(&act).status()?;
                ensure!(st.success(), "`{}` on {act_on} failed ({st})", act.join(" "));
                return Ok(true);
            }
            thread::sleep(every);
        }
        Ok(false)
    })
}

/// What `watch_in_node`'s script prints once the probe saw something, before it acts.
const SEEN: &str = "rdmig-lab: seen";

/// A shell script that runs `probe` every `every` for up to `within` and, once it prints
/// something, prints `SEEN` and runs `act` (its exit status is the script's).
fn watch_in_node(probe: &str, act: &[String], within: Duration, every: Duration) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let act: Vec<String> = act.iter().map(|a| quote(a)).collect();
    let tries = (within.as_millis() / every.as_millis().max(1)).max(1);
    format!(
        "i=0; while [ $i -lt {tries} ]; do if [ -n \"$(sh -c {probe})\" ]; then echo '{SEEN}'; exec {act}; fi; sleep {secs}; i=$((i + 1)); done; exit 0",
        probe = quote(probe),
        act = act.join(" "),
        secs = every.as_secs_f64()
    )
}

/// The shell probe that prints something once process `pid` is stopped (CRIU's ptrace stop of
/// the freeze, or the stop it leaves behind).
pub(crate) fn stopped_probe(pid: i32) -> String {
    format!("ps -o stat= -p {pid} | grep '^ *[tT]' || true")
}

/// Restarts the migration agent on `node` with `flags` added to the lab's (none: as the lab
/// starts it), and waits until the new one listens.
fn restart_agent(c: &Ctx, node: &str, flags: &[&str]) -> Result<()> {
    let file = PathBuf::from(LAB_BASE).join(LAB_NAME).join(node).join("share").join(rdmig_lab::guest::AGENT_FLAGS_FILE);
    if flags.is_empty() {
        let _ = std::fs::remove_file(&file);
    } else {
        std::fs::write(&file, flags.join(" "))?;
    }
    kill_agent_until_back(&c.bin, node, Duration::from_secs(30))
}

/// SIGKILLs the migration agent on `node` and waits until the next one, which its supervisor
/// starts once the old one is gone, listens. Without a `Ctx`, for the threads that act while a
/// migration runs (`bin`: the lab's command).
pub(crate) fn kill_agent_until_back(bin: &std::path::Path, node: &str, within: Duration) -> Result<()> {
    let sh = |script: &str| -> Result<String> {
        let o = lab_exec(bin, node).args(["sh", "-c", script]).output()?;
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    // `[r]dmig`: the pattern does not match the shell that runs pgrep or pkill.
    let agent = "'[r]dmig agent --listen'";
    let old = sh(&format!("pgrep -f {agent}"))?;
    ensure!(sh(&format!("pkill -KILL -f {agent} && echo killed"))? == "killed", "no agent to kill at {node}");
    wait_until_every(&format!("{node}'s agent to come back"), within, Duration::from_millis(20), || {
        let now = sh(&format!("pgrep -f {agent} || true"))?;
        Ok(!now.is_empty() && now != old && !sh("ss -Hltn 'sport = :7800'")?.is_empty())
    })
}

/// The migration agent on `node` runs with `flags` added for as long as this lives.
pub(crate) struct AgentFlags<'a> {
    c: &'a Ctx,
    node: &'a str,
}

impl<'a> AgentFlags<'a> {
    pub(crate) fn set(c: &'a Ctx, node: &'a str, flags: &[&str]) -> Result<Self> {
        restart_agent(c, node, flags)?;
        Ok(AgentFlags { c, node })
    }
}

impl Drop for AgentFlags<'_> {
    fn drop(&mut self) {
        if let Err(e) = restart_agent(self.c, self.node, &[]) {
            println!("  restarting the agent on {} with the lab's flags: {e:#}", self.node);
        }
    }
}

/// In a thread: once process `pid` on `from` is stopped, stops (SIGSTOP) the migration agent on
/// `to`.
pub(crate) fn stop_agent_at_freeze(c: &Ctx, from: &'static str, pid: i32, to: &'static str) -> thread::JoinHandle<Result<bool>> {
    let act = ["pkill", "-STOP", "-f", AGENT].map(String::from).to_vec();
    when_seen(c, from, stopped_probe(pid), to, act, Duration::from_secs(120), Duration::from_millis(50))
}

/// The destination agent is stopped (SIGSTOP) right after the freeze of a 64 MiB workload:
/// `rdmig migrate` gives up within its `--deadline` and takes the process back, which runs at
/// the source alone with its memory intact. Continued, the agent restores nothing, drops the
/// migration as silent (its images go), and takes the next migration of the same process.
///
/// Both timeouts are the lab's, shorter than the defaults (the waits were two thirds of the
/// scenario): `--deadline 30` (the same migration takes 8-15 s in the lab when nothing is
/// stopped, so it is still the stopped agent that makes it give up), and the agent's
/// `--orphan-after 10` (60 by default) for the silent source.
fn fault_destination_agent_stopped_after_the_freeze(c: &Ctx) -> Result<()> {
    // The freeze comes 3-5 s in (the checks); the deadline passes while node2's agent is stopped.
    const DEADLINE: u64 = 20;
    const ORPHAN_AFTER: u64 = 10;
    let _flags = AgentFlags::set(c, "node2", &["--orphan-after", &ORPHAN_AFTER.to_string()])?;
    let pid = start_workload(c, "node1", "64M", "1M", "w-stopped.json")?;
    let stopper = stop_agent_at_freeze(c, "node1", pid, "node2");
    let t = Instant::now();
    let res = migrate(c, pid, "node1", "node2", &["--strategy", "stop-and-copy", "--transport", "tcp", "--deadline", &DEADLINE.to_string()]);
    let took = t.elapsed();
    let stopped = stopper.join().map_err(|_| anyhow::anyhow!("stopper thread panicked"))?;
    // Whatever happened, the agent runs again for the rest.
    // (The pattern's brackets keep the shell's own command line from matching.)
    let stat = c.exec_ok("node2", &["sh", "-c", "ps -eo stat=,args= | grep '[r]dmig agent --listen'"])?;
    c.exec_ok("node2", &["pkill", "-CONT", "-f", AGENT])?;
    ensure!(stopped?, "the freeze was never seen at node1, so the agent was not stopped");
    ensure!(stat.trim().starts_with('T'), "the agent on node2 was not stopped during the migration (state {stat:?})");
    let (code, r) = res?;
    println!("  rdmig migrate ended after {:.1} s ({}): {}", took.as_secs_f64(), r["outcome"]["outcome"], r["outcome"]["reason"]);
    ensure!(took < Duration::from_secs(DEADLINE + 10), "rdmig migrate took {took:?} with --deadline {DEADLINE}");
    ensure!(code == 3 && r["outcome"]["outcome"] == "rolled_back", "expected a rollback: exit {code}, {}", r["outcome"]);
    ensure!(phases(&r).iter().any(|p| p.contains("freeze")), "the process was not frozen, so the scenario missed its point: {:?}", phases(&r));
    let st = proc_state(c, "node1", pid)?.context("the process is gone from the source")?;
    ensure!(!st.starts_with('T'), "the source copy is left stopped ({st})");
    ensure!(proc_state(c, "node2", pid)?.is_none(), "a copy runs at the destination too");

    // The continued agent hears nothing more from that source: it drops the migration.
    let id = r["id"].as_str().context("the report has no id")?.to_string();
    ensure!(id.starts_with("m-") && id.len() == 18, "migration id {id:?} is not a random one");
    let t = Instant::now();
    wait_until("node2's agent to drop the silent migration's images", Duration::from_secs(240), || Ok(!holds_images(c, "node2", &id)?))?;
    println!("  the continued agent dropped the migration after {:.1} s (--orphan-after {ORPHAN_AFTER})", t.elapsed().as_secs_f64());
    let why = format!("its source was silent for {ORPHAN_AFTER} s");
    ensure!(agent_log("node2").lines().any(|l| l.contains(&id) && l.contains(&why)), "the agent did not log why it dropped the migration");
    ensure!(proc_state(c, "node2", pid)?.is_none(), "the continued agent restored a second copy");
    let v = verify_workload(c, "node1", pid, "w-stopped.json")?;
    ensure!(v["ok"] == true && v["verified_pages"] == 16384 && v["bad_pages"] == 0, "memory after the rollback: {v}");

    // And the agent works: the same process moves now.
    let (code, r) = migrate(c, pid, "node1", "node2", &["--strategy", "stop-and-copy", "--transport", "tcp"])?;
    ensure!(code == 0 && r["outcome"]["outcome"] == "migrated", "migration after the agent was continued: exit {code}, {}", r["outcome"]);
    ensure!(proc_state(c, "node1", pid)?.is_none(), "the source copy still exists");
    let v = verify_workload(c, "node2", pid, "w-stopped.json")?;
    ensure!(v["ok"] == true && v["verified_pages"] == 16384, "memory after the second migration: {v}");
    kill(c, "node2", pid);
    Ok(())
}

/// Two `rdmig migrate` of one process at once (to two destinations): one migrates it, the other
/// is refused before it touches anything; the process runs exactly once afterwards, intact. A
/// destination agent, too, refuses a second migration of a source's process while one is in
/// flight.
fn fault_two_concurrent_migrations_of_one_process(c: &Ctx) -> Result<()> {
    let pid = start_workload(c, "node1", "64M", "1M", "w-twice.json")?;
    let (first, second) = thread::scope(|s| {
        let first = s.spawn(|| migrate(c, pid, "node1", "node2", &[]));
        // Well inside the first one's checks and pre-copy.
        thread::sleep(Duration::from_secs(2));
        let second = s.spawn(|| migrate(c, pid, "node1", "node3", &[]));
        (first.join(), second.join())
    });
    let first = first.map_err(|_| anyhow::anyhow!("first migration thread panicked"))??;
    let second = second.map_err(|_| anyhow::anyhow!("second migration thread panicked"))??;
    let outcome = |r: &(i32, Value)| format!("exit {}, {}", r.0, r.1["outcome"]);
    println!("  to node2: {}\n  to node3: {}", outcome(&first), outcome(&second));
    let ((won, winner), (lost, loser)) = match (first.0, second.0) {
        (0, _) => (("node2", first), ("node3", second)),
        (_, 0) => (("node3", second), ("node2", first)),
        _ => anyhow::bail!("neither migration went through: {} / {}", outcome(&first), outcome(&second)),
    };
    ensure!(winner.1["outcome"]["outcome"] == "migrated", "{}", outcome(&winner));
    ensure!(loser.0 == 2 && loser.1["outcome"]["outcome"] == "refused", "the other one was not refused: {}", outcome(&loser));
    let reason = loser.1["outcome"]["reason"].as_str().unwrap_or("");
    ensure!(reason.contains(&format!("another `rdmig migrate` of pid {pid} is in progress")), "refused for another reason: {reason}");
    ensure!(phases(&loser.1).is_empty(), "the refused one did something: {:?}", phases(&loser.1));
    ensure!(winner.1["id"] != loser.1["id"], "both runs had the id {}", winner.1["id"]);
    // Exactly once: at the winner's destination.
    ensure!(proc_state(c, "node1", pid)?.is_none(), "the source copy still exists");
    ensure!(proc_state(c, lost, pid)?.is_none(), "a copy runs at {lost} too");
    let v = verify_workload(c, won, pid, "w-twice.json")?;
    ensure!(v["ok"] == true && v["verified_pages"] == 16384 && v["bad_pages"] == 0, "memory after the migration: {v}");
    kill(c, won, pid);

    // The destination's side of the rule, on the wire: a second Begin for the same source
    // process is refused while the first is in flight, and let in once it is aborted.
    use rdmig_proto::msg::{MigrationId, Reply, Request};
    let ask = |req: Request| c.ask_agent("node2", &req, Duration::from_secs(30));
    let (a, b) = (MigrationId::random()?, MigrationId::random()?);
    ensure!(matches!(ask(Request::Begin { id: a.clone(), pid: 4242 })?, Reply::Ack), "the first Begin was refused");
    match ask(Request::Begin { id: b.clone(), pid: 4242 })? {
        Reply::Failed(e) => ensure!(e.contains("is being migrated here already"), "refused for another reason: {e}"),
        other => anyhow::bail!("a second Begin for the same process was answered {other:?}"),
    }
    ensure!(matches!(ask(Request::Abort { id: a })?, Reply::Ack));
    ensure!(matches!(ask(Request::Begin { id: b.clone(), pid: 4242 })?, Reply::Ack), "Begin refused after the first was aborted");
    ensure!(matches!(ask(Request::Abort { id: b })?, Reply::Ack));
    Ok(())
}

/// `rdmig status --json` on `node` shows no migration in flight on any node (after recovery).
pub(crate) fn no_migration_in_flight(c: &Ctx, node: &str) -> Result<()> {
    let (code, status) = on(c, node, &["status", "--json"])?;
    ensure!(code == 0, "rdmig status failed: {status}");
    let nodes: Value = serde_json::from_str(&status)?;
    let in_flight: usize = nodes.as_array().context("status is no list")?.iter().map(|n| n["migrations"].as_array().map_or(0, |m| m.len())).sum();
    ensure!(in_flight == 0, "migrations still in flight after recovery: {status}");
    Ok(())
}

/// `rdmig-lab on NODE -- ARGS`: (exit code, stdout).
pub(crate) fn on(c: &Ctx, node: &str, args: &[&str]) -> Result<(i32, String)> {
    let mut a = vec!["on", node, "--"];
    a.extend_from_slice(args);
    let o = c.rdmig(&a)?;
    if !o.stderr.is_empty() {
        println!("  {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim());
    }
    Ok((o.status.code().unwrap_or(-1), String::from_utf8_lossy(&o.stdout).into_owned()))
}

/// The journal's events of migration `id`, merged across every node's agent.
fn events_of(c: &Ctx, node: &str, id: &str) -> Result<Vec<Value>> {
    let (code, out) = on(c, node, &["events", "--json", "--migration", id])?;
    ensure!(code == 0, "rdmig events failed (exit {code}): {out}");
    out.lines().map(|l| serde_json::from_str::<Value>(l).with_context(|| format!("rdmig events printed {l:?}"))).collect()
}

/// `node phase outcome` of each event, for messages.
fn steps(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .map(|e| format!("{} {} {}", e["node"].as_str().unwrap_or("?"), e["phase"].as_str().unwrap_or("?"), e["outcome"].as_str().unwrap_or("?")))
        .collect()
}

/// `rdmig migrate` is SIGKILLed right after it froze a 64 MiB workload: CRIU finishes its dump
/// and leaves the process stopped, its destination holds a partial migration. `rdmig recover`
/// (or the node's agent, whichever comes first) tells the destination to abort and resumes the
/// process, which runs at the source alone with its memory intact; the journal says so. Then
/// the same process migrates, and `rdmig events --json` shows that migration's every phase in
/// order on both nodes, sequence numbers increasing per node.
fn fault_migrate_killed_after_the_freeze_then_recover(c: &Ctx) -> Result<()> {
    let pid = start_workload(c, "node1", "64M", "1M", "w-killed.json")?;
    let act = ["pkill", "-KILL", "-f", "rdmig migrate"].map(String::from).to_vec();
    let killer = when_seen(c, "node1", stopped_probe(pid), "node1", act, Duration::from_secs(120), Duration::from_millis(50));
    let res = migrate(c, pid, "node1", "node2", &["--strategy", "stop-and-copy", "--transport", "tcp"]);
    ensure!(killer.join().map_err(|_| anyhow::anyhow!("killer thread panicked"))??, "the freeze was never seen, so rdmig migrate was not killed");
    ensure!(res.is_err(), "rdmig migrate finished with a report although it was killed: {:?}", res.ok());
    // CRIU outlives its run; once it is done the process is left stopped: the fault.
    wait_until("CRIU's dump at node1 to end", Duration::from_secs(120), || Ok(c.exec_ok("node1", &["sh", "-c", "pgrep -x criu || true"])?.trim().is_empty()))?;
    let st = proc_state(c, "node1", pid)?.context("the process is gone from the source")?;
    println!("  after the kill, the process is {st:?} at node1");

    let (code, out) = on(c, "node1", &["recover", "--json"])?;
    println!("  rdmig recover (exit {code}): {}", out.trim().replace('\n', " "));
    let done: Vec<Value> = serde_json::from_str(&out).with_context(|| format!("recover printed {out:?}"))?;
    ensure!(code == 0, "rdmig recover exit {code}: {out}");
    // The agent's periodic check may have come first; either way the journal ends it.
    let ours: Vec<&Value> = done.iter().filter(|r| r["pid"] == pid).collect();
    ensure!(ours.iter().all(|r| r["outcome"] == "resumed"), "recovery did not resume the process: {out}");
    let st = proc_state(c, "node1", pid)?.context("the process is gone from the source after recovery")?;
    ensure!(!st.starts_with(['T', 't']), "the process is still stopped after recovery ({st})");
    ensure!(proc_state(c, "node2", pid)?.is_none(), "a copy runs at the destination too");
    no_migration_in_flight(c, "node1")?;
    let v = verify_workload(c, "node1", pid, "w-killed.json")?;
    ensure!(v["ok"] == true && v["verified_pages"] == 16384 && v["bad_pages"] == 0, "memory after recovery: {v}");

    // The same process moves now; its events, merged across the nodes, tell every phase.
    let (code, r) = migrate(c, pid, "node1", "node2", &["--strategy", "stop-and-copy", "--transport", "tcp"])?;
    ensure!(code == 0 && r["outcome"]["outcome"] == "migrated", "migration after recovery: exit {code}, {}", r["outcome"]);
    let id = r["id"].as_str().context("no id")?;
    let evs = events_of(c, "node1", id)?;
    let s = steps(&evs);
    println!("  events of {id}: {}", s.join(", "));
    let want_src = [
        "begin started",
        "checks done",
        "freeze started",
        "freeze done",
        "transfer started",
        "transfer done",
        "restore started",
        "restore done",
        "commit started",
        "commit done",
    ];
    let src: Vec<String> =
        evs.iter().filter(|e| e["node"] == "node1").map(|e| format!("{} {}", e["phase"].as_str().unwrap_or(""), e["outcome"].as_str().unwrap_or(""))).collect();
    ensure!(src == want_src, "the source's events: {src:?}");
    let dst: Vec<String> =
        evs.iter().filter(|e| e["node"] == "node2").map(|e| format!("{} {}", e["phase"].as_str().unwrap_or(""), e["outcome"].as_str().unwrap_or(""))).collect();
    for w in ["begin done", "restore started", "restore done", "commit done"] {
        ensure!(dst.iter().any(|d| d == w), "the destination's events lack {w:?}: {dst:?}");
    }
    for node in ["node1", "node2"] {
        let seqs: Vec<u64> = evs.iter().filter(|e| e["node"] == node).filter_map(|e| e["seq"].as_u64()).collect();
        ensure!(seqs.windows(2).all(|w| w[0] < w[1]), "{node}'s sequence numbers do not increase: {seqs:?}");
    }
    // Merged in time order: the destination restores after the source froze, and commits
    // before the source records its commit done.
    let at = |node: &str, step: &str| s.iter().position(|x| x == &format!("{node} {step}"));
    ensure!(at("node1", "freeze started") < at("node2", "restore started"), "order: {s:?}");
    ensure!(at("node2", "commit done") < at("node1", "commit done"), "order: {s:?}");
    let v = verify_workload(c, "node2", pid, "w-killed.json")?;
    ensure!(v["ok"] == true && v["verified_pages"] == 16384, "memory after the migration: {v}");
    kill(c, "node2", pid);
    Ok(())
}

/// The destination's disk is too small for the images (a 16 MiB tmpfs over the agent's work
/// directory, a 64 MiB workload): the migration is refused or rolled back, the process runs at
/// the source alone with its memory intact, and nothing is left in the destination's directory.
fn fault_destination_disk_full(c: &Ctx) -> Result<()> {
    let pid = start_workload(c, "node1", "64M", "1M", "w-full.json")?;
    c.exec_ok("node2", &["sh", "-c", "mkdir -p /tmp/rdmig-agent && mount -t tmpfs -o size=16m tmpfs /tmp/rdmig-agent"])?;
    let res = migrate(c, pid, "node1", "node2", &["--strategy", "stop-and-copy", "--transport", "tcp"]);
    let left = c.exec_ok("node2", &["sh", "-c", "ls /tmp/rdmig-agent | grep '^m-' || true"]);
    c.exec_ok("node2", &["umount", "-l", "/tmp/rdmig-agent"])?;
    let (code, r) = res?;
    println!("  exit {code}: {} {}", r["outcome"]["outcome"], r["outcome"]["reason"]);
    ensure!(matches!(code, 2 | 3), "expected a refusal or a rollback: exit {code}, {}", r["outcome"]);
    let st = proc_state(c, "node1", pid)?.context("the process is gone from the source")?;
    ensure!(!st.starts_with(['T', 't']), "the source copy is left stopped ({st})");
    ensure!(proc_state(c, "node2", pid)?.is_none(), "a copy runs at the destination");
    ensure!(left?.trim().is_empty(), "images left in the full directory");
    let v = verify_workload(c, "node1", pid, "w-full.json")?;
    ensure!(v["ok"] == true && v["verified_pages"] == 16384 && v["bad_pages"] == 0, "memory after the failure: {v}");
    kill(c, "node1", pid);
    Ok(())
}

/// The destination agent is killed (SIGKILL) while CRIU restores a 64 MiB workload there; its
/// supervisor restarts it, and it takes the migration up from its journal (waiting for the
/// restore that outlived it). Whatever the source then learns, the process ends up running
/// exactly once, with its memory intact: migrated (the restarted agent reports the restored
/// copy and the source commits it), or rolled back (the copy is killed), or in doubt until
/// `rdmig recover` decides.
fn fault_destination_agent_killed_during_restore(c: &Ctx) -> Result<()> {
    let pid = start_workload(c, "node1", "64M", "1M", "w-restore.json")?;
    let act = ["pkill", "-KILL", "-f", AGENT].map(String::from).to_vec();
    let probe = "pgrep -f '^criu restore' || true".to_string();
    let killer = when_seen(c, "node2", probe, "node2", act, Duration::from_secs(180), Duration::from_millis(20));
    let res = migrate(c, pid, "node1", "node2", &["--strategy", "stop-and-copy", "--transport", "tcp"]);
    ensure!(killer.join().map_err(|_| anyhow::anyhow!("killer thread panicked"))??, "no CRIU restore was seen at node2, so its agent was not killed");
    exactly_once_after_the_agent_restart(c, pid, res, "w-restore.json")
}

/// After a migration from node1 to node2 whose destination agent was killed and came back:
/// whatever `rdmig migrate` made of it (moved, rolled back, or in doubt, when `rdmig recover`
/// on the source must decide), the workload runs exactly once, not stopped, with every page
/// intact, and node2 holds none of the migration's images.
fn exactly_once_after_the_agent_restart(c: &Ctx, pid: i32, res: Result<(i32, Value)>, report: &str) -> Result<()> {
    let (code, r) = res?;
    println!("  rdmig migrate: exit {code}, {} {}", r["outcome"]["outcome"], r["outcome"]["reason"]);
    ensure!(agent_log("node2").contains("taken up from the journal"), "the restarted agent did not take the migration up from its journal");
    if code == 0 {
        // Held stopped until the commit, the copy's stop ended at the commit's answer, which
        // the restarted agent gives: the downtime is known even when the restore's answer was lost.
        println!("  {}", downtime(&r)?);
    }
    if code == 4 {
        // In doubt: recovery on the source decides (the restarted agent knows the answer).
        let (rc, out) = on(c, "node1", &["recover", "--json"])?;
        println!("  rdmig recover (exit {rc}): {}", out.trim().replace('\n', " "));
        ensure!(rc == 0, "rdmig recover left it unfinished (exit {rc}): {out}");
    } else {
        ensure!(matches!(code, 0 | 3), "unexpected outcome: exit {code}, {}", r["outcome"]);
    }
    // Exactly once, wherever that is; any uncommitted copy is gone within the orphan window.
    let id = r["id"].as_str().context("no id")?.to_string();
    wait_until("one copy of the process", Duration::from_secs(120), || {
        let (src, dst) = (proc_state(c, "node1", pid)?, proc_state(c, "node2", pid)?);
        Ok(src.is_some() != dst.is_some() && !holds_images(c, "node2", &id)?)
    })?;
    let (src, dst) = (proc_state(c, "node1", pid)?, proc_state(c, "node2", pid)?);
    let (node, st) = match (&src, &dst) {
        (Some(s), None) => ("node1", s),
        (None, Some(s)) => ("node2", s),
        _ => anyhow::bail!("copies: node1 {src:?}, node2 {dst:?}"),
    };
    println!("  the process runs at {node} ({st})");
    ensure!(!st.starts_with(['T', 't']), "the only copy is stopped ({st})");
    let v = verify_workload(c, node, pid, report)?;
    ensure!(v["ok"] == true && v["verified_pages"] == 16384 && v["bad_pages"] == 0, "memory: {v}");
    kill(c, node, pid);
    Ok(())
}

/// The destination agent dies after CRIU restored the process at node2 (held stopped there
/// until the commit) and before the source committed. To put the kill in that window, however
/// short it is, `rdmig migrate` at node1 is held (SIGSTOP) from the time CRIU restores until
/// node2's agent has been killed and is back; then it goes on, towards a destination whose new
/// agent knows of the restored copy only from its journal. The outcome may be the move
/// (committed through the new agent), a rollback (the copy at node2 killed), or in doubt
/// (`rdmig recover` decides): in each the workload runs exactly once with its memory intact.
///
/// `rdmig migrate` cannot be held from here in time by watching node2 alone: seeing CRIU there
/// and stopping the migration at node1 are two commands in two nodes, and a restore and its
/// commit took less than those two in a faster lab (f25 of 2026-12-06: "no `rdmig migrate` to
/// hold"). So a watcher in node2 stops CRIU's main process as soon as it appears, the
/// migration is held at node1 while the restore cannot end, and CRIU goes on after that.
fn fault_destination_agent_killed_after_the_restore_before_the_commit(c: &Ctx) -> Result<()> {
    let pid = start_workload(c, "node1", "64M", "1M", "w-commit.json")?;
    let bin = c.bin.clone();
    let holder = thread::spawn(move || -> Result<()> {
        let sh = |node: &str, script: &str| -> Result<String> {
            let o = lab_exec(&bin, node).args(["sh", "-c", script]).output()?;
            Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let until = |what: &str, within: Duration, f: &dyn Fn() -> Result<bool>| wait_until_every(what, within, Duration::from_millis(20), f);
        // `[m]igrate`: the pattern does not match the shell that runs pgrep or pkill.
        let migrate_run = format!("'[m]igrate {pid} --json'");
        // In node2, every 20 ms for up to 180 s: CRIU's main process (the oldest `criu
        // restore`; the processes it forks start under the same name) stopped once it is there.
        let freeze_criu = "for i in $(seq 9000); do c=$(pgrep -o -f '^criu restore') && kill -STOP $c && echo $c && exit 0; sleep 0.02; done";
        let criu = sh("node2", freeze_criu)?;
        ensure!(!criu.is_empty(), "CRIU never restored at node2");
        let held = sh("node1", &format!("pkill -STOP -f {migrate_run} && echo held"));
        sh("node2", &format!("kill -CONT {criu}"))?;
        ensure!(held? == "held", "no `rdmig migrate {pid}` to hold at node1 while CRIU restored at node2");
        // From here on `rdmig migrate` is let go whatever happens.
        let held = (|| -> Result<()> {
            until("the restored process, CRIU done, at node2", Duration::from_secs(120), &|| {
                Ok(sh("node2", &format!("pgrep -f '^criu restore' >/dev/null || ps -o stat= -p {pid}"))?.starts_with(['T', 't']))
            })?;
            kill_agent_until_back(&bin, "node2", Duration::from_secs(60))
        })();
        let resumed = sh("node1", &format!("pkill -CONT -f {migrate_run} && echo resumed"));
        held?;
        ensure!(resumed? == "resumed", "`rdmig migrate {pid}` at node1 could not be continued");
        println!("  node2's agent was killed with the restored copy held stopped, `rdmig migrate` held until it was back");
        Ok(())
    });
    let res = migrate(c, pid, "node1", "node2", &["--strategy", "stop-and-copy", "--transport", "tcp"]);
    holder.join().map_err(|_| anyhow::anyhow!("the holding thread panicked"))??;
    exactly_once_after_the_agent_restart(c, pid, res, "w-commit.json")
}

/// One byte of an image is flipped on the destination's disk after it arrived: the first
/// pre-copy round's page image, once the second round is under way (so the first is complete and
/// sealed), long before the restore. The agent finds it when it checks the images against their
/// seals before CRIU reads them, refuses the restore, and the migration rolls back: the process
/// runs at the source alone with every page intact, and the damaged images are gone.
fn fault_image_byte_flipped_on_the_destination_disk(c: &Ctx) -> Result<()> {
    let pid = start_workload(c, "node1", "64M", "1M", "w-flip.json")?;
    // Migrations node2 holds already (another scenario's, being dropped) are not this one.
    let before = c.exec_ok("node2", &["sh", "-c", "echo $(ls -d /tmp/rdmig-agent/m-* 2>/dev/null)"])?;
    // Watched from inside node2, every 20 ms: a probe from here costs a `rdmig lab exec` round
    // trip each time, and on a loaded host the flip then came after the restore had checked the
    // images. The largest page image of this migration's round 1 gets the byte in its middle
    // XORed with 1.
    let flip = format!(
        r#"before=" {} "
for i in $(seq 9000); do
  for d in /tmp/rdmig-agent/m-*/pre-2; do
    [ -d "$d" ] || continue
    m=${{d%/pre-2}}
    case "$before" in *" $m "*) continue ;; esac
    f=$(ls -S "$m"/pre-1/pages-*.img | head -n1)
    off=$(( $(stat -c %s "$f") / 2 ))
    b=$(dd if="$f" bs=1 skip=$off count=1 2>/dev/null | od -An -tu1 | tr -d ' ')
    printf "$(printf '\\%03o' $(( b ^ 1 )))" | dd of="$f" bs=1 seek=$off conv=notrunc 2>/dev/null
    echo "$f at $off: $b -> $(dd if="$f" bs=1 skip=$off count=1 2>/dev/null | od -An -tu1 | tr -d ' ')"
    exit 0
  done
  sleep 0.02
done"#,
        before.trim()
    );
    let bin = c.bin.clone();
    let flipper = thread::spawn(move || -> Result<String> {
        let o = lab_exec(&bin, "node2").args(["sh", "-c", &flip]).output()?;
        Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
    });
    let res = migrate(c, pid, "node1", "node2", &["--strategy", "precopy", "--transport", "tcp", "--max-rounds", "4"]);
    let flipped = flipper.join().map_err(|_| anyhow::anyhow!("flipper thread panicked"))??;
    ensure!(!flipped.is_empty(), "no second pre-copy round was seen at node2, so no byte was flipped");
    println!("  flipped {flipped}");
    let (code, r) = res?;
    println!("  rdmig migrate: exit {code}, {} {}", r["outcome"]["outcome"], r["outcome"]["reason"]);
    ensure!(code == 3 && r["outcome"]["outcome"] == "rolled_back", "expected a rollback: exit {code}, {}", r["outcome"]);
    let reason = r["outcome"]["reason"].as_str().unwrap_or_default();
    ensure!(reason.contains("damaged") && reason.contains("pages-"), "the rollback does not say the page image was damaged: {reason}");
    let log = agent_log("node2");
    ensure!(log.lines().any(|l| l.contains("restore refused") && l.contains("pre-1/pages-")), "node2's agent did not log which file changed");
    let st = proc_state(c, "node1", pid)?.context("the process is gone from the source")?;
    ensure!(!st.starts_with(['T', 't']), "the source copy is left stopped ({st})");
    ensure!(proc_state(c, "node2", pid)?.is_none(), "a copy runs at the destination");
    let id = r["id"].as_str().context("the report has no id")?.to_string();
    wait_until("node2's agent to drop the damaged images", Duration::from_secs(60), || Ok(!holds_images(c, "node2", &id)?))?;
    let v = verify_workload(c, "node1", pid, "w-flip.json")?;
    ensure!(v["ok"] == true && v["verified_pages"] == 16384 && v["bad_pages"] == 0, "memory after the rollback: {v}");
    kill(c, "node1", pid);
    Ok(())
}

/// The destination agent is killed (SIGKILL) during pre-copy, once the first round's images are
/// there: the process was never frozen, so `rdmig migrate` refuses or rolls back and the
/// workload runs on at the source, alone and intact. The restarted agent (its supervisor starts
/// it again) takes the half-received migration up from its journal and drops it when its source
/// stays silent: its images go.
fn fault_destination_agent_killed_during_precopy(c: &Ctx) -> Result<()> {
    let pid = start_workload(c, "node1", "64M", "1M", "w-precopy-kill.json")?;
    let act = ["pkill", "-KILL", "-f", AGENT].map(String::from).to_vec();
    let probe = "ls /tmp/rdmig-agent/m-*/pre-1/pages-*.img 2>/dev/null || true".to_string();
    let killer = when_seen(c, "node2", probe, "node2", act, Duration::from_secs(180), Duration::from_millis(100));
    let res = migrate(c, pid, "node1", "node2", &["--strategy", "precopy", "--transport", "tcp"]);
    ensure!(killer.join().map_err(|_| anyhow::anyhow!("killer thread panicked"))??, "no pre-copy round was seen at node2, so its agent was not killed");
    let (code, r) = res?;
    println!("  rdmig migrate: exit {code}, {} {}", r["outcome"]["outcome"], r["outcome"]["reason"]);
    ensure!(matches!(code, 2 | 3), "expected a refusal or a rollback: exit {code}, {}", r["outcome"]);
    ensure!(!phases(&r).iter().any(|p| p.contains("restore")), "it went on to a restore: {:?}", phases(&r));
    let st = proc_state(c, "node1", pid)?.context("the process is gone from the source")?;
    ensure!(!st.starts_with(['T', 't']), "the source copy is left stopped ({st})");
    ensure!(proc_state(c, "node2", pid)?.is_none(), "a copy runs at the destination");
    let id = r["id"].as_str().context("the report has no id")?.to_string();
    wait_until("node2's restarted agent to drop the half-received images", Duration::from_secs(180), || Ok(!holds_images(c, "node2", &id)?))?;
    let v = verify_workload(c, "node1", pid, "w-precopy-kill.json")?;
    ensure!(v["ok"] == true && v["verified_pages"] == 16384 && v["bad_pages"] == 0, "memory after the failure: {v}");
    kill(c, "node1", pid);
    Ok(())
}
