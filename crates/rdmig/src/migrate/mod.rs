//! `rdmig migrate`: the source side of a migration.
//!
//! Order of business, and what happens to the process at each step:
//!
//! | step | module | process | on failure |
//! |------|--------|---------|------------|
//! | checks (here and at the destination), clock sync, pre hook, transport | `checks` | runs | refuse: nothing was touched |
//! | pre-copy rounds (CRIU pre-dump, images streamed) | `precopy` | runs | abort at the destination; the process never stopped |
//! | freeze + final dump (`--leave-stopped`), the address leaves | `freeze` | stopped | CRIU resumes it; abort at the destination |
//! | transfer of the final images | `transfer` | stopped here | roll back (`finish`): SIGCONT here, abort there |
//! | restore at the destination | `restore` | stopped here | roll back, or in doubt when nobody can tell |
//! | destination confirms; kill the stopped source copy, commit | `finish` | runs there | (commit failures only leave images behind) |
//!
//! A Podman container (`--container`) goes through the same stages: its checks, its pre-copy
//! (one `podman container checkpoint --pre-checkpoint`), its freeze (`podman container
//! checkpoint --export`), its restore (`podman container restore --import` by the destination
//! agent) and what becomes of the source copy are in `container`,
//! which the stages call; the channel, transfer, journal, timeline, hooks and report are the
//! process path's.
//!
//! If the connection breaks after the restore was asked for, the source asks the destination what
//! happened; when nobody can tell, the source copy stays stopped ("in doubt") rather than risk two
//! running copies.
//!
//! One migration of a process at a time (`lock`), and nothing waits forever: every network wait
//! is bounded (`remote`), and the run has a deadline (`--deadline`). The stages must be done by
//! the deadline less a reserve that the clean-up (asking, aborting, rolling back) may use; a
//! deadline that passes before the freeze refuses, after it rolls back or leaves the outcome in
//! doubt.
//!
//! The other modules: `remote` (the control channel to the destination agent), `report` (the
//! timeline's bookkeeping and the final report), `hooks` (the user's commands), `scp` (the
//! MigrOS-style baseline transport), `known` (what the checks keep for the next migration) and
//! `bench` (`rdmig bench transfer`).

mod bench;
mod checks;
mod container;
mod finish;
mod freeze;
mod hooks;
pub mod known;
mod lock;
mod precopy;
mod recover;
pub(crate) mod remote;
mod report;
mod restore;
mod scp;
mod transfer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tracing::warn;

use crate::criu;
use crate::journal::{NodeJournal, Outcome as JOutcome, Phase as JPhase, Role};
use crate::timeline::{Attrs, ClockSample, Edge, Phase, Recorder};
use crate::transport::rdma::RdmaSender;
use crate::transport::{TransportChoice, TransportReport};
use rdmig_proto::msg::{HostFacts, MigrationId, MsgError};

pub use bench::{bench_transfer, BenchRow, RdmaSide};
pub use lock::LOCK_DIR;
pub use recover::{recover, RecoverOptions, Recovered, RecoveryOutcome, ASK as RECOVER_ASK};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Iterative pre-dumps while the process runs, then a short freeze for the rest.
    Precopy,
    /// Freeze first, then dump and move everything.
    StopAndCopy,
}

#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub pre: Option<String>,
    pub post: Option<String>,
    pub fail: Option<String>,
}

