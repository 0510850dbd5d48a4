//! How a migration ends here: `Commit` (the process lives here now; its images go) or `Abort`
//! (the source takes it back: any copy restored here is killed, the moved address and the
//! images go), which is also what becomes of a migration whose source went silent.

use std::time::Duration;

use tracing::{info, warn};

use super::{AgentConfig, Migration, Table};
use rdmig_proto::msg::{MigState, MigrationId, Reply};

pub(super) fn commit(cfg: &AgentConfig, table: &Table, id: &MigrationId) -> Reply {
    let mut t = table.lock().expect("table lock");
    match t.get_mut(id.as_str()) {
        Some(m) if matches!(m.state, MigState::Restored { .. }) => {
            m.state = MigState::Committed;
            if !cfg.keep_images {
                let _ = std::fs::remove_dir_all(&m.dir);
            }
            info!(%id, "committed");
            Reply::Ack
        }
        Some(m) => Reply::Failed(format!("migration {id} is {:?}; only a restored one can be committed", m.state)),
        None => Reply::Failed(format!("no migration {id} here")),
    }
}

pub(super) fn abort(table: &Table, id: &MigrationId) -> Reply {
    let mut t = table.lock().expect("table lock");
    match t.get_mut(id.as_str()) {
        Some(m) if m.state == MigState::Committed => Reply::Failed(format!("migration {id} is committed: the process lives here now")),
        Some(m) => {
            drop_migration(m);
            info!(%id, "aborted");
            Reply::Ack
        }
        None => Reply::Ack,
    }
}

/// Undoes a migration here: a restored copy that the source disowns must not keep running (the
/// source resumes its own), and the moved address and the images go.
fn drop_migration(m: &mut Migration) {
    if let MigState::Restored { pid } = m.state {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    if let Some(a) = m.moved_addr.take() {
        let _ = crate::netaddr::del(&a);
    }
    m.state = MigState::Aborted;
    let _ = std::fs::remove_dir_all(&m.dir);
}

/// Aborts each migration still in flight that no open connection names and none named for
/// `after`: its source is gone, stopped or cut off, and would have committed by now. Returns
/// their ids.
pub(super) fn reap(table: &Table, after: Duration) -> Vec<String> {
    let mut t = table.lock().expect("table lock");
    let mut gone = vec![];
    for (id, m) in t.iter_mut().filter(|(_, m)| m.in_flight() && m.conns == 0 && m.last_heard.elapsed() >= after) {
        let restored = match m.state {
            MigState::Restored { pid } => format!("; killed its uncommitted copy, pid {pid}"),
            _ => String::new(),
        };
        drop_migration(m);
        warn!(%id, "aborted: its source was silent for {} s{restored}", after.as_secs());
        gone.push(id.clone());
    }
    gone
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
