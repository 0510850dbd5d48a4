//! `rdmig agent`: the per-node daemon that receives migrations.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct AgentArgs {
    /// Address to listen on, e.g. 10.99.0.2:7800 (no default: bind where you mean to).
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// File with the cluster's shared secret (at least 32 bytes, mode 0600).
    #[arg(long)]
    secret_file: PathBuf,
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
    /// always find their numbers free.
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
    /// This node's journal: the agent records each step of the migrations it receives, takes
    /// up what was under way when it last stopped, and recovers source migrations of this node
    /// whose `rdmig migrate` died.
    #[arg(long, value_name = "FILE", env = "RDMIG_JOURNAL", default_value = rdmig::journal::DEFAULT_PATH)]
    journal: PathBuf,
    /// Seconds between two checks for source migrations left by a dead `rdmig migrate`.
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    reconcile_every: u64,
}

pub async fn run(a: AgentArgs) -> Result<ExitCode> {
    let AgentArgs { listen, secret_file, work_dir, keep_images, rdma_addr, rdma_device, number_range, idle_timeout, orphan_after, journal, reconcile_every } =
        a;
    let secret = rdmig_proto::wire::Secret::load(&secret_file)?;
    rdmig::agent::serve(rdmig::agent::AgentConfig {
        listen,
        rdma_addr,
        rdma_device,
        secret,
        work_dir,
        keep_images,
        restore_timeout: Duration::from_secs(600),
        numbers: number_range,
        idle_timeout: Duration::from_secs(idle_timeout),
        orphan_after: Duration::from_secs(orphan_after),
        journal: Some(journal),
        lock_dir: PathBuf::from(rdmig::migrate::LOCK_DIR),
        reconcile_every: Duration::from_secs(reconcile_every),
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}
