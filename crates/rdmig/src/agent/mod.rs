//! `rdmig agent`: the per-node daemon that receives migrations.
//!
//! It binds only where it is told, speaks only mutual TLS with nodes of the cluster CA (see
//! `wire`), serves only the nodes its policy names (`policy`), validates every message (see
//! `msg`), keeps each migration's images in its own directory under the work directory (every
//! path resolved beneath it, `rdmig_confine`), restores with CRIU when asked, and removes images once
//! the source commits. What an unauthenticated peer can cost it is bounded (`gate`).
//!
//! This module accepts connections and dispatches each request to the module of its group:
//! `session` (facts, clock, checks, begin, status), `receive` (the RDMA path, files, links,
//! probes, page streams, scp deliveries), `restore`, `container` (a Podman container's check
//! and restore), `finish` (commit, abort, and dropping the
//! migrations whose source went silent); `numbers` is this node's share of QP and MR numbers.
//! (`Ping` needs no module: it only says the source is alive.)
//!
//! Nothing pins the agent: each connection has an idle deadline (a source busy with a long dump
//! sends `Ping`s), its socket keepalive and `TCP_USER_TIMEOUT`, and a migration that no open
//! connection has named for `orphan_after` is aborted like an `Abort` would (a restored copy that
//! was never committed is killed, the images go).

mod container;
mod finish;
mod gate;
mod lend;
pub mod numbers;
pub mod paused;
pub mod policy;
mod receive;
mod reconcile;
mod restore;
mod seal;
mod session;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use crate::journal::{NodeJournal, Outcome as JOutcome, Phase, Role};
use crate::transport::rdma::RdmaReceiver;
use rdmig_proto::msg::{MigState, MigrationId, Reply, Request};
use rdmig_proto::tls::ServerTls;
use rdmig_proto::wire::{Channel, Limits};
use rdmig_proto::{msg, wire};

pub use gate::MAX_CONNECTIONS;
pub use session::{host_facts, rxe_flavour};

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub listen: SocketAddr,
    /// The local address whose RoCE v2 GID (on `rdma_device`) carries RDMA data; None: TCP only.
    pub rdma_addr: Option<std::net::Ipv4Addr>,
    pub rdma_device: String,
    /// This node's TLS server side (its certificate; clients must have one of the cluster CA).
    pub tls: ServerTls,
    /// The same identity's client side: recovering a source migration of this node, the agent
    /// asks its destination itself.
    pub client_tls: rdmig_proto::tls::ClientTls,
    /// Which nodes may migrate here, and which addresses they may move.
    pub policy: policy::Policy,
    pub work_dir: PathBuf,
    pub keep_images: bool,
    pub restore_timeout: Duration,
    /// This node's share of the QP and MR number spaces (None: leave the driver as it is).
    pub numbers: Option<numbers::NumberRange>,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A migration no open connection has named for this long is aborted: its source is gone.
    pub orphan_after: Duration,
    /// Connections open at once (a quarter of them in their TLS handshake); more are closed.
    pub max_connections: usize,
    /// This node's journal (None: nothing is recorded, nothing recovered; tests).
    pub journal: Option<PathBuf>,
    /// Where `rdmig migrate` keeps its per-process locks on this node: a source migration whose
    /// lock is free has no `rdmig migrate` left, and the agent recovers it.
    pub lock_dir: PathBuf,
    /// How often the agent reconciles its journal with the node (source migrations left by a
    /// dead `rdmig migrate`, leftover image directories).
    pub reconcile_every: Duration,
    /// Where the agent lends `/dev/rxe_ctl` to CRIU inside containers (None: it does not).
    pub lend_socket: Option<PathBuf>,
    /// How this node runs Podman for container restores (its configuration files).
    pub podman: crate::podman::Podman,
}

