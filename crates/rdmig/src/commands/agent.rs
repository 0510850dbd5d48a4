//! `rdmig agent`: the per-node daemon that receives migrations.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args)]
pub struct AgentArgs {
    /// Address to listen on, e.g. 10.99.0.2:7800 (no default: bind where you mean to).
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// This node's TLS directory (`rdmig ca issue` makes it): ca.pem, node.pem, node.key.
    #[arg(long, env = "RDMIG_TLS_DIR", default_value = "/etc/rdmig/tls")]
    tls_dir: PathBuf,
    /// A node (as its certificate names it) that may migrate processes to this agent;
    /// repeat for each (or comma-separated in RDMIG_ALLOW_PEERS), or `*` for every node of the
    /// cluster CA. Nobody without one.
    #[arg(long = "allow-peer", value_name = "NODE", env = "RDMIG_ALLOW_PEERS", value_delimiter = ',', required = true)]
    allow_peers: Vec<String>,
    /// A device and subnet a migrated process's address may be moved onto here
    /// (`--move-addr` of migrate), e.g. vxlan0=10.0.1.0/24; repeat for each (or
    /// comma-separated in RDMIG_ALLOW_MOVE_ADDR). None: migrations that move an address are
    /// refused.
    #[arg(long = "allow-move-addr", value_name = "DEV=NET/PREFIX", env = "RDMIG_ALLOW_MOVE_ADDR", value_delimiter = ',')]
    allow_move_addr: Vec<rdmig::agent::policy::AddrRule>,
    /// Take RDMA data only encrypted: a source must migrate with --encrypt, else its RDMA data
    /// path is refused (and `--transport auto` falls back to TCP, which TLS always encrypts).
    /// Without it, RDMA chunks may come authenticated only (the data in clear).
    #[arg(long, env = "RDMIG_REQUIRE_ENCRYPTION")]
    require_encryption: bool,
    /// Where incoming images are kept until the migration is committed.
    #[arg(long, default_value = "/var/lib/rdmig/incoming")]
    work_dir: PathBuf,
    /// Keep images after a committed migration (for inspection).
    #[arg(long)]
    keep_images: bool,
    /// Local address whose RoCE v2 GID carries migration data over RDMA (none: TCP only).
    #[arg(long)]
    rdma_addr: Option<std::net::Ipv4Addr>,
    #[arg(long, default_value = "rxe0")]
    rdma_device: String,
    /// This node's share of the QP and MR numbers, I/N (node I of N): the agent reserves
    /// the other nodes' shares in rdmig's rdma_rxe, so processes migrated between the N nodes
    /// always find their numbers free. With rdmig's rdma_ucm, new rdma_cm IDs are numbered
    /// from this node's share too (net/rdma_ucm/id_min, id_max).
    #[arg(long, value_name = "I/N")]
    number_range: Option<rdmig::agent::numbers::NumberRange>,
    /// Seconds a connection may send nothing before it is closed (a busy source pings every
    /// 20 s).
    #[arg(long, default_value_t = 120, value_name = "SECS", value_parser = clap::value_parser!(u64).range(5..))]
    idle_timeout: u64,
    /// Seconds after its last connection closed that a migration not committed is aborted: a
    /// copy restored here is killed, the images are removed.
    #[arg(long, default_value_t = 60, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    orphan_after: u64,
    /// Connections open at once (a quarter of them may be in their TLS handshake); more are
    /// closed at once.
    #[arg(long, default_value_t = rdmig::agent::MAX_CONNECTIONS, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u64).range(4..=4096), |v| v as usize))]
    max_connections: usize,
    /// This node's journal: the agent records each step of the migrations it receives, takes
    /// up what was under way when it last stopped, and recovers source migrations of this node
    /// whose `rdmig migrate` died.
    #[arg(long, value_name = "FILE", env = "RDMIG_JOURNAL", default_value = rdmig::journal::DEFAULT_PATH)]
    journal: PathBuf,
    /// Seconds between two checks for source migrations left by a dead `rdmig migrate`.
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    reconcile_every: u64,
    /// Where to lend /dev/rxe_ctl to CRIU running inside a container (runc puts CRIU in the
    /// container's device cgroup, where the device cannot be opened; rdmig's plugin asks here).
    /// Only root may connect. `none`: do not lend. rdmig's plugin knows only the default path:
    /// an agent lending elsewhere lends to no CRIU (a path for a test, or a second agent).
    #[arg(long, value_name = "PATH|none", default_value = rdmig_rxe::lend::LEND_SOCKET)]
    lend_socket: String,
    /// Podman's configuration for restoring containers here (`migrate --container`): the agent
    /// runs `podman` with these files, never with anything a source sends.
    #[command(flatten)]
    podman: super::PodmanArgs,
}

pub async fn run(a: AgentArgs) -> Result<ExitCode> {
    let AgentArgs {
        listen,
        tls_dir,
        allow_peers,
        allow_move_addr,
        require_encryption,
        work_dir,
        keep_images,
        rdma_addr,
        rdma_device,
        number_range,
        idle_timeout,
        orphan_after,
        max_connections,
        journal,
        reconcile_every,
        lend_socket,
        podman,
    } = a;
    for p in &allow_peers {
        anyhow::ensure!(p == "*" || rdmig_proto::ca::valid_node_name(p), "--allow-peer {p:?}: not a node name ([a-z0-9-]) or *");
    }
    let id = rdmig_proto::tls::Identity::load(&tls_dir).with_context(|| format!("this node's TLS identity (--tls-dir {})", tls_dir.display()))?;
    tracing::info!(node = id.name(), peers = ?allow_peers, require_encryption, move_addr = ?allow_move_addr.iter().map(|r| r.to_string()).collect::<Vec<_>>(), "TLS identity and policy");
    rdmig::agent::serve(rdmig::agent::AgentConfig {
        listen,
        rdma_addr,
        rdma_device,
        tls: id.server()?,
        // Recovering a source migration of this node, the agent asks its destination itself.
        client_tls: id.client(None)?,
        policy: rdmig::agent::policy::Policy { peers: allow_peers, move_addr: allow_move_addr, require_encryption },
        work_dir,
        keep_images,
        restore_timeout: Duration::from_secs(600),
        numbers: number_range,
        idle_timeout: Duration::from_secs(idle_timeout),
        orphan_after: Duration::from_secs(orphan_after),
        max_connections,
        journal: Some(journal),
        lock_dir: PathBuf::from(rdmig::migrate::LOCK_DIR),
        reconcile_every: Duration::from_secs(reconcile_every),
        lend_socket: (lend_socket != "none").then(|| PathBuf::from(lend_socket)),
        podman: podman.podman(),
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}
