//! After a run died: `rdmig recover`, and the agent's periodic check, bring every source
//! migration of this node's journal that no `rdmig migrate` runs any more to a final state.
//!
//! What the journal says decides (`plan`), then the destination is asked:
//!
//! | journal (source side) | destination says | done here |
//! |---|---|---|
//! | never frozen | (told to abort) | nothing to undo |
//! | frozen, commit never sent | aborted/unknown (after an `Abort`) | resume: address back, QPs resumed, SIGCONT |
//! | frozen, commit never sent | unreachable | resume once its `--orphan-after` has passed (it drops an uncommitted copy by itself) |
//! | commit sent | committed (or restored: commit now) | kill the stopped source copy |
//! | commit sent | aborted/unknown | resume |
//! | commit sent | unreachable, or still restoring | in doubt: the copy here stays stopped |
//!
//! A container (`migrate --container`) is recovered the same way: "resume" is `podman container
//! restore` of its checkpoint here (Podman's kept one, else the run's archives), "kill" is
//! `podman rm` of the stopped copy by its ID, and a Podman checkpoint or restore of it that is
//! still running (the dead run's) is waited for. Podman runs with the configuration files the
//! run recorded.
//!
//! The commit is recorded before it is sent, so "commit never sent" is a fact, not a guess:
//! the destination cannot have a committed copy then. A pid is acted on only while it names the
//! process the journal recorded (same boot, same start time). Each recovered migration ends
//! with `Recover` done in the journal, what was done in its details.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tracing::{info, warn};

use super::lock::{MigrationLock, Subject};
use super::remote::{ask_state, commit_again, connect, IO_WAIT};
use crate::journal::{facts, Event, MigrationState, NodeJournal, Outcome as JOutcome, Phase, Role};
use crate::podman::Podman;
use rdmig_proto::msg::{MigState, MigrationId, MovedAddr, Reply, Request};
use rdmig_proto::tls::ClientTls;
use rdmig_proto::wire::Limits;

/// Past the destination's `--orphan-after`, this much more before an unreachable destination is
/// taken to have dropped its copy.
const ORPHAN_MARGIN: Duration = Duration::from_secs(10);
/// How long a destination is asked, unless told otherwise.
pub const ASK: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct RecoverOptions {
    /// This node's TLS client side (destinations are checked by the address dialled).
    pub tls: ClientTls,
    /// `rdmig migrate`'s per-process locks (`LOCK_DIR`): a held lock is a run still going.
    pub lock_dir: PathBuf,
    /// The destinations' `--orphan-after`.
    pub orphan_after: Duration,
    /// Wait for an unreachable destination's orphan window to pass (else report `waiting`).
    pub wait: bool,
    /// How long a destination is asked before it counts as unreachable.
    pub ask: Duration,
}

/// What recovery did with one migration.
#[derive(Debug, Clone, Serialize)]
pub struct Recovered {
    pub id: String,
    pub pid: Option<i32>,
    pub outcome: RecoveryOutcome,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryOutcome {
    /// Final: the process runs here again.
    Resumed,
    /// Final: the process runs at the destination; the source copy is gone.
    Migrated,
    /// Final: it was never frozen.
    NothingToUndo,
    /// `rdmig migrate` still runs it: not recovery's business.
    Busy,
    /// Not yet: the destination may still drop its copy by itself, or is still restoring.
    Waiting,
    /// Only the destination can tell, and it cannot be asked: the copy here stays stopped.
    InDoubt,
}

impl RecoveryOutcome {
    pub fn is_final(self) -> bool {
        matches!(self, RecoveryOutcome::Resumed | RecoveryOutcome::Migrated | RecoveryOutcome::NothingToUndo)
    }
}

/// What the journal tells of one source migration.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct SourceView {
    pub pid: Option<i32>,
    /// `migrate --container`: the Podman container it moves (then no pid is recorded).
    pub container: Option<String>,
    /// The container's full ID, as the checks found it.
    pub container_id: Option<String>,
    /// Podman as the run used it (its configuration files).
    pub podman: Podman,
    /// The container's checkpoint was taken against a pre-checkpoint (its archive is needed too).
    pub pre_checkpoint: bool,
    /// The run checkpoints established TCP connections (restore with them).
    pub tcp_established: bool,
    pub start_ticks: Option<u64>,
    pub boot_id: Option<String>,
    pub to: Option<SocketAddr>,
    pub dir: Option<PathBuf>,
    /// The freeze was recorded (it may have happened).
    pub frozen: bool,
    /// The address left (or was about to).
    pub addr_removed: Option<MovedAddr>,
    /// The commit was recorded before it was sent.
    pub commit_sent: bool,
    /// Wall clock of the last event, ns.
    pub last_wall_ns: i64,
}

