//! `rdmig bench transfer`: probe data over each of rdmig's own transports, as a migration would
//! send it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::remote::{connect, IO_WAIT};
use super::{transfer, Hooks, MigrateOptions, Run, Strategy};
use crate::transport::{mb_s, TransportChoice};
use rdmig_proto::msg::MigrationId;
use rdmig_proto::tls::ClientTls;
use rdmig_proto::wire::Limits;

/// One row of `rdmig bench transfer`.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub transport: String,
    /// RDMA lanes (RC QPs) used; None for TCP.
    pub rdma_qps: Option<usize>,
    /// RDMA chunks authenticated only, or encrypted too; None for TCP.
    pub rdma_protection: Option<rdmig_proto::msg::ChunkProtection>,
    pub bytes: u64,
    pub secs: f64,
    pub mb_s: f64,
}

/// This end of the RDMA data path, as `rdmig migrate` would open it.
pub struct RdmaSide<'a> {
    /// Local address whose RoCE v2 GID carries the data (None: no RDMA).
    pub addr: Option<std::net::Ipv4Addr>,
    pub device: &'a str,
    pub qps: usize,
    pub protection: rdmig_proto::msg::ChunkProtection,
}

/// Moves `bytes` of probe data to the agent at `to` over each transport in turn.
pub async fn bench_transfer(to: SocketAddr, tls: &ClientTls, rdma: RdmaSide<'_>, bytes: u64, transports: &[TransportChoice]) -> anyhow::Result<Vec<BenchRow>> {
    let o = MigrateOptions {
        pid: 0,
        container: None,
        podman: Default::default(),
        to,
        tls: tls.clone(),
        strategy: Strategy::StopAndCopy,
        max_rounds: 0,
        converge_bytes: 0,
        work_dir: std::env::temp_dir(),
        hooks: Hooks::default(),
        dump_timeout: Duration::from_secs(1),
        allow_kernel_mismatch: false,
        transport: TransportChoice::Tcp,
        probe_max_age: Duration::ZERO,
        rdma_addr: rdma.addr,
        rdma_device: rdma.device.to_string(),
        rdma_qps: rdma.qps,
        rdma_protection: rdma.protection,
        progress: false,
        tcp_established: false,
        move_addr: None,
        ssh_host: None,
        ssh_config: None,
        page_stream: false,
        deadline: Duration::from_secs(900),
        lock_dir: std::env::temp_dir(),
        // Nothing is migrated: no journal is opened.
        journal: PathBuf::new(),
        started_ns: None,
    };
    if transports.contains(&TransportChoice::Scp) {
        anyhow::bail!("bench transfer measures rdmig's own transports (rdma, tcp); scp is measured by a migration with --transport scp");
    }
    let mut ch = connect(o.to, &o.tls, Limits::idle(IO_WAIT)).await.map_err(anyhow::Error::msg)?;
    let run = Run::new(&o, MigrationId::new("m-bench").expect("valid"), std::env::temp_dir(), "bench");
    let mut rows = vec![];
    for t in transports {
        let (name, secs) = match t {
            TransportChoice::Rdma => {
                let s = run.open_rdma(&mut ch).await.map_err(|e| anyhow::anyhow!("RDMA: {e}"))?;
                ("rdma", transfer::probe(&mut ch, Some(&s), bytes).await.map_err(|e| anyhow::anyhow!("{e}"))?)
            }
            _ => ("tcp", transfer::probe(&mut ch, None, bytes).await.map_err(|e| anyhow::anyhow!("{e}"))?),
        };
        let rdma = name == "rdma";
        let (rdma_qps, rdma_protection) = (rdma.then_some(o.rdma_qps), rdma.then_some(o.rdma_protection));
        rows.push(BenchRow { transport: name.into(), rdma_qps, rdma_protection, bytes, secs, mb_s: mb_s(bytes, secs) });
    }
    Ok(rows)
}