/// The TLS handshake must come at once.
const HELLO: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("work directory {path}: {source}")]
    WorkDir { path: String, source: std::io::Error },
    #[error("cannot set up this node's QP and MR numbers: {0}")]
    Numbers(String),
    #[error("journal {0}")]
    Journal(String),
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
    /// The moved address's TCP connections are held (`tcp_hold`) until the commit or the abort.
    tcp_held: bool,
    /// The process it moves: the address its source connects from, and its pid there.
    source: (IpAddr, i32),
    /// Open connections that named it.
    conns: usize,
    /// When a request last named it, or the last connection that did closed.
    last_heard: Instant,
    /// Each image file as it arrived: checked before CRIU restores from them.
    seals: seal::Seals,
    /// The container restored here (`RestoreContainer`), removed if the migration is aborted.
    container: Option<container::Restored>,
}

impl Migration {
    fn new(dir: PathBuf, source: (IpAddr, i32)) -> Self {
        Migration {
            dir,
            state: MigState::Receiving,
            moved_addr: None,
            tcp_held: false,
            source,
            conns: 0,
            last_heard: Instant::now(),
            seals: Default::default(),
            container: None,
        }
    }

    /// Still under way: its source may yet commit or abort it.
    fn in_flight(&self) -> bool {
        matches!(self.state, MigState::Receiving | MigState::Restoring | MigState::Restored { .. })
    }

    /// Takes the TCP hold on `addr` (`tcp_hold`) if this migration has one, to be ended with
    /// [`HoldToEnd::end`] once the table is unlocked: ending it may first wait for `after_exit_of`,
    /// a copy just sent SIGKILL.
    fn take_tcp_hold(&mut self, id: &str, addr: Ipv4Addr, after_exit_of: Option<i32>) -> Option<HoldToEnd> {
        std::mem::take(&mut self.tcp_held).then(|| HoldToEnd { id: id.to_string(), addr, after_exit_of })
    }
}

/// A TCP hold taken off its migration and not ended yet (see [`Migration::take_tcp_hold`]).
#[must_use = "the moved address's connections stay blackholed until the hold is ended"]
struct HoldToEnd {
    id: String,
    addr: Ipv4Addr,
    after_exit_of: Option<i32>,
}

impl HoldToEnd {
    /// How long a killed copy may take to exit before the hold ends anyway.
    const EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

    /// Ends the hold: the moved address's connections answer again. A killed copy's sockets close
    /// as it exits, and the reset or FIN they send must still meet the hold, not the peer, whose
    /// connection lives on at the source; so a copy is waited for first.
    fn end(self) {
        if let Some(pid) = self.after_exit_of {
            crate::process::wait_exited(pid, Self::EXIT_WAIT);
        }
        crate::tcp_hold::release(&self.id, self.addr);
    }
}

/// The migrations this agent receives, and the node's journal their steps go to.
#[derive(Default)]
struct Registry {
    map: Mutex<HashMap<String, Migration>>,
    journal: Option<NodeJournal>,
}

impl Registry {
    fn lock(&self) -> std::sync::LockResult<std::sync::MutexGuard<'_, HashMap<String, Migration>>> {
        self.map.lock()
    }

    /// Records a destination step of migration `id` (a failure is logged: the step goes ahead).
    fn note(&self, id: &str, phase: Phase, outcome: JOutcome, details: Option<serde_json::Value>) {
        if let (Some(j), Ok(id)) = (&self.journal, MigrationId::new(id)) {
            j.note(&id, Role::Destination, phase, outcome, details);
        }
    }

    /// Records that a step is about to take effect; it must not run unless recorded.
    fn must_note(&self, id: &MigrationId, phase: Phase, details: Option<serde_json::Value>) -> Result<(), String> {
        match &self.journal {
            Some(j) => j
                .record(id, Role::Destination, phase, JOutcome::Started, details)
                .map(drop)
                .map_err(|e| format!("cannot record the {phase} step in the journal: {e}")),
            None => Ok(()),
        }
    }
}

