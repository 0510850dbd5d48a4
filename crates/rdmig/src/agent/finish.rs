//! How a migration ends here: `Commit` (the process lives here now; its images go) or `Abort`
//! (the source takes it back: any copy restored here is killed, the moved address and the
//! images go), which is also what becomes of a migration whose source went silent.

use std::time::Duration;

use tracing::{info, warn};

use super::{AgentConfig, HoldToEnd, Migration, Table};
use crate::journal::{Outcome as JOutcome, Phase};
use rdmig_proto::msg::{MigState, MigrationId, Reply};

pub(super) fn commit(cfg: &AgentConfig, table: &Table, id: &MigrationId) -> Reply {
    let mut t = table.lock().expect("table lock");
    match t.get_mut(id.as_str()) {
        Some(m) if matches!(m.state, MigState::Restored { .. }) => {
            let MigState::Restored { pid } = m.state else { unreachable!() };
            // Its connections answer again (tcp_hold), then the held copy runs: its QPs resume
            // (their peers with them), then SIGCONT.
            if let Some(hold) = m.moved_addr.as_ref().map(|a| a.addr).and_then(|addr| m.take_tcp_hold(id.as_str(), addr, None)) {
                hold.end();
            }
            // A container runs since its restore (Podman cannot hold it): nothing to let go.
            let resumed = if m.container.is_some() { Ok(()) } else { crate::process::resume(pid) };
            let resumed_ns = super::now_ns();
            m.state = MigState::Committed;
            let dir = m.dir.clone();
            drop(t);
            if let Err(e) = &resumed {
                warn!(%id, pid, "letting the committed copy run: {e}");
            }
            table.note(id.as_str(), Phase::Commit, JOutcome::Done, Some(serde_json::json!({ "resumed": resumed.is_ok() })));
            if !cfg.keep_images {
                let _ = std::fs::remove_dir_all(&dir);
                table.note(id.as_str(), Phase::Cleanup, JOutcome::Done, Some(serde_json::json!({ "removed": dir.display().to_string() })));
            }
            info!(%id, pid, "committed: the copy runs");
            Reply::Committed { resumed_ns }
        }
        Some(m) => Reply::Failed(format!("migration {id} is {:?}; only a restored one can be committed", m.state)),
        None => Reply::Failed(format!("no migration {id} here")),
    }
}

pub(super) fn abort(table: &Table, id: &MigrationId) -> Reply {
    let mut t = table.lock().expect("table lock");
    match t.get_mut(id.as_str()) {
        Some(m) if m.state == MigState::Committed => Reply::Failed(format!("migration {id} is committed: the process lives here now")),
        Some(m) if m.state == MigState::Aborted => Reply::Ack,
        Some(m) => {
            let (killed, hold, copy) = drop_migration(id.as_str(), m);
            drop(t);
            if let Some(h) = hold {
                h.end();
            }
            // Gone before the source is told: it restores its own container next.
            if let Some(Err(e)) = copy.map(|c| c.remove_blocking()) {
                warn!(%id, "removing the container restored here: {e}");
            }
            table.note(id.as_str(), Phase::Rollback, JOutcome::Done, Some(serde_json::json!({ "reason": "the source aborted", "killed_copy": killed })));
            info!(%id, "aborted");
            Reply::Ack
        }
        None => match table.journal.as_ref().map(|j| j.with(|j| j.last_phase(id))) {
            // Forgotten here, but the journal says it committed: the process lives here.
            Some(Ok(Some((Phase::Commit, JOutcome::Done)))) | Some(Ok(Some((Phase::Cleanup, _)))) => {
                Reply::Failed(format!("migration {id} is committed: the process lives here now"))
            }
            _ => Reply::Ack,
        },
    }
}

/// Undoes a migration here: a restored copy that the source disowns must not keep running (the
/// source resumes its own), and the moved address and the images go.
/// Returns the pid of the copy it killed, the TCP hold to end once the table is unlocked, and a
/// restored container to remove then (Podman takes seconds: not under the table's lock).
fn drop_migration(id: &str, m: &mut Migration) -> (Option<i32>, Option<HoldToEnd>, Option<super::container::Restored>) {
    let restoring = m.state == MigState::Restoring;
    let copy = m.container.take();
    let killed = match m.state {
        MigState::Restored { pid } => {
            if copy.is_none() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            Some(pid)
        }
        _ => None,
    };
    let mut hold = None;
    if let Some(a) = m.moved_addr.take() {
        let _ = crate::netaddr::del(&a);
        // While CRIU still restores, the restore's end ends the hold, once it has killed the
        // copy CRIU made.
        if !restoring {
            hold = m.take_tcp_hold(id, a.addr, killed);
        }
    }
    m.state = MigState::Aborted;
    let _ = std::fs::remove_dir_all(&m.dir);
    (killed, hold, copy)
}

/// Aborts each migration still in flight that no open connection names and none named for
/// `after`: its source is gone, stopped or cut off, and would have committed by now. Returns
/// their ids.
pub(super) fn reap(table: &Table, after: Duration) -> Vec<String> {
    let mut t = table.lock().expect("table lock");
    let mut gone: Vec<(String, Option<i32>)> = vec![];
    let mut holds = vec![];
    let mut copies = vec![];
    for (id, m) in t.iter_mut().filter(|(_, m)| m.in_flight() && m.conns == 0 && m.last_heard.elapsed() >= after) {
        let restored = match m.state {
            MigState::Restored { pid } => format!("; killed its uncommitted copy, pid {pid}"),
            _ => String::new(),
        };
        let (killed, hold, copy) = drop_migration(id, m);
        holds.extend(hold);
        copies.extend(copy);
        warn!(%id, "aborted: its source was silent for {} s{restored}", after.as_secs());
        gone.push((id.clone(), killed));
    }
    drop(t);
    holds.into_iter().for_each(HoldToEnd::end);
    for c in copies {
        if let Err(e) = c.remove_blocking() {
            warn!(container = %c.id, "removing an uncommitted container: {e}");
        }
    }
    for (id, killed) in &gone {
        table.note(
            id,
            Phase::Rollback,
            JOutcome::Done,
            Some(serde_json::json!({ "reason": format!("its source was silent for {} s", after.as_secs()), "killed_copy": killed })),
        );
    }
    gone.into_iter().map(|(id, _)| id).collect()
}

/// Runs `reap` for as long as the agent runs.
pub(super) async fn reap_orphans(table: Table, after: Duration) {
    let every = (after / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        reap(&table, after);
    }
}
