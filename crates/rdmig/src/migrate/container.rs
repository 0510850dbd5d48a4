//! `rdmig migrate --container NAME`: what differs for a Podman container (with runc), called by
//! the stages.
//!
//! | stage | here |
//! |-------|------|
//! | checks | the container runs here (`podman container inspect`: its ID and main process); the destination agent has Podman and no container of its name or ID (`CheckContainer`) |
//! | pre-copy (`--strategy precopy`) | one round: `podman container checkpoint --pre-checkpoint --export <dir>/pre-1/container-pre-checkpoint.tar NAME` (CRIU's pre-dump of its memory; it keeps running), the archive sent while it runs |
//! | freeze | `podman container checkpoint --export <dir>/final/container-checkpoint.tar [--with-previous] [--tcp-established] NAME`: the container stops (exited, its checkpoint kept by Podman); after a pre-checkpoint only what changed since |
//! | transfer | the archive, as a file of image directory `final` (the process path's transfer) |
//! | restore | `RestoreContainer`: the agent's `podman container restore --import [--import-previous]` (it keeps the name and ID) |
//! | commit | the destination runs it: the stopped source container is removed (`podman rm`) |
//! | rollback | the address comes back, the destination removes any copy it made, then the container is restored here from Podman's kept checkpoint (else from the archive) |
//!
//! The source copy is removed after the commit rather than left exited: anyone's `podman start`
//! of it would run a second copy of the container (a fresh start of its command, next to the
//! one migrated), and its name would block moving it back.
//!
//! Pre-copy is one round, whatever `--max-rounds` says: Podman 4.3 keeps one pre-checkpoint
//! per container, a later one replaces it (a full pre-dump again, not one against the last), and
//! `--with-previous` cannot be given with `--pre-checkpoint`.
//!
//! Podman 4.3 cannot restore a container and leave it stopped, so the destination's copy runs
//! from its restore on, not from the commit as a process's does; a rollback after the restore
//! (a lost commit the destination aborted) removes that copy first.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpStream;

use super::remote::{busy, call};
use super::{Run, Step};
use crate::journal::{Outcome as JOutcome, Phase as JPhase};
use crate::podman::Podman;
use crate::timeline::{attrs, Phase};
use rdmig_proto::msg::{ContainerName, ContainerRef, RelPath, Reply, Request};
use rdmig_proto::wire::Channel;

/// The archive's name in image directory `final`.
const ARCHIVE: &str = "container-checkpoint.tar";
/// Pre-copy's one round: its directory, and the pre-checkpoint archive's name there.
const PRE_DIR: &str = "pre-1";
const PRE_ARCHIVE: &str = "container-pre-checkpoint.tar";

/// The container being moved, as the checks found it here.
#[derive(Debug, Clone)]
pub(super) struct Source {
    pub name: ContainerName,
    pub id: String,
    /// Its main process here when the checks ran.
    pub pid: i32,
    /// Podman pre-checkpointed it (pre-copy): the checkpoint is taken against that one, and the
    /// destination imports both.
    pub pre_checkpointed: bool,
    /// Podman checkpointed it (it is stopped here, its checkpoint kept).
    pub checkpointed: bool,
    /// Keep the migration's directory (the archive) after the run: the container could not be
    /// restored here, or only the destination knows where it runs.
    pub keep_archive: bool,
}

impl Source {
    pub(super) fn reference(&self) -> ContainerRef {
        ContainerRef { name: self.name.clone(), id: self.id.clone() }
    }
}

