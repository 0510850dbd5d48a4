//! `rdmig migrate`: the source side of a migration.
//!
//! Order of business, and what happens to the process at each step:
//!
//! | step | process | on failure |
//! |------|---------|------------|
//! | checks (here and at the destination), clock sync, pre hook | runs | refuse: nothing was touched |
//! | pre-copy rounds (CRIU pre-dump, images streamed) | runs | abort at the destination; the process never stopped |
//! | freeze + final dump (`--leave-stopped`) | stopped | CRIU resumes it; abort at the destination |
//! | transfer, restore at the destination | stopped here | SIGCONT here, abort there: it runs here again |
//! | destination confirms | runs there | - |
//! | kill the stopped source copy, commit | runs there | (commit failures only leave images behind) |
//!
//! If the connection breaks after the restore was asked for, the source asks the destination what
//! happened; when nobody can tell, the source copy stays stopped ("in doubt") rather than risk two
//! running copies.

mod transfer;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::net::TcpStream;
use tracing::{info, warn};

use crate::agent::{host_facts, now_ns};
use crate::criu::{self, DumpSpec};
use crate::timeline::{attrs, estimate_offset, ClockSample, Edge, Event, Phase, Recorder, Summary, Timeline};
use crate::transport::rdma::RdmaSender;
use crate::transport::{mb_s, TransportChoice, TransportReport, Used};
use rdmig_proto::msg::{HostFacts, MigState, MigrationId, MovedAddr, MsgError, RelPath, Reply, Request, RestoreOpts};
use rdmig_proto::wire::{Channel, Secret, WireError};

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
    pub pid: i32,
    pub to: SocketAddr,
    pub secret: Secret,
    pub strategy: Strategy,
    pub max_rounds: u32,
    /// Stop pre-copy once a round carries no more than this.
    pub converge_bytes: u64,
    pub work_dir: PathBuf,
    pub hooks: Hooks,
    pub dump_timeout: Duration,
    pub allow_kernel_mismatch: bool,
    pub transport: TransportChoice,
    /// Local address whose RoCE v2 GID on `rdma_device` carries RDMA data.
    pub rdma_addr: Option<std::net::Ipv4Addr>,
    pub rdma_device: String,
    /// RDMA lanes (RC QPs) of the data path, 1 to `transport::rdma::MAX_LANES`.
    pub rdma_qps: usize,
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
}

#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub round: u32,
    pub bytes: u64,
    pub pages: u64,
    pub dump_ms: f64,
    pub send_ms: f64,
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
    pub pid: i32,
    pub strategy: Strategy,
    pub source: Option<HostFacts>,
    pub destination: Option<HostFacts>,
    pub rounds: Vec<Round>,
    pub stop_reason: Option<String>,
    pub final_bytes: u64,
    pub bytes_total: u64,
    pub transport: Option<TransportReport>,
    /// The pages went through CRIU's page stream while it dumped (else as image files after).
    pub pages_streamed: bool,
    pub outcome: Outcome,
    pub timeline: crate::timeline::Timeline,
    pub summary: Option<crate::timeline::Summary>,
}

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
    scp: Option<transfer::Scp>,
    transport: Option<TransportReport>,
    /// The destination's events, on its clock: (phase, edge, t_ns).
    remote_events: Vec<(Phase, Edge, u64)>,
    /// CRIU options of this migration (plugin for verbs state, TCP connections).
    copts: criu::Options,
    /// The address that moves with the process, once known.
    moved: Option<rdmig_proto::msg::MovedAddr>,
}

fn rss_bytes(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

async fn connect(o: &MigrateOptions) -> Result<Channel<TcpStream>, String> {
    let sock = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(o.to))
        .await
        .map_err(|_| format!("cannot reach the destination agent at {}: timed out", o.to))?
        .map_err(|e| format!("cannot reach the destination agent at {}: {e}", o.to))?;
    sock.set_nodelay(true).ok();
    Channel::client(sock, &o.secret).await.map_err(|e| format!("destination agent at {}: {e}", o.to))
}

async fn call(ch: &mut Channel<TcpStream>, req: &Request) -> Result<Reply, MsgError> {
    ch.send_msg(req).await?;
    ch.recv_msg().await
}

fn expect_ack(r: Reply, what: &str) -> Result<(), Step> {
    match r {
        Reply::Ack => Ok(()),
        Reply::Failed(e) => Err(Step::Fail(format!("{what}: {e}"))),
        other => Err(Step::Fail(format!("{what}: unexpected reply {other:?}"))),
    }
}

fn run_hook(cmd: &Option<String>, env: &[(&str, String)]) -> Result<(), String> {
    let Some(c) = cmd else { return Ok(()) };
    let st =
        std::process::Command::new("sh").arg("-c").arg(c).envs(env.iter().map(|(k, v)| (*k, v.as_str()))).status().map_err(|e| format!("hook {c:?}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("hook {c:?} failed ({st})"))
    }
}

impl<'a> Run<'a> {
    fn new(o: &'a MigrateOptions, id: MigrationId, dir: PathBuf, node: &str) -> Self {
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
            remote_events: vec![],
            copts: criu::Options::default(),
            moved: None,
        }
    }
}

