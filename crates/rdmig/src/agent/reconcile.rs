//! The agent's side of recovery: at start-up it takes up what its journal says was under way
//! (`adopt`) and removes image directories nobody owns (`remove_leftovers`); then, periodically,
//! it recovers the source migrations of this node whose `rdmig migrate` died (the same work as
//! `rdmig recover`). It also answers `rdmig events` and `rdmig status` from the journal and
//! its table.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tracing::{info, warn};

use super::{AgentConfig, Migration, Table};
use crate::journal::{facts, NodeJournal, Outcome as JOutcome, Phase, Role};
use rdmig_proto::msg::{MigState, MovedAddr, Reply};

/// How long start-up waits for a CRIU restore that outlived the previous agent.
const CRIU_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

/// The destination migrations the journal leaves unfinished, as the table's entries: a copy
/// restored here and never committed is tracked again (the reaper kills it if its source stays
/// silent; the source may still commit it), the rest is dropped by the reaper in time.
pub(super) fn adopt(j: &NodeJournal, work_dir: &Path, podman: &crate::podman::Podman) -> HashMap<String, Migration> {
    let open = match j.with(|j| j.migrations_not_final()) {
        Ok(o) => o,
        Err(e) => {
            warn!("journal: cannot list unfinished migrations: {e}");
            return HashMap::new();
        }
    };
    let mut table = HashMap::new();
    for m in open.into_iter().filter(|m| m.role() == Role::Destination) {
        let id = m.migration().clone();
        let Ok(events) = j.with(|j| j.events_of(&id)) else { continue };
        let f = facts(&events);
        let get_i32 = |k: &str| f.get(k).and_then(|v| v.as_i64()).and_then(|p| i32::try_from(p).ok());
        let (Some(source), Some(pid)) = (f.get("source").and_then(|v| v.as_str()).and_then(|s| s.parse().ok()), get_i32("pid")) else {
            continue;
        };
        let dir = work_dir.join(id.as_str());
        // A restore that outlived the agent (CRIU is not its child's child any more) decides
        // what there is: wait for it to end, within bounds.
        let until = Instant::now() + CRIU_GRACE;
        while crate::process::criu_uses(&dir) && Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let restore_done = events.iter().any(|e| e.phase == Phase::Restore && e.outcome == JOutcome::Done);
        let restore_started = events.iter().any(|e| e.phase == Phase::Restore);
        let ticks = f.get("start_ticks").and_then(|v| v.as_u64());
        // A container's restore is Podman's, which runs it at once: the copy is tracked by its ID
        // whether or not it runs now, so that an abort removes it.
        let container = f.get("container_id").and_then(|v| v.as_str()).filter(|_| restore_started);
        let mut copy = None;
        let state = if let Some(cid) = container {
            let (c, running) = super::container::Restored::adopt(podman, f.get("container").and_then(|v| v.as_str()), cid, &dir, CRIU_GRACE);
            copy = Some(c);
            running.map_or(MigState::Receiving, |pid| MigState::Restored { pid })
        } else {
            match (restore_done, get_i32("restored_pid"), ticks) {
                (true, Some(rp), Some(t)) if crate::process::same(rp, t).is_some() => MigState::Restored { pid: rp },
                // The agent died while CRIU restored: a process with the source's pid, which was
                // free when the restore began, is the copy.
                (false, ..) if restore_started && f.get("pid_free").and_then(|v| v.as_bool()) == Some(true) && crate::process::stat(pid).is_some() => {
                    MigState::Restored { pid }
                }
                _ => MigState::Receiving,
            }
        };
        // The directory is the migration's own under the work directory, whatever was recorded.
        let mut mig = Migration::new(dir, (source, pid));
        mig.state = state;
        mig.container = copy;
        mig.moved_addr = events
            .iter()
            .filter(|e| e.phase == Phase::AddrAdd)
            .find_map(|e| serde_json::from_value::<MovedAddr>(e.details.as_ref()?.get("move_addr")?.clone()).ok());
        // Its hold goes with it at the commit or the abort, as if this agent had not restarted.
        mig.tcp_held = events
            .iter()
            .filter(|e| e.phase == Phase::AddrAdd)
            .any(|e| e.details.as_ref().and_then(|d| d.get("tcp_hold")).and_then(|v| v.as_bool()) == Some(true));
        mig.last_heard = Instant::now();
        info!(%id, ?state, "taken up from the journal: dropped unless its source commits it");
        j.note(&id, Role::Destination, Phase::Recover, JOutcome::Started, Some(serde_json::json!({ "adopted_as": format!("{state:?}") })));
        table.insert(id.as_str().to_string(), mig);
    }
    table
}