impl Run<'_> {
    fn podman(&self) -> &Podman {
        &self.o.podman
    }

    fn archive(&self) -> PathBuf {
        archives(&self.dir).0
    }

    fn pre_archive(&self) -> PathBuf {
        archives(&self.dir).1
    }

    /// The archive's path in the migration's directory at the destination.
    pub(super) fn archive_rel(&self) -> RelPath {
        RelPath::new(&format!("final/{ARCHIVE}")).expect("a valid relative path")
    }

    /// The pre-checkpoint archive's path there, if pre-copy took one.
    pub(super) fn pre_archive_rel(&self) -> Option<RelPath> {
        let taken = self.ctr.as_ref().is_some_and(|c| c.pre_checkpointed);
        taken.then(|| RelPath::new(&format!("{PRE_DIR}/{PRE_ARCHIVE}")).expect("a valid relative path"))
    }

    /// Checks: the container runs here; found, it is what moves (`self.ctr`).
    pub(super) async fn find_container(&mut self, name: &ContainerName) -> Result<(), Step> {
        // (No Podman here: inspect says so.)
        let i = self.podman().inspect(name.as_str()).await.map_err(|e| Step::Refuse(format!("container {name}: {e}")))?;
        if i.status != "running" || i.pid <= 0 {
            return Err(Step::Refuse(format!("container {name} is {} here, not running", i.status)));
        }
        let ctr = Source { name: name.clone(), id: i.id, pid: i.pid, pre_checkpointed: false, checkpointed: false, keep_archive: false };
        ctr.reference().validate().map_err(|e| Step::Refuse(format!("container {name}: {e}")))?;
        self.say(&format!("container {name} ({}) runs here, its process {}", &ctr.id[..12], ctr.pid));
        self.ctr = Some(ctr);
        Ok(())
    }

    /// Checks: the destination agent can take it (Podman there, its name and ID free).
    pub(super) async fn container_fits_there(&mut self, ch: &mut Channel<TcpStream>) -> Result<(), Step> {
        let c = self.ctr.as_ref().expect("found by the checks").reference();
        match call(ch, &Request::CheckContainer { container: c }).await? {
            Reply::Ack => Ok(()),
            Reply::Failed(e) => Err(Step::Refuse(format!("the destination cannot take the container: {e}"))),
            other => Err(Step::Refuse(format!("destination answered {other:?} to a container check"))),
        }
    }

    /// Pre-copy's one round: Podman pre-checkpoints the container (CRIU pre-dumps its memory,
    /// and it keeps running) into an archive that goes to the destination while it runs. The
    /// round's directory is returned (the final checkpoint's previous). A failure here never
    /// stopped the container.
    pub(super) async fn precheckpoint_container(&mut self, ch: &mut Channel<TcpStream>) -> Result<String, Step> {
        let phase = Phase::PrecopyRound(1);
        self.rec.start(phase.clone());
        let dir = self.dir.join(PRE_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Step::Fail(format!("{}: {e}", dir.display())))?;
        let archive = self.pre_archive();
        let path = archive.to_str().ok_or_else(|| Step::Fail("the work directory is not UTF-8".into()))?.to_string();
        let name = self.ctr.as_ref().expect("found by the checks").name.clone();
        // As for a process: rxe's dirty log records what RDMA writes from here on, and the
        // plugin marks those pages at the final dump (soft-dirty does not see them); and where
        // the driver can, the MRs' page table entries are write-protected so that the
        // pre-checkpoint's clear_refs cleans their pages too and the checkpoint carries only
        // what changed of them (patch 0032). One round: the log was just cleared, nothing to move.
        super::precopy::clear_rdma_dirty_logs(self.pid());
        if super::precopy::mr_tracking() != super::precopy::MrTracking::None {
            super::precopy::wrprotect_mrs(self.pid(), false);
        }
        let t = std::time::Instant::now();
        let args = ["container", "checkpoint", "--pre-checkpoint", "--export", &path, name.as_str()];
        let podman = self.o.podman.clone();
        let (done, alive) = busy(ch, podman.run(&args, self.o.dump_timeout)).await;
        done.map_err(|e| Step::Fail(e.to_string()))?;
        alive?;
        if let Some(c) = self.ctr.as_mut() {
            c.pre_checkpointed = true;
        }
        let dump_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = std::time::Instant::now();
        let bytes = self.send_dir(ch, PRE_DIR).await?;
        let send_ms = t.elapsed().as_secs_f64() * 1e3;
        self.rec.end_with(phase, attrs([("bytes", bytes)]));
        self.say(&format!("container {name} pre-checkpointed: {} archive in {dump_ms:.0} ms, sent in {send_ms:.0} ms", super::mib(bytes)));
        // A compressed archive: its pages are not counted.
        self.rounds.push(super::Round { round: 1, bytes, pages: 0, dump_ms, send_ms, rdma_logged_pages: 0 });
        // Recovery restores from the archive against it if Podman lost its checkpoint.
        self.note(JPhase::PrecopyRound, JOutcome::Done, Some(serde_json::json!({ "round": 1, "bytes": bytes, "pre_checkpoint": true })));
        self.stop_reason = Some("one round: Podman keeps one pre-checkpoint per container".into());
        Ok(PRE_DIR.to_string())
    }

    /// Freeze: Podman checkpoints the container into the archive; it stops here.
    pub(super) async fn checkpoint_container(&mut self, ch: &mut Channel<TcpStream>) -> Result<(), Step> {
        self.rec.start(Phase::Freeze);
        self.rec.start(Phase::FinalDump);
        let archive = self.archive();
        std::fs::create_dir_all(self.dir.join("final")).map_err(|e| Step::Fail(format!("{}: {e}", self.dir.display())))?;
        let name = self.ctr.as_ref().expect("found by the checks").name.clone();
        let path = archive.to_str().ok_or_else(|| Step::Fail("the work directory is not UTF-8".into()))?.to_string();
        let mut args = vec!["container", "checkpoint", "--export", &path];
        if self.ctr.as_ref().is_some_and(|c| c.pre_checkpointed) {
            args.push("--with-previous");
        }
        if self.o.tcp_established {
            args.push("--tcp-established");
        }
        args.push(name.as_str());
        let t = std::time::Instant::now();
        let podman = self.o.podman.clone();
        let (done, alive) = busy(ch, podman.run(&args, self.o.dump_timeout)).await;
        done.map_err(|e| Step::Fail(e.to_string()))?;
        if let Some(c) = self.ctr.as_mut() {
            c.checkpointed = true;
        }
        // Checkpointed, but the destination is gone: the caller rolls back.
        alive?;
        let bytes = std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
        self.final_bytes = bytes;
        self.rec.end_with(Phase::FinalDump, attrs([("bytes", bytes)]));
        self.say(&format!("container {name} checkpointed: {} archive in {:.1} s", super::mib(bytes), t.elapsed().as_secs_f64()));
        Ok(())
    }

    /// The checkpoint failed: Podman (CRIU) resumes a container whose dump failed; says whether
    /// it runs.
    pub(super) async fn container_after_failed_checkpoint(&mut self, why: String) -> String {
        let name = self.ctr.as_ref().map(|c| c.name.to_string()).unwrap_or_default();
        match self.podman().inspect(&name).await {
            Ok(i) if i.status == "running" => why,
            Ok(i) => format!("{why}; and container {name} is {} here now", i.status),
            Err(e) => format!("{why}; and container {name}: {e}"),
        }
    }

    /// Rollback: the container runs here again, from Podman's kept checkpoint, else (a Podman
    /// that dropped it) from the archive. Err: it does not (the archive is kept).
    pub(super) async fn restore_container_here(&mut self) -> Result<(), String> {
        let Some(c) = self.ctr.clone().filter(|c| c.checkpointed) else { return Ok(()) };
        let pre = c.pre_checkpointed.then(|| self.pre_archive());
        match restore_here(&self.o.podman, c.name.as_str(), self.o.tcp_established, &self.archive(), pre.as_deref(), self.o.dump_timeout).await {
            Ok(()) => self.restored_here(&c),
            Err(e) => {
                if let Some(c) = self.ctr.as_mut() {
                    c.keep_archive = true;
                }
                Err(e)
            }
        }
    }

    fn restored_here(&mut self, c: &Source) -> Result<(), String> {
        if let Some(c) = self.ctr.as_mut() {
            c.checkpointed = false;
        }
        self.say(&format!("container {} restored here", c.name));
        Ok(())
    }

    /// Commit: the destination runs it; the stopped copy here goes.
    pub(super) async fn remove_source_container(&mut self) -> Result<(), String> {
        let Some(c) = self.ctr.clone() else { return Ok(()) };
        // By ID: a container of that name made here meanwhile is not this one.
        self.podman().run(&["rm", &c.id], crate::podman::SHORT).await.map(drop).map_err(|e| format!("removing the stopped container {} here: {e}", c.name))
    }

    /// Whether the run's directory stays (see `Source::keep_archive`).
    pub(super) fn keeps_dir(&self) -> bool {
        self.ctr.as_ref().is_some_and(|c| c.keep_archive)
    }
}