impl SourceView {
    pub(crate) fn of(events: &[Event]) -> Self {
        let f = facts(events);
        let has = |p: Phase| events.iter().any(|e| e.phase == p);
        SourceView {
            pid: f.get("pid").and_then(|v| v.as_i64()).and_then(|p| i32::try_from(p).ok()),
            container: f.get("container").and_then(|v| v.as_str()).map(String::from),
            container_id: f.get("container_id").and_then(|v| v.as_str()).map(String::from),
            podman: Podman {
                containers_conf: f.get("containers_conf").and_then(|v| v.as_str()).map(PathBuf::from),
                storage_conf: f.get("storage_conf").and_then(|v| v.as_str()).map(PathBuf::from),
            },
            pre_checkpoint: f.get("pre_checkpoint").and_then(|v| v.as_bool()).unwrap_or(false),
            tcp_established: f.get("tcp_established").and_then(|v| v.as_bool()).unwrap_or(false),
            start_ticks: f.get("start_ticks").and_then(|v| v.as_u64()),
            boot_id: f.get("boot_id").and_then(|v| v.as_str()).map(String::from),
            to: f.get("to").and_then(|v| v.as_str()).and_then(|s| s.parse().ok()),
            dir: f.get("dir").and_then(|v| v.as_str()).map(PathBuf::from),
            frozen: has(Phase::Freeze),
            addr_removed: events
                .iter()
                .filter(|e| e.phase == Phase::AddrRemove)
                .find_map(|e| serde_json::from_value(e.details.as_ref()?.get("move_addr")?.clone()).ok()),
            commit_sent: has(Phase::Commit),
            last_wall_ns: events.iter().map(|e| e.wall_ns).max().unwrap_or(0),
        }
    }

    /// The process the journal recorded, if it still exists.
    fn process(&self) -> Option<crate::process::ProcStat> {
        let (pid, ticks) = (self.pid?, self.start_ticks?);
        if self.boot_id.as_deref() != Some(crate::process::boot_id().as_str()) {
            return None;
        }
        crate::process::same(pid, ticks)
    }
}

/// What to do, from the journal alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    NothingToUndo,
    Resume,
    AskCommit,
}

pub(crate) fn plan(v: &SourceView) -> Plan {
    if !v.frozen {
        Plan::NothingToUndo
    } else if v.commit_sent {
        Plan::AskCommit
    } else {
        Plan::Resume
    }
}

/// Recovers every source migration of the journal that is not final; returns what was done
/// with each.
pub async fn recover(journal: &NodeJournal, o: &RecoverOptions) -> Result<Vec<Recovered>, rdmig_journal::Error> {
    let open = journal.with(|j| j.migrations_not_final())?;
    let mut out = vec![];
    for m in open.into_iter().filter(|m| m.role() == Role::Source) {
        out.push(recover_one(journal, &m, o).await);
    }
    Ok(out)
}

