//! One file per `rdmig` command (as youki keeps its commands); what several share is here.

pub mod agent;
pub mod bench;
pub mod ca;
pub mod events;
pub mod image;
pub mod manpages;
pub mod migrate;
pub mod plot;
pub mod recover;
pub mod rxe;
pub mod softroce;
pub mod status;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

/// Where the destination agent is and how to reach it; shared by `migrate` and `bench transfer`.
#[derive(Args)]
pub(crate) struct PeerArgs {
    /// Destination agent, HOST:PORT.
    #[arg(long, env = "RDMIG_TO")]
    pub(crate) to: String,
    /// This node's TLS directory (`rdmig ca issue` makes it): ca.pem, node.pem, node.key.
    #[arg(long, env = "RDMIG_TLS_DIR", default_value = "/etc/rdmig/tls")]
    pub(crate) tls_dir: PathBuf,
    /// The destination's node name, which its agent's certificate must carry (default: the
    /// certificate must name the address of --to).
    #[arg(long, env = "RDMIG_TO_NAME", value_name = "NODE")]
    pub(crate) to_name: Option<String>,
    /// Local address whose RoCE v2 GID carries RDMA data (none: TCP only).
    #[arg(long, env = "RDMIG_RDMA_ADDR")]
    pub(crate) rdma_addr: Option<std::net::Ipv4Addr>,
    #[arg(long, default_value = "rxe0", env = "RDMIG_RDMA_DEVICE")]
    pub(crate) rdma_device: String,
    /// RC QPs ("lanes") the RDMA data path stripes its chunks over (1 to 4).
    #[arg(long, default_value_t = rdmig::transport::rdma::DEFAULT_LANES, value_parser = clap::builder::TypedValueParser::map(clap::value_parser!(u8).range(1..=rdmig::transport::rdma::MAX_LANES as i64), usize::from))]
    pub(crate) rdma_qps: usize,
    /// Encrypt the data on the RDMA data path too (AES-256-GCM). Without it each chunk is
    /// authenticated (a GMAC tag: nothing altered, injected, reordered or replayed is used) but
    /// travels in clear, which costs the least CPU. Data over TCP is always encrypted by TLS.
    #[arg(long, env = "RDMIG_ENCRYPT")]
    pub(crate) encrypt: bool,
}

impl PeerArgs {
    pub(crate) fn addr(&self) -> Result<std::net::SocketAddr> {
        self.to.parse().with_context(|| format!("--to {:?} is not HOST:PORT", self.to))
    }

    /// This node's TLS client side, expecting the destination's name (or address).
    pub(crate) fn tls(&self) -> Result<rdmig_proto::tls::ClientTls> {
        tls_client(&self.tls_dir, self.to_name.as_deref())
    }

    /// What the RDMA data path does to each chunk (`--encrypt`).
    pub(crate) fn protection(&self) -> rdmig_proto::msg::ChunkProtection {
        use rdmig_proto::msg::ChunkProtection;
        if self.encrypt {
            ChunkProtection::Encrypted
        } else {
            ChunkProtection::Authenticated
        }
    }
}

/// The agents to ask (`events`, `status`), or this node's journal when none is named.
#[derive(Args)]
pub(crate) struct AgentsArgs {
    /// Agents to ask, HOST:PORT (repeat, or comma-separated in RDMIG_AGENTS). None: read this
    /// node's journal only.
    #[arg(long = "agent", value_name = "HOST:PORT", env = "RDMIG_AGENTS", value_delimiter = ',')]
    pub(crate) agents: Vec<std::net::SocketAddr>,
    /// This node's TLS directory (`rdmig ca issue` makes it), to ask agents.
    #[arg(long, env = "RDMIG_TLS_DIR", default_value = "/etc/rdmig/tls")]
    pub(crate) tls_dir: PathBuf,
    /// This node's journal (read when no agent is named).
    #[arg(long, value_name = "FILE", env = "RDMIG_JOURNAL", default_value = rdmig::journal::DEFAULT_PATH)]
    pub(crate) journal: PathBuf,
}

impl AgentsArgs {
    /// This node's TLS client side; agents are checked by the address dialled.
    pub(crate) fn tls(&self) -> Result<rdmig_proto::tls::ClientTls> {
        tls_client(&self.tls_dir, None)
    }
}

/// The TLS client side of this node's identity in `dir`, expecting `expect` (None: the address
/// dialled) in the agent's certificate.
/// Podman's own configuration files, for `migrate --container` and the agent's container
/// restores: Podman reads its storage root, cgroup manager, runtime and the rest from them.
#[derive(Args, Clone)]
pub(crate) struct PodmanArgs {
    /// Podman's containers.conf for the podman commands rdmig runs (passed to Podman as its
    /// CONTAINERS_CONF). Unset: Podman's defaults, or CONTAINERS_CONF from the environment.
    #[arg(long, value_name = "FILE", env = "CONTAINERS_CONF")]
    pub(crate) containers_conf: Option<PathBuf>,
    /// Podman's storage.conf for the podman commands rdmig runs (its CONTAINERS_STORAGE_CONF).
    /// Unset: Podman's defaults, or CONTAINERS_STORAGE_CONF from the environment.
    #[arg(long, value_name = "FILE", env = "CONTAINERS_STORAGE_CONF")]
    pub(crate) containers_storage_conf: Option<PathBuf>,
}

impl PodmanArgs {
    pub(crate) fn podman(&self) -> rdmig::podman::Podman {
        rdmig::podman::Podman { containers_conf: self.containers_conf.clone(), storage_conf: self.containers_storage_conf.clone() }
    }
}

pub(crate) fn tls_client(dir: &std::path::Path, expect: Option<&str>) -> Result<rdmig_proto::tls::ClientTls> {
    let id = rdmig_proto::tls::Identity::load(dir).with_context(|| format!("this node's TLS identity (--tls-dir {})", dir.display()))?;
    Ok(id.client(expect)?)
}

/// A number in hex (with 0x) or decimal.
pub(crate) fn parse_u64_auto(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s:?}: {e}"))
}

pub(crate) fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
