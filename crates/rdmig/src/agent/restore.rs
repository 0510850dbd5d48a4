//! `Restore`: the moved address comes up here, then CRIU restores the process from the
//! migration's images (with rdmig's plugin for verbs state) and leaves it stopped, its QPs
//! stopped too: it runs once the source commits (`finish`). Before CRIU reads anything, every
//! image file is checked against its seal (`seal`): damaged images are refused, not restored.
//!
//! While CRIU works the migration is `Restoring`: a source that lost its connection and asks
//! learns that nobody knows yet (not "receiving", which would let it take the process back while
//! a copy comes up here). A migration aborted meanwhile (by its source, or as silent) does not
//! keep the copy that comes up: it is killed at once.

use tracing::{info, warn};

use super::{now_ns, AgentConfig, Table};
use crate::criu;
use crate::journal::{Outcome as JOutcome, Phase};
use rdmig_confine::Confined;
use rdmig_proto::msg::{MigState, MigrationId, RelPath, Reply, RestoreOpts};

/// Starts the restore of migration `id` (a process's or a container's): `Receiving` becomes
/// `Restoring`. Its directory, or why not (another state, or none such).
pub(super) fn begin(table: &Table, id: &MigrationId) -> Result<std::path::PathBuf, String> {
    let mut t = table.lock().expect("table lock");
    match t.get_mut(id.as_str()) {
        Some(m) if m.state == MigState::Receiving => {
            m.state = MigState::Restoring;
            Ok(m.dir.clone())
        }
        Some(m) => Err(format!("migration {id} is {:?}, not receiving", m.state)),
        None => Err(format!("no migration {id} here (agent restarted?)")),
    }
}

/// A restore that did not get going (refused before anything came up): `Receiving` again.
pub(super) fn back_to_receiving(table: &Table, id: &MigrationId) {
    if let Some(m) = table.lock().expect("table lock").get_mut(id.as_str()) {
        m.state = MigState::Receiving;
    }
}

pub(super) async fn restore(cfg: &AgentConfig, table: &Table, id: &MigrationId, dir: &RelPath, opts: &RestoreOpts) -> Reply {
    let d = match begin(table, id) {
        Ok(d) => d,
        Err(why) => return Reply::Failed(why),
    };
    // Restoring: nothing more arrives, so what CRIU will read is what is checked here.
    let start = now_ns();
    if let Err(e) = check_seals(table, id, &d) {
        warn!(%id, "restore refused: {e}");
        back_to_receiving(table, id);
        table.note(id.as_str(), Phase::Restore, JOutcome::failed(format!("images damaged: {e}")), None);
        return Reply::Failed(format!("restore refused: the images are damaged: {e}"));
    }
    let source_pid = table.lock().expect("table lock").get(id.as_str()).map(|m| m.source.1);
    // CRIU restores the process with its own pid: free now, so a process with that pid found
    // after a crash of this agent is the restored copy.
    let pid_free = source_pid.map(|p| crate::process::stat(p).is_none());
    if let Err(e) = table.must_note(id, Phase::Restore, Some(serde_json::json!({ "pid_free": pid_free }))) {
        back_to_receiving(table, id);
        return Reply::Failed(e);
    }
    let images = d.join(dir.as_str());
    let restored = run(cfg, table, id, &images, opts).await;
    let mut t = table.lock().expect("table lock");
    let Some(m) = t.get_mut(id.as_str()) else {
        return Reply::Failed(format!("migration {id} vanished during its restore"));
    };
    match restored {
        Ok(pid) if m.state == MigState::Restoring => {
            let end = now_ns();
            info!(%id, pid, ms = (end - start) / 1_000_000, "restored");
            m.state = MigState::Restored { pid };
            drop(t);
            let start_ticks = crate::process::stat(pid).map(|s| s.start_ticks);
            // The plugin's part of the restore (MigrRDMA's RestoreRDMA) and where it went, for the
            // source's timeline, this agent's log and its journal.
            let rdma_us = rdmig_image::timing::read_total(&images, rdmig_image::timing::Kind::RestoreRdma).map(|d| d.as_micros() as u64);
            let rdma_steps_us = crate::timeline::rdma_steps_us(&images, rdmig_image::timing::Kind::RestoreRdma);
            let steps = crate::timeline::steps_json(&rdma_steps_us);
            if let Some(s) = &steps {
                info!(%id, rdma_us, steps = %s, "the plugin's restore steps (microseconds)");
            }
            table.note(
                id.as_str(),
                Phase::Restore,
                JOutcome::Done,
                Some(serde_json::json!({ "restored_pid": pid, "start_ticks": start_ticks, "rdma_us": rdma_us, crate::timeline::RDMA_STEPS_US: steps })),
            );
            Reply::Restored { pid, start_ns: start, end_ns: end, rdma_us, rdma_steps_us }
        }
        Ok(pid) => {
            // Aborted while CRIU worked: the source keeps (or takes back) its own copy.
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            let hold = opts.move_addr.as_ref().and_then(|a| {
                let _ = crate::netaddr::del(a);
                m.take_tcp_hold(id.as_str(), a.addr, Some(pid))
            });
            warn!(%id, pid, "aborted during its restore: the restored copy was killed");
            drop(t);
            if let Some(h) = hold {
                h.end();
            }
            table.note(id.as_str(), Phase::Restore, JOutcome::failed(format!("aborted during the restore; copy {pid} killed")), None);
            Reply::Failed(format!("migration {id} was aborted during its restore; the restored copy (pid {pid}) was killed"))
        }
        Err(e) => {
            warn!(%id, "restore failed: {e}");
            if m.state == MigState::Restoring {
                m.state = MigState::Receiving;
            }
            // The address goes back to the source with the process.
            let hold = opts.move_addr.as_ref().and_then(|a| {
                let _ = crate::netaddr::del(a);
                m.take_tcp_hold(id.as_str(), a.addr, None)
            });
            drop(t);
            if let Some(h) = hold {
                h.end();
            }
            table.note(id.as_str(), Phase::Restore, JOutcome::failed(e.clone()), None);
            Reply::Failed(e)
        }
    }
}