#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// The process to move (unused with `container`).
    pub pid: i32,
    /// Move this Podman container instead of a process (`Precopy`: one pre-checkpoint round;
    /// `page_stream` does not apply).
    pub container: Option<rdmig_proto::msg::ContainerName>,
    /// How Podman runs here (its configuration files).
    pub podman: crate::podman::Podman,
    pub to: SocketAddr,
    /// This node's TLS client identity (and the agent's expected node name, if given).
    pub tls: rdmig_proto::tls::ClientTls,
    pub strategy: Strategy,
    pub max_rounds: u32,
    /// Stop pre-copy once a round carries no more than this.
    pub converge_bytes: u64,
    pub work_dir: PathBuf,
    pub hooks: Hooks,
    pub dump_timeout: Duration,
    pub allow_kernel_mismatch: bool,
    pub transport: TransportChoice,
    /// `auto`: a probe towards the same destination this recent is used again (its path is
    /// still tried with a short probe); zero measures every time.
    pub probe_max_age: Duration,
    /// Local address whose RoCE v2 GID on `rdma_device` carries RDMA data.
    pub rdma_addr: Option<std::net::Ipv4Addr>,
    pub rdma_device: String,
    /// RDMA lanes (RC QPs) of the data path, 1 to `transport::rdma::MAX_LANES`.
    pub rdma_qps: usize,
    /// What the RDMA data path does to each chunk: authenticate it, or encrypt it too.
    pub rdma_protection: rdmig_proto::msg::ChunkProtection,
    /// Print a line per step on stderr.
    pub progress: bool,
    /// Checkpoint and restore the process's established TCP connections.
    pub tcp_established: bool,
    /// An address of this host that moves with the process (device and prefix as configured).
    pub move_addr: Option<std::net::Ipv4Addr>,
    /// `--transport scp`: `[user@]host` to copy to (default: the destination agent's address).
    pub ssh_host: Option<String>,
    /// `--transport scp`: ssh client configuration (`scp -F`).
    pub ssh_config: Option<PathBuf>,
    /// Stream CRIU's pages to the destination's page server while dumping (else: local page
    /// images, sent after each dump).
    pub page_stream: bool,
    /// The whole migration, clean-up included, ends by then (a CRIU dump under way is not cut
    /// short: `dump_timeout` bounds it).
    pub deadline: Duration,
    /// Where the per-process migration locks are (`LOCK_DIR`).
    pub lock_dir: PathBuf,
    /// This node's journal (`journal::DEFAULT_PATH`): every step is recorded there before it
    /// takes effect, for `rdmig recover` and `rdmig events`.
    pub journal: PathBuf,
    /// When the process running this migration started (this node's CLOCK_MONOTONIC, ns): the
    /// timeline then begins with a `startup` span from there. Only for a process started to
    /// run this one migration (the CLI); None elsewhere.
    pub started_ns: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub round: u32,
    pub bytes: u64,
    pub pages: u64,
    pub dump_ms: f64,
    pub send_ms: f64,
    /// Pages RDMA wrote into the process's MRs since the last round, which this round carries:
    /// moved from the driver's dirty log to soft-dirty before the pre-dump (softroce patch
    /// 0033; 0 without it, and then they all reach the final dump).
    pub rdma_logged_pages: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The process runs at the destination; the source copy is gone.
    Migrated { restored_pid: i32 },
    /// Refused by a check before anything was frozen.
    Refused { reason: String },
    /// Failed after starting; the process runs at the source again.
    RolledBack { reason: String },
    /// The destination's state is unknown: the source copy was left stopped (never two copies).
    InDoubt { reason: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct MigrationReport {
    pub id: String,
    /// The process moved (a container's: its main process here).
    pub pid: i32,
    /// The Podman container moved, if it was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub strategy: Strategy,
    pub source: Option<HostFacts>,
    pub destination: Option<HostFacts>,
    pub rounds: Vec<Round>,
    pub stop_reason: Option<String>,
    pub final_bytes: u64,
    pub bytes_total: u64,
    pub transport: Option<TransportReport>,
    /// How the TSC a migrated process reads changes at the move (None: not measured, on
    /// either side, or no clock offset to line the samples up with).
    pub tsc: Option<crate::tsc::TscChange>,
    /// The pages went through CRIU's page stream while it dumped (else as image files after).
    pub pages_streamed: bool,
    pub outcome: Outcome,
    pub timeline: crate::timeline::Timeline,
    pub summary: Option<crate::timeline::Summary>,
    /// Why there is no summary (no downtime to report), when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary_error: Option<String>,
}

/// How a step failed: before anything was touched (refuse), or after.
#[derive(Debug, thiserror::Error)]
enum Step {
    #[error("{0}")]
    Refuse(String),
    #[error("{0}")]
    Fail(String),
}

impl From<MsgError> for Step {
    fn from(e: MsgError) -> Self {
        Step::Fail(format!("destination: {e}"))
    }
}

/// One migration in progress: what each stage found out, for the next stages and the report.
struct Run<'a> {
    o: &'a MigrateOptions,
    id: MigrationId,
    dir: PathBuf,
    rec: Recorder,
    rounds: Vec<Round>,
    bytes_total: u64,
    final_bytes: u64,
    stop_reason: Option<String>,
    src: Option<HostFacts>,
    dst: Option<HostFacts>,
    clock: Vec<ClockSample>,
    rdma: Option<RdmaSender>,
    /// `--transport scp`: image files go with scp instead of over the channel.
    scp: Option<scp::Scp>,
    transport: Option<TransportReport>,
    /// The TSC change at the move, once the checks compared the two hosts' counters.
    tsc: Option<crate::tsc::TscChange>,
    /// The destination's events, on its clock: (phase, edge, t_ns).
    remote_events: Vec<(Phase, Edge, u64, Attrs)>,
    /// CRIU options of this migration (plugin for verbs state, TCP connections).
    copts: criu::Options,
    /// The address that moves with the process, once known.
    moved: Option<rdmig_proto::msg::MovedAddr>,
    /// When the stages must be done: the deadline less the clean-up's reserve.
    stages_end: Instant,
    /// The deadline.
    end: Instant,
    /// This node's journal (opened before the run starts).
    journal: Option<NodeJournal>,
    /// When the destination's restore ended (its clock): the held copy's resume starts there.
    restored_ns: Option<u64>,
    /// The container moved (`--container`), once the checks found it.
    ctr: Option<container::Source>,
}

