//! Containers (`rdmig migrate --container`): `CheckContainer` (can this node take it?) and
//! `RestoreContainer` (the moved address comes up, then `podman container restore --import` of
//! the checkpoint archive that arrived as a file of the migration, checked against its seal,
//! with `--import-previous` of the pre-checkpoint archive when pre-copy took one).
//!
//! The agent runs as root: the only things of the request that reach `podman` are the
//! container's name and ID (validated by `msg`: nothing that reads as an option) and the paths
//! of the archives, which the agent itself resolves beneath the migration's directory. Podman's
//! own settings come from this agent's configuration (`AgentConfig::podman`).
//!
//! Unlike a process, a restored container runs at once (Podman 4.3 cannot restore a container
//! and leave it stopped), so the source keeps its copy stopped until the destination says it
//! restored, and an abort removes the copy here (`podman rm -f`) before the source restores
//! its own. What this agent removes is only ever what its restore created: the name and the ID
//! are checked to be free first, and the copy is removed by its ID.

use tracing::{info, warn};

use super::restore::{add_moved_address, back_to_receiving, begin, check_seals};
use super::{now_ns, AgentConfig, Table};
use crate::journal::{Outcome as JOutcome, Phase};
use crate::podman::Podman;
use rdmig_proto::msg::{ContainerRef, MigState, MigrationId, RelPath, Reply, RestoreOpts};

/// A container restored here by a migration not yet committed: removed if it is aborted.
#[derive(Debug, Clone)]
pub(super) struct Restored {
    pub podman: Podman,
    /// Its full ID (its name may be reused by nobody else while it exists, its ID never).
    pub id: String,
}

impl Restored {
    /// Removes the copy (`podman rm -f`), waiting for it: the source restores its own next.
    /// Blocking (an abort runs under no lock, but in the agent's runtime: it lends the thread).
    pub(super) fn remove_blocking(&self) -> Result<(), String> {
        blocking(self.podman.run(&["rm", "--force", "--time", "0", &self.id], crate::podman::SHORT))?.map(drop).map_err(|e| e.to_string())
    }

    /// An agent that starts again with a migration whose container restore had begun takes the
    /// copy up: a Podman restore (of an archive in `dir`, the migration's directory) that
    /// outlived the last agent is waited for (`grace` at most),
    /// then the container's process if it runs. Either way the copy is tracked by its ID, so
    /// that an abort (or the source's silence) removes whatever the restore made: a copy the new
    /// agent did not see running is never left to run beside the one the source restores.
    /// Blocking, as `remove_blocking`.
    pub(super) fn adopt(podman: &Podman, name: Option<&str>, id: &str, dir: &std::path::Path, grace: std::time::Duration) -> (Self, Option<i32>) {
        let until = std::time::Instant::now() + grace;
        let words: Vec<&str> = name.into_iter().chain([id]).collect();
        while crate::process::podman_works_on(&words, Some(dir)) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let copy = Restored { podman: podman.clone(), id: id.to_string() };
        let running = match blocking(podman.inspect(id)) {
            Ok(Ok(i)) if i.status == "running" && i.pid > 0 => Some(i.pid),
            _ => None,
        };
        (copy, running)
    }
}

/// Runs a Podman call (`fut`) to its end from synchronous code, whatever runtime (if any) runs
/// it. Err: no runtime could run it.
fn blocking<F: std::future::Future + Send>(fut: F) -> Result<F::Output, String>
where
    F::Output: Send,
{
    let work = || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        Ok(rt.block_on(fut))
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(work),
        Ok(_) => std::thread::scope(|s| s.spawn(work).join().unwrap_or_else(|_| Err("panicked".into()))),
        Err(_) => work(),
    }
}

/// Whether `c` could be restored here now: Podman runs, and neither its name nor its ID is taken.
async fn free_here(podman: &Podman, c: &ContainerRef) -> Result<(), String> {
    let all = podman.containers().await.map_err(|e| e.to_string())?;
    if all.iter().any(|(_, name)| name == c.name.as_str()) {
        return Err(format!("a container named {} exists here already", c.name));
    }
    if all.iter().any(|(id, _)| *id == c.id) {
        return Err(format!("a container with the ID of {} ({}) exists here already", c.name, &c.id[..12]));
    }
    Ok(())
}

/// `CheckContainer`: touches nothing.
pub(super) async fn check(cfg: &AgentConfig, c: &ContainerRef) -> Reply {
    match free_here(&cfg.podman, c).await {
        Ok(()) => Reply::Ack,
        Err(e) => Reply::Failed(e),
    }
}

