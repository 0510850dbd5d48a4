//! `rdmig agent`: the per-node daemon that receives migrations.
//!
//! It binds only where it is told, talks only to holders of the cluster secret (see `wire`),
//! validates every message (see `msg`), keeps each migration's images in its own directory under
//! the work directory, restores with CRIU when asked, and removes images once the source commits.
//!
//! This module accepts connections and dispatches each request to the module of its group:
//! `session` (facts, clock, checks, begin, status), `receive` (the RDMA path, files, links,
//! probes, page streams, scp deliveries), `restore`, `finish` (commit, abort); `numbers` is this
//! node's share of QP and MR numbers.

mod finish;
pub mod numbers;
mod receive;
mod restore;
mod session;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use crate::transport::rdma::RdmaReceiver;
use rdmig_proto::msg::{MigState, MigrationId, Reply, Request};
use rdmig_proto::wire::{Channel, Secret};
use rdmig_proto::{msg, wire};

pub use session::{host_facts, rxe_flavour};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub listen: SocketAddr,
    /// The local address whose RoCE v2 GID (on `rdma_device`) carries RDMA data; None: TCP only.
    pub rdma_addr: Option<std::net::Ipv4Addr>,
    pub rdma_device: String,
    pub secret: Secret,
    pub work_dir: PathBuf,
    pub keep_images: bool,
    pub restore_timeout: Duration,
    /// This node's share of the QP and MR number spaces (None: leave the driver as it is).
    pub numbers: Option<numbers::NumberRange>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("work directory {path}: {source}")]
    WorkDir { path: String, source: std::io::Error },
    #[error("cannot set up this node's QP and MR numbers: {0}")]
    Numbers(String),
}

/// CLOCK_MONOTONIC in nanoseconds: the clock every timeline event of this host uses.
pub fn now_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC exists");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// A migration this agent receives.
struct Migration {
    dir: PathBuf,
    state: MigState,
    /// An address added here for the restored process (removed again on abort).
    moved_addr: Option<rdmig_proto::msg::MovedAddr>,
    /// The process it moves: the address its source connects from, and its pid there.
    source: (IpAddr, i32),
}

impl Migration {
    fn new(dir: PathBuf, source: (IpAddr, i32)) -> Self {
        Migration { dir, state: MigState::Receiving, moved_addr: None, source }
    }

    /// Still under way: its source may yet commit or abort it.
    fn in_flight(&self) -> bool {
        matches!(self.state, MigState::Receiving | MigState::Restored { .. })
    }
}

type Table = Arc<Mutex<HashMap<String, Migration>>>;

pub async fn serve(cfg: AgentConfig) -> Result<(), AgentError> {
    std::fs::create_dir_all(&cfg.work_dir).map_err(|e| AgentError::WorkDir { path: cfg.work_dir.display().to_string(), source: e })?;
    let listener = TcpListener::bind(cfg.listen).await.map_err(|e| AgentError::Bind { addr: cfg.listen, source: e })?;
    if let Some(r) = cfg.numbers {
        r.apply().map_err(|e| AgentError::Numbers(e.to_string()))?;
        let (q, m) = (r.block(rdmig_rxe::Obj::Qp), r.block(rdmig_rxe::Obj::Mr));
        info!(node = r.node, nodes = r.nodes, "QPNs {}-{} and MR indices {}-{} are this node's; the rest is reserved", q.0, q.1, m.0, m.1);
    }
    info!(listen = %cfg.listen, work = %cfg.work_dir.display(), "agent listening");
    let cfg = Arc::new(cfg);
    let table: Table = Arc::default();
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (cfg, table) = (cfg.clone(), table.clone());
        tokio::spawn(async move {
            match connection(sock, &cfg, &table).await {
                Ok(()) => {}
                Err(e) => warn!(%peer, "connection ended: {e}"),
            }
        });
    }
}

async fn connection(sock: TcpStream, cfg: &AgentConfig, table: &Table) -> Result<(), msg::MsgError> {
    sock.set_nodelay(true).ok();
    let peer_addr = sock.peer_addr().map_err(wire::WireError::Io)?;
    let peer = peer_addr.to_string();
    let mut ch = tokio::time::timeout(Duration::from_secs(10), Channel::server(sock, &cfg.secret))
        .await
        .map_err(|_| wire::WireError::Io(std::io::ErrorKind::TimedOut.into()))??;
    let mut rdma: Option<RdmaReceiver> = None;
    loop {
        let req: Request = match ch.recv_msg().await {
            Ok(r) => r,
            Err(msg::MsgError::Wire(wire::WireError::Closed)) => return Ok(()),
            Err(e) => {
                warn!(%peer, "refused: {e}");
                return Err(e);
            }
        };
        if let Err(e) = req.validate() {
            warn!(%peer, "refused an invalid request: {e}");
            ch.send_msg(&Reply::Failed(e.to_string())).await?;
            return Err(e);
        }
        let reply = handle(req, &mut ch, &mut rdma, cfg, table, peer_addr.ip()).await?;
        ch.send_msg(&reply).await?;
    }
}