/// Removes migration and CPU-check directories under the work directory that no migration in
/// `table` owns: what a crashed agent left.
pub(super) fn remove_leftovers(work_dir: &Path, table: &HashMap<String, Migration>) {
    let Ok(rd) = std::fs::read_dir(work_dir) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with("m-") || name.starts_with("cpucheck-");
        if ours && !table.contains_key(&name) && e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => info!(dir = %e.path().display(), "removed a leftover image directory"),
                Err(err) => warn!(dir = %e.path().display(), "cannot remove a leftover image directory: {err}"),
            }
        }
    }
}

/// Every `reconcile_every`: source migrations of this node that no `rdmig migrate` runs any more
/// are recovered (not waiting: a destination's orphan window is checked again next time).
pub(super) async fn periodically(cfg: Arc<AgentConfig>, table: Table) {
    let Some(j) = table.journal.clone() else { return };
    let o = crate::migrate::RecoverOptions {
        tls: cfg.client_tls.clone(),
        lock_dir: cfg.lock_dir.clone(),
        orphan_after: cfg.orphan_after,
        wait: false,
        ask: crate::migrate::RECOVER_ASK,
    };
    let mut tick = tokio::time::interval(cfg.reconcile_every);
    loop {
        tick.tick().await;
        match crate::migrate::recover(&j, &o).await {
            Ok(done) => {
                for r in done.iter().filter(|r| r.outcome != crate::migrate::RecoveryOutcome::Busy) {
                    info!(id = %r.id, outcome = ?r.outcome, "source recovery: {}", r.detail);
                }
            }
            Err(e) => warn!("source recovery: {e}"),
        }
    }
}

/// `Events`: the journal after `after`, and this node's wall clock.
pub(super) fn events(table: &Table, after: u64) -> Reply {
    let Some(j) = &table.journal else {
        return Reply::Failed("this agent keeps no journal (--journal)".into());
    };
    match j.with(|j| j.stream_since(after)).map_err(|e| e.to_string()).and_then(|s| serde_json::to_string(&s).map_err(|e| e.to_string())) {
        Ok(stream_json) => Reply::Events { stream_json, wall_ns: rdmig_journal::wall_ns() },
        Err(e) => Reply::Failed(format!("journal: {e}")),
    }
}

/// One migration as `rdmig status` shows it.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Held {
    pub id: String,
    pub role: String,
    /// The agent's state (destination) or the journal's last step.
    pub state: String,
    pub pid: Option<i32>,
    pub source: Option<String>,
}

/// `Inventory`: the migrations this node has under way, as destination (the table) and as
/// source (the journal).
pub(super) fn inventory(cfg: &AgentConfig, table: &Table) -> Reply {
    let mut held: Vec<Held> = table
        .lock()
        .expect("table lock")
        .iter()
        .filter(|(_, m)| m.in_flight())
        .map(|(id, m)| Held {
            id: id.clone(),
            role: "destination".into(),
            state: format!("{:?}", m.state),
            pid: Some(m.source.1),
            source: Some(m.source.0.to_string()),
        })
        .collect();
    if let Some(j) = &table.journal {
        if let Ok(open) = j.with(|j| j.migrations_not_final()) {
            for m in open.into_iter().filter(|m| m.role() == Role::Source) {
                let pid = j.with(|j| j.events_of(m.migration())).ok().and_then(|e| facts(&e).get("pid").and_then(|v| v.as_i64())).map(|p| p as i32);
                held.push(Held {
                    id: m.migration().to_string(),
                    role: "source".into(),
                    state: format!("{} {}", m.last.phase, m.last.outcome.as_str()),
                    pid,
                    source: None,
                });
            }
        }
    }
    held.sort_by(|a, b| a.id.cmp(&b.id));
    let node = crate::journal::node_name().map(|n| n.to_string()).unwrap_or_default();
    // QPs stopped, resuming or paused now, and any whose pause ended at the bound.
    let qps: Vec<super::paused::QpNow> = super::paused::snapshot().unwrap_or_default().qps.into_iter().filter(|q| q.held() || q.pauses_expired > 0).collect();
    let json = serde_json::json!({ "node": node, "work_dir": cfg.work_dir.display().to_string(), "migrations": held, "qps": qps });
    Reply::Inventory { json: json.to_string() }
}
