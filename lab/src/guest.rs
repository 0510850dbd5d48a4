//! The guest agent: runs inside every lab node (started by guest-init.sh as `rdmig lab
//! guest-agent`). It sets up the node's network and SoftRoCE, reports its progress into the node's
//! share directory, and serves `rdmig lab exec` over the underlay.

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::plan::{NodePlan, OVERLAY_DEV, OVERLAY_MTU, OVERLAY_PREFIX_LEN, RXE_DEV, UNDERLAY_MTU, VXLAN_ID, VXLAN_PORT};
use super::proto::{read_json, token_matches, write_frame, write_json, ExecSpec, FrameKind, NodeStatus, Op, Reply, Request, PROTO_VERSION};

/// What the host tells a node about itself, written to `<share>/node.json` before boot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestConfig {
    pub node: NodePlan,
    /// Underlay addresses of the other nodes (VXLAN head-end replication targets).
    pub peers: Vec<Ipv4Addr>,
    pub token: String,
    pub agent_port: u16,
    /// Out-of-tree modules to load instead of the stock `rdma_rxe`, in order (empty: stock).
    #[serde(default)]
    pub rxe_modules: Vec<PathBuf>,
    /// Start sshd on the underlay (the lab share holds its keys and configuration).
    #[serde(default)]
    pub ssh: bool,
    /// Run the migration agent as this systemd unit starts it (the installed package's
    /// `rdmig-agent.service`), with the node's [`AGENT_ENV_FILE`] mounted over the unit's
    /// `EnvironmentFile`, as a site's configuration tool would write it. None: the rdmig of the
    /// lab's snapshot with the lab's own flags.
    #[serde(default)]
    pub agent_unit: Option<PathBuf>,
    /// The nodes the migration agent lets in (`--allow-peer`): the lab's nodes.
    #[serde(default)]
    pub allow_peers: Vec<String>,
}

pub const STATUS_FILE: &str = "status.json";
/// The node's TLS directory in its share (its certificate of the lab CA; written by the host).
pub const AGENT_TLS_DIR: &str = "tls";
/// The overlay subnet on its device: where the lab's agents let moved addresses go.
pub const MOVE_ADDR_RULE: &str = "vxlan0=10.0.1.0/24";
/// Port of the migration agent (`rdmig agent`) on the underlay.
pub const MIGRATION_PORT: u16 = 7800;
/// Work directory of the migration agent inside a node (tmpfs).
pub const MIGRATION_WORK_DIR: &str = "/tmp/rdmig-agent";
/// The node's rdmig journal (the agent's and `rdmig migrate`'s): on the node's own /run, which
/// lives as long as the node (the default under /var/lib is the host's read-only root here).
pub const NODE_JOURNAL: &str = "/run/rdmig/journal.db";
/// The node's settings of the installed agent unit, in its share (`up`, not `--from-build`).
pub const AGENT_ENV_FILE: &str = "agent.env";
/// More flags for the migration agent, in the node's share, white-space separated: read each
/// time the agent is (re)started. A scenario that waits out one of the agent's timeouts (its
/// `--orphan-after`, say) shortens it so for a while, then restarts the agent without.
pub const AGENT_FLAGS_FILE: &str = "agent-flags";
/// Where the nodes find things: what systemd gives a system service, and what guest-init.sh sets.
const SERVICE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How the migration agent is started, and restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCommand {
    pub argv: Vec<String>,
    /// The whole environment (None: the guest agent's own).
    pub env: Option<BTreeMap<String, String>>,
}

/// The migration agent of the lab's snapshot: `rdmig` beside this binary, the lab's flags.
fn snapshot_agent(cfg: &GuestConfig, share: &Path) -> anyhow::Result<AgentCommand> {
    let bin = std::env::current_exe()?.with_file_name("rdmig");
    let mut argv = vec![
        bin.display().to_string(),
        "agent".into(),
        "--listen".into(),
        format!("{}:{MIGRATION_PORT}", cfg.node.underlay_ip),
        "--rdma-addr".into(),
        cfg.node.overlay_ip.to_string(),
        "--work-dir".into(),
        MIGRATION_WORK_DIR.into(),
        "--journal".into(),
        NODE_JOURNAL.into(),
        "--allow-move-addr".into(),
        MOVE_ADDR_RULE.into(),
        "--tls-dir".into(),
        share.join(AGENT_TLS_DIR).display().to_string(),
    ];
    for p in &cfg.allow_peers {
        argv.extend(["--allow-peer".into(), p.clone()]);
    }
    // With our rdma_rxe every node gets its own share of QP and MR numbers.
    if !cfg.rxe_modules.is_empty() {
        argv.extend(["--number-range".into(), format!("{}/{}", cfg.node.index, cfg.peers.len() + 1)]);
    }
    Ok(AgentCommand { argv, env: None })
}