/// One validated request to the module of its group; the reply to send. `peer` is the address
/// the source connects from.
async fn handle(
    req: Request,
    ch: &mut Channel<TcpStream>,
    rdma: &mut Option<RdmaReceiver>,
    cfg: &AgentConfig,
    table: &Table,
    peer: IpAddr,
) -> Result<Reply, msg::MsgError> {
    Ok(match req {
        Request::Facts { pid } => Reply::Facts(host_facts(&cfg.work_dir, pid).await),
        Request::Time => session::time(),
        Request::CpuCheck { image } => session::cpu_check(cfg, &image).await,
        Request::CheckNumbers { ibdev, qpns, mrs } => session::check_numbers(&ibdev, &qpns, &mrs),
        Request::Begin { id, pid } => session::begin(cfg, table, &id, (peer, pid)),
        Request::Status { id } => session::status(table, &id),
        Request::RdmaSetup { eps } => receive::rdma_setup(cfg, rdma, &eps).await,
        Request::PutFile { id, rel, len, via_rdma } => receive::put_file(ch, rdma, table, &id, &rel, len, via_rdma).await?,
        Request::Probe { len, via_rdma } => receive::probe(ch, rdma, len, via_rdma).await?,
        Request::PutSymlink { id, rel, target } => receive::put_symlink(table, &id, &rel, &target),
        Request::PageStream { id, rel, parent, via_rdma } => receive::page_stream(ch, rdma, table, &id, &rel, parent.as_ref(), via_rdma).await?,
        Request::ScpDir { id, rel } => receive::scp_dir(table, &id, &rel),
        Request::ScpDone { id, rel, files } => receive::scp_done(table, &id, &rel, &files),
        Request::Restore { id, dir, opts } => restore::restore(cfg, table, &id, &dir, &opts).await,
        Request::Commit { id } => finish::commit(cfg, table, &id),
        Request::Abort { id } => finish::abort(table, &id),
    })
}

/// The image directory of a migration still receiving.
fn dir_of(table: &Table, id: &MigrationId) -> Result<PathBuf, String> {
    let t = table.lock().expect("table lock");
    match t.get(id.as_str()) {
        Some(m) if m.state == MigState::Receiving => Ok(m.dir.clone()),
        Some(m) => Err(format!("migration {id} is {:?}, not receiving", m.state)),
        None => Err(format!("no migration {id} here (agent restarted?)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(work: &std::path::Path) -> AgentConfig {
        AgentConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            rdma_addr: None,
            rdma_device: "rxe0".into(),
            secret: Secret::from_bytes(&[b'a'; 40]).unwrap(),
            work_dir: work.to_path_buf(),
            keep_images: false,
            restore_timeout: Duration::from_secs(1),
            numbers: None,
        }
    }

    fn id(s: &str) -> MigrationId {
        MigrationId::new(s).unwrap()
    }

    #[test]
    fn one_migration_of_a_source_process_at_a_time() {
        let d = tempfile::tempdir().unwrap();
        let (cfg, table) = (config(d.path()), Table::default());
        let src: IpAddr = "10.99.0.1".parse().unwrap();
        assert!(matches!(session::begin(&cfg, &table, &id("m-1"), (src, 4242)), Reply::Ack));
        match session::begin(&cfg, &table, &id("m-2"), (src, 4242)) {
            Reply::Failed(e) => assert!(e.contains("pid 4242 of 10.99.0.1 is being migrated here already (migration m-1"), "{e}"),
            other => panic!("a second migration of the process was let in: {other:?}"),
        }
        assert!(!d.path().join("m-2").exists(), "the refused one left a directory");
        // Another process, or the same pid on another source, are other processes.
        assert!(matches!(session::begin(&cfg, &table, &id("m-3"), (src, 4243)), Reply::Ack));
        assert!(matches!(session::begin(&cfg, &table, &id("m-4"), ("10.99.0.3".parse().unwrap(), 4242)), Reply::Ack));
        // Once the first is over, the process may move again.
        assert!(matches!(finish::abort(&table, &id("m-1")), Reply::Ack));
        assert!(matches!(session::begin(&cfg, &table, &id("m-5"), (src, 4242)), Reply::Ack));
    }
}
