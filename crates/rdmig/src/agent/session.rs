//! Requests that set up a migration and touch nothing: this host's facts, clock samples, the CPU
//! and verbs-number checks, `Begin` (a directory of its own for the migration's images) and
//! `Status`.

use std::net::IpAddr;
use std::path::Path;

use tracing::info;

use super::{now_ns, AgentConfig, Migration, Table};
use crate::criu;
use crate::journal::{Outcome as JOutcome, Phase, Role};
use rdmig_proto::msg::{HostFacts, MigState, MigrationId, Reply};

fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("MemAvailable:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .unwrap_or(0)
        * 1024
}

fn disk_available(p: &Path) -> u64 {
    nix::sys::statvfs::statvfs(p).map(|s| s.blocks_available() * s.fragment_size()).unwrap_or(0)
}

/// Which rdma_rxe is loaded: ours exposes /proc/sys/net/rdma_rxe.
pub fn rxe_flavour() -> Option<String> {
    if !Path::new("/sys/module/rdma_rxe").exists() {
        None
    } else if Path::new("/proc/sys/net/rdma_rxe").exists() {
        Some("rdmig".into())
    } else {
        Some("stock".into())
    }
}

/// This host's facts; `pid`: whether that process number is free here.
pub async fn host_facts(work_dir: &Path, pid: Option<i32>) -> HostFacts {
    // The TSC's rate takes `tsc::MEASURE_OVER` to measure: it runs while CRIU answers.
    let (criu_version, tsc) = tokio::join!(criu::version(), crate::tsc::measure());
    let criu_version = criu_version.ok();
    HostFacts {
        hostname: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        rdmig_version: env!("CARGO_PKG_VERSION").to_string(),
        criu_version,
        kernel: nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        mem_available: mem_available(),
        disk_available: disk_available(work_dir),
        pid_free: pid.map(|p| !Path::new(&format!("/proc/{p}")).exists()),
        rxe: rxe_flavour(),
        ucma: rdmig_rxe::ucma::loaded_abi_version().ok().flatten(),
        tsc,
    }
}

/// A clock sample: receive and send times on this host's monotonic clock.
pub(super) fn time() -> Reply {
    let t1 = now_ns();
    Reply::Time { t1_ns: t1, t2_ns: now_ns() }
}

/// CRIU's own CPU comparison, on the source's cpuinfo image. A pass stands while this agent
/// runs (the CPU does not change under a running kernel): a source migrating here again, with
/// the same image, is not checked by another CRIU run. A failure is not kept (it may have been
/// this node's, a full disk for one).
pub(super) async fn cpu_check(cfg: &AgentConfig, image: &[u8]) -> Reply {
    use sha2::Digest as _;
    static PASSED: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<[u8; 32]>>> = std::sync::OnceLock::new();
    // A few sources, a few CRIU versions each: a bound keeps a misbehaving peer from growing it.
    const KEEP: usize = 64;
    let passed = PASSED.get_or_init(Default::default);
    let digest: [u8; 32] = sha2::Sha256::digest(image).into();
    if passed.lock().unwrap_or_else(|p| p.into_inner()).contains(&digest) {
        tracing::debug!("CPU check: this image passed CRIU's check before");
        return Reply::Ack;
    }
    let r = run_cpu_check(cfg, image).await;
    if matches!(r, Reply::Ack) {
        let mut p = passed.lock().unwrap_or_else(|p| p.into_inner());
        if p.len() >= KEEP {
            p.clear();
        }
        p.insert(digest);
    }
    r
}

async fn run_cpu_check(cfg: &AgentConfig, image: &[u8]) -> Reply {
    // One directory per request: two sources may check at the same time.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = cfg.work_dir.join(format!("cpucheck-{}-{n}", std::process::id()));
    let r = async {
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("cpuinfo.img"), image).map_err(|e| e.to_string())?;
        criu::cpuinfo_check(&dir).await.map_err(|e| e.to_string())
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    match r {
        Ok(()) => Reply::Ack,
        Err(e) => Reply::Failed(format!("CPU not compatible with the source: {e}")),
    }
}

/// Are these QP numbers and MR indices free on rxe device `ibdev` here?
pub(super) fn check_numbers(ibdev: &str, qpns: &[u32], mrs: &[u32]) -> Reply {
    match rdmig_rxe::status::read() {
        Ok(recs) => {
            let taken: Vec<String> = recs
                .iter()
                .filter(|r| r.fields.get("dev").map(String::as_str) == Some(ibdev))
                .filter_map(|r| {
                    let n = |k: &str| r.fields.get(k).and_then(|v| v.parse::<u32>().ok());
                    let who = r.fields.get("pid").cloned().unwrap_or_default();
                    match r.kind.as_str() {
                        "qp" => n("qpn").filter(|q| qpns.contains(q)).map(|q| format!("QPN {q} (pid {who})")),
                        "mr" => n("index").filter(|m| mrs.contains(m)).map(|m| format!("MR index {m} (pid {who})")),
                        _ => None,
                    }
                })
                .collect();
            if taken.is_empty() {
                Reply::Ack
            } else {
                Reply::Failed(format!("taken on {ibdev} here: {}", taken.join(", ")))
            }
        }
        Err(e) => Reply::Failed(format!("rdmig's rdma_rxe is needed here for a process with verbs state: {e}")),
    }
}

/// A new migration of process `source` (the address its source connects from, its pid there):
/// its own directory under the work directory. One migration of a process at a time.
pub(super) fn begin(cfg: &AgentConfig, table: &Table, id: &MigrationId, source: (IpAddr, i32)) -> Reply {
    let dir = cfg.work_dir.join(id.as_str());
    let mut t = table.lock().expect("table lock");
    if t.contains_key(id.as_str()) || dir.exists() {
        return Reply::Failed(format!("migration {id} already exists here"));
    }
    if let Some((other, m)) = t.iter().find(|(_, m)| m.source == source && m.in_flight()) {
        return Reply::Failed(format!(
            "pid {} of {} is being migrated here already (migration {other}, {:?}); one migration of a process at a time",
            source.1, source.0, m.state
        ));
    }
    if let Err(e) = std::fs::create_dir(&dir) {
        return Reply::Failed(format!("cannot create {}: {e}", dir.display()));
    }
    info!(%id, pid = source.1, source = %source.0, "migration begins");
    t.insert(id.as_str().to_string(), Migration::new(dir, source));
    drop(t);
    table.note(id.as_str(), Phase::Begin, JOutcome::Done, Some(serde_json::json!({ "source": source.0.to_string(), "pid": source.1 })));
    Reply::Ack
}

/// What became of migration `id` here: the table's state, else how the journal says it ended
/// (the agent may have restarted since, or forgotten a final migration).
pub(super) fn status(table: &Table, id: &MigrationId) -> Reply {
    if let Some(m) = table.lock().expect("table lock").get(id.as_str()) {
        return Reply::State(m.state);
    }
    let ended = table.journal.as_ref().and_then(|j| j.with(|j| j.events_of(id)).ok()).and_then(|evs| {
        evs.iter()
            .rev()
            .find(|e| e.role == Role::Destination && e.outcome == JOutcome::Done && matches!(e.phase, Phase::Commit | Phase::Rollback))
            .map(|e| e.phase)
    });
    Reply::State(match ended {
        Some(Phase::Commit) => MigState::Committed,
        Some(_) => MigState::Aborted,
        None => MigState::Unknown,
    })
}