impl Run<'_> {
    /// The process runs at the source again after a freeze: its stop ends here.
    fn resumed_here(&mut self) {
        self.rec.instant(Phase::Rollback, attrs::<&str, u64>([]));
        self.close_open_spans();
        self.rec.end(Phase::Freeze);
        self.rec.start(Phase::Resume);
        self.rec.end(Phase::Resume);
    }

    /// Ends any span still open (a failure can leave the one it happened in open).
    fn close_open_spans(&mut self) {
        let mut open: Vec<Phase> = vec![];
        for e in self.rec.events() {
            match e.edge {
                Edge::Start => open.push(e.phase),
                Edge::End => open.retain(|p| *p != e.phase),
                Edge::Instant => {}
            }
        }
        for p in open.into_iter().rev() {
            if p != Phase::Freeze {
                self.rec.end(p);
            }
        }
    }

    fn say(&self, msg: &str) {
        info!("{msg}");
        if self.o.progress {
            eprintln!("rdmig: {msg}");
        }
    }

    fn hook_env(&self, phase: &str, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
        let mut v = vec![
            ("RDMIG_ID", self.id.to_string()),
            ("RDMIG_PID", self.o.pid.to_string()),
            ("RDMIG_DESTINATION", self.o.to.to_string()),
            ("RDMIG_SOURCE", self.src.as_ref().map(|s| s.hostname.clone()).unwrap_or_default()),
            ("RDMIG_STRATEGY", format!("{:?}", self.o.strategy).to_lowercase()),
            ("RDMIG_PHASE", phase.to_string()),
        ];
        v.extend_from_slice(extra);
        v
    }

    /// Everything that can refuse, before anything is touched.
    async fn checks(&mut self, ch: &mut Channel<TcpStream>) -> Result<(), Step> {
        let o = self.o;
        self.rec.start(Phase::Check);
        if o.pid <= 1 || !Path::new(&format!("/proc/{}", o.pid)).exists() {
            return Err(Step::Refuse(format!("no process {} here", o.pid)));
        }
        if o.pid as u32 == std::process::id() {
            return Err(Step::Refuse("rdmig cannot migrate itself".into()));
        }
        let t = Instant::now();
        let src = host_facts(&o.work_dir, None).await;
        tracing::debug!(ms = t.elapsed().as_millis() as u64, "local facts");
        let Some(src_criu) = src.criu_version.clone() else {
            return Err(Step::Refuse("CRIU is not installed here (apt-get install criu)".into()));
        };
        let t = Instant::now();
        let dst = match call(ch, &Request::Facts { pid: Some(o.pid) }).await {
            Ok(Reply::Facts(f)) => f,
            Ok(other) => return Err(Step::Refuse(format!("destination answered {other:?} to a facts request"))),
            // An agent drops a peer whose first message fails authentication, without a word
            // (it cannot authenticate an answer to someone who lacks the secret).
            Err(MsgError::Wire(WireError::Closed | WireError::Io(_))) => {
                return Err(Step::Refuse(format!(
                    "the destination agent at {} hung up on the first request: the cluster secrets most likely differ (its log says why)",
                    o.to
                )))
            }
            Err(e) => return Err(e.into()),
        };
        tracing::debug!(ms = t.elapsed().as_millis() as u64, "destination facts");
        self.src = Some(src.clone());
        self.dst = Some(dst.clone());
        let Some(dst_criu) = dst.criu_version.clone() else {
            return Err(Step::Refuse(format!("the destination {} has no CRIU (apt-get install criu there)", dst.hostname)));
        };
        if src_criu != dst_criu {
            return Err(Step::Refuse(format!("CRIU versions differ: {src_criu} here, {dst_criu} at {}", dst.hostname)));
        }
        if src.rdmig_version != dst.rdmig_version {
            return Err(Step::Refuse(format!("rdmig versions differ: {} here, {} at {}", src.rdmig_version, dst.rdmig_version, dst.hostname)));
        }
        if src.kernel != dst.kernel && !o.allow_kernel_mismatch {
            return Err(Step::Refuse(format!(
                "kernels differ: {} here, {} at {} (--allow-kernel-mismatch to try anyway)",
                src.kernel, dst.kernel, dst.hostname
            )));
        }
        if dst.pid_free != Some(true) {
            return Err(Step::Refuse(format!("pid {} is in use at {}; CRIU restores a process with its own pid", o.pid, dst.hostname)));
        }
        let rss = rss_bytes(o.pid).unwrap_or(0);
        // Images and the restored process both need room there; pre-copy rounds may resend pages.
        let need_mem = rss + (64 << 20);
        if dst.mem_available < need_mem {
            return Err(Step::Refuse(format!(
                "{} has {} of memory available, the process needs about {}",
                dst.hostname,
                mib(dst.mem_available),
                mib(need_mem)
            )));
        }
        let need_disk = rss * 2 + (16 << 20);
        if dst.disk_available < need_disk || src.disk_available < need_disk {
            return Err(Step::Refuse(format!(
                "image space: {} free here, {} at {}, about {} needed on each",
                mib(src.disk_available),
                mib(dst.disk_available),
                dst.hostname,
                mib(need_disk)
            )));
        }
        // Verbs state: the process's QP numbers and MR keys must be free at the destination.
        if criu::has_verbs(o.pid) {
            let recs = rdmig_rxe::status::read().map_err(|e| Step::Refuse(format!("the process holds verbs state, but {e}")))?;
            let mine = |kind: &str, key: &str| -> Vec<(String, u32)> {
                recs.iter()
                    .filter(|r| r.kind == kind && r.fields.get("pid").is_some_and(|p| *p == o.pid.to_string()))
                    .filter_map(|r| Some((r.fields.get("dev")?.clone(), r.fields.get(key)?.parse().ok()?)))
                    .collect()
            };
            let (qps, mrs) = (mine("qp", "qpn"), mine("mr", "index"));
            let mut devs: Vec<String> = qps.iter().chain(&mrs).map(|x| x.0.clone()).collect();
            devs.dedup();
            for dev in devs {
                let pick = |v: &[(String, u32)]| v.iter().filter(|x| x.0 == dev).map(|x| x.1).collect::<Vec<u32>>();
                let req = Request::CheckNumbers { ibdev: dev.clone(), qpns: pick(&qps), mrs: pick(&mrs) };
                match call(ch, &req).await? {
                    Reply::Ack => {}
                    Reply::Failed(e) => return Err(Step::Refuse(format!("the process's verbs numbers at {}: {e}", dst.hostname))),
                    other => return Err(Step::Refuse(format!("destination answered {other:?} to a numbers check"))),
                }
            }
        }
        // CPU features: CRIU's own comparison, run at the destination on our cpuinfo image.
        let cpu_dir = self.dir.join("cpuinfo");
        std::fs::create_dir_all(&cpu_dir).map_err(|e| Step::Refuse(format!("{}: {e}", cpu_dir.display())))?;
        let t = Instant::now();
        let image = criu::cpuinfo_dump(&cpu_dir).await.map_err(|e| Step::Refuse(e.to_string()))?;
        if let Reply::Failed(e) = call(ch, &Request::CpuCheck { image }).await? {
            return Err(Step::Refuse(e));
        }
        tracing::debug!(ms = t.elapsed().as_millis() as u64, "cpu check");
        // Clock offset: a few round trips, the best one wins (see timeline).
        for _ in 0..8 {
            let t0 = now_ns();
            let r = call(ch, &Request::Time).await?;
            let t3 = now_ns();
            if let Reply::Time { t1_ns, t2_ns } = r {
                self.clock.push(ClockSample { t0, t1: t1_ns, t2: t2_ns, t3 });
            }
        }
        run_hook(&o.hooks.pre, &self.hook_env("pre", &[])).map_err(Step::Refuse)?;
        self.rec.end_with(Phase::Check, attrs([("rss_bytes", rss)]));
        self.say(&format!("checks passed: {} -> {} (CRIU {src_criu}, process RSS {})", src.hostname, dst.hostname, mib(rss)));
        Ok(())
    }

    /// Opens the RDMA data path to the destination.
    async fn open_rdma(&self, ch: &mut Channel<TcpStream>) -> Result<RdmaSender, String> {
        let o = self.o;
        let addr = o.rdma_addr.ok_or("no local RDMA address (--rdma-addr)")?;
        let gid = rdmig_rxe::gid_index(&o.rdma_device, addr).map_err(|e| e.to_string())?;
        let mut s = RdmaSender::open(&o.rdma_device, gid, o.rdma_qps).await.map_err(|e| e.to_string())?;
        match call(ch, &Request::RdmaSetup { eps: s.eps.clone() }).await.map_err(|e| e.to_string())? {
            Reply::RdmaReady(info) => s.connect(info).map_err(|e| e.to_string())?,
            Reply::Failed(e) => return Err(format!("the destination cannot: {e}")),
            other => return Err(format!("unexpected reply {other:?}")),
        }
        Ok(s)
    }

    /// Chooses the transport: as asked, or for `auto` the faster of the two over a short probe.
    async fn choose_transport(&mut self, ch: &mut Channel<TcpStream>) -> Result<(), Step> {
        const PROBE: u64 = 16 << 20;
        let report = match self.o.transport {
            TransportChoice::Tcp => TransportReport { used: Used::Tcp, reason: "asked for".into(), tcp_mb_s: None, rdma_mb_s: None, rdma_qps: None },
            TransportChoice::Scp => {
                let host = self.o.ssh_host.clone().unwrap_or_else(|| self.o.to.ip().to_string());
                let scp = transfer::Scp::new(&host, self.o.ssh_config.clone()).map_err(Step::Refuse)?;
                // Refuse now, while the process runs, rather than after freezing it.
                scp.check().await.map_err(Step::Refuse)?;
                self.scp = Some(scp);
                TransportReport {
                    used: Used::Scp,
                    reason: format!("asked for: image files copied with scp to {host} (the MigrOS artifact's procedure)"),
                    tcp_mb_s: None,
                    rdma_mb_s: None,
                    rdma_qps: None,
                }
            }
            TransportChoice::Rdma => {
                let s = self.open_rdma(ch).await.map_err(|e| Step::Refuse(format!("RDMA transport: {e}")))?;
                self.rdma = Some(s);
                TransportReport { used: Used::Rdma, reason: "asked for".into(), tcp_mb_s: None, rdma_mb_s: None, rdma_qps: None }
            }
            TransportChoice::Auto => {
                let tcp = mb_s(PROBE, transfer::probe(ch, None, PROBE).await?);
                match self.open_rdma(ch).await {
                    Err(e) => {
                        TransportReport { used: Used::Tcp, reason: format!("RDMA unavailable: {e}"), tcp_mb_s: Some(tcp), rdma_mb_s: None, rdma_qps: None }
                    }
                    Ok(s) => {
                        let rdma = match transfer::probe(ch, Some(&s), PROBE).await {
                            Ok(secs) => Some(mb_s(PROBE, secs)),
                            Err(e) => {
                                warn!("RDMA probe failed: {e}");
                                None
                            }
                        };
                        match rdma {
                            Some(r) if r >= tcp => {
                                self.rdma = Some(s);
                                TransportReport {
                                    used: Used::Rdma,
                                    reason: format!("faster in a {} probe ({r:.1} vs {tcp:.1} MB/s)", mib(PROBE)),
                                    tcp_mb_s: Some(tcp),
                                    rdma_mb_s: rdma,
                                    rdma_qps: None,
                                }
                            }
                            Some(r) => TransportReport {
                                used: Used::Tcp,
                                reason: format!("faster in a {} probe ({tcp:.1} vs {r:.1} MB/s)", mib(PROBE)),
                                tcp_mb_s: Some(tcp),
                                rdma_mb_s: rdma,
                                rdma_qps: None,
                            },
                            None => TransportReport {
                                used: Used::Tcp,
                                reason: "the RDMA probe failed".into(),
                                tcp_mb_s: Some(tcp),
                                rdma_mb_s: None,
                                rdma_qps: None,
                            },
                        }
                    }
                }
            }
        };
        let mut report = report;
        report.rdma_qps = self.rdma.as_ref().map(|s| s.lanes());
        match report.rdma_qps {
            Some(n) => self.say(&format!("transport: {:?} over {n} QP(s) ({})", report.used, report.reason)),
            None => self.say(&format!("transport: {:?} ({})", report.used, report.reason)),
        }
        self.transport = Some(report);
        Ok(())
    }

    async fn send_dir(&mut self, ch: &mut Channel<TcpStream>, name: &str) -> Result<u64, Step> {
        let sent = match &self.scp {
            Some(scp) => scp.send_dir(ch, &self.id, &self.dir, name).await?,
            None => transfer::send_dir(ch, self.rdma.as_ref(), &self.id, &self.dir, name).await?,
        };
        self.bytes_total += sent;
        Ok(sent)
    }

    /// Pages go through CRIU's page stream to the destination's page server while CRIU dumps,
    /// rather than into local images sent afterwards (the scp baseline copies files).
    fn streams_pages(&self) -> bool {
        self.o.page_stream && self.scp.is_none()
    }

    /// One dump step (`final_dump` or a pre-dump) with its pages streamed into the destination's
    /// `name` directory; returns the bytes of page images written there.
    async fn dump_streamed(&mut self, ch: &mut Channel<TcpStream>, name: &str, parent: Option<&str>, spec: &DumpSpec, final_dump: bool) -> Result<u64, Step> {
        let rel = RelPath::new(name).map_err(|e| Step::Fail(format!("image directory {name:?}: {e}")))?;
        let parent = parent.map(RelPath::new).transpose().map_err(|e| Step::Fail(format!("parent directory: {e}")))?;
        let via_rdma = self.rdma.is_some();
        ch.send_msg(&Request::PageStream { id: self.id.clone(), rel, parent, via_rdma }).await?;
        expect_ack(ch.recv_msg().await?, "page stream")?;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(|e| Step::Fail(format!("socket pair: {e}")))?;
        for end in [&ours, &theirs] {
            crate::transport::pagestream::enlarge_buffers(std::os::fd::AsRawFd::as_raw_fd(end));
        }
        let ours = ours.set_nonblocking(true).and_then(|_| tokio::net::UnixStream::from_std(ours)).map_err(|e| Step::Fail(format!("socket pair: {e}")))?;
        let dump = async {
            if final_dump {
                criu::dump_leave_stopped_streamed(spec, theirs.into()).await
            } else {
                criu::pre_dump_streamed(spec, theirs.into()).await
            }
        };
        let relay = crate::transport::pagestream::source(ours, ch, self.rdma.as_ref());
        let (dumped, relayed) = tokio::join!(dump, relay);
        // The destination always answers once its page server is done (the channel stays in step).
        let reply = ch.recv_msg::<Reply>().await;
        // A broken stream is the cause when both failed (CRIU then only saw its socket close).
        let sent = match (relayed, dumped) {
            (Err(e), Err(c)) => return Err(Step::Fail(format!("page stream: {e} (and so: {c})"))),
            (Err(e), Ok(())) => return Err(Step::Fail(format!("page stream: {e}"))),
            (Ok(_), Err(c)) => return Err(Step::Fail(c.to_string())),
            (Ok(n), Ok(())) => n,
        };
        match reply? {
            Reply::Streamed { page_bytes } => {
                info!(dir = name, stream_bytes = sent, page_bytes, "pages streamed");
                self.bytes_total += page_bytes;
                Ok(page_bytes)
            }
            Reply::Failed(e) => Err(Step::Fail(format!("destination: {e}"))),
            other => Err(Step::Fail(format!("destination: unexpected reply {other:?}"))),
        }
    }

    async fn precopy(&mut self, ch: &mut Channel<TcpStream>) -> Result<Option<String>, Step> {
        let o = self.o;
        // A round that carries no more than the convergence threshold ends pre-copy; when all of
        // the process's memory is that small, a round costs (a pre-dump, and a parent image the
        // final dump and the restore must walk) without saving anything.
        if let Some(anon) = anonymous_bytes(o.pid) {
            if anon <= o.converge_bytes {
                let why = format!("nothing to pre-copy: {} of anonymous memory, within --converge-mib ({})", mib(anon), mib(o.converge_bytes));
                self.say(&why);
                self.stop_reason = Some(why);
                return Ok(None);
            }
        }
        let mut parent: Option<String> = None;
        let mut prev_bytes: Option<u64> = None;
        for round in 1..=o.max_rounds.max(1) {
            let name = format!("pre-{round}");
            let dir = self.dir.join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| Step::Fail(format!("{}: {e}", dir.display())))?;
            let phase = Phase::PrecopyRound(round);
            self.rec.start(phase.clone());
            let t = Instant::now();
            if self.copts.plugins.is_some() {
                // rxe writes into registered memory behind soft-dirty's back: from here on its
                // dirty log records those pages, and the plugin marks them at the final dump.
                clear_rdma_dirty_logs(o.pid);
            }
            let spec = DumpSpec {
                pid: o.pid,
                dir: dir.clone(),
                parent: parent.as_ref().map(|p| format!("../{p}")),
                timeout: o.dump_timeout,
                opts: self.copts.clone(),
            };
            let bytes = if self.streams_pages() {
                self.dump_streamed(ch, &name, parent.as_deref(), &spec, false).await?
            } else {
                criu::pre_dump(&spec).await.map_err(|e| Step::Fail(e.to_string()))?;
                criu::page_bytes(&dir)
            };
            let dump_ms = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            self.send_dir(ch, &name).await?;
            let send_ms = t.elapsed().as_secs_f64() * 1e3;
            let pages = bytes / 4096;
            self.rec.end_with(phase, attrs([("bytes", bytes), ("pages", pages)]));
            self.say(&format!("pre-copy round {round}: {} ({pages} pages) dumped in {:.0} ms, sent in {:.0} ms", mib(bytes), dump_ms, send_ms));
            self.rounds.push(Round { round, bytes, pages, dump_ms, send_ms });
            parent = Some(name);
            // Stop rules: the remaining dirty set is small, or it no longer shrinks (the process
            // dirties memory as fast as we copy it), or enough rounds were spent.
            let reason = if bytes <= o.converge_bytes {
                Some(format!("converged ({} <= {})", mib(bytes), mib(o.converge_bytes)))
            } else if prev_bytes.is_some_and(|p| bytes * 10 >= p * 9) {
                Some("dirty set no longer shrinking".to_string())
            } else if round == o.max_rounds {
                Some(format!("round limit ({})", o.max_rounds))
            } else {
                None
            };
            prev_bytes = Some(bytes);
            if let Some(r) = reason {
                self.stop_reason = Some(r);
                break;
            }
        }
        Ok(parent)
    }
}

