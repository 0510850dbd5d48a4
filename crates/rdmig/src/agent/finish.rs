//! How a migration ends here: `Commit` (the process lives here now; its images go) or `Abort`
//! (the source takes it back: any copy restored here is killed, the moved address and the
//! images go).

use tracing::info;

use super::{AgentConfig, Table};
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
            // A restored copy that the source disowns must not keep running: the source
            // resumes its own.
            if let MigState::Restored { pid } = m.state {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            if let Some(a) = m.moved_addr.take() {
                let _ = crate::netaddr::del(&a);
            }
            m.state = MigState::Aborted;
            let _ = std::fs::remove_dir_all(&m.dir);
            info!(%id, "aborted");
            Reply::Ack
        }
        None => Reply::Ack,
    }
}