/// The migration agent as `unit` starts it: the node's settings file bind-mounted over the unit's
/// `EnvironmentFile` (the host's root is read-only here), then ExecStart with the unit's
/// variables, in an environment of only those and PATH, as systemd runs a service.
fn unit_agent(unit: &Path, share: &Path) -> anyhow::Result<AgentCommand> {
    let svc = super::unit::Service::load(unit)?;
    let (target, _) = svc
        .environment_files
        .iter()
        .find(|(_, optional)| !optional)
        .ok_or_else(|| anyhow::anyhow!("{} has no EnvironmentFile= for the node's settings", unit.display()))?;
    let source = share.join(AGENT_ENV_FILE);
    sh("mount", &["--bind", &source.display().to_string(), &target.display().to_string()])?;
    let mut env = svc.variables()?;
    let argv = svc.argv(&env);
    env.entry("PATH".into()).or_insert_with(|| SERVICE_PATH.into());
    info!(unit = %unit.display(), ?argv, ignored = ?svc.ignored, "the migration agent runs as its unit starts it");
    Ok(AgentCommand { argv, env: Some(env) })
}

/// Publishes the node's status where the host can read it without a network.
struct StatusBoard {
    file: PathBuf,
    current: Arc<Mutex<NodeStatus>>,
}

impl StatusBoard {
    fn set(&self, s: NodeStatus) {
        *self.current.lock().expect("status lock") = s.clone();
        let tmp = self.file.with_extension("tmp");
        let body = serde_json::to_vec_pretty(&s).expect("status serializes");
        if let Err(e) = fs::write(&tmp, body).and_then(|_| fs::rename(&tmp, &self.file)) {
            warn!("cannot write {}: {e}", self.file.display());
        }
    }
}

pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let cfg: GuestConfig = serde_json::from_slice(&fs::read(config_path)?)?;
    let share = config_path.parent().unwrap_or(Path::new("/"));
    let board = StatusBoard { file: share.join(STATUS_FILE), current: Arc::new(Mutex::new(NodeStatus::SettingUp { step: "start".into() })) };
    info!(node = %cfg.node.name, "guest agent starting");

    let mut step_name = String::new();
    let result = setup(&cfg, |step| {
        info!(step, "setup");
        step_name = step.to_string();
        board.set(NodeStatus::SettingUp { step: step.into() });
    });
    let uptime_ms = uptime_ms().unwrap_or(started.elapsed().as_millis() as u64);
    match &result {
        Ok(()) => board.set(NodeStatus::Ready { uptime_ms, rxe_active: rxe_active() }),
        Err(e) => {
            warn!(step = %step_name, "setup failed: {e:#}");
            board.set(NodeStatus::Failed { step: step_name.clone(), error: format!("{e:#}") });
        }
    }
    if result.is_ok() {
        let agent = match &cfg.agent_unit {
            Some(unit) => unit_agent(unit, share),
            None => snapshot_agent(&cfg, share),
        };
        match agent {
            Ok(cmd) => {
                tokio::spawn(supervise_migration_agent(cmd, share.join(AGENT_FLAGS_FILE), share.join("migration-agent.log")));
            }
            Err(e) => {
                warn!("cannot start the migration agent: {e:#}");
                board.set(NodeStatus::Failed { step: "migration agent".into(), error: format!("{e:#}") });
            }
        }
    }
    // Serve even after a failed set-up, as long as the underlay address exists: `lab exec` is
    // how a user finds out what went wrong.
    let addr = SocketAddr::from((cfg.node.underlay_ip, cfg.agent_port));
    let listener = TcpListener::bind(addr).await?;
    info!(%addr, "serving");
    let cfg = Arc::new(cfg);
    loop {
        let (sock, peer) = listener.accept().await?;
        let cfg = cfg.clone();
        let status = board.current.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(sock, &cfg, status).await {
                warn!(%peer, "request failed: {e:#}");
            }
        });
    }
}