/// The process's anonymous memory (resident and swapped), which is what CRIU's page images
/// carry; `None` when /proc does not tell.
fn anonymous_bytes(pid: i32) -> Option<u64> {
    parse_anonymous(&std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

fn parse_anonymous(rollup: &str) -> Option<u64> {
    let mut total = None;
    for line in rollup.lines() {
        let mut f = line.split_whitespace();
        if let (Some("Anonymous:" | "Swap:"), Some(kb), Some("kB")) = (f.next(), f.next(), f.next()) {
            total = Some(total.unwrap_or(0) + kb.parse::<u64>().ok()? * 1024);
        }
    }
    total
}

/// Sends SIGCONT so a process left stopped by `--leave-stopped` runs again. QPs of the process
/// that the CRIU plugin stopped for the dump are resumed first (their peers, paused, continue).
fn resume_source(pid: i32) -> Result<(), String> {
    let qps = resume_stopped_qps(pid);
    kill(Pid::from_raw(pid), Signal::SIGCONT).map_err(|e| format!("SIGCONT {pid}: {e}"))?;
    qps
}

/// Resumes the stopped QPs of process `pid` (none for processes without verbs state).
fn resume_stopped_qps(pid: i32) -> Result<(), String> {
    let Ok(recs) = rdmig_rxe::status::read() else {
        return Ok(());
    };
    let qps: Vec<(String, u32)> = recs
        .iter()
        .filter(|r| r.kind == "qp" && r.fields.get("pid").is_some_and(|p| *p == pid.to_string()))
        .filter_map(|r| Some((r.fields.get("dev")?.clone(), r.fields.get("qpn")?.parse().ok()?)))
        .collect();
    if qps.is_empty() {
        return Ok(());
    }
    let ctl = rdmig_rxe::Ctl::open().map_err(|e| format!("resume the QPs of {pid}: {e}"))?;
    let mut errs = vec![];
    for (dev, qpn) in qps {
        match ctl.qp_query(&dev, qpn) {
            Ok(st) if st.state & rdmig_rxe::QP_S_STOPPED != 0 => match ctl.qp_resume(&dev, qpn, 0) {
                Ok(_) => info!(pid, qpn, "resumed the stopped QP"),
                Err(e) => errs.push(format!("QP {qpn}: {e}")),
            },
            Ok(_) => {}
            Err(e) => errs.push(format!("QP {qpn}: {e}")),
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("resuming the stopped QPs of {pid}: {}", errs.join("; ")))
    }
}

/// Clears the driver's dirty log of every MR of process `pid`.
fn clear_rdma_dirty_logs(pid: i32) {
    let (Ok(recs), Ok(ctl)) = (rdmig_rxe::status::read(), rdmig_rxe::Ctl::open()) else {
        return;
    };
    for r in recs.iter().filter(|r| r.kind == "mr" && r.fields.get("pid").is_some_and(|p| *p == pid.to_string())) {
        if let (Some(dev), Some(idx)) = (r.fields.get("dev"), r.fields.get("index").and_then(|i| i.parse::<u32>().ok())) {
            if let Err(e) = ctl.dirty(dev, idx, true) {
                warn!(pid, mr = idx, "clearing the MR's dirty log: {e}");
            }
        }
    }
}

/// Asks the destination (on a fresh connection) what became of a migration whose restore reply
/// was lost.
async fn ask_state(o: &MigrateOptions, id: &MigrationId) -> Option<MigState> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(mut ch) = connect(o).await {
            if let Ok(Reply::State(s)) = call(&mut ch, &Request::Status { id: id.clone() }).await {
                return Some(s);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

async fn abort_remote(o: &MigrateOptions, id: &MigrationId) {
    if let Ok(mut ch) = connect(o).await {
        if let Err(e) = call(&mut ch, &Request::Abort { id: id.clone() }).await {
            warn!("abort at the destination: {e}");
        }
    }
}

pub async fn migrate(o: &MigrateOptions) -> MigrationReport {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let id = MigrationId::new(&format!("m{secs}-{}", o.pid)).expect("valid id");
    let hostname = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "source".into());
    let mut run = Run::new(o, id.clone(), o.work_dir.join(id.as_str()), &hostname);
    let outcome = run.go().await;
    if let Outcome::Migrated { restored_pid } = &outcome {
        if let Err(e) = run_hook(&o.hooks.post, &run.hook_env("post", &[("RDMIG_RESTORED_PID", restored_pid.to_string())])) {
            warn!("{e}");
        }
    } else {
        let (phase, reason) = match &outcome {
            Outcome::Refused { reason } => ("refused", reason.clone()),
            Outcome::RolledBack { reason } => ("rolled-back", reason.clone()),
            Outcome::InDoubt { reason } => ("in-doubt", reason.clone()),
            Outcome::Migrated { .. } => unreachable!(),
        };
        if let Err(e) = run_hook(&o.hooks.fail, &run.hook_env(phase, &[("RDMIG_ERROR", reason)])) {
            warn!("{e}");
        }
    }
    let _ = std::fs::remove_dir_all(&run.dir);
    run.report(outcome)
}

impl Run<'_> {
    async fn go(&mut self) -> Outcome {
        let o = self.o;
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            return Outcome::Refused { reason: format!("work directory {}: {e}", self.dir.display()) };
        }
        self.copts.tcp_established = o.tcp_established;
        if criu::has_verbs(o.pid) {
            match criu::plugin_dir(&o.work_dir) {
                Ok(p) => {
                    self.say("the process holds verbs state: rdmig's CRIU plugin saves and restores it");
                    self.copts.plugins = Some(p);
                }
                Err(e) => return Outcome::Refused { reason: format!("the process holds verbs state, but rdmig's CRIU plugin is unavailable: {e}") },
            }
        }
        if let Some(a) = o.move_addr {
            match crate::netaddr::find(a) {
                Some((dev, prefix)) => {
                    let m = MovedAddr { addr: a, prefix, dev };
                    if let Err(e) = m.validate() {
                        return Outcome::Refused { reason: format!("--move-addr {a}: {e}") };
                    }
                    self.moved = Some(m);
                }
                None => return Outcome::Refused { reason: format!("--move-addr {a}: no device here has this address") },
            }
        }
        let mut ch = match connect(o).await {
            Ok(c) => c,
            Err(e) => return Outcome::Refused { reason: e },
        };
        if let Err(e) = self.checks(&mut ch).await {
            return Outcome::Refused { reason: e.to_string() };
        }
        if let Err(e) = self.choose_transport(&mut ch).await {
            return Outcome::Refused { reason: e.to_string() };
        }
        if let Err(e) = call(&mut ch, &Request::Begin { id: self.id.clone() }).await.map_err(Step::from).and_then(|r| expect_ack(r, "begin")) {
            return Outcome::Refused { reason: e.to_string() };
        }

        // Pre-copy: the process keeps running; any failure only needs the destination cleaned.
        let parent = match o.strategy {
            Strategy::Precopy => match self.precopy(&mut ch).await {
                Ok(p) => p,
                Err(e) => {
                    abort_remote(o, &self.id).await;
                    return Outcome::RolledBack { reason: format!("pre-copy: {e}") };
                }
            },
            Strategy::StopAndCopy => None,
        };

        // Freeze. From here until the destination confirms, the process is stopped.
        self.rec.start(Phase::Freeze);
        self.rec.start(Phase::FinalDump);
        let final_dir = self.dir.join("final");
        let _ = std::fs::create_dir_all(&final_dir);
        let t = Instant::now();
        let spec = DumpSpec {
            pid: o.pid,
            dir: final_dir.clone(),
            parent: parent.as_ref().map(|p| format!("../{p}")),
            timeout: o.dump_timeout,
            opts: self.copts.clone(),
        };
        let dumped = if self.streams_pages() {
            self.dump_streamed(&mut ch, "final", parent.as_deref(), &spec, true).await.map(Some)
        } else {
            criu::dump_leave_stopped(&spec).await.map(|_| None).map_err(|e| Step::Fail(e.to_string()))
        };
        let streamed = match dumped {
            Ok(b) => b,
            Err(e) => {
                // CRIU resumes the process when a dump fails; make sure of it.
                let _ = resume_source(o.pid);
                self.rec.end(Phase::FinalDump);
                self.resumed_here();
                abort_remote(o, &self.id).await;
                return Outcome::RolledBack { reason: format!("final dump: {e}") };
            }
        };
        let final_bytes = streamed.unwrap_or_else(|| criu::page_bytes(&final_dir));
        self.final_bytes = final_bytes;
        self.rec.end_with(Phase::FinalDump, attrs([("bytes", final_bytes), ("pages", (final_bytes / 4096))]));
        self.say(&format!("frozen; final dump {} in {:.0} ms", mib(final_bytes), t.elapsed().as_secs_f64() * 1e3));

        let rollback = |run: &mut Run, why: String| {
            let mut why = why;
            if let Some(m) = &run.moved {
                if let Err(e) = crate::netaddr::add(m) {
                    why = format!("{why}; and taking {} back failed: {e}", m.addr);
                }
            }
            let why = match resume_source(o.pid) {
                Ok(()) => why,
                Err(e) => format!("{why}; and resuming the source failed: {e}"),
            };
            run.resumed_here();
            Outcome::RolledBack { reason: why }
        };
        // The process is frozen: its address leaves with it.
        if let Some(m) = &self.moved {
            if let Err(e) = crate::netaddr::del(m) {
                let out = rollback(self, format!("removing {} here: {e}", m.addr));
                abort_remote(o, &self.id).await;
                return out;
            }
        }

        self.rec.start(Phase::Transfer);
        let t = Instant::now();
        let sent = match self.send_dir(&mut ch, "final").await {
            Ok(n) => n,
            Err(e) => {
                let out = rollback(self, format!("transfer: {e}"));
                abort_remote(o, &self.id).await;
                return out;
            }
        };
        self.rec.end_with(Phase::Transfer, attrs([("bytes", sent)]));
        self.say(&format!("final images sent in {:.0} ms", t.elapsed().as_secs_f64() * 1e3));

        self.rec.start(Phase::Restore);
        let ropts = RestoreOpts { verbs: self.copts.plugins.is_some(), tcp_established: o.tcp_established, move_addr: self.moved.clone() };
        let restored = call(&mut ch, &Request::Restore { id: self.id.clone(), dir: RelPath::new("final").expect("valid"), opts: ropts }).await;
        let restored_pid = match restored {
            Ok(Reply::Restored { pid, start_ns, end_ns }) => {
                // CRIU (-d) lets the process run at the very end of its restore.
                self.remote_events.push((Phase::Restore, Edge::Start, start_ns));
                self.remote_events.push((Phase::Restore, Edge::End, end_ns));
                self.remote_events.push((Phase::Resume, Edge::Start, end_ns));
                self.remote_events.push((Phase::Resume, Edge::End, end_ns));
                pid
            }
            Ok(Reply::Failed(e)) => {
                let out = rollback(self, format!("restore at the destination: {e}"));
                abort_remote(o, &self.id).await;
                return out;
            }
            Ok(other) => {
                let out = rollback(self, format!("restore: unexpected reply {other:?}"));
                abort_remote(o, &self.id).await;
                return out;
            }
            Err(e) => {
                // Did the restore happen? Only the destination knows.
                warn!("lost the destination during restore: {e}");
                match ask_state(o, &self.id).await {
                    Some(MigState::Restored { pid }) => {
                        self.say("the destination restored the process although its reply was lost");
                        pid
                    }
                    Some(MigState::Receiving) | Some(MigState::Aborted) => {
                        let out = rollback(self, format!("connection lost during restore ({e}); the destination did not restore"));
                        abort_remote(o, &self.id).await;
                        return out;
                    }
                    other => {
                        return Outcome::InDoubt {
                            reason: format!(
                                "connection lost during restore ({e}) and the destination's state is {other:?}; \
                                 process {} left stopped here: check the destination, then `kill -CONT {}` here or kill it",
                                o.pid, o.pid
                            ),
                        };
                    }
                }
            }
        };
        self.rec.end(Phase::Restore);
        // The destination runs it now: the stopped source copy goes, and only then is it committed.
        self.rec.end(Phase::Freeze);
        self.rec.start(Phase::Cleanup);
        if let Err(e) = kill(Pid::from_raw(o.pid), Signal::SIGKILL) {
            warn!("killing the source copy {}: {e}", o.pid);
        }
        match call(&mut ch, &Request::Commit { id: self.id.clone() }).await {
            Ok(Reply::Ack) => {}
            other => warn!("commit at the destination: {other:?} (the process runs there; images may remain)"),
        }
        self.rec.end(Phase::Cleanup);
        self.say(&format!("migrated: pid {restored_pid} runs at {}", self.dst.as_ref().map(|d| d.hostname.as_str()).unwrap_or("?")));
        Outcome::Migrated { restored_pid }
    }
}

impl Run<'_> {
    fn report(mut self, outcome: Outcome) -> MigrationReport {
        self.close_open_spans();
        let local_node = self.rec.node().to_string();
        let local = self.rec.events();
        let remote_node = self.dst.as_ref().map(|d| d.hostname.clone()).filter(|h| !h.is_empty() && *h != local_node);
        let remote: Vec<Event> = self
            .remote_events
            .iter()
            .enumerate()
            .map(|(i, (phase, edge, t))| Event {
                seq: i as u64,
                node: remote_node.clone().unwrap_or_else(|| "destination".into()),
                phase: phase.clone(),
                edge: *edge,
                t_ns: *t,
                attrs: Default::default(),
            })
            .collect();
        let timeline = match (&remote_node, estimate_offset(&self.clock)) {
            (Some(rn), Ok(off)) if !remote.is_empty() => Timeline::merge(&local_node, local.clone(), rn, remote, &off),
            _ => Timeline::single(&local_node, local.clone()),
        }
        .or_else(|_| Timeline::single(&local_node, local))
        .expect("a single node's own events always form a timeline");
        let summary = Summary::from_timeline(&timeline).ok();
        // Once a transport was chosen, every dump of this migration went the same way.
        let pages_streamed = self.streams_pages() && self.transport.is_some();
        MigrationReport {
            id: self.id.to_string(),
            pid: self.o.pid,
            strategy: self.o.strategy,
            source: self.src.take(),
            destination: self.dst.take(),
            final_bytes: self.final_bytes,
            bytes_total: self.bytes_total,
            rounds: std::mem::take(&mut self.rounds),
            stop_reason: self.stop_reason.take(),
            transport: self.transport.take(),
            pages_streamed,
            outcome,
            timeline,
            summary,
        }
    }
}

