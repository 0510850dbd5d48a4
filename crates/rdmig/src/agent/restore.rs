//! `Restore`: the moved address comes up here, then CRIU restores the process from the
//! migration's images (with rdmig's plugin for verbs state) and lets it run.

use tracing::{info, warn};

use super::{now_ns, AgentConfig, Table};
use crate::criu;
use rdmig_proto::msg::{MigState, MigrationId, RelPath, Reply, RestoreOpts};

pub(super) async fn restore(cfg: &AgentConfig, table: &Table, id: &MigrationId, dir: &RelPath, opts: &RestoreOpts) -> Reply {
    let d = match super::dir_of(table, id) {
        Ok(d) => d,
        Err(e) => return Reply::Failed(e),
    };
    let start = now_ns();
    info!(%id, verbs = opts.verbs, tcp = opts.tcp_established, "restoring");
    let mut copts = criu::Options { plugins: None, tcp_established: opts.tcp_established };
    if opts.verbs {
        match criu::plugin_dir(&cfg.work_dir) {
            Ok(p) => copts.plugins = Some(p),
            Err(e) => return Reply::Failed(format!("rdmig's CRIU plugin: {e}")),
        }
    }
    if let Some(m) = &opts.move_addr {
        if let Err(e) = crate::netaddr::add(m) {
            return Reply::Failed(format!("moving {}/{} to {} here: {e}", m.addr, m.prefix, m.dev));
        }
        if let Some(t) = table.lock().expect("table lock").get_mut(id.as_str()) {
            t.moved_addr = Some(m.clone());
        }
    }
    match criu::restore(&d.join(dir.as_str()), cfg.restore_timeout, &copts).await {
        Ok(pid) => {
            let end = now_ns();
            info!(%id, pid, ms = (end - start) / 1_000_000, "restored");
            if let Some(m) = table.lock().expect("table lock").get_mut(id.as_str()) {
                m.state = MigState::Restored { pid };
            }
            Reply::Restored { pid, start_ns: start, end_ns: end }
        }
        Err(e) => {
            warn!(%id, "restore failed: {e}");
            // The address goes back to the source with the process.
            if let Some(m) = &opts.move_addr {
                let _ = crate::netaddr::del(m);
            }
            Reply::Failed(e.to_string())
        }
    }
}