/// Of the deadline, what the clean-up after a failed stage may use (asking the destination,
/// aborting there): a quarter, at most this.
const CLEANUP_RESERVE: Duration = Duration::from_secs(20);
/// The clean-up gets this long at least, even after the deadline.
const CLEANUP_MIN: Duration = Duration::from_secs(3);

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

impl<'a> Run<'a> {
    fn new(o: &'a MigrateOptions, id: MigrationId, dir: PathBuf, node: &str) -> Self {
        let end = Instant::now() + o.deadline;
        Run {
            o,
            id,
            dir,
            rec: Recorder::new(node),
            rounds: vec![],
            bytes_total: 0,
            final_bytes: 0,
            stop_reason: None,
            src: None,
            dst: None,
            clock: vec![],
            rdma: None,
            scp: None,
            transport: None,
            tsc: None,
            remote_events: vec![],
            copts: criu::Options::default(),
            moved: None,
            stages_end: end - CLEANUP_RESERVE.min(o.deadline / 4),
            end,
            journal: None,
            restored_ns: None,
            ctr: None,
        }
    }

    /// The process that moves: a container's main process once the checks found it.
    fn pid(&self) -> i32 {
        self.ctr.as_ref().map_or(self.o.pid, |c| c.pid)
    }

    /// Records a step in the node's journal; a failure is logged (the step goes ahead).
    fn note(&self, phase: JPhase, outcome: JOutcome, details: Option<serde_json::Value>) {
        if let Some(j) = &self.journal {
            j.note(&self.id, Role::Source, phase, outcome, details);
        }
    }

    /// Records that a step is about to take effect; the step must not run unless it is
    /// recorded (recovery could not tell it happened).
    fn must_note(&self, phase: JPhase, details: Option<serde_json::Value>) -> Result<(), String> {
        match &self.journal {
            Some(j) => j
                .record(&self.id, Role::Source, phase, JOutcome::Started, details)
                .map(drop)
                .map_err(|e| format!("cannot record the {phase} step in the journal: {e}")),
            None => Err("no journal is open".into()),
        }
    }

    /// What recovery needs to find the process and the destination again.
    fn begin_details(&self) -> serde_json::Value {
        let o = self.o;
        if let Some(name) = &o.container {
            // No pid: the container's process is not resumed by a signal (see `recover`).
            // Recovery restores it here as this run would: with its Podman configuration.
            return serde_json::json!({
                "container": name.as_str(),
                "boot_id": crate::process::boot_id(),
                "to": o.to.to_string(),
                "dir": self.dir.display().to_string(),
                "tcp_established": o.tcp_established,
                "containers_conf": o.podman.containers_conf,
                "storage_conf": o.podman.storage_conf,
            });
        }
        serde_json::json!({
            "pid": o.pid,
            "start_ticks": crate::process::stat(o.pid).map(|s| s.start_ticks),
            "boot_id": crate::process::boot_id(),
            "to": o.to.to_string(),
            "dir": self.dir.display().to_string(),
        })
    }

    /// Until when the clean-up may wait on the destination.
    fn cleanup_until(&self) -> Instant {
        self.end.max(Instant::now() + CLEANUP_MIN)
    }

    /// The stages' time is up.
    fn late(&self) -> bool {
        Instant::now() >= self.stages_end
    }