/// One row of `rdmig bench transfer`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub transport: String,
    /// RDMA lanes (RC QPs) used; None for TCP.
    pub rdma_qps: Option<usize>,
    pub bytes: u64,
    pub secs: f64,
    pub mb_s: f64,
}

/// Moves `bytes` of probe data to the agent at `to` over each transport in turn.
pub async fn bench_transfer(
    to: SocketAddr,
    secret: &Secret,
    rdma_addr: Option<std::net::Ipv4Addr>,
    rdma_device: &str,
    rdma_qps: usize,
    bytes: u64,
    transports: &[TransportChoice],
) -> anyhow::Result<Vec<BenchRow>> {
    let o = MigrateOptions {
        pid: 0,
        to,
        secret: secret.clone(),
        strategy: Strategy::StopAndCopy,
        max_rounds: 0,
        converge_bytes: 0,
        work_dir: std::env::temp_dir(),
        hooks: Hooks::default(),
        dump_timeout: Duration::from_secs(1),
        allow_kernel_mismatch: false,
        transport: TransportChoice::Tcp,
        rdma_addr,
        rdma_device: rdma_device.to_string(),
        rdma_qps,
        progress: false,
        tcp_established: false,
        move_addr: None,
        ssh_host: None,
        ssh_config: None,
        page_stream: false,
    };
    if transports.contains(&TransportChoice::Scp) {
        anyhow::bail!("bench transfer measures rdmig's own transports (rdma, tcp); scp is measured by a migration with --transport scp");
    }
    let mut ch = connect(&o).await.map_err(anyhow::Error::msg)?;
    let run = Run::new(&o, MigrationId::new("bench").expect("valid"), std::env::temp_dir(), "bench");
    let mut rows = vec![];
    for t in transports {
        let (name, secs) = match t {
            TransportChoice::Rdma => {
                let s = run.open_rdma(&mut ch).await.map_err(|e| anyhow::anyhow!("RDMA: {e}"))?;
                ("rdma", transfer::probe(&mut ch, Some(&s), bytes).await.map_err(|e| anyhow::anyhow!("{e}"))?)
            }
            _ => ("tcp", transfer::probe(&mut ch, None, bytes).await.map_err(|e| anyhow::anyhow!("{e}"))?),
        };
        let rdma_qps = (name == "rdma").then_some(o.rdma_qps);
        rows.push(BenchRow { transport: name.into(), rdma_qps, bytes, secs, mb_s: mb_s(bytes, secs) });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #[test]
    fn anonymous_memory_counts_resident_and_swapped() {
        let rollup = "55d0c8e0a000-7ffd5a1f2000 ---p 00000000 00:00 0    [rollup]\nRss:                2048 kB\nAnonymous:           512 kB\nLazyFree:              0 kB\nAnonHugePages:         0 kB\nSwap:                 64 kB\nSwapPss:              64 kB\n";
        assert_eq!(super::parse_anonymous(rollup), Some(576 * 1024));
        assert_eq!(super::parse_anonymous("Rss: 4 kB\n"), None);
        assert_eq!(super::parse_anonymous("Anonymous: x kB\n"), None);
    }
}