/// Runs the migration agent and restarts it when it exits, as a service manager would: a killed
/// agent (a test does that) is back within a second, with the flags of `flags` (if any) added.
async fn supervise_migration_agent(agent: AgentCommand, flags: PathBuf, log: PathBuf) {
    loop {
        let out = fs::OpenOptions::new().create(true).append(true).open(&log);
        let mut cmd = tokio::process::Command::new(&agent.argv[0]);
        let extra: Vec<String> = fs::read_to_string(&flags).map(|s| s.split_whitespace().map(String::from).collect()).unwrap_or_default();
        if !extra.is_empty() {
            info!(?extra, "the migration agent starts with more flags ({})", flags.display());
        }
        cmd.args(&agent.argv[1..]).args(&extra).stdin(Stdio::null());
        if let Some(env) = &agent.env {
            cmd.env_clear().envs(env);
        }
        if let Ok(f) = out {
            if let Ok(f2) = f.try_clone() {
                cmd.stdout(f).stderr(f2);
            }
        }
        match cmd.status().await {
            Ok(st) => warn!("migration agent exited ({st}); restarting"),
            Err(e) => warn!("cannot start the migration agent: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn uptime_ms() -> Option<u64> {
    let s = fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

fn rxe_active() -> bool {
    fs::read_to_string(format!("/sys/class/infiniband/{RXE_DEV}/ports/1/state")).map(|s| s.contains("ACTIVE")).unwrap_or(false)
}

fn sh(prog: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = std::process::Command::new(prog).args(args).output()?;
    if !out.status.success() {
        anyhow::bail!("`{prog} {}` failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The network interface with the given MAC. Interface names depend on the machine type
/// (`ens4`, `eth0`, ...), the MAC is ours.
fn iface_by_mac(mac: &str) -> anyhow::Result<String> {
    for e in fs::read_dir("/sys/class/net")? {
        let e = e?;
        if let Ok(a) = fs::read_to_string(e.path().join("address")) {
            if a.trim().eq_ignore_ascii_case(mac) {
                return Ok(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    anyhow::bail!("no network interface has MAC {mac}")
}

fn setup(cfg: &GuestConfig, mut step: impl FnMut(&str)) -> anyhow::Result<()> {
    let n = &cfg.node;
    step("hostname");
    nix::unistd::sethostname(&n.name)?;
    // CRIU restores a process with its own pid, so processes of different nodes must not share
    // pids: every node hands out pids from its own range (node N from N*10000 on).
    std::fs::write("/proc/sys/kernel/ns_last_pid", (n.index * 10_000).to_string())?;
    sh("ip", &["link", "set", "lo", "up"])?;

    step("underlay");
    let nic = iface_by_mac(&n.mac)?;
    sh("ip", &["link", "set", "dev", &nic, "mtu", &UNDERLAY_MTU.to_string(), "up"])?;
    sh("ip", &["addr", "add", &format!("{}/24", n.underlay_ip), "dev", &nic])?;

    step("overlay");
    let (id, port, local) = (VXLAN_ID.to_string(), VXLAN_PORT.to_string(), n.underlay_ip.to_string());
    sh("ip", &["link", "add", OVERLAY_DEV, "type", "vxlan", "id", &id, "dstport", &port, "local", &local, "dev", &nic])?;
    // Head-end replication: broadcast and unknown frames go to every other node.
    for p in &cfg.peers {
        sh("bridge", &["fdb", "append", "00:00:00:00:00:00", "dev", OVERLAY_DEV, "dst", &p.to_string()])?;
    }
    sh("ip", &["link", "set", "dev", OVERLAY_DEV, "mtu", &OVERLAY_MTU.to_string(), "up"])?;
    sh("ip", &["addr", "add", &format!("{}/{OVERLAY_PREFIX_LEN}", n.overlay_ip), "dev", OVERLAY_DEV])?;

    if cfg.ssh {
        step("sshd");
        // Privilege separation needs its empty directory; /run is the node's own tmpfs.
        std::fs::create_dir_all("/run/sshd")?;
        let config = super::ssh::node_sshd_config();
        let listen = format!("ListenAddress={}", n.underlay_ip);
        sh(super::ssh::SSHD, &["-f", &config, "-o", &listen, "-E", "/mnt/node/sshd.log"])?;
    }

    step("rxe module");
    if cfg.rxe_modules.is_empty() {
        sh("modprobe", &["rdma_rxe"])?;
    } else {
        // Our modules replace the stock ones: load their stock dependencies first, then ours,
        // before anything can pull in the stock rdma_rxe (or ib_uverbs, ib_cm, rdma_cm and
        // rdma_ucm, when we bring our own: nothing else here loads a module that needs them).
        let mut args = vec!["-a"];
        args.extend(stock_deps(&cfg.rxe_modules));
        sh("modprobe", &args)?;
        for m in &cfg.rxe_modules {
            sh("insmod", &[&m.display().to_string()])?;
        }
    }

    step("rxe device");
    sh("rdma", &["link", "add", RXE_DEV, "type", "rxe", "netdev", OVERLAY_DEV])?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !rxe_active() {
        if Instant::now() > deadline {
            anyhow::bail!("{RXE_DEV} did not become ACTIVE within 20 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The stock modules to load before our own `modules`: what rdma_rxe needs (and rdma_ucm, when
/// we bring it: the RDMA CM with its IB and iWARP CMs and configfs, which rdma_cm uses), minus
/// what we bring (all but iw_cm and configfs, with our ib_cm and rdma_cm).
fn stock_deps(modules: &[PathBuf]) -> Vec<&'static str> {
    let ours = |name: &str| modules.iter().any(|m| m.file_stem().is_some_and(|s| s == name));
    let ucma: &[&'static str] = if ours("rdma_ucm") { &["ib_cm", "iw_cm", "configfs", "rdma_cm"] } else { &[] };
    ["ib_core", "ib_uverbs", "ip6_udp_tunnel", "udp_tunnel"].into_iter().chain(ucma.iter().copied()).filter(|d| !ours(d)).collect()
}

async fn serve(sock: TcpStream, cfg: &GuestConfig, status: Arc<Mutex<NodeStatus>>) -> anyhow::Result<()> {
    sock.set_nodelay(true)?;
    let (mut rd, mut wr) = sock.into_split();
    let req: Request = match tokio::time::timeout(Duration::from_secs(10), read_json(&mut rd)).await {
        Ok(r) => r?,
        Err(_) => anyhow::bail!("no request within 10 s"),
    };
    if req.version != PROTO_VERSION {
        let why = format!("protocol version {} (this node speaks {PROTO_VERSION})", req.version);
        write_json(&mut wr, &Reply::Refused(why)).await?;
        return Ok(());
    }
    if !token_matches(&cfg.token, &req.token) {
        write_json(&mut wr, &Reply::Refused("bad token".into())).await?;
        anyhow::bail!("refused a request with a bad token");
    }
    match req.op {
        Op::Ping => {
            let s = status.lock().expect("status lock").clone();
            write_json(&mut wr, &Reply::Pong(s)).await?;
        }
        Op::Exec(spec) => exec(spec, rd, wr).await?,
        Op::Spawn(spec) => {
            let reply = match spawn_detached(&spec) {
                Ok(pid) => Reply::Spawned { pid },
                Err(e) => Reply::Refused(format!("cannot start {}: {e}", spec.argv.first().map(String::as_str).unwrap_or("?"))),
            };
            write_json(&mut wr, &reply).await?;
        }
    }
    Ok(())
}

async fn pump<R: AsyncRead + Unpin>(mut r: R, kind: FrameKind, tx: mpsc::Sender<(FrameKind, Vec<u8>)>) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send((kind, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Starts a process in its own session with stdio on /dev/null (or a log file), not tied to any
/// connection: what a migratable application looks like (CRIU cannot take pipes to us along).
fn spawn_detached(spec: &super::proto::SpawnSpec) -> std::io::Result<u32> {
    use std::os::unix::process::CommandExt;
    let prog = spec.argv.first().ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut cmd = std::process::Command::new(prog);
    cmd.args(&spec.argv[1..]).envs(&spec.env).stdin(Stdio::null());
    match &spec.log {
        Some(p) => {
            let f = fs::OpenOptions::new().create(true).append(true).open(p)?;
            cmd.stdout(f.try_clone()?).stderr(f);
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    if let Some(d) = &spec.cwd {
        cmd.current_dir(d);
    }
    // SAFETY: setsid(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from));
    }
    let child = cmd.spawn()?;
    let pid = child.id();
    // Reap it whenever it ends (if it ever ends here: a migrated process leaves by SIGKILL).
    std::thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    Ok(pid)
}

fn kill_group(pgid: Option<u32>) {
    if let Some(p) = pgid {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(p as i32), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Runs one command in its own process group, streaming its output. The group is killed when
/// the timeout passes or the client goes away, so nothing a test started outlives its request.
async fn exec(spec: ExecSpec, mut rd: tokio::net::tcp::OwnedReadHalf, mut wr: tokio::net::tcp::OwnedWriteHalf) -> anyhow::Result<()> {
    let Some(prog) = spec.argv.first() else {
        write_json(&mut wr, &Reply::Refused("empty command".into())).await?;
        return Ok(());
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(&spec.argv[1..]).envs(&spec.env).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    if let Some(d) = &spec.cwd {
        cmd.current_dir(d);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            write_json(&mut wr, &Reply::Refused(format!("cannot run {prog}: {e}"))).await?;
            return Ok(());
        }
    };
    let pgid = child.id();
    let (tx, mut rx) = mpsc::channel(32);
    tokio::spawn(pump(child.stdout.take().expect("piped"), FrameKind::Stdout, tx.clone()));
    tokio::spawn(pump(child.stderr.take().expect("piped"), FrameKind::Stderr, tx));

    let deadline = spec.timeout_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms));
    let mut timed_out = false;
    let mut client_gone = false;
    let mut probe = [0u8; 1];
    let status = loop {
        tokio::select! {
            Some((kind, data)) = rx.recv() => {
                if write_frame(&mut wr, kind, &data).await.is_err() {
                    client_gone = true;
                    kill_group(pgid);
                }
            }
            st = child.wait() => break st?,
            // The client sends nothing after its request: readable means it hung up.
            _ = rd.read(&mut probe), if !client_gone => {
                client_gone = true;
                kill_group(pgid);
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                if deadline.is_some() && !timed_out => {
                timed_out = true;
                kill_group(pgid);
            }
        }
    };
    // Output still in the pipes after exit. A background process that inherited them may keep
    // them open forever, so drain only while data keeps coming.
    while let Ok(Some((kind, data))) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
        if client_gone || write_frame(&mut wr, kind, &data).await.is_err() {
            break;
        }
    }
    if !client_gone {
        use std::os::unix::process::ExitStatusExt;
        let reply = Reply::Exited { code: status.code(), signal: status.signal(), timed_out };
        write_json(&mut wr, &reply).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_ib_uverbs_keeps_the_stock_one_out() {
        let ours = [PathBuf::from("/mnt/lab/modules/ib_uverbs.ko"), PathBuf::from("/mnt/lab/modules/rdma_rxe.ko")];
        assert_eq!(stock_deps(&ours), ["ib_core", "ip6_udp_tunnel", "udp_tunnel"]);
        let rxe_only = [PathBuf::from("/x/rdma_rxe.ko")];
        assert_eq!(stock_deps(&rxe_only), ["ib_core", "ib_uverbs", "ip6_udp_tunnel", "udp_tunnel"]);
        let all = [PathBuf::from("/m/ib_uverbs.ko"), PathBuf::from("/m/rdma_rxe.ko"), PathBuf::from("/m/rdma_ucm.ko")];
        assert_eq!(stock_deps(&all), ["ib_core", "ip6_udp_tunnel", "udp_tunnel", "ib_cm", "iw_cm", "configfs", "rdma_cm"]);
        let cm = ["ib_cm", "rdma_cm", "ib_uverbs", "rdma_rxe", "rdma_ucm"].map(|m| PathBuf::from(format!("/m/{m}.ko")));
        assert_eq!(stock_deps(&cm), ["ib_core", "ip6_udp_tunnel", "udp_tunnel", "iw_cm", "configfs"]);
    }
}
