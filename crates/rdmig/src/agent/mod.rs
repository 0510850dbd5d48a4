//! `rdmig agent`: the per-node daemon that receives migrations.
//!
//! It binds only where it is told, talks only to holders of the cluster secret (see `wire`),
//! validates every message (see `msg`), keeps each migration's images in its own directory under
//! the work directory, restores with CRIU when asked, and removes images once the source commits.

pub mod numbers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use crate::criu;
use crate::transport::rdma::RdmaReceiver;
use crate::transport::DataSum;
use rdmig_proto::msg::{HostFacts, MigState, MigrationId, Reply, Request};
use rdmig_proto::wire::{Channel, Secret};
use rdmig_proto::{msg, wire};

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

pub async fn host_facts(work_dir: &Path, pid: Option<i32>) -> HostFacts {
    HostFacts {
        hostname: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
        rdmig_version: env!("CARGO_PKG_VERSION").to_string(),
        criu_version: criu::version().await.ok(),
        kernel: nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default(),
        mem_available: mem_available(),
        disk_available: disk_available(work_dir),
        pid_free: pid.map(|p| !Path::new(&format!("/proc/{p}")).exists()),
        rxe: rxe_flavour(),
    }
}

struct Migration {
    dir: PathBuf,
    state: MigState,
    /// An address added here for the restored process (removed again on abort).
    moved_addr: Option<rdmig_proto::msg::MovedAddr>,
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
    let peer = sock.peer_addr().map(|a| a.to_string()).unwrap_or_default();
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
        let reply = handle(req, &mut ch, &mut rdma, cfg, table).await?;
        ch.send_msg(&reply).await?;
    }
}

fn dir_of(table: &Table, id: &MigrationId) -> Result<PathBuf, String> {
    let t = table.lock().expect("table lock");
    match t.get(id.as_str()) {
        Some(m) if m.state == MigState::Receiving => Ok(m.dir.clone()),
        Some(m) => Err(format!("migration {id} is {:?}, not receiving", m.state)),
        None => Err(format!("no migration {id} here (agent restarted?)")),
    }
}

/// Reads `len` bytes of a file or probe from where they travel, feeding `sink` (which may fail:
/// the data is consumed anyway, so the stream stays in step), then the end-to-end check
/// (`DataSum`). Returns whether it matched.
async fn receive_data(
    ch: &mut Channel<TcpStream>,
    rdma: &mut Option<RdmaReceiver>,
    via_rdma: bool,
    len: u64,
    mut sink: impl FnMut(&[u8]) -> Result<(), String>,
) -> Result<Result<(), String>, msg::MsgError> {
    let mut sum = DataSum::for_receiving(ch, via_rdma);
    let mut got = 0u64;
    let mut sink_err: Option<String> = None;
    while got < len {
        let owned;
        let (chunk, tag) = if via_rdma {
            let r = rdma.as_mut().ok_or_else(|| msg::MsgError::Decode("data over RDMA, but no RDMA path was set up".into()))?;
            owned = match tokio::time::timeout(Duration::from_secs(30), r.recv()).await {
                Ok(Some(Ok(c))) => c,
                Ok(Some(Err(e))) => return Err(msg::MsgError::Decode(e.to_string())),
                Ok(None) | Err(_) => return Err(msg::MsgError::Decode("RDMA data path stalled or closed".into())),
            };
            (&owned[..], None)
        } else {
            let (c, t) = ch.recv_frame().await?;
            (c, Some(t))
        };
        got += chunk.len() as u64;
        if got > len {
            return Err(msg::MsgError::Decode(format!("{} bytes announced, more sent", len)));
        }
        sum.update(chunk, tag.as_ref());
        if sink_err.is_none() {
            if let Err(e) = sink(chunk) {
                sink_err = Some(e);
            }
        }
    }
    let trailer = ch.recv_raw().await?;
    Ok(match sink_err {
        Some(e) => Err(e),
        None if sum.finish() != trailer => Err("checksum mismatch".into()),
        None => Ok(()),
    })
}