/// `RestoreContainer`: as a process's `Restore` (state, seals, journal, address), with Podman.
pub(super) async fn restore(
    cfg: &AgentConfig,
    table: &Table,
    id: &MigrationId,
    archive: &RelPath,
    previous: Option<&RelPath>,
    c: &ContainerRef,
    opts: &RestoreOpts,
) -> Reply {
    let d = match begin(table, id) {
        Ok(d) => d,
        Err(why) => return Reply::Failed(why),
    };
    let start = now_ns();
    let refuse = |why: String| {
        back_to_receiving(table, id);
        table.note(id.as_str(), Phase::Restore, JOutcome::failed(why.clone()), None);
        Reply::Failed(why)
    };
    if let Err(e) = check_seals(table, id, &d) {
        return refuse(format!("restore refused: the checkpoint archive is damaged: {e}"));
    }
    if let Err(e) = table.must_note(id, Phase::Restore, Some(serde_json::json!({ "container": c.name.as_str(), "container_id": c.id }))) {
        return refuse(e);
    }
    let previous = previous.map(|p| d.join(p.as_str()));
    let restored = run(cfg, table, id, &d.join(archive.as_str()), previous.as_deref(), c, opts).await;
    let mut t = table.lock().expect("table lock");
    let Some(m) = t.get_mut(id.as_str()) else {
        return Reply::Failed(format!("migration {id} vanished during its restore"));
    };
    let copy = Restored { podman: cfg.podman.clone(), id: c.id.clone() };
    match restored {
        Ok((pid, end)) if m.state == MigState::Restoring => {
            let checked_ms = now_ns().saturating_sub(end) / 1_000_000;
            info!(%id, container = %c.name, pid, ms = (end - start) / 1_000_000, checked_ms, "container restored");
            m.state = MigState::Restored { pid };
            m.container = Some(copy);
            drop(t);
            table.note(id.as_str(), Phase::Restore, JOutcome::Done, Some(serde_json::json!({ "restored_pid": pid, "container": c.name.as_str() })));
            // Podman's CRIU restores from its own copy of the images: the plugin's times stay there.
            Reply::Restored { pid, start_ns: start, end_ns: end, rdma_us: None, rdma_steps_us: vec![] }
        }
        Ok((pid, _)) => {
            // Aborted while Podman worked: the source takes its container back.
            let addr = opts.move_addr.clone();
            drop(t);
            let removed = copy.remove_blocking();
            if let Some(a) = &addr {
                let _ = crate::netaddr::del(a);
            }
            warn!(%id, pid, "aborted during its restore: the restored container was removed ({removed:?})");
            table.note(id.as_str(), Phase::Restore, JOutcome::failed(format!("aborted during the restore; container {} removed", c.name)), None);
            Reply::Failed(format!("migration {id} was aborted during its restore; the restored container {} was removed", c.name))
        }
        Err(e) => {
            warn!(%id, container = %c.name, "container restore failed: {e}");
            if m.state == MigState::Restoring {
                m.state = MigState::Receiving;
            }
            m.moved_addr = None;
            drop(t);
            // The address goes back to the source with the container.
            if let Some(a) = &opts.move_addr {
                let _ = crate::netaddr::del(a);
            }
            table.note(id.as_str(), Phase::Restore, JOutcome::failed(e.clone()), None);
            Reply::Failed(e)
        }
    }
}

/// The address, then Podman; the restored container's main process, and when Podman's restore
/// returned (the container ran from then: the restore's end; checking that it runs comes after).
/// On failure nothing the restore created is left (the address is the caller's).
async fn run(
    cfg: &AgentConfig,
    table: &Table,
    id: &MigrationId,
    archive: &std::path::Path,
    previous: Option<&std::path::Path>,
    c: &ContainerRef,
    opts: &RestoreOpts,
) -> Result<(i32, u64), String> {
    let podman = &cfg.podman;
    // Checked again: a container of that name may have come since the checks. Nothing here is
    // touched if so.
    free_here(podman, c).await?;
    // The restored container's connections answer at once: it runs from the restore on.
    let no_hold = RestoreOpts { tcp_established: false, ..opts.clone() };
    add_moved_address(table, id, &no_hold)?;
    info!(%id, container = %c.name, tcp = opts.tcp_established, pre_checkpoint = previous.is_some(), "restoring a container");
    let archive = archive.to_str().ok_or("the archive's path is not UTF-8")?;
    let mut args = vec!["container", "restore", "--import", archive];
    if let Some(p) = previous {
        args.extend(["--import-previous", p.to_str().ok_or("the pre-checkpoint archive's path is not UTF-8")?]);
    }
    if opts.tcp_established {
        args.push("--tcp-established");
    }
    let restored = podman.run(&args, cfg.restore_timeout).await;
    let ran = now_ns();
    let inspected = match restored {
        Ok(_) => podman.inspect(&c.id).await.map_err(|e| e.to_string()),
        Err(e) => Err(format!("podman container restore: {e}")),
    };
    match inspected {
        Ok(i) if i.status == "running" && i.pid > 0 => Ok((i.pid, ran)),
        other => {
            let why = match other {
                Ok(i) => format!("the restored container {} is {} (pid {}), not running", c.name, i.status, i.pid),
                Err(e) => e,
            };
            // Anything of that ID is this restore's: it was free before.
            if podman.exists(&c.id).await.unwrap_or(true) {
                let copy = Restored { podman: podman.clone(), id: c.id.clone() };
                if let Err(e) = podman.run(&["rm", "--force", "--time", "0", &copy.id], crate::podman::SHORT).await {
                    return Err(format!("{why}; and removing what it left failed: {e}"));
                }
            }
            Err(why)
        }
    }
}