async fn recover_one(journal: &NodeJournal, m: &MigrationState, o: &RecoverOptions) -> Recovered {
    let id = m.migration().clone();
    let events = match journal.with(|j| j.events_of(&id)) {
        Ok(e) => e,
        Err(e) => return Recovered { id: id.to_string(), pid: None, outcome: RecoveryOutcome::Waiting, detail: format!("reading the journal: {e}") },
    };
    let v = SourceView::of(&events);
    let done = |outcome, detail: String| Recovered { id: id.to_string(), pid: v.pid, outcome, detail };
    // A run that still holds the process's lock is alive; holding it here keeps a new run out
    // while this one recovers.
    let subject = match (&v.container, v.pid) {
        (Some(name), _) => Some(Subject::Container(name.clone())),
        (None, Some(pid)) => Some(Subject::Pid(pid)),
        (None, None) => None,
    };
    let _lock = match subject.map(|s| MigrationLock::take(&o.lock_dir, &s, id.as_str())) {
        Some(Ok(l)) => Some(l),
        Some(Err(e)) => return done(RecoveryOutcome::Busy, e),
        None => None,
    };
    // A checkpoint that outlived its run (Podman goes on when rdmig dies): wait for it.
    let words: Vec<&str> = v.container.iter().chain(&v.container_id).map(String::as_str).collect();
    if let Some(name) = v.container.as_deref().filter(|_| crate::process::podman_works_on(&words, v.dir.as_deref())) {
        return done(RecoveryOutcome::Busy, format!("Podman still checkpoints or restores container {name}"));
    }
    // A dump that outlived its run still has the process: wait for CRIU to let go.
    if let Some(pid) = v.pid.filter(|&p| crate::process::criu_works_on(p)) {
        return done(RecoveryOutcome::Busy, format!("CRIU still works on process {pid}"));
    }
    let p = plan(&v);
    let r = match p {
        Plan::NothingToUndo => {
            if let Some(to) = v.to {
                let _ = abort_at(to, &o.tls, &id, o.ask).await;
            }
            done(RecoveryOutcome::NothingToUndo, "never frozen: nothing to undo".into())
        }
        Plan::Resume => resume_unless_there(&v, &id, o).await.map_or_else(|(k, d)| done(k, d), |(k, d)| done(k, d)),
        Plan::AskCommit => ask_commit(&v, &id, o).await.map_or_else(|(k, d)| done(k, d), |(k, d)| done(k, d)),
    };
    let j = |phase, outcome, details| journal.note(&id, Role::Source, phase, outcome, Some(details));
    if r.outcome.is_final() {
        j(Phase::Recover, JOutcome::Started, serde_json::json!({ "plan": format!("{p:?}") }));
        j(Phase::Recover, JOutcome::Done, serde_json::json!({ "outcome": r.outcome, "detail": r.detail }));
        if let Some(d) = v.dir.as_ref().filter(|d| d.exists()) {
            let _ = std::fs::remove_dir_all(d);
            j(Phase::Cleanup, JOutcome::Done, serde_json::json!({ "removed": d.display().to_string() }));
        }
        info!(%id, outcome = ?r.outcome, "recovered: {}", r.detail);
    } else if r.outcome == RecoveryOutcome::InDoubt && m.last.phase != Phase::InDoubt {
        j(Phase::InDoubt, JOutcome::Done, serde_json::json!({ "reason": r.detail }));
        warn!(%id, "in doubt: {}", r.detail);
    }
    r
}

type Step = Result<(RecoveryOutcome, String), (RecoveryOutcome, String)>;

/// Frozen, commit never sent: the destination drops the migration (or has), then the process
/// runs here again.
async fn resume_unless_there(v: &SourceView, id: &MigrationId, o: &RecoverOptions) -> Step {
    let mut how = "the destination aborted it".to_string();
    if let Some(to) = v.to {
        match abort_at(to, &o.tls, id, o.ask).await {
            Ok(()) => {}
            // It says it committed (it can only have heard that from a commit): it runs there.
            Err(Some(e)) if e.contains("committed") => return kill_source(v, format!("the destination says: {e}")).await,
            Err(other) => {
                let silent = Duration::from_nanos(rdmig_journal::wall_ns().saturating_sub(v.last_wall_ns).max(0) as u64);
                let window = o.orphan_after + ORPHAN_MARGIN;
                if silent < window {
                    if !o.wait {
                        return Err((
                            RecoveryOutcome::Waiting,
                            format!(
                                "the destination {to} cannot be told to abort ({}); it drops an uncommitted copy by itself: resume in {} s",
                                other.unwrap_or_default(),
                                (window - silent).as_secs()
                            ),
                        ));
                    }
                    info!(%id, "the destination {to} cannot be reached; waiting {} s for it to drop its copy", (window - silent).as_secs());
                    tokio::time::sleep(window - silent).await;
                    if let Err(Some(e)) = abort_at(to, &o.tls, id, o.ask).await {
                        if e.contains("committed") {
                            return kill_source(v, format!("the destination says: {e}")).await;
                        }
                    }
                }
                how = format!("the destination {to} could not be reached for {} s (its --orphan-after drops an uncommitted copy)", window.as_secs());
            }
        }
    }
    resume_here(v).await.map(|d| (RecoveryOutcome::Resumed, format!("{how}; {d}")))
}