type Table = Arc<Registry>;

/// The migrations one connection named: alive while it is open.
struct Named<'a> {
    table: &'a Table,
    ids: Vec<String>,
}

impl Named<'_> {
    /// A request named `id` (Begin, a file, Status...): heard from now, and held by this
    /// connection until it closes.
    fn touch(&mut self, id: &str) {
        let mut t = self.table.lock().expect("table lock");
        if let Some(m) = t.get_mut(id) {
            m.last_heard = Instant::now();
            if !self.ids.iter().any(|i| i == id) {
                m.conns += 1;
                self.ids.push(id.to_string());
            }
        }
    }

    /// The source pinged: everything this connection holds was heard from.
    fn touch_all(&self) {
        let mut t = self.table.lock().expect("table lock");
        for id in &self.ids {
            if let Some(m) = t.get_mut(id) {
                m.last_heard = Instant::now();
            }
        }
    }
}

impl Drop for Named<'_> {
    fn drop(&mut self) {
        if let Ok(mut t) = self.table.lock() {
            for id in &self.ids {
                if let Some(m) = t.get_mut(id) {
                    m.conns = m.conns.saturating_sub(1);
                    m.last_heard = Instant::now();
                }
            }
        }
    }
}

pub async fn serve(cfg: AgentConfig) -> Result<(), AgentError> {
    std::fs::create_dir_all(&cfg.work_dir).map_err(|e| AgentError::WorkDir { path: cfg.work_dir.display().to_string(), source: e })?;
    let listener = TcpListener::bind(cfg.listen).await.map_err(|e| AgentError::Bind { addr: cfg.listen, source: e })?;
    if let Some(r) = cfg.numbers {
        r.apply().map_err(|e| AgentError::Numbers(e.to_string()))?;
        let (q, m) = (r.block(rdmig_rxe::Obj::Qp), r.block(rdmig_rxe::Obj::Mr));
        info!(node = r.node, nodes = r.nodes, "QPNs {}-{} and MR indices {}-{} are this node's; the rest is reserved", q.0, q.1, m.0, m.1);
        let (c0, c1) = r.cm_id_block();
        match r.apply_cm_ids().map_err(AgentError::Numbers)? {
            true => info!("new CM IDs are numbered {c0}-{c1} here"),
            false => {
                info!("rdma_ucm here does not number CM IDs from a range (stock, or not loaded): an rdma_cm process migrated in may find its numbers taken")
            }
        }
    }
    info!(listen = %cfg.listen, work = %cfg.work_dir.display(), idle_s = cfg.idle_timeout.as_secs(), orphan_s = cfg.orphan_after.as_secs(), "agent listening");
    // What the journal says was under way when the agent last stopped is taken up again: an
    // uncommitted copy is tracked (and dropped if its source stays silent), leftovers go.
    let (journal, adopted) = match &cfg.journal {
        Some(path) => {
            let j = NodeJournal::open(path).map_err(|e| AgentError::Journal(format!("{}: {e}", path.display())))?;
            let adopted = reconcile::adopt(&j, &cfg.work_dir, &cfg.podman);
            (Some(j), adopted)
        }
        None => (None, HashMap::new()),
    };
    reconcile::remove_leftovers(&cfg.work_dir, &adopted);
    let cfg = Arc::new(cfg);
    let table: Table = Arc::new(Registry { map: Mutex::new(adopted), journal });
    tokio::spawn(finish::reap_orphans(table.clone(), cfg.orphan_after));
    let gate = gate::Gate::new(cfg.max_connections);
    tokio::spawn(reconcile::periodically(cfg.clone(), table.clone()));
    tokio::spawn(paused::watch(Duration::from_secs(5)));
    if let Some(path) = &cfg.lend_socket {
        // Without it a container's checkpoints are restored only where the container was given
        // /dev/rxe_ctl: worth a warning, not a refusal to serve.
        if let Err(e) = lend::start(path) {
            warn!(socket = %path.display(), "cannot lend {} to CRIU inside containers: {e}", rdmig_rxe::CTL_DEV);
        }
    }
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(slot) = gate.admit() else {
            warn!(%peer, "closed: {} connections are open already", cfg.max_connections);
            continue;
        };
        let (cfg, table, gate) = (cfg.clone(), table.clone(), gate.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match connection(sock, &cfg, &table, &gate).await {
                Ok(()) => {}
                Err(e) => warn!(%peer, "connection ended: {e}"),
            }
        });
    }
}