/// Every image file of migration `id` (all rounds of the chain) is as it arrived (`seal`).
pub(super) fn check_seals(table: &Table, id: &MigrationId, dir: &std::path::Path) -> Result<(), String> {
    let seals = table.lock().expect("table lock").get(id.as_str()).map(|m| m.seals.clone()).unwrap_or_default();
    let t = std::time::Instant::now();
    let c = Confined::open(dir).map_err(|e| e.to_string())?;
    // (A stat per file; a file is read only where its identity changed.)
    let checked = tokio::task::block_in_place(|| seals.check(&c))?;
    info!(%id, files = checked.files, bytes = checked.bytes, read = checked.read, us = t.elapsed().as_micros() as u64, "images checked against their seals");
    Ok(())
}

/// The address, then CRIU; the restored process's pid.
async fn run(cfg: &AgentConfig, table: &Table, id: &MigrationId, images: &std::path::Path, opts: &RestoreOpts) -> Result<i32, String> {
    info!(%id, verbs = opts.verbs, tcp = opts.tcp_established, "restoring");
    // Held: the copy runs only once its source commits (`finish::commit`), so a copy that is
    // never committed never ran, whatever fails in between.
    let mut copts = criu::Options { plugins: None, tcp_established: opts.tcp_established, hold: true };
    if opts.verbs {
        copts.plugins = Some(criu::plugin_dir(&cfg.work_dir).map_err(|e| format!("rdmig's CRIU plugin: {e}"))?);
    }
    add_moved_address(table, id, opts)?;
    criu::restore(images, cfg.restore_timeout, &copts).await.map_err(|e| e.to_string())
}

/// The moved address comes up here (recorded first), its TCP connections held until the commit
/// when `opts.tcp_established` (see tcp_hold).
pub(super) fn add_moved_address(table: &Table, id: &MigrationId, opts: &RestoreOpts) -> Result<(), String> {
    if let Some(m) = &opts.move_addr {
        // Restored connections answer nobody until the commit (see tcp_hold).
        let hold = opts.tcp_established;
        table.must_note(id, Phase::AddrAdd, Some(serde_json::json!({ "move_addr": m, "tcp_hold": hold })))?;
        if hold {
            crate::tcp_hold::hold(id.as_str(), m.addr).map_err(|e| format!("holding the TCP connections of {}: {e}", m.addr))?;
        }
        if let Err(e) = crate::netaddr::add(m) {
            if hold {
                crate::tcp_hold::release(id.as_str(), m.addr);
            }
            return Err(format!("moving {}/{} to {} here: {e}", m.addr, m.prefix, m.dev));
        }
        if let Some(t) = table.lock().expect("table lock").get_mut(id.as_str()) {
            t.moved_addr = Some(m.clone());
            t.tcp_held = hold;
        }
        table.note(id.as_str(), Phase::AddrAdd, JOutcome::Done, None);
    }
    Ok(())
}