/// The commit was sent: the destination decides.
async fn ask_commit(v: &SourceView, id: &MigrationId, o: &RecoverOptions) -> Step {
    let Some(to) = v.to else {
        return Err((RecoveryOutcome::InDoubt, "the journal does not say where the process went".into()));
    };
    match ask_state(to, &o.tls, id, Instant::now() + o.ask).await {
        Some(MigState::Committed) => kill_source(v, format!("{to} committed it")).await,
        Some(MigState::Restored { pid }) => match commit_again(to, &o.tls, id, Instant::now() + o.ask).await {
            Ok(_) => kill_source(v, format!("{to} had restored it (pid {pid}) and committed it now")).await,
            Err(Some(MigState::Aborted)) => resume_unless_there(v, id, o).await,
            Err(s) => Err((RecoveryOutcome::InDoubt, format!("{to} restored it (pid {pid}) but did not commit it (state {s:?})"))),
        },
        Some(MigState::Restoring) => Err((RecoveryOutcome::Waiting, format!("{to} is still restoring it"))),
        Some(MigState::Aborted | MigState::Unknown | MigState::Receiving) => resume_unless_there(v, id, o).await,
        None => Err((
            RecoveryOutcome::InDoubt,
            format!("the commit was sent but {to} cannot be asked whether it committed; process {:?} stays stopped here", v.pid),
        )),
    }
}

/// The process lives at the destination: the stopped copy here goes.
async fn kill_source(v: &SourceView, why: String) -> Step {
    if let Some(name) = &v.container {
        return remove_container(v, name, why).await;
    }
    match (v.process(), v.pid) {
        (Some(_), Some(pid)) => {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
                .map_err(|e| (RecoveryOutcome::InDoubt, format!("{why}, but killing the source copy {pid} failed: {e}")))?;
            Ok((RecoveryOutcome::Migrated, format!("{why}; killed the source copy {pid}")))
        }
        _ => Ok((RecoveryOutcome::Migrated, format!("{why}; the source copy is gone already"))),
    }
}

/// The container lives at the destination: its stopped copy here goes, by its ID (a container
/// of its name made here since is another one). A running one is not removed (`podman rm`
/// without --force refuses).
async fn remove_container(v: &SourceView, name: &str, why: String) -> Step {
    let Some(id) = v.container_id.as_deref() else {
        return Err((RecoveryOutcome::InDoubt, format!("{why}, but the journal has no ID of container {name}: remove its stopped copy here by hand")));
    };
    match v.podman.exists(id).await {
        Ok(false) => Ok((RecoveryOutcome::Migrated, format!("{why}; the source copy of container {name} is gone already"))),
        Ok(true) => match v.podman.run(&["rm", id], crate::podman::SHORT).await {
            Ok(_) => Ok((RecoveryOutcome::Migrated, format!("{why}; removed the stopped container {name} here"))),
            Err(e) => Err((RecoveryOutcome::InDoubt, format!("{why}, but removing the stopped container {name} here failed: {e}"))),
        },
        Err(e) => Err((RecoveryOutcome::InDoubt, format!("{why}, but Podman cannot say whether container {name} is here: {e}"))),
    }
}

/// How long recovery lets Podman restore a container.
const CONTAINER_RESTORE: Duration = Duration::from_secs(600);

/// Address back, QPs resumed, SIGCONT (a container: restored from its checkpoint): the process
/// runs here again.
async fn resume_here(v: &SourceView) -> Result<String, (RecoveryOutcome, String)> {
    let mut done = vec![];
    if let Some(m) = &v.addr_removed {
        crate::netaddr::add(m).map_err(|e| (RecoveryOutcome::InDoubt, format!("taking {} back: {e}", m.addr)))?;
        done.push(format!("{} back on {}", m.addr, m.dev));
    }
    if let Some(name) = &v.container {
        match v.podman.inspect(name).await {
            // The checkpoint failed or never began: Podman left it running.
            Ok(i) if i.status == "running" => done.push(format!("container {name} runs here (it was not checkpointed)")),
            _ => {
                let Some(dir) = &v.dir else {
                    return Err((RecoveryOutcome::InDoubt, format!("container {name}: the journal does not say where the run kept its archive")));
                };
                let (archive, pre) = super::container::archives(dir);
                let pre = v.pre_checkpoint.then_some(pre);
                super::container::restore_here(&v.podman, name, v.tcp_established, &archive, pre.as_deref(), CONTAINER_RESTORE)
                    .await
                    .map_err(|e| (RecoveryOutcome::InDoubt, e))?;
                done.push(format!("container {name} restored here"));
            }
        }
        return Ok(done.join("; "));
    }
    match (v.process(), v.pid) {
        (Some(_), Some(pid)) => {
            crate::process::resume(pid).map_err(|e| (RecoveryOutcome::InDoubt, format!("resuming {pid}: {e}")))?;
            done.push(format!("process {pid} resumed"));
        }
        (None, Some(pid)) => done.push(format!("process {pid} is gone (not the one the journal recorded)")),
        _ => done.push("no process recorded".into()),
    }
    Ok(done.join("; "))
}