/// What scp delivered into `dir` is exactly `files`: each one a regular file of its length, and
/// nothing else but CRIU's `parent` link (sent over the channel).
fn check_scp_delivery(dir: &Path, files: &[msg::ScpFile]) -> Result<(), String> {
    let mut want: std::collections::HashMap<&str, u64> = files.iter().map(|f| (f.name.as_str(), f.len)).collect();
    for e in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let e = e.map_err(|e| e.to_string())?;
        let name = e.file_name().to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(e.path()).map_err(|err| format!("{name}: {err}"))?;
        if meta.file_type().is_symlink() && name == "parent" {
            continue;
        }
        match want.remove(name.as_str()) {
            Some(len) if meta.file_type().is_file() && meta.len() == len => {}
            Some(len) => return Err(format!("{name}: {} bytes arrived, {len} were sent", meta.len())),
            None => return Err(format!("{name}: not part of the image")),
        }
    }
    match want.keys().next() {
        Some(missing) => Err(format!("{missing}: did not arrive")),
        None => Ok(()),
    }
}

async fn handle(req: Request, ch: &mut Channel<TcpStream>, rdma: &mut Option<RdmaReceiver>, cfg: &AgentConfig, table: &Table) -> Result<Reply, msg::MsgError> {
    Ok(match req {
        Request::Facts { pid } => Reply::Facts(host_facts(&cfg.work_dir, pid).await),
        Request::Time => {
            let t1 = now_ns();
            Reply::Time { t1_ns: t1, t2_ns: now_ns() }
        }
        Request::CpuCheck { image } => {
            // One directory per request: two sources may check at the same time.
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = cfg.work_dir.join(format!("cpucheck-{}-{n}", std::process::id()));
            let r = async {
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                std::fs::write(dir.join("cpuinfo.img"), &image).map_err(|e| e.to_string())?;
                criu::cpuinfo_check(&dir).await.map_err(|e| e.to_string())
            }
            .await;
            let _ = std::fs::remove_dir_all(&dir);
            match r {
                Ok(()) => Reply::Ack,
                Err(e) => Reply::Failed(format!("CPU not compatible with the source: {e}")),
            }
        }
        Request::Begin { id } => {
            let dir = cfg.work_dir.join(id.as_str());
            let mut t = table.lock().expect("table lock");
            if t.contains_key(id.as_str()) || dir.exists() {
                Reply::Failed(format!("migration {id} already exists here"))
            } else if let Err(e) = std::fs::create_dir(&dir) {
                Reply::Failed(format!("cannot create {}: {e}", dir.display()))
            } else {
                info!(%id, "migration begins");
                t.insert(id.as_str().to_string(), Migration { dir, state: MigState::Receiving, moved_addr: None });
                Reply::Ack
            }
        }
        Request::PutFile { id, rel, len, via_rdma } => {
            let target = dir_of(table, &id).map(|d| d.join(rel.as_str()));
            let mut file = match &target {
                Ok(p) => {
                    if let Some(parent) = p.parent() {
                        let _ = std::fs::create_dir_all(parent);
                    }
                    std::fs::OpenOptions::new().write(true).create_new(true).open(p).map_err(|e| format!("{}: {e}", p.display()))
                }
                Err(e) => Err(e.clone()),
            };
            let r = receive_data(ch, rdma, via_rdma, len, |chunk| {
                use std::io::Write;
                match &mut file {
                    Ok(f) => f.write_all(chunk).map_err(|e| e.to_string()),
                    Err(e) => Err(e.clone()),
                }
            })
            .await?;
            match r {
                Ok(()) => Reply::Ack,
                Err(e) => {
                    if let (Ok(p), Ok(_)) = (&target, &file) {
                        let _ = std::fs::remove_file(p);
                    }
                    Reply::Failed(format!("{}: {e}", rel.as_str()))
                }
            }
        }
        Request::Probe { len, via_rdma } => match receive_data(ch, rdma, via_rdma, len, |_| Ok(())).await? {
            Ok(()) => Reply::Ack,
            Err(e) => Reply::Failed(e),
        },
        Request::RdmaSetup { eps } => {
            let Some(addr) = cfg.rdma_addr else {
                return Ok(Reply::Failed("this agent has no RDMA address (--rdma-addr): TCP only".into()));
            };
            let gid = match rdmig_rxe::gid_index(&cfg.rdma_device, addr) {
                Ok(g) => g,
                Err(e) => return Ok(Reply::Failed(e.to_string())),
            };
            *rdma = None;
            match RdmaReceiver::start(&cfg.rdma_device, gid, &eps).await {
                Ok(r) => {
                    let info = r.info.clone();
                    *rdma = Some(r);
                    Reply::RdmaReady(info)
                }
                Err(e) => Reply::Failed(e.to_string()),
            }
        }
        Request::PutSymlink { id, rel, target } => match dir_of(table, &id) {
            Ok(d) => {
                let p = d.join(rel.as_str());
                if let Some(parent) = p.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                match std::os::unix::fs::symlink(&target, &p) {
                    Ok(()) => Reply::Ack,
                    // The page server made it already (a streamed pre-copy round).
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && std::fs::read_link(&p).is_ok_and(|t| t == Path::new(&target)) => Reply::Ack,
                    Err(e) => Reply::Failed(format!("{}: {e}", p.display())),
                }
            }
            Err(e) => Reply::Failed(e),
        },
        Request::PageStream { id, rel, parent, via_rdma } => {
            let d = match dir_of(table, &id) {
                Ok(d) => d.join(rel.as_str()),
                Err(e) => return Ok(Reply::Failed(e)),
            };
            if via_rdma && rdma.is_none() {
                return Ok(Reply::Failed("page stream over RDMA, but no RDMA path was set up".into()));
            }
            if let Err(e) = std::fs::create_dir_all(&d) {
                return Ok(Reply::Failed(format!("{}: {e}", d.display())));
            }
            let (ours, theirs) = match std::os::unix::net::UnixStream::pair().and_then(|(a, b)| a.set_nonblocking(true).map(|_| (a, b))) {
                Ok(p) => p,
                Err(e) => return Ok(Reply::Failed(format!("socket pair: {e}"))),
            };
            for end in [&ours, &theirs] {
                crate::transport::pagestream::enlarge_buffers(std::os::fd::AsRawFd::as_raw_fd(end));
            }
            let parent_arg = parent.as_ref().map(|p| format!("../{}", p.as_str()));
            let mut server = match criu::page_server(&d, parent_arg.as_deref(), theirs.into()) {
                Ok(c) => c,
                Err(e) => return Ok(Reply::Failed(e.to_string())),
            };
            let ours = match tokio::net::UnixStream::from_std(ours) {
                Ok(s) => s,
                Err(e) => return Ok(Reply::Failed(format!("socket pair: {e}"))),
            };
            ch.send_msg(&Reply::Ack).await?;
            info!(%id, dir = rel.as_str(), via_rdma, "page stream begins");
            let relayed = crate::transport::pagestream::destination(ours, ch, if via_rdma { rdma.as_mut() } else { None }, || {
                let _ = server.start_kill();
            })
            .await;
            let served = criu::page_server_wait(&d, server, Duration::from_secs(60)).await;
            match (relayed, served) {
                (Ok(n), Ok(())) => {
                    let page_bytes = criu::page_bytes(&d);
                    info!(%id, dir = rel.as_str(), stream_bytes = n, page_bytes, "page stream complete");
                    Reply::Streamed { page_bytes }
                }
                (Err(e), _) => Reply::Failed(format!("page stream into {}: {e}", rel.as_str())),
                (Ok(_), Err(e)) => Reply::Failed(format!("page stream into {}: {e}", rel.as_str())),
            }
        }
        Request::ScpDir { id, rel } => match dir_of(table, &id) {
            Ok(d) => {
                let p = d.join(rel.as_str());
                match std::fs::create_dir_all(&p).and_then(|_| p.canonicalize()) {
                    Ok(abs) => Reply::Dir(abs.to_string_lossy().into_owned()),
                    Err(e) => Reply::Failed(format!("{}: {e}", p.display())),
                }
            }
            Err(e) => Reply::Failed(e),
        },
        Request::ScpDone { id, rel, files } => match dir_of(table, &id) {
            Ok(d) => match check_scp_delivery(&d.join(rel.as_str()), &files) {
                Ok(()) => Reply::Ack,
                Err(e) => Reply::Failed(format!("{}: {e}", rel.as_str())),
            },
            Err(e) => Reply::Failed(e),
        },
        Request::Restore { id, dir, opts } => match dir_of(table, &id) {
            Ok(d) => {
                let start = now_ns();
                info!(%id, verbs = opts.verbs, tcp = opts.tcp_established, "restoring");
                let mut copts = criu::Options { plugins: None, tcp_established: opts.tcp_established };
                if opts.verbs {
                    match criu::plugin_dir(&cfg.work_dir) {
                        Ok(p) => copts.plugins = Some(p),
                        Err(e) => return Ok(Reply::Failed(format!("rdmig's CRIU plugin: {e}"))),
                    }
                }
                if let Some(m) = &opts.move_addr {
                    if let Err(e) = crate::netaddr::add(m) {
                        return Ok(Reply::Failed(format!("moving {}/{} to {} here: {e}", m.addr, m.prefix, m.dev)));
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
            Err(e) => Reply::Failed(e),
        },
        Request::CheckNumbers { ibdev, qpns, mrs } => match rdmig_rxe::status::read() {
            Ok(recs) => {
                let taken: Vec<String> = recs
                    .iter()
                    .filter(|r| r.fields.get("dev") == Some(&ibdev))
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
        },
        Request::Commit { id } => {
            let mut t = table.lock().expect("table lock");
            match t.get_mut(id.as_str()) {
                Some(m) if matches!(m.state, MigState::Restored { .. }) => {
                    m.state = MigState::Committed;
                    if !cfg.keep_images {
                        let _ = std::fs::remove_dir_all(&m.dir);
                    }
                    info!(%id, "committed");
                    Reply::Ack
                }
                Some(m) => Reply::Failed(format!("migration {id} is {:?}; only a restored one can be committed", m.state)),
                None => Reply::Failed(format!("no migration {id} here")),
            }
        }
        Request::Abort { id } => {
            let mut t = table.lock().expect("table lock");
            match t.get_mut(id.as_str()) {
                Some(m) if m.state == MigState::Committed => Reply::Failed(format!("migration {id} is committed: the process lives here now")),
                Some(m) => {
                    // A restored copy that the source disowns must not keep running: the source
                    // resumes its own.
                    if let MigState::Restored { pid } = m.state {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                    }
                    if let Some(a) = m.moved_addr.take() {
                        let _ = crate::netaddr::del(&a);
                    }
                    m.state = MigState::Aborted;
                    let _ = std::fs::remove_dir_all(&m.dir);
                    info!(%id, "aborted");
                    Reply::Ack
                }
                None => Reply::Ack,
            }
        }
        Request::Status { id } => Reply::State(table.lock().expect("table lock").get(id.as_str()).map(|m| m.state).unwrap_or(MigState::Unknown)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scp_delivery_must_match_the_list_exactly() {
        let d = std::env::temp_dir().join(format!("rdmig-scp-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("pages-1.img"), vec![0u8; 8192]).unwrap();
        std::fs::write(d.join("core-7.img"), b"core").unwrap();
        std::os::unix::fs::symlink("../pre-1", d.join("parent")).unwrap();
        let f = |name: &str, len| msg::ScpFile { name: name.into(), len };
        assert!(check_scp_delivery(&d, &[f("pages-1.img", 8192), f("core-7.img", 4)]).is_ok());
        // Short, missing, unexpected.
        assert!(check_scp_delivery(&d, &[f("pages-1.img", 8193), f("core-7.img", 4)]).unwrap_err().contains("8192 bytes arrived"));
        assert!(check_scp_delivery(&d, &[f("pages-1.img", 8192), f("core-7.img", 4), f("mm-7.img", 1)]).unwrap_err().contains("did not arrive"));
        assert!(check_scp_delivery(&d, &[f("pages-1.img", 8192)]).unwrap_err().contains("not part of the image"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