/// Container `name`, checkpointed here, runs here again: restored from Podman's kept checkpoint,
/// else (a Podman that dropped it) from `archive`, with `pre`, the pre-checkpoint archive it was
/// taken against. Err: it does not run, and why (the archives stay). A rollback's and recovery's.
pub(super) async fn restore_here(p: &Podman, name: &str, tcp_established: bool, archive: &Path, pre: Option<&Path>, timeout: Duration) -> Result<(), String> {
    let mut args = vec!["container", "restore"];
    if tcp_established {
        args.push("--tcp-established");
    }
    let first = match p.run(&[&args[..], &[name]].concat(), timeout).await {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    tracing::warn!("restoring container {name} from Podman's checkpoint: {first}; trying the archive");
    let path = archive.to_string_lossy().into_owned();
    let pre = pre.map(|p| p.to_string_lossy().into_owned());
    if let Some(pre) = &pre {
        args.extend(["--import-previous", pre]);
    }
    let imported = async {
        p.run(&["rm", name], crate::podman::SHORT).await?;
        p.run(&[&args[..], &["--import", &path]].concat(), timeout).await
    };
    match imported.await {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("restoring container {name} here failed: {first}; from the archive: {e} (the archive stays at {path})")),
    }
}

/// Where a run's archives are in its directory `dir`: the checkpoint's, and the pre-checkpoint's.
pub(super) fn archives(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("final").join(ARCHIVE), dir.join(PRE_DIR).join(PRE_ARCHIVE))
}