    /// The stages, in order. Each failure ends the run with what the process's state calls for:
    /// refused before anything was touched, rolled back once it was, in doubt when only the
    /// destination knows.
    async fn go(&mut self) -> Outcome {
        // Every second of the run in a named phase: what came before its first step too.
        if let Some(t) = self.o.started_ns {
            self.rec.since(Phase::Startup, t);
        }
        // The journal knows of the migration before anything is asked of the destination.
        if let Err(e) = self.must_note(JPhase::Begin, Some(self.begin_details())) {
            return Outcome::Refused { reason: e };
        }
        // Nothing is touched until `begin`: any failure refuses.
        let mut ch = match self.checks().await {
            Ok(ch) => ch,
            Err(e) => {
                self.note(JPhase::Checks, JOutcome::failed(e.to_string()), None);
                return Outcome::Refused { reason: e.to_string() };
            }
        };
        let dst = self.dst.as_ref().map(|d| d.hostname.clone());
        let mut checked = serde_json::json!({ "move_addr": self.moved, "destination": dst });
        if let Some(c) = &self.ctr {
            // What recovery needs to tell the container's checkpoint is done, and to remove it.
            checked["container_id"] = c.id.clone().into();
            checked["container_pid"] = c.pid.into();
        }
        self.note(JPhase::Checks, JOutcome::Done, Some(checked));
        // The process keeps running: a failure only needs the destination cleaned.
        let parent = match self.precopy(&mut ch).await {
            Ok(p) => p,
            Err(e) => return self.abandon(format!("pre-copy: {e}")).await,
        };
        if self.late() {
            return self.abandon(format!("after {} pre-copy round(s)", self.rounds.len())).await;
        }
        // From here until the destination confirms, the process is stopped: on the disk first.
        if let Err(e) = self.must_note(JPhase::Freeze, None) {
            return self.abandon(e).await;
        }
        if let Err(e) = self.freeze(&mut ch, parent).await {
            self.note(JPhase::Freeze, JOutcome::failed(e.to_string()), None);
            return self.dump_failed(format!("final dump: {e}")).await;
        }
        self.note(JPhase::Freeze, JOutcome::Done, Some(serde_json::json!({ "final_bytes": self.final_bytes })));
        if let Err(e) = self.address_leaves() {
            return self.rollback(e).await;
        }
        self.note(JPhase::Transfer, JOutcome::Started, None);
        if let Err(e) = self.transfer(&mut ch).await {
            self.note(JPhase::Transfer, JOutcome::failed(e.to_string()), None);
            return self.rollback(format!("transfer: {e}")).await;
        }
        self.note(JPhase::Transfer, JOutcome::Done, Some(serde_json::json!({ "bytes_total": self.bytes_total })));
        if let Err(e) = self.must_note(JPhase::Restore, None) {
            return self.rollback(e).await;
        }
        let restored_pid = match self.restore(&mut ch).await {
            restore::Restored::Yes(pid) => pid,
            restore::Restored::No(why) => {
                self.note(JPhase::Restore, JOutcome::failed(why.clone()), None);
                return self.rollback(why).await;
            }
            restore::Restored::Unknown(why) => return self.in_doubt(why),
        };
        self.note(JPhase::Restore, JOutcome::Done, Some(serde_json::json!({ "restored_pid": restored_pid })));
        self.commit(&mut ch, restored_pid).await
    }
}