/// Tells the destination to drop the migration: `Ok` once it says so, `Err(Some(why))` if it
/// refuses, `Err(None)` if it cannot be reached.
async fn abort_at(to: SocketAddr, tls: &ClientTls, id: &MigrationId, ask: Duration) -> Result<(), Option<String>> {
    let until = Instant::now() + ask;
    let mut ch = connect(to, tls, Limits::idle(IO_WAIT).until(until)).await.map_err(|_| None)?;
    ch.send_msg(&Request::Abort { id: id.clone() }).await.map_err(|_| None)?;
    match ch.recv_msg::<Reply>().await {
        Ok(Reply::Ack) => Ok(()),
        Ok(Reply::Failed(e)) => Err(Some(e)),
        Ok(other) => Err(Some(format!("unexpected reply {other:?}"))),
        Err(_) => Err(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::NodeName;
    use serde_json::json;

    fn journal(d: &std::path::Path) -> NodeJournal {
        NodeJournal::open_as(&d.join("j.db"), &NodeName::new("src").unwrap()).unwrap()
    }

    fn opts(d: &std::path::Path) -> RecoverOptions {
        RecoverOptions {
            tls: rdmig_proto::tls::testing::TestCa::new().node("src", &[]).client(None).unwrap(),
            lock_dir: d.join("locks"),
            orphan_after: Duration::from_secs(60),
            wait: false,
            ask: Duration::from_secs(1),
        }
    }

    fn begin(j: &NodeJournal, id: &MigrationId, pid: i32, to: &str) {
        let st = crate::process::stat(pid).map(|s| s.start_ticks);
        j.record(
            id,
            Role::Source,
            Phase::Begin,
            JOutcome::Started,
            Some(json!({"pid": pid, "start_ticks": st, "boot_id": crate::process::boot_id(), "to": to})),
        )
        .unwrap();
    }

    fn state(pid: u32) -> char {
        crate::process::stat(pid as i32).unwrap().state
    }

    /// What a container's run records is what recovery restores it with.
    #[test]
    fn a_container_runs_journal_tells_recovery_how_to_restore_it() {
        let d = tempfile::tempdir().unwrap();
        let j = journal(d.path());
        let id = MigrationId::new("m-00000000000000d1").unwrap();
        let cid = "ab".repeat(32);
        let begin = json!({
            "container": "srv", "boot_id": crate::process::boot_id(), "to": "10.99.0.3:7800", "dir": "/tmp/rdmig-migrate/m-00000000000000d1",
            "tcp_established": true, "containers_conf": "/etc/rdmig/containers.conf", "storage_conf": null,
        });
        j.record(&id, Role::Source, Phase::Begin, JOutcome::Started, Some(begin)).unwrap();
        j.record(&id, Role::Source, Phase::Checks, JOutcome::Done, Some(json!({"move_addr": null, "container_id": cid, "container_pid": 4242}))).unwrap();
        let v = SourceView::of(&j.with(|j| j.events_of(&id)).unwrap());
        assert_eq!((v.container.as_deref(), v.container_id.as_deref(), v.pid), (Some("srv"), Some(cid.as_str()), None));
        assert!(v.tcp_established && !v.pre_checkpoint && !v.frozen);
        assert_eq!(v.podman, Podman { containers_conf: Some("/etc/rdmig/containers.conf".into()), storage_conf: None });
        j.record(&id, Role::Source, Phase::PrecopyRound, JOutcome::Done, Some(json!({"round": 1, "bytes": 4096, "pre_checkpoint": true}))).unwrap();
        j.record(&id, Role::Source, Phase::Freeze, JOutcome::Started, None).unwrap();
        let v = SourceView::of(&j.with(|j| j.events_of(&id)).unwrap());
        assert!(v.pre_checkpoint && v.frozen);
        assert_eq!(plan(&v), Plan::Resume);
        let (archive, pre) = crate::migrate::container::archives(v.dir.as_deref().unwrap());
        assert!(archive.ends_with("m-00000000000000d1/final/container-checkpoint.tar"), "{}", archive.display());
        assert!(pre.ends_with("m-00000000000000d1/pre-1/container-pre-checkpoint.tar"), "{}", pre.display());
    }

    #[test]
    fn the_plan_follows_the_journal() {
        let mut v = SourceView::default();
        assert_eq!(plan(&v), Plan::NothingToUndo);
        v.frozen = true;
        assert_eq!(plan(&v), Plan::Resume);
        v.commit_sent = true;
        assert_eq!(plan(&v), Plan::AskCommit);
    }

    /// A run that died after the freeze, with its destination gone for longer than its orphan
    /// window: the stopped process runs again, and the journal ends the migration.
    #[tokio::test]
    async fn a_frozen_process_whose_destination_is_gone_is_resumed() {
        let d = tempfile::tempdir().unwrap();
        let j = journal(d.path());
        let mut app = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = app.id() as i32;
        let id = MigrationId::new("m-00000000000000a1").unwrap();
        // Port 9 on loopback: nobody listens, the destination is unreachable.
        begin(&j, &id, pid, "127.0.0.1:9");
        j.record(&id, Role::Source, Phase::Freeze, JOutcome::Started, None).unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGSTOP).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(state(app.id()), 'T');

        // Within the window, it waits (the destination may still hold a copy).
        let r = recover(&j, &opts(d.path())).await.unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].outcome, RecoveryOutcome::Waiting, "{r:?}");
        assert_eq!(state(app.id()), 'T');

        // Past it, the process runs again.
        let mut o = opts(d.path());
        o.orphan_after = Duration::ZERO;
        let r = recover(&j, &Recov { wait: true, ..o }).await.unwrap();
        assert_eq!(r[0].outcome, RecoveryOutcome::Resumed, "{r:?}");
        assert_ne!(state(app.id()), 'T');
        assert!(j.with(|j| j.migrations_not_final()).unwrap().is_empty());
        let last = j.with(|j| j.last_phase(&id)).unwrap().unwrap();
        assert_eq!(last, (Phase::Recover, JOutcome::Done));
        app.kill().unwrap();
        let _ = app.wait();
    }

    type Recov = RecoverOptions;

    #[tokio::test]
    async fn a_run_still_going_is_left_alone_and_a_never_frozen_one_is_closed() {
        let d = tempfile::tempdir().unwrap();
        let j = journal(d.path());
        let mut app = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = app.id() as i32;
        let (busy, idle) = (MigrationId::new("m-00000000000000b1").unwrap(), MigrationId::new("m-00000000000000b2").unwrap());
        begin(&j, &busy, pid, "127.0.0.1:9");
        j.record(&busy, Role::Source, Phase::Freeze, JOutcome::Started, None).unwrap();
        begin(&j, &idle, 4_000_000, "127.0.0.1:9");
        let o = opts(d.path());
        let held = MigrationLock::take(&o.lock_dir, &Subject::Pid(pid), busy.as_str()).unwrap();
        let mut r = recover(&j, &o).await.unwrap();
        r.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(r[0].outcome, RecoveryOutcome::Busy, "{r:?}");
        assert_eq!(r[1].outcome, RecoveryOutcome::NothingToUndo, "{r:?}");
        let open: Vec<String> = j.with(|j| j.migrations_not_final()).unwrap().iter().map(|m| m.migration().to_string()).collect();
        assert_eq!(open, [busy.to_string()]);
        drop(held);
        app.kill().unwrap();
        let _ = app.wait();
    }

    #[tokio::test]
    async fn a_sent_commit_with_nobody_to_ask_stays_in_doubt_and_stopped() {
        let d = tempfile::tempdir().unwrap();
        let j = journal(d.path());
        let mut app = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = app.id() as i32;
        let id = MigrationId::new("m-00000000000000c1").unwrap();
        begin(&j, &id, pid, "127.0.0.1:9");
        j.record(&id, Role::Source, Phase::Freeze, JOutcome::Started, None).unwrap();
        j.record(&id, Role::Source, Phase::Commit, JOutcome::Started, None).unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGSTOP).unwrap();
        let mut o = opts(d.path());
        o.orphan_after = Duration::ZERO;
        let r = recover(&j, &o).await.unwrap();
        assert_eq!(r[0].outcome, RecoveryOutcome::InDoubt, "{r:?}");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(state(app.id()), 'T', "a process whose commit may have landed was resumed");
        assert_eq!(j.with(|j| j.last_phase(&id)).unwrap().unwrap(), (Phase::InDoubt, JOutcome::Done));
        // Asked again, it does not repeat the mark.
        let n = j.with(|j| j.events_of(&id)).unwrap().len();
        recover(&j, &o).await.unwrap();
        assert_eq!(j.with(|j| j.events_of(&id)).unwrap().len(), n);
        app.kill().unwrap();
        let _ = app.wait();
    }
}
