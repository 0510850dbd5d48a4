//! `rdmig migrate --container NAME`: what differs for a Podman container (with runc), called by
//! the stages. Stop-and-copy only.
//!
//! | stage | here |
//! |-------|------|
//! | checks | the container runs here (`podman container inspect`: its ID and main process); the destination agent has Podman and no container of its name or ID (`CheckContainer`) |
//! | freeze | `podman container checkpoint --export <dir>/final/container-checkpoint.tar [--tcp-established] NAME`: the container stops (exited, its checkpoint kept by Podman) |
//! | transfer | the archive, as a file of image directory `final` (the process path's transfer) |
//! | restore | `RestoreContainer`: the agent's `podman container restore --import` (it keeps the name and ID) |
//! | commit | the destination runs it: the stopped source container is removed (`podman rm`) |
//! | rollback | the address comes back, the destination removes any copy it made, then the container is restored here from Podman's kept checkpoint (else from the archive) |
//!
//! The source copy is removed after the commit rather than left exited: anyone's `podman start`
//! of it would run a second copy of the container (a fresh start of its command, next to the
//! one migrated), and its name would block moving it back.
//!
//! Podman 4.3 cannot restore a container and leave it stopped, so the destination's copy runs
//! from its restore on, not from the commit as a process's does; a rollback after the restore
//! (a lost commit the destination aborted) removes that copy first.

use std::path::PathBuf;

use tokio::net::TcpStream;

use super::remote::{busy, call};
use super::{Run, Step};
use crate::podman::Podman;
use crate::timeline::{attrs, Phase};
use rdmig_proto::msg::{ContainerName, ContainerRef, RelPath, Reply, Request};
use rdmig_proto::wire::Channel;

/// The archive's name in image directory `final`.
const ARCHIVE: &str = "container-checkpoint.tar";

/// The container being moved, as the checks found it here.
#[derive(Debug, Clone)]
pub(super) struct Source {
    pub name: ContainerName,
    pub id: String,
    /// Its main process here when the checks ran.
    pub pid: i32,
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
        self.dir.join("final").join(ARCHIVE)
    }

    /// The archive's path in the migration's directory at the destination.
    pub(super) fn archive_rel(&self) -> RelPath {
        RelPath::new(&format!("final/{ARCHIVE}")).expect("a valid relative path")
    }

    /// Checks: the container runs here; found, it is what moves (`self.ctr`).
    pub(super) async fn find_container(&mut self, name: &ContainerName) -> Result<(), Step> {
        // (No Podman here: inspect says so.)
        let i = self.podman().inspect(name.as_str()).await.map_err(|e| Step::Refuse(format!("container {name}: {e}")))?;
        if i.status != "running" || i.pid <= 0 {
            return Err(Step::Refuse(format!("container {name} is {} here, not running", i.status)));
        }
        let ctr = Source { name: name.clone(), id: i.id, pid: i.pid, checkpointed: false, keep_archive: false };
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

    /// Freeze: Podman checkpoints the container into the archive; it stops here.
    pub(super) async fn checkpoint_container(&mut self, ch: &mut Channel<TcpStream>) -> Result<(), Step> {
        self.rec.start(Phase::Freeze);
        self.rec.start(Phase::FinalDump);
        let archive = self.archive();
        std::fs::create_dir_all(self.dir.join("final")).map_err(|e| Step::Fail(format!("{}: {e}", self.dir.display())))?;
        let name = self.ctr.as_ref().expect("found by the checks").name.clone();
        let path = archive.to_str().ok_or_else(|| Step::Fail("the work directory is not UTF-8".into()))?.to_string();
        let mut args = vec!["container", "checkpoint", "--export", &path];
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
        let p = self.o.podman.clone();
        let timeout = self.o.dump_timeout;
        let mut args = vec!["container", "restore"];
        if self.o.tcp_established {
            args.push("--tcp-established");
        }
        let kept = [&args[..], &[c.name.as_str()]].concat();
        let first = match p.run(&kept, timeout).await {
            Ok(_) => return self.restored_here(&c),
            Err(e) => e,
        };
        tracing::warn!("restoring container {} from Podman's checkpoint: {first}; trying the archive", c.name);
        let archive = self.archive();
        let path = archive.to_string_lossy().into_owned();
        let imported = async {
            p.run(&["rm", c.name.as_str()], crate::podman::SHORT).await?;
            p.run(&[&args[..], &["--import", &path]].concat(), timeout).await
        };
        match imported.await {
            Ok(_) => self.restored_here(&c),
            Err(e) => {
                if let Some(c) = self.ctr.as_mut() {
                    c.keep_archive = true;
                }
                Err(format!("restoring container {} here failed: {first}; from the archive: {e} (the archive stays at {})", c.name, path))
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