pub async fn migrate(o: &MigrateOptions) -> MigrationReport {
    let hostname = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "source".into());
    let (id, refused) = match MigrationId::random() {
        Ok(id) => (id, None),
        Err(e) => (MigrationId::new("m-unnamed").expect("valid id"), Some(e.to_string())),
    };
    let mut run = Run::new(o, id.clone(), o.work_dir.join(id.as_str()), &hostname);
    // Held until this function returns: the whole run, clean-up included.
    let subject = match &o.container {
        Some(name) => lock::Subject::Container(name.to_string()),
        None => lock::Subject::Pid(o.pid),
    };
    let lock = match refused {
        Some(why) => Err(why),
        None => lock::MigrationLock::take(&o.lock_dir, &subject, id.as_str()),
    };
    let outcome = match &lock {
        Ok(_) => match crate::journal::NodeJournal::open(&o.journal) {
            Ok(j) => {
                run.journal = Some(j);
                let outcome = run.go().await;
                run.journal_end(&outcome);
                outcome
            }
            Err(e) => Outcome::Refused { reason: format!("the journal at {}: {e}", o.journal.display()) },
        },
        Err(why) => Outcome::Refused { reason: why.clone() },
    };
    if let Outcome::Migrated { restored_pid } = &outcome {
        if let Err(e) = hooks::run_hook(&o.hooks.post, &run.hook_env("post", &[("RDMIG_RESTORED_PID", restored_pid.to_string())])) {
            warn!("{e}");
        }
    } else {
        let (phase, reason) = match &outcome {
            Outcome::Refused { reason } => ("refused", reason.clone()),
            Outcome::RolledBack { reason } => ("rolled-back", reason.clone()),
            Outcome::InDoubt { reason } => ("in-doubt", reason.clone()),
            Outcome::Migrated { .. } => unreachable!(),
        };
        if let Err(e) = hooks::run_hook(&o.hooks.fail, &run.hook_env(phase, &[("RDMIG_ERROR", reason)])) {
            warn!("{e}");
        }
    }
    if lock.is_ok() && !run.keeps_dir() {
        let _ = std::fs::remove_dir_all(&run.dir);
    }
    let report = run.report(outcome);
    drop(lock);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process to migrate (never frozen by these tests) and options that point at `to`.
    fn options(pid: i32, to: SocketAddr, dir: &std::path::Path, deadline: Duration) -> MigrateOptions {
        MigrateOptions {
            pid,
            container: None,
            podman: Default::default(),
            to,
            tls: rdmig_proto::tls::testing::TestCa::new().node("src", &[]).client(None).unwrap(),
            strategy: Strategy::Precopy,
            max_rounds: 1,
            converge_bytes: 0,
            work_dir: dir.join("work"),
            hooks: Hooks::default(),
            dump_timeout: Duration::from_secs(5),
            allow_kernel_mismatch: false,
            transport: TransportChoice::Tcp,
            probe_max_age: Duration::ZERO,
            rdma_addr: None,
            rdma_device: "rxe0".into(),
            rdma_qps: 1,
            rdma_protection: rdmig_proto::msg::ChunkProtection::Authenticated,
            progress: false,
            tcp_established: false,
            move_addr: None,
            ssh_host: None,
            ssh_config: None,
            page_stream: false,
            deadline,
            lock_dir: dir.join("locks"),
            journal: dir.join("journal.db"),
            started_ns: None,
        }
    }

    fn state(pid: u32) -> char {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        s.rsplit(") ").next().unwrap().chars().next().unwrap()
    }

    #[tokio::test]
    async fn a_second_migration_of_a_process_is_refused_before_it_touches_anything() {
        let d = tempfile::tempdir().unwrap();
        let mut app = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let o = options(app.id() as i32, "127.0.0.1:9".parse().unwrap(), d.path(), Duration::from_secs(30));
        let held = lock::MigrationLock::take(&o.lock_dir, &lock::Subject::Pid(o.pid), "m-0123456789abcdef").unwrap();
        let r = migrate(&o).await;
        match &r.outcome {
            Outcome::Refused { reason } => {
                assert!(reason.contains(&format!("another `rdmig migrate` of pid {} is in progress (migration m-0123456789abcdef", o.pid)), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(r.id.starts_with("m-") && r.id.len() == 18 && MigrationId::new(&r.id).is_ok(), "{}", r.id);
        assert!(r.timeline.events.is_empty(), "the refused run recorded steps");
        assert!(!o.work_dir.exists(), "the refused run made a work directory");
        assert_ne!(state(app.id()), 'T');
        drop(held);
        app.kill().unwrap();
        let _ = app.wait();
    }

    #[tokio::test]
    async fn a_silent_destination_is_refused_within_the_deadline() {
        let d = tempfile::tempdir().unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let to = l.local_addr().unwrap();
        tokio::spawn(async move {
            let mut keep = vec![];
            while let Ok((s, _)) = l.accept().await {
                keep.push(s);
            }
        });
        let mut app = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let o = options(app.id() as i32, to, d.path(), Duration::from_secs(2));
        let t = std::time::Instant::now();
        let r = migrate(&o).await;
        assert!(t.elapsed() < Duration::from_secs(4), "took {:?}", t.elapsed());
        match &r.outcome {
            Outcome::Refused { reason } => assert!(reason.contains("the deadline passed"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // No freeze, no downtime: the report says why there are no numbers.
        assert!(r.summary.is_none());
        let why = r.summary_error.as_deref().unwrap_or_default();
        assert!(why.contains("never frozen"), "{why}");
        assert_ne!(state(app.id()), 'T');
        // The lock went with the run.
        drop(lock::MigrationLock::take(&o.lock_dir, &lock::Subject::Pid(o.pid), "m-next").unwrap());
        app.kill().unwrap();
        let _ = app.wait();
    }
}