async fn connection(sock: TcpStream, cfg: &AgentConfig, table: &Table, gate: &gate::Gate) -> Result<(), msg::MsgError> {
    sock.set_nodelay(true).ok();
    if let Err(e) = wire::keepalive(&sock) {
        warn!("keepalive on an agent socket: {e}");
    }
    let peer_addr = sock.peer_addr().map_err(wire::WireError::Io)?;
    let peer = peer_addr.to_string();
    let Some(handshake) = gate.handshake() else {
        warn!(%peer, "closed: too many handshakes under way");
        return Ok(());
    };
    // The whole handshake within HELLO (not each wait: a trickle of bytes does not stretch it).
    let hello = Limits::default().until(tokio::time::Instant::now() + HELLO.min(cfg.idle_timeout));
    let mut ch = Channel::server_within(sock, &cfg.tls, hello).await?;
    drop(handshake);
    // A node of the cluster that may not migrate here: its first request is answered with why.
    let refused = cfg.policy.admits(ch.peer()).err();
    // From here on, a source that sends nothing for this long is gone (or stopped).
    ch.set_limits(Limits::idle(cfg.idle_timeout));
    let mut rdma: Option<RdmaReceiver> = None;
    let mut named = Named { table, ids: vec![] };
    let mut first = true;
    loop {
        // The first request is small (a peer not yet let in makes the agent read little).
        let max = if std::mem::take(&mut first) { gate::FIRST_REQUEST } else { msg::MAX_MSG };
        let req: Request = match ch.recv_msg_max(max).await {
            Ok(r) => r,
            Err(msg::MsgError::Wire(wire::WireError::Closed)) => return Ok(()),
            Err(e @ msg::MsgError::Wire(wire::WireError::TimedOut(_))) => {
                info!(%peer, "closed a silent connection: {e}");
                return Ok(());
            }
            Err(e) => {
                warn!(%peer, "refused: {e}");
                return Err(e);
            }
        };
        if let Some(why) = refused {
            warn!(%peer, node = ch.peer(), "refused: {why}");
            ch.send_msg(&Reply::Failed(why)).await?;
            return Ok(());
        }
        if let Err(e) = req.validate() {
            warn!(%peer, "refused an invalid request: {e}");
            ch.send_msg(&Reply::Failed(e.to_string())).await?;
            return Err(e);
        }
        if let Err(why) = cfg.policy.allows(&req) {
            warn!(%peer, node = ch.peer(), "refused a request: {why}");
            ch.send_msg(&Reply::Failed(why)).await?;
            continue;
        }
        let id = req.id().map(|i| i.as_str().to_string());
        if let Some(id) = &id {
            named.touch(id);
        }
        if matches!(req, Request::Ping) {
            named.touch_all();
        }
        let reply = handle(req, &mut ch, &mut rdma, cfg, table, peer_addr.ip()).await?;
        // Begin created it; and a long request (a restore) counts as hearing from the source.
        if let Some(id) = &id {
            named.touch(id);
        }
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
        Request::Ping => Reply::Ack,
        Request::CpuCheck { image } => session::cpu_check(cfg, &image).await,
        Request::CheckNumbers { ibdev, qpns, mrs } => session::check_numbers(&ibdev, &qpns, &mrs),
        Request::CheckContainer { container } => container::check(cfg, &container).await,
        Request::Begin { id, pid } => session::begin(cfg, table, &id, (peer, pid)),
        Request::Status { id } => session::status(table, &id),
        Request::RdmaSetup { eps, protection } => receive::rdma_setup(cfg, ch, rdma, &eps, protection).await,
        Request::PutFile { id, rel, len, via_rdma } => receive::put_file(ch, rdma, table, &id, &rel, len, via_rdma).await?,
        Request::Probe { len, via_rdma } => receive::probe(ch, rdma, len, via_rdma).await?,
        Request::PutSymlink { id, rel, target } => receive::put_symlink(table, &id, &rel, &target),
        Request::PageStream { id, rel, parent, via_rdma } => receive::page_stream(ch, rdma, table, &id, &rel, parent.as_ref(), via_rdma).await?,
        Request::ScpDir { id, rel } => receive::scp_dir(table, &id, &rel),
        Request::ScpDone { id, rel, files } => receive::scp_done(table, &id, &rel, &files),
        Request::Restore { id, dir, opts } => restore::restore(cfg, table, &id, &dir, &opts).await,
        Request::RestoreContainer { id, archive, container, opts, previous } => {
            container::restore(cfg, table, &id, &archive, previous.as_ref(), &container, &opts).await
        }
        Request::Commit { id } => finish::commit(cfg, table, &id),
        Request::Abort { id } => finish::abort(table, &id),
        Request::Events { after } => reconcile::events(table, after),
        Request::Inventory => reconcile::inventory(cfg, table),
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
pub(crate) mod tests {
    use super::*;
    use rdmig_proto::tls::testing::TestCa;
    use rdmig_proto::wire::{Channel, Limits};

    /// An agent (`serve`) on a free port of 127.0.0.1 with this connection cap and a one-second
    /// handshake limit.
    pub(crate) async fn agent(ca: &TestCa, max_connections: usize) -> std::net::SocketAddr {
        let d = tempfile::tempdir().unwrap();
        let work = d.path().to_path_buf();
        agent_at(ca, max_connections, &work, Some(d)).await
    }

    /// [`agent`] with its work directory at `work`; `keep` (the directory's owner) lives as
    /// long as the agent's task.
    pub(crate) async fn agent_at(ca: &TestCa, max_connections: usize, work: &std::path::Path, keep: Option<tempfile::TempDir>) -> std::net::SocketAddr {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut cfg = config(work);
        cfg.listen = addr;
        cfg.tls = ca.node("dst", &["127.0.0.1"]).server().unwrap();
        cfg.policy = policy::Policy { peers: vec!["node1".into()], ..policy::Policy::default() };
        cfg.idle_timeout = Duration::from_secs(1);
        cfg.max_connections = max_connections;
        tokio::spawn(async move {
            let _keep = keep;
            let _ = serve(cfg).await;
        });
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        addr
    }

    /// A client of `ca` named node1 (the one peer [`agent`]'s policy allows), connected to `to`.
    pub(crate) async fn dial(ca: &TestCa, to: std::net::SocketAddr) -> Result<Channel<tokio::net::TcpStream>, rdmig_proto::wire::WireError> {
        let tls = ca.node("node1", &[]).client(None).unwrap();
        let sock = tokio::net::TcpStream::connect(to).await.unwrap();
        Channel::client_within(sock, &tls, tls.server_name(to.ip()), Limits::idle(Duration::from_secs(5))).await
    }

    pub(super) fn config(work: &std::path::Path) -> AgentConfig {
        AgentConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            rdma_addr: None,
            rdma_device: "rxe0".into(),
            tls: rdmig_proto::tls::testing::TestCa::new().node("dst", &[]).server().unwrap(),
            client_tls: rdmig_proto::tls::testing::TestCa::new().node("dst", &[]).client(None).unwrap(),
            policy: policy::Policy::default(),
            work_dir: work.to_path_buf(),
            keep_images: false,
            restore_timeout: Duration::from_secs(1),
            numbers: None,
            idle_timeout: Duration::from_secs(120),
            orphan_after: Duration::from_millis(200),
            max_connections: gate::MAX_CONNECTIONS,
            journal: None,
            lock_dir: work.join("locks"),
            reconcile_every: Duration::from_secs(30),
            lend_socket: None,
            podman: Default::default(),
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

    #[test]
    fn a_migration_whose_source_went_silent_is_aborted_and_its_copy_killed() {
        let d = tempfile::tempdir().unwrap();
        let (cfg, table) = (config(d.path()), Table::default());
        let src: IpAddr = "10.99.0.1".parse().unwrap();
        for (m, pid) in [("m-held", 100), ("m-silent", 101), ("m-restored", 102), ("m-committed", 103)] {
            assert!(matches!(session::begin(&cfg, &table, &id(m), (src, pid)), Reply::Ack));
        }
        // A restored copy that was never committed: a real process, to see it killed.
        let mut copy = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        {
            let mut t = table.lock().unwrap();
            t.get_mut("m-restored").unwrap().state = MigState::Restored { pid: copy.id() as i32 };
            t.get_mut("m-committed").unwrap().state = MigState::Committed;
        }
        let mut held = Named { table: &table, ids: vec![] };
        held.touch("m-held");
        let mut closed = Named { table: &table, ids: vec![] };
        closed.touch("m-silent");
        drop(closed);
        // Not yet: heard from too recently.
        assert!(finish::reap(&table, cfg.orphan_after).is_empty());
        std::thread::sleep(cfg.orphan_after + Duration::from_millis(50));
        let mut gone = finish::reap(&table, cfg.orphan_after);
        gone.sort();
        assert_eq!(gone, ["m-restored", "m-silent"]);
        let status = copy.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "the uncommitted copy runs on");
        let t = table.lock().unwrap();
        assert_eq!(t["m-silent"].state, MigState::Aborted);
        assert!(!d.path().join("m-silent").exists() && !d.path().join("m-restored").exists(), "images left behind");
        // An open connection holds its migration; a committed one is the destination's own.
        assert_eq!(t["m-held"].state, MigState::Receiving);
        assert!(d.path().join("m-held").exists());
        assert_eq!(t["m-committed"].state, MigState::Committed);
        drop(t);
        drop(held);
        std::thread::sleep(cfg.orphan_after + Duration::from_millis(50));
        assert_eq!(finish::reap(&table, cfg.orphan_after), ["m-held"]);
    }

    /// An image file changed on disk after it arrived (one flipped bit in a pre-copy round): the
    /// restore is refused before CRIU runs, the migration stays receiving (its source rolls it
    /// back), and the reason names the file.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_restore_from_a_changed_image_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (cfg, table) = (config(d.path()), Table::default());
        let m = id("m-00000000000000f1");
        assert!(matches!(session::begin(&cfg, &table, &m, ("10.99.0.1".parse().unwrap(), 77)), Reply::Ack));
        let dir = d.path().join(m.as_str());
        std::fs::create_dir(dir.join("pre-1")).unwrap();
        std::fs::write(dir.join("pre-1/pages-1.img"), vec![5u8; 8192]).unwrap();
        {
            let c = rdmig_confine::Confined::open(&dir).unwrap();
            let mut t = table.lock().unwrap();
            t.get_mut(m.as_str()).unwrap().seals.seal_dir(&c, "pre-1").unwrap();
        }
        // (A tick later: timestamps move in ticks, see `seal`.)
        std::thread::sleep(Duration::from_millis(20));
        let mut b = std::fs::read(dir.join("pre-1/pages-1.img")).unwrap();
        b[5000] ^= 1;
        std::fs::write(dir.join("pre-1/pages-1.img"), b).unwrap();
        let opts = msg::RestoreOpts { verbs: false, tcp_established: false, move_addr: None };
        match restore::restore(&cfg, &table, &m, &msg::RelPath::new("pre-1").unwrap(), &opts).await {
            Reply::Failed(e) => assert!(e.contains("images are damaged: pre-1/pages-1.img: written to or replaced since it arrived"), "{e}"),
            other => panic!("restored from a changed image: {other:?}"),
        }
        assert_eq!(table.lock().unwrap()[m.as_str()].state, MigState::Receiving);
    }

    /// An agent that restarts finds in its journal a copy it restored and never committed: it
    /// tracks it again, drops it once its source stays silent (killing it), and answers a
    /// source's question about a migration it has forgotten from the journal.
    #[test]
    fn a_restarted_agent_takes_up_an_uncommitted_copy_from_its_journal() {
        use crate::journal::{NodeJournal, NodeName, Outcome as JOutcome, Phase, Role};
        let d = tempfile::tempdir().unwrap();
        let cfg = config(d.path());
        let j = NodeJournal::open_as(&d.path().join("j.db"), &NodeName::new("dst").unwrap()).unwrap();
        let mut copy = std::process::Command::new("sleep").arg("60").spawn().unwrap();
        let pid = copy.id() as i32;
        let ticks = crate::process::stat(pid).unwrap().start_ticks;
        let (m, done) = (id("m-00000000000000d1"), id("m-00000000000000d2"));
        let rec = |id: &MigrationId, p, o, d| j.record(id, Role::Destination, p, o, d).unwrap();
        rec(&m, Phase::Begin, JOutcome::Done, Some(serde_json::json!({"source": "10.99.0.1", "pid": 4242})));
        rec(&m, Phase::Restore, JOutcome::Started, Some(serde_json::json!({"pid_free": true})));
        rec(&m, Phase::Restore, JOutcome::Done, Some(serde_json::json!({"restored_pid": pid, "start_ticks": ticks})));
        rec(&done, Phase::Begin, JOutcome::Done, Some(serde_json::json!({"source": "10.99.0.1", "pid": 4243})));
        rec(&done, Phase::Restore, JOutcome::Done, Some(serde_json::json!({"restored_pid": 1, "start_ticks": 1})));
        rec(&done, Phase::Commit, JOutcome::Done, None);
        // Leftovers: an unknown migration's images and a CPU check's; the plugin directory stays.
        for l in ["m-00000000000000ff", "cpucheck-1-2", "criu-plugins"] {
            std::fs::create_dir_all(d.path().join(l)).unwrap();
        }

        let adopted = reconcile::adopt(&j, d.path(), &cfg.podman);
        assert_eq!(adopted.len(), 1, "only the unfinished one");
        assert_eq!(adopted[m.as_str()].state, MigState::Restored { pid });
        reconcile::remove_leftovers(d.path(), &adopted);
        assert!(!d.path().join("m-00000000000000ff").exists() && !d.path().join("cpucheck-1-2").exists());
        assert!(d.path().join("criu-plugins").exists());

        let table: Table = Arc::new(Registry { map: Mutex::new(adopted), journal: Some(j.clone()) });
        assert!(matches!(session::status(&table, &done), Reply::State(MigState::Committed)));
        assert!(matches!(session::status(&table, &m), Reply::State(MigState::Restored { .. })));
        assert!(matches!(finish::abort(&table, &done), Reply::Failed(e) if e.contains("committed")));
        std::thread::sleep(cfg.orphan_after + Duration::from_millis(50));
        assert_eq!(finish::reap(&table, cfg.orphan_after), [m.as_str()]);
        let st = copy.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9), "the uncommitted copy runs on");
        assert_eq!(j.with(|j| j.last_phase(&m)).unwrap().unwrap(), (Phase::Rollback, JOutcome::Done));
        assert!(j.with(|j| j.migrations_not_final()).unwrap().is_empty());
    }
}
